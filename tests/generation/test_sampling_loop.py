"""The decoding loop driven by a fake model whose next() returns fixed logits (no layers, no weights).

The loop sees only the contract ``init_cache(B, S)`` / ``next(ids, cache, index, valid=None)``, so a
table of logits is enough to check what it does with them: greedy picks, the positions it feeds, stop
tokens, per-row settings and the sampled frequencies.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keraslm.generation import generate


class FakeLM:
    """Logits from a fixed table: row ``table[last_token]`` (or ``by_position[index]``), the cache is a
    per-row record of the positions fed so far (to check the loop's bookkeeping)."""

    tokenizer = None

    def __init__(self, table=None, by_position=None, max_length=None):
        self.table = None if table is None else tf.constant(table, tf.float32)                      # [V, V]
        self.by_position = None if by_position is None else tf.constant(by_position, tf.float32)    # [S, V]
        logits = table if table is not None else by_position
        self.vocab_size = int(np.shape(logits)[1])
        self.max_length = max_length

    def init_cache(self, batch_size, max_length):
        return tf.zeros(tf.stack([batch_size]), tf.int32)                    # [B] tokens seen per row

    def next(self, ids, cache, index, valid=None):
        T = tf.shape(ids)[1]
        positions = tf.cast(index, tf.int32)[:, None] + tf.range(T)[None, :]   # [B, T]
        if self.table is not None:
            logits = tf.gather(self.table, ids)                              # [B, T, V]
        else:
            logits = tf.gather(self.by_position, positions)                  # [B, T, V]
        fed = T if valid is None else tf.cast(valid, tf.int32)
        return logits, tf.maximum(cache, positions[:, 0] + fed)


def _shift_table(V):
    """next token = last + 1 (mod V), by a wide margin."""
    table = np.full((V, V), -5.0, np.float32)
    table[np.arange(V), (np.arange(V) + 1) % V] = 5.0
    return table


def test_greedy_follows_the_table():
    model = FakeLM(_shift_table(7))
    assert generate(model, [3], max_new_tokens=6, temperature=0) == [4, 5, 6, 0, 1, 2]
    assert generate(model, [[0], [5, 2]], max_new_tokens=3, temperature=0) == [[1, 2, 3], [3, 4, 5]]


def test_positions_fed_by_the_loop():
    """Logits chosen by position: rows of different prompt lengths continue at their own positions."""
    V, S = 9, 12
    by_position = np.full((S, V), -9.0, np.float32)
    by_position[np.arange(S), np.arange(S) % V] = 9.0                       # position p predicts token p % V
    model = FakeLM(by_position=by_position, max_length=S)
    out = generate(model, [[1, 1, 1], [2]], max_new_tokens=4, temperature=0)
    # the token after position p is predicted by the logits at p: a prompt of length L yields L-1, L, ...
    assert out == [[2, 3, 4, 5], [0, 1, 2, 3]]


def test_stop_token_ends_a_row_and_is_kept():
    model = FakeLM(_shift_table(7))
    out = generate(model, [[0], [4]], max_new_tokens=6, temperature=0, stop=[3])
    assert out == [[1, 2, 3], [5, 6, 0, 1, 2, 3]]
    # one list per prompt: row 0 stops at 5 or 2, whichever comes first; row 1 has no stop
    out = generate(model, [[0], [4]], max_new_tokens=4, temperature=0, stop=[[5, 2], []])
    assert out == [[1, 2], [5, 6, 0, 1]]


def test_per_row_settings_and_logprobs():
    """Row 0 greedy, row 1 top-k 1 (greedy by filtering): both follow the table; logprobs are the
    final distribution's (0 for a greedy row and for a one-token kept set)."""
    model = FakeLM(_shift_table(5))
    details = generate(model, [[0], [2]], max_new_tokens=3, temperature=[0.0, 1.0], top_k=[0, 1], seed=3,
                       return_details=True)
    assert details["ids"] == [[1, 2, 3], [3, 4, 0]]
    np.testing.assert_allclose(np.array(details["logprobs"], np.float64), 0.0, atol=1e-6)


@pytest.mark.parametrize("settings, probs", [
    ({}, [0.5, 0.3, 0.2]),
    ({"temperature": 2.0}, np.sqrt([0.5, 0.3, 0.2]) / np.sqrt([0.5, 0.3, 0.2]).sum()),
    ({"top_p": 0.6}, [0.5 / 0.8, 0.3 / 0.8, 0.0]),
    ({"top_k": 1}, [1.0, 0.0, 0.0]),
])
def test_sampled_frequencies(settings, probs):
    """One new token for 4,000 rows of the same prompt: the counts fit the filtered distribution."""
    logits = np.log(np.array([[0.5, 0.3, 0.2]], np.float32)).repeat(3, 0)   # any last token -> same row
    model = FakeLM(logits)
    n = 4000
    ids = np.array(generate(model, [[0]] * n, max_new_tokens=1, seed=11, **settings)).ravel()
    counts = np.bincount(ids, minlength=3)
    probs = np.asarray(probs, np.float64)
    assert counts[probs == 0].sum() == 0
    kept = probs > 0
    if kept.sum() > 1:
        _, p = stats.chisquare(counts[kept], probs[kept] / probs[kept].sum() * n)
        assert p > 1e-3, (counts, probs)


def test_same_seed_same_draws_different_seed_differs():
    logits = np.zeros((4, 4), np.float32)
    model = FakeLM(logits)
    a = generate(model, [[0]] * 8, max_new_tokens=10, seed=5)
    assert a == generate(model, [[0]] * 8, max_new_tokens=10, seed=5)
    assert a != generate(model, [[0]] * 8, max_new_tokens=10, seed=6)
