"""Language-model loss and metrics: token cross-entropy, perplexity and bits per token, from logits.

Inside one traced training or evaluation step, :class:`TokenCrossEntropy`
leaves its per-token NLL for the metrics of this module, which reuse it when
they are given the same labels and logits; otherwise (eager calls, other
losses) they compute it themselves.  For a 10k-word vocabulary the log-softmax
over the logits is a sizeable part of a recurrent model's step.
"""

from __future__ import annotations

import math
import weakref

import keras
import tensorflow as tf

# graph -> (labels, logits, per-token NLL) of the latest TokenCrossEntropy call traced in it.
_latest_nll = weakref.WeakKeyDictionary()


def _squeeze_labels(y_true, logits):
    """Sparse labels ``[...]`` (a trailing axis of 1 is dropped) as int32."""
    y_true = tf.cast(y_true, tf.int32)
    if y_true.shape.rank is not None and y_true.shape.rank == logits.shape.rank:
        y_true = tf.squeeze(y_true, -1)                                       # [..., 1] labels
    return y_true


def _shared_nll(y_true, y_pred):
    """The NLL TokenCrossEntropy computed for these very tensors in the graph being traced, else None."""
    if not tf.inside_function():
        return None
    entry = _latest_nll.get(tf.compat.v1.get_default_graph())
    if entry is not None and entry[0] is y_true and entry[1] is y_pred:
        return entry[2]
    return None


@tf.custom_gradient
def _token_nll(logits, labels):
    """``logsumexp(logits) - logits[label]`` per token, and its gradient ``softmax - onehot``.

    On CPU this is faster than TF's fused ``SparseSoftmaxCrossEntropyWithLogits``
    (README, "Training throughput"), which also pays for a gradient it computes
    whether asked or not.
    """
    top = tf.stop_gradient(tf.reduce_max(logits, -1, keepdims=True))      # [..., 1]
    e = tf.exp(logits - top)                                               # [..., V]
    total = tf.reduce_sum(e, -1, keepdims=True)                            # [..., 1]
    picked = tf.gather(logits, labels, batch_dims=labels.shape.rank)       # [...] (raises on a bad label)
    nll = tf.squeeze(tf.math.log(total) + top, -1) - picked

    def grad(dnll):
        onehot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
        return (e / total - onehot) * dnll[..., None], None

    return nll, grad


@keras.saving.register_keras_serializable(package="keraslm")
class TokenCrossEntropy(keras.losses.Loss):
    """Sparse cross-entropy from logits (``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``),
    whose per-token values :class:`Perplexity` and :class:`BitsPerToken` reuse in the same step.

    Args:
        sum_over_time: sum each sequence's per-token losses over its ``T`` positions, then average
            over the batch (Zaremba et al. 2014's loss, whose gradient is ``T`` times the
            per-token mean's); default: the mean over every token.

    Example:
        >>> import numpy as np
        >>> loss = TokenCrossEntropy()
        >>> round(float(loss(np.array([[0, 1]]), np.zeros((1, 2, 4), np.float32))), 4)   # log 4
        1.3863
        >>> round(float(TokenCrossEntropy(sum_over_time=True)(np.array([[0, 1]]), np.zeros((1, 2, 4)))), 4)
        2.7726
    """

    def __init__(self, name="token_cross_entropy", reduction="sum_over_batch_size", dtype=None, sum_over_time=False):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.sum_over_time = bool(sum_over_time)

    def __call__(self, y_true, y_pred, sample_weight=None):
        self._inputs = (y_true, y_pred)          # as given, before Keras converts them
        try:
            return super().__call__(y_true, y_pred, sample_weight)
        finally:
            self._inputs = None

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        labels = _squeeze_labels(y_true, logits)
        if labels.shape.rank is None:
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        else:
            nll = _token_nll(logits, labels)                                   # [...]
        inputs = getattr(self, "_inputs", None)
        if inputs is not None and tf.inside_function():
            _latest_nll[tf.compat.v1.get_default_graph()] = (*inputs, tf.stop_gradient(nll))
        return tf.reduce_sum(nll, -1) if self.sum_over_time else nll            # [B] or [B, T]

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "sum_over_time": self.sum_over_time}


class _TokenNLL(keras.metrics.Metric):
    """Accumulates the summed negative log-likelihood (nats) and the token count."""

    def __init__(self, name, ignore_id=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_id = ignore_id
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        nll = _shared_nll(y_true, y_pred)                                     # the loss's, this step
        logits = tf.cast(y_pred, tf.float32)
        y_true = _squeeze_labels(y_true, logits)
        if nll is None and y_true.shape.rank is None:
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_true, logits=logits)
        elif nll is None:
            # log(sum(exp(logits))) - logits[label]: the cross-entropy without the softmax gradient
            # that TF's fused cross-entropy op also computes.
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
