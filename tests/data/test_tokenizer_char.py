"""CharTokenizer: code point vocabulary, exact round trip, unknowns, adapt sources, speed."""

import time

import numpy as np
import pytest
import tensorflow as tf

from keraslm.data import CharTokenizer, tokenizer_from_name


def test_round_trip_unicode_newlines_spaces(unicode_text):
    tok = CharTokenizer()
    tok.adapt([unicode_text])
    ids = tok.tokenize(unicode_text)
    assert ids.dtype == tf.int32 and ids.shape.rank == 1
    assert ids.shape[0] == len(unicode_text)
    assert tok.detokenize(ids).numpy().decode("utf-8") == unicode_text
    batch = [unicode_text, "", "\n\n", " "]
    ragged = tok.tokenize(batch)
    assert isinstance(ragged, tf.RaggedTensor) and ragged.dtype == tf.int32
    assert ragged.row_lengths().numpy().tolist() == [len(t) for t in batch]
    assert [s.decode("utf-8") for s in tok.detokenize(ragged).numpy()] == batch


def test_vocabulary_is_reserved_then_code_point_order():
    tok = CharTokenizer()
    tok.adapt(["cab\n", "é a"])
    assert tok.vocabulary == ["<pad>", "<unk>", "\n", " ", "a", "b", "c", "é"]
    assert tok.vocab_size == 8 and tok.pad_id == 0 and tok.unk_id == 1
    assert tok.token_to_id("a") == 4 and tok.token_to_id("z") == tok.unk_id
    assert tok.id_to_token(7) == "é"
    with pytest.raises(ValueError, match="8"):
        tok.id_to_token(8)


def test_unknown_characters_map_to_unk_and_replacement_char():
    tok = CharTokenizer(vocabulary=["a", "b"])
    assert tok.vocabulary == ["<pad>", "<unk>", "a", "b"]
    ids = tok.tokenize("abzé")
    assert ids.numpy().tolist() == [2, 3, 1, 1]
    assert tok.detokenize(ids).numpy().decode() == "ab\ufffd\ufffd"


def test_detokenize_dense_ragged_and_1d_drop_pad_and_clip_out_of_range():
    tok = CharTokenizer(vocabulary=["a", "b"])
    dense = tf.constant([[2, 3, 0, 0], [3, 0, 2, 0]])
    assert tok.detokenize(dense).numpy().tolist() == [b"ab", b"ba"]
    assert tok.detokenize(tf.ragged.constant([[2], [], [3, 3]], dtype=tf.int64)).numpy().tolist() == [b"a", b"", b"bb"]
    assert tok.detokenize(np.array([3, 2, 0])).numpy() == b"ba"
    assert tok.detokenize([[2, 99, -5]]).numpy().tolist() == ["a\ufffd\ufffd".encode()]


def test_sequence_length_pads_and_truncates_in_call_only():
    tok = CharTokenizer(vocabulary=list("abc"), sequence_length=4)
    out = tok(tf.constant(["abcabc", "a"]))
    assert out.numpy().tolist() == [[2, 3, 4, 2], [2, 0, 0, 0]]
    assert tok(tf.constant("ab")).numpy().tolist() == [2, 3, 0, 0]
    assert isinstance(tok.tokenize(["abcabc"]), tf.RaggedTensor)
    assert tok(tf.constant([["ab"], ["c"]])).shape == (2, 4)  # [B, 1] inputs are squeezed


def test_errors_before_adapt_and_for_bad_vocabularies():
    tok = CharTokenizer()
    for call in (lambda: tok.tokenize("a"), lambda: tok.detokenize([1]), lambda: tok.vocabulary):
        with pytest.raises(ValueError, match="adapt"):
            call()
    with pytest.raises(ValueError, match="'ab'"):
        CharTokenizer(vocabulary=["a", "ab"])
    with pytest.raises(ValueError, match="duplicate token 'a'"):
        CharTokenizer(vocabulary=["a", "b", "a"])
    with pytest.raises(ValueError, match="first two"):
        CharTokenizer(vocabulary=["a", "<pad>", "<unk>"])
    with pytest.raises(ValueError, match="sequence_length"):
        CharTokenizer(sequence_length=0)
    with pytest.raises(ValueError, match="int32"):
        CharTokenizer(vocabulary=["a"]).tokenize(tf.constant([1, 2]))
    with pytest.raises(ValueError, match=r"\[2, 2, 2\]|\(2, 2, 2\)"):
        CharTokenizer(vocabulary=["a"]).tokenize(tf.fill([2, 2, 2], "a"))
    with pytest.raises(ValueError, match="no tokens"):
        CharTokenizer().adapt(["", ""])


def test_adapt_from_dataset_files_and_globs(write, tmp_path):
    expected = ["<pad>", "<unk>", "\n", "x", "y", "z"]
    scalar_ds = tf.data.Dataset.from_tensor_slices(["xy\n", "z"])
    for data in (scalar_ds, scalar_ds.batch(2), iter(["xy\n", "z"]), tf.constant(["xy\n", "z"])):
        tok = CharTokenizer()
        tok.adapt(data)
        assert tok.vocabulary == expected
    write("a.txt", "xy\n")
    write("b.txt", "z")
    for data in (str(tmp_path / "*.txt"), [tmp_path / "a.txt", tmp_path / "b.txt"]):
        tok = CharTokenizer()
        tok.adapt(data)
        assert tok.vocabulary == expected
    with pytest.raises(ValueError, match="element_spec"):
        CharTokenizer().adapt(tf.data.Dataset.range(3))


def test_factory():
    assert isinstance(tokenizer_from_name("char"), CharTokenizer)
    with pytest.raises(ValueError, match="'sentencepiece'.*'char', 'word', 'subword', 'bpe'"):
        tokenizer_from_name("sentencepiece")


def test_megabyte_tokenizes_fast(synthetic_text):
    text = synthetic_text(1_100_000)
    tok = CharTokenizer()
    start = time.perf_counter()
    tok.adapt([text])
    ids = tok.tokenize(text)
    back = tok.detokenize(ids)
    elapsed = time.perf_counter() - start
    assert back.numpy().decode() == text
    assert elapsed < 5.0, f"adapt + tokenize + detokenize of 1.1 MB took {elapsed:.2f} s"
