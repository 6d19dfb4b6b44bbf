"""Random-offset training windows: shape, shift, range, reproducibility per step."""

import numpy as np
import pytest

from keraslm.data import CharTokenizer, random_windows, split_tokens


def test_windows_are_shifted_slices_of_the_stream():
    tokens = np.arange(1000, dtype=np.int32)
    x, y = next(iter(random_windows(tokens, block_size=16, batch_size=32, seed=3)))
    x, y = x.numpy(), y.numpy()
    assert x.shape == (32, 16)
    np.testing.assert_array_equal(y, x + 1)                 # y is x shifted by one token
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)    # contiguous slices
    assert x.min() >= 0 and y.max() <= 999
    assert len(np.unique(x[:, 0])) > 20                     # offsets are spread out


def test_batches_are_a_function_of_the_step():
    tokens = np.arange(5000, dtype=np.int32)
    full = [x.numpy() for x, _ in random_windows(tokens, block_size=8, batch_size=4, seed=9).take(10)]
    resumed = [x.numpy() for x, _ in random_windows(tokens, block_size=8, batch_size=4, seed=9, start_step=6).take(4)]
    for a, b in zip(full[6:], resumed):
        np.testing.assert_array_equal(a, b)
    other = next(iter(random_windows(tokens, block_size=8, batch_size=4, seed=10)))[0].numpy()
    assert not np.array_equal(full[0], other)


def test_offsets_cover_the_corpus_uniformly():
    tokens = np.arange(110, dtype=np.int32)
    starts = np.concatenate([x.numpy()[:, 0] for x, _ in random_windows(tokens, block_size=10, batch_size=100,
                                                                       seed=0).take(50)])
    counts = np.bincount(starts, minlength=100)
    assert counts.size == 100 and counts.min() > 0           # every start in [0, 100) occurs
    from scipy.stats import chisquare
    assert chisquare(counts).pvalue > 1e-3


def test_split_tokens_and_errors(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abcdefghij" * 10)
    tok = CharTokenizer()
    tok.adapt([str(path)])
    train = split_tokens(str(path), tok, "train", 0.1)
    val = split_tokens(str(path), tok, "validation", 0.1)
    assert train.size == 90 and val.size == 10
    assert split_tokens(str(path), tok, "train", 0.1, limit=50) is None
    with pytest.raises(ValueError, match="corpus too small for block_size=10"):
        random_windows(val, block_size=10, batch_size=2)
