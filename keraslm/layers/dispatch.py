"""Run Keras ``Dense`` and ``LayerNormalization`` layers through :mod:`keraslm.ops` where that is faster.

The transformer layers keep ordinary Keras sublayers (their weights, names and
configs are Keras'); these helpers pick the op that computes them: the dense
decode kernel for one-token steps, bfloat16 products when the matmul precision
allows them, the fused layer norm for float32, else the Keras layer itself.
"""

from __future__ import annotations

import tensorflow as tf

from keraslm import ops


def dense(layer, x):
    """``layer(x)`` for a Keras ``Dense`` layer without activation.

    One-token steps (``x`` of static shape ``[B, 1, C]``, float32) go through
    :func:`keraslm.ops.linear`, which streams the weights once per token; other
    float32 inputs use bfloat16 products when the matmul precision allows it
    (:func:`keraslm.ops.set_matmul_precision`)."""
    if x.dtype == tf.float32 and layer.compute_dtype == "float32":
        if x.shape.rank == 3 and x.shape[1] == 1:
            return ops.linear(x, layer.kernel, layer.bias if layer.use_bias else None)
        y = ops.dense_matmul(x, layer.kernel)
        if y is not None:
            return y + layer.bias if layer.use_bias else y
    return layer(x)


def layer_norm(layer, x):
    """``layer(x)`` for a Keras ``LayerNormalization`` over the last axis; float32
    inputs go through :func:`keraslm.ops.layer_norm` (one fused pass forward and
    one backward with the custom ops, also inside XLA)."""
    if (x.dtype == tf.float32 and layer.compute_dtype == "float32" and layer.axis in (-1, [-1]) and layer.scale
            and not layer.rms_scaling):
        return ops.layer_norm(x, layer.gamma, layer.beta if layer.center else None, layer.epsilon)
    return layer(x)
