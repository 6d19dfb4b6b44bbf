"""Layer normalisation over the last axis (the transformer blocks' ``ln_1`` / ``ln_2``)."""

from __future__ import annotations

import tensorflow as tf

from keraslm.ops import _loader


def layer_norm_reference(x, gamma, beta=None, epsilon=1e-5):
    """Pure-TF layer normalisation: ``(x - mean) / sqrt(var + epsilon) * gamma + beta`` over the last axis.

    ``gamma`` and ``beta`` must be ``[C]``; they are never broadcast (sizes
    known only at run time are checked there, or when XLA compiles the
    function)."""
    x = tf.convert_to_tensor(x)
    gamma = _feature_vector(x, tf.convert_to_tensor(gamma), "gamma")
    beta = None if beta is None else _feature_vector(x, tf.convert_to_tensor(beta), "beta")
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    y = (x - mean) * tf.math.rsqrt(var + epsilon) * gamma
    return y if beta is None else y + beta


def _feature_vector(x, t, name):
    """``t`` as a ``[C]`` vector (C = the last axis of ``x``), checked when its shape is not statically right."""
    if x.shape.rank is not None and x.shape[-1] is not None and t.shape == [x.shape[-1]]:
        return t
    C = tf.shape(x)[-1:]                                                   # [1]
    checks = [] if _loader.in_xla_context() else [  # (inside XLA the reshape fails to compile instead)
        tf.debugging.Assert(tf.equal(tf.rank(t), 1) & tf.equal(tf.size(t), C[0]),
                            [f"{name} must have shape [C] (the last axis of x); C =", C[0], "got shape", tf.shape(t)])]
    with tf.control_dependencies(checks):
        return tf.reshape(t, C)


def layer_norm(x, gamma, beta=None, epsilon=1e-5, name=None):
    """Layer normalisation over the last axis of ``x`` (Keras ``LayerNormalization`` maths).

    The custom op makes one pass over ``x`` forward and one backward (the
    gradient with respect to ``x``, ``gamma`` and ``beta`` together), also
    inside ``jit_compile`` functions (an XLA custom call); the reference is
    :func:`layer_norm_reference`. Both agree to float32 rounding.

    Args:
        x: ``[..., C]`` float32.
        gamma: ``[C]`` float32 scale.
        beta: optional ``[C]`` float32 offset.
        epsilon: positive variance floor.

    Raises:
        ValueError: statically known bad dtypes, shapes or epsilon
            (``tf.errors.InvalidArgumentError`` for shapes known only at run time).

    Example:
        >>> import tensorflow as tf, keraslm
        >>> y = keraslm.ops.layer_norm(tf.constant([[1.0, 2.0, 3.0]]), tf.ones([3]), tf.zeros([3]))
        >>> [round(v, 4) for v in y.numpy()[0].tolist()]
        [-1.2247, 0.0, 1.2247]
    """
    with tf.name_scope(name or "layer_norm"):
        x, gamma = tf.convert_to_tensor(x), tf.convert_to_tensor(gamma)
        beta = None if beta is None else tf.convert_to_tensor(beta)
        for t, n in ((x, "x"), (gamma, "gamma"), (beta, "beta")):
            if t is not None and t.dtype != tf.float32:
                raise ValueError(f"{n} must be float32, got {t.dtype.name}")
        if not (isinstance(epsilon, (int, float)) and epsilon > 0 and epsilon < float("inf")):
            raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
        if x.shape.rank == 0:
            raise ValueError("x must have rank >= 1 [..., C], got a scalar")
        C = x.shape[-1] if x.shape.rank is not None else None
        for t, n in ((gamma, "gamma"), (beta, "beta")):
            if t is not None and t.shape.rank is not None and (t.shape.rank != 1 or (C is not None and t.shape[0] not in (None, C))):
                raise ValueError(f"{n} must have shape [{C}] (the last axis of x {x.shape}), got {t.shape}")

        if not _loader.use_custom("layer_norm", xla_lowering=_loader.has_xla_lowering("layer_norm")):
            return layer_norm_reference(x, gamma, beta, epsilon)
        lib = _loader.op_library()
        y, _, _ = lib.keraslm_layer_norm(x, gamma, beta if beta is not None else tf.zeros([0], tf.float32),
                                         epsilon=float(epsilon), use_beta=beta is not None)
        return y


@tf.RegisterGradient("Keraslm>LayerNorm")
def _layer_norm_grad(op, dy, dmean, drstd):
    # mean and rstd are auxiliary outputs for the backward pass; nothing
    # differentiates through them (layer_norm returns y only).
    x, gamma, _ = op.inputs
    _, mean, rstd = op.outputs
    use_beta = op.get_attr("use_beta")
    dx, dgamma, dbeta = _loader.op_library().keraslm_layer_norm_grad(dy, x, gamma, mean, rstd, use_beta=use_beta)
    return dx, dgamma, dbeta if use_beta else None


tf.no_gradient("Keraslm>LayerNormGrad")
