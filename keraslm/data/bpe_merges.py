"""Byte-pair merges applied to many words at once, in the TF graph (stock ops, one ``tf.while_loop``).

GPT-2's rule for one word (a list of symbols): find the adjacent pair with the
lowest merge rank, replace every non-overlapping occurrence of it, left to
right, by the merged symbol, and repeat until no adjacent pair has a rank.
``apply_merges`` runs that rule for all words in parallel: each step looks up
the rank of every adjacent pair in a hash table, takes each word's lowest rank
and merges all its occurrences in that word (in a run of identical pairs,
``a a a``, the 1st, 3rd, ... occurrence: left to right without overlap). Words
with nothing left to merge leave the loop, so a long word costs its own steps
only, not everyone's.
"""

from __future__ import annotations

import tensorflow as tf

NO_MERGE = tf.int64.max  # the packed value of a pair that is not in the merge table
_ID_BITS = 32
_ID_MASK = (1 << _ID_BITS) - 1


def merge_table(merges, vocab_size):
    """The pair -> (rank, merged id) hash table.

    Args:
        merges: ``(left_id, right_id, merged_id)`` triples, lowest rank first.
        vocab_size: V; a pair's key is ``left * V + right``.

    Returns:
        ``tf.lookup.StaticHashTable`` int64 -> int64 with values
        ``rank << 32 | merged_id`` (so the smallest value is the lowest rank),
        default ``NO_MERGE``.
    """
    if not merges:  # StaticHashTable needs one entry; a key no pair can have
        keys, values = [-1], [NO_MERGE]
    else:
        keys = [left * vocab_size + right for left, right, _ in merges]
        values = [(rank << _ID_BITS) | merged for rank, (_, _, merged) in enumerate(merges)]
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.int64), tf.constant(values, tf.int64)),
        default_value=NO_MERGE)


@tf.autograph.experimental.do_not_convert
def apply_merges(symbols, table, vocab_size):
    """Merges the symbols of every word until no pair is in the table.

    Args:
        symbols: int32 ``tf.RaggedTensor`` ``[N, None]``: each word's symbol ids.
        table: the table of ``merge_table``.
        vocab_size: V, as given to ``merge_table``.

    Returns:
        int32 ``tf.RaggedTensor`` ``[N, None]``: each word's token ids.

    Example:
        >>> # ids: a=0 b=1 c=2 ab=3 abc=4; merges (a b) then (ab c)
        >>> table = merge_table([(0, 1, 3), (3, 2, 4)], vocab_size=5)
        >>> apply_merges(tf.ragged.constant([[0, 1, 2], [0, 0, 1, 1], [2]]), table, 5).to_list()
        [[4], [0, 3, 1], [2]]
    """
    n_words = symbols.nrows(out_type=tf.int32)

    def step(i, vals, word, out_vals, out_words):
        # vals, word: [M] the symbols of the words still merging and the word each belongs to.
        n = tf.shape(vals)[0]  # not tf.size: grappler folds that to its first value inside a loop
        pair = tf.concat([tf.equal(word[1:], word[:-1]), [False]], 0)  # [M] a pair of one word starts here
        keys = vals * vocab_size + tf.concat([vals[1:], [0]], 0)  # [M] left * V + right
        packed = tf.where(pair, table.lookup(keys), NO_MERGE)  # [M] rank << 32 | merged id
        best = tf.gather(tf.math.unsorted_segment_min(packed, word, n_words), word)  # [M] the word's best pair
        done = tf.equal(best, NO_MERGE)  # [M] the word has nothing left to merge
        finished = tf.where(done)[:, 0]
        out_vals = out_vals.write(i, tf.gather(vals, finished))
        out_words = out_words.write(i, tf.gather(word, finished))
        hit = tf.equal(packed, best) & ~done  # [M] occurrences of the word's best pair
        # Consecutive hits are one run of a repeated symbol (a a a): merge the 1st, 3rd, ... of the run.
        pos = tf.range(n)
        run = tf.cumsum(tf.cast(~hit, tf.int32))  # [M] constant along a run of hits
        run_start = tf.math.unsorted_segment_min(tf.where(hit, pos, n), run, n + 1)
        merge = hit & tf.equal((pos - tf.gather(run_start, run)) % 2, 0)  # [M]
        vals = tf.where(merge, best & _ID_MASK, vals)
        absorbed = tf.concat([[False], merge[:-1]], 0)  # [M] right halves of merged pairs
        keep = tf.where(~(absorbed | done))[:, 0]
        return i + 1, tf.gather(vals, keep), tf.gather(word, keep), out_vals, out_words

    def array(dtype):
        return tf.TensorArray(dtype, size=1, dynamic_size=True, infer_shape=False, element_shape=[None])

    word = tf.cast(symbols.value_rowids(), tf.int32)
    state = (1, tf.cast(symbols.flat_values, tf.int64), word,
             array(tf.int64).write(0, tf.zeros([0], tf.int64)), array(tf.int32).write(0, tf.zeros([0], tf.int32)))
    none = tf.TensorShape([None])
    state = tf.while_loop(lambda i, vals, *_: tf.shape(vals)[0] > 0, step, state,
                          shape_invariants=(tf.TensorShape([]), none, none, tf.TensorShape(None), tf.TensorShape(None)))
    vals, word = state[3].concat(), state[4].concat()  # each word's symbols together, words in finishing order
    order = tf.argsort(word, stable=True)
    rows = tf.cast(tf.gather(word, order), tf.int64)
    return tf.RaggedTensor.from_value_rowids(tf.cast(tf.gather(vals, order), tf.int32), rows,
                                             nrows=tf.cast(n_words, tf.int64))  # [N, None]
