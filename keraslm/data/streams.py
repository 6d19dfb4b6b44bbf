"""Contiguous streams: the batches of stateful truncated backpropagation through time (Zaremba et al. 2014).

The token sequence is cut into ``batch_size`` contiguous streams of ``L = N // batch_size`` tokens
(the last ``N % batch_size`` tokens are left out), laid side by side as the rows of a ``[B, L]``
array. Batch ``k`` of an epoch is the ``k``-th window of every stream:
``x = streams[:, k*T:(k+1)*T]``, ``y = streams[:, k*T+1:(k+1)*T+1]``, for ``(L - 1) // T`` windows
per epoch (TensorFlow's ``ptb_producer``, Zaremba's ``ptb.lua``). Row ``b`` of batch ``k + 1``
continues row ``b`` of batch ``k``, so a model can carry its state from one batch to the next.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keraslm.validation import positive_int


def stream_layout(tokens, batch_size):
    """The ``[batch_size, N // batch_size]`` int32 array of the streams of ``tokens``.

    Example:
        >>> stream_layout(np.arange(7), 2).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    positive_int("batch_size", batch_size)
    tokens = np.asarray(tokens, np.int32).reshape(-1)
    length = tokens.size // batch_size
    return tokens[: batch_size * length].reshape(batch_size, length)


def stream_steps_per_epoch(n_tokens, batch_size, block_size):
    """Windows per pass over the streams of ``n_tokens`` tokens: ``(n_tokens // batch_size - 1) // block_size``.

    Example:
        >>> stream_steps_per_epoch(929589, 20, 20)     # Penn Treebank's training text, Zaremba's "small"
        2323
    """
    positive_int("batch_size", batch_size)
    positive_int("block_size", block_size)
    return max(int(n_tokens) // batch_size - 1, 0) // block_size


def stream_batches(tokens, *, batch_size, block_size, start_step=0):
    """An endless dataset of ``(x, y)`` windows of the streams, epoch after epoch, in order.

    Batch ``s`` is window ``s % steps_per_epoch`` of every stream, so the batches are a function
    of the step: a run resumed at step ``s`` (``start_step=s``) continues exactly where it stopped.

    Args:
        tokens: 1-D int array of token ids.
        batch_size: streams ``B``.
        block_size: window length ``T``.
        start_step: index of the first batch.

    Returns:
        ``tf.data.Dataset`` of ``(x [B, T], y [B, T])`` int32.

    Raises:
        ValueError: fewer tokens than one window of every stream needs.

    Example:
        >>> ds = stream_batches(np.arange(14), batch_size=2, block_size=3)
        >>> [x.numpy().tolist() for x, _ in ds.take(3)]      # 2 windows per epoch, then again
        [[[0, 1, 2], [7, 8, 9]], [[3, 4, 5], [10, 11, 12]], [[0, 1, 2], [7, 8, 9]]]
    """
    streams = stream_layout(tokens, batch_size)
    steps = stream_steps_per_epoch(np.asarray(tokens).size, batch_size, block_size)
    if steps < 1:
        raise ValueError(f"corpus too small for batch_size={batch_size} streams of block_size={block_size}: "
                         f"{np.asarray(tokens).size} token(s), need at least {batch_size * (block_size + 1)}")
    data = tf.constant(streams[:, : steps * block_size + 1])                   # [B, E * T + 1]

    def batch(step):
        start = (step % steps) * block_size
        window = data[:, start:start + block_size + 1]                          # [B, T + 1]
        return window[:, :-1], window[:, 1:]

    index = tf.data.Dataset.range(int(start_step), np.iinfo(np.int64).max)
    return index.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
