"""Language-model metrics: perplexity and bits per token, from logits."""

from __future__ import annotations

import math

import keras
import tensorflow as tf


class _TokenNLL(keras.metrics.Metric):
    """Accumulates the summed negative log-likelihood (nats) and the token count."""

    def __init__(self, name, ignore_id=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_id = ignore_id
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        logits = tf.cast(y_pred, tf.float32)
        # log(sum(exp(logits))) - logits[label]: the cross-entropy without the softmax gradient that
        # TF's fused cross-entropy op also computes (a sizeable cost for a 10k-word vocabulary).
        if y_true.shape.rank is not None and y_true.shape.rank == logits.shape.rank:
            y_true = tf.squeeze(y_true, -1)                                   # [..., 1] labels
        if y_true.shape.rank is None:
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_true, logits=logits)
        else:
            nll = tf.reduce_logsumexp(logits, -1) - tf.gather(logits, y_true, batch_dims=y_true.shape.rank)
        weight = tf.ones_like(nll)
        if self.ignore_id is not None:
            weight *= tf.cast(tf.not_equal(y_true, self.ignore_id), nll.dtype)
        if sample_weight is not None:
            weight *= tf.cast(tf.broadcast_to(sample_weight, tf.shape(nll)), nll.dtype)
        self.total.assign_add(tf.cast(tf.reduce_sum(nll * weight), tf.float64))
        self.count.assign_add(tf.cast(tf.reduce_sum(weight), tf.float64))

    def mean_nll(self):
        return self.total / tf.maximum(self.count, 1.0)

    def get_config(self):
        return {"name": self.name, "ignore_id": self.ignore_id}


@keras.saving.register_keras_serializable(package="keraslm")
class Perplexity(_TokenNLL):
    """``exp(mean token cross-entropy)`` over everything seen since the last reset.

    Args:
        ignore_id: optional label id (padding) left out of the average.

    Example:
        >>> import numpy as np
        >>> m = Perplexity()
        >>> m.update_state(np.array([[0, 1]]), np.zeros((1, 2, 4), np.float32))
        >>> round(float(m.result()), 4)   # uniform over 4 tokens
        4.0
    """

    def __init__(self, name="perplexity", ignore_id=None, **kwargs):
        super().__init__(name=name, ignore_id=ignore_id, **kwargs)

    def result(self):
        return tf.cast(tf.exp(self.mean_nll()), tf.float32)


@keras.saving.register_keras_serializable(package="keraslm")
class BitsPerToken(_TokenNLL):
    """Mean token cross-entropy in bits (``nats / ln 2``); bits per character for char models.

    Example:
        >>> import numpy as np
        >>> m = BitsPerToken()
        >>> m.update_state(np.array([[0, 1]]), np.zeros((1, 2, 4), np.float32))
        >>> round(float(m.result()), 4)
        2.0
    """

    def __init__(self, name="bits_per_token", ignore_id=None, **kwargs):
        super().__init__(name=name, ignore_id=ignore_id, **kwargs)

    def result(self):
        return tf.cast(self.mean_nll() / math.log(2.0), tf.float32)
