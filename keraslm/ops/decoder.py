"""One decoding step of a GPT block, fused into one op (inference only)."""

from __future__ import annotations

import math

import tensorflow as tf

from keraslm.ops import _loader
from keraslm.ops.attention import attention_reference
from keraslm.validation import assert_all, int32_tensor


def decoder_block_step(x, k_cache, v_cache, index, key_lengths, *, num_heads, ln_1, c_attn, c_proj, ln_2,
                       mlp_c_fc, mlp_c_proj, epsilon=1e-5, in_place=False, name=None):
    """A pre-LayerNorm GPT block (GPT-2's ``h.N``) for one new token per row, with its KV cache.

    Computes ``x1 = x + c_proj(attn(ln_1(x)))`` and
    ``y = x1 + mlp_c_proj(gelu_tanh(mlp_c_fc(ln_2(x1))))``, where the new
    token's key and value are written at row ``index[b]`` of the caches and
    row ``b`` attends to its first ``key_lengths[b]`` cached keys.

    One decoding step of a small model is dominated by the framework's cost
    of its ~40 small ops per block; the custom op does the whole block in one
    call (same kernels as :func:`keraslm.ops.linear` and
    :func:`keraslm.ops.attention`). The reference is the same maths in stock
    TF ops. There is no gradient: this is for decoding.

    Args:
        x: ``[B, C]`` float32, ``C = num_heads * D``.
        k_cache, v_cache: ``[B, S, Hkv, D]`` float32.
        index: ``[B]`` int32 cache row of the new token, in ``[0, S)``.
        key_lengths: ``[B]`` int32 keys each row attends to, in ``[0, S]``
            (normally ``index + 1``).
        num_heads: query heads H (a multiple of Hkv).
        ln_1, ln_2: ``(gamma [C], beta [C] or None)``.
        c_attn: ``(kernel [C, (H + 2 Hkv) D], bias or None)``, columns ``[q | k | v]``.
        c_proj: ``(kernel [C, C], bias or None)``.
        mlp_c_fc: ``(kernel [C, F], bias or None)``; mlp_c_proj: ``(kernel [F, C], bias or None)``.
            Biases (and betas) must be all given or all None. The four kernels are float32, or all
            four bfloat16: decoding reads every weight once per token, so bfloat16 copies of the
            kernels halve the bytes a step reads (the products still accumulate in float32; the
            reference widens them to float32, which is exact).
        epsilon: LayerNorm epsilon.
        in_place: write the new key/value into the cache buffers themselves,
            for callers that own their cache and never read an older version
            of it (the decoding loops); otherwise the inputs are unchanged.
            The two caches must then be distinct buffers that nothing else
            holds: inside a ``tf.function``, create them with
            ``tf.raw_ops.Empty(..., init=True)`` (as ``init_cache`` does), not
            from constants, which TF may fold into one shared buffer.
        name: optional op name.

    Returns:
        ``(y [B, C], k_cache, v_cache)``.

    Raises:
        ValueError: statically known bad dtypes, or biases given for only some layers.
        tf.errors.InvalidArgumentError: bad shapes or out-of-range index / key_lengths (at run time).
            Inside ``jit_compile`` functions the custom op lowers to an XLA
            custom call with the same checks (shapes when XLA compiles the
            function, index and key_lengths when it runs; the cache results
            are then new buffers that XLA may share with the inputs, so
            ``in_place`` changes nothing there). The pure-TF reference cannot
            raise inside XLA, which drops assertions: there an out-of-range
            index writes no cache row and out-of-range key lengths are
            clipped to the cache.
    """
    with tf.name_scope(name or "decoder_block_step"):
        weights = [ln_1, c_attn, c_proj, ln_2, mlp_c_fc, mlp_c_proj]
        with_bias = [w[1] is not None for w in weights]
        if any(with_bias) and not all(with_bias):
            raise ValueError("decoder_block_step: give every bias and LayerNorm beta, or none of them")
        use_bias = all(with_bias)
        x, k_cache, v_cache = (tf.convert_to_tensor(t) for t in (x, k_cache, v_cache))
        for t, n in ((x, "x"), (k_cache, "k_cache"), (v_cache, "v_cache")):
            if t.dtype != tf.float32:
                raise ValueError(f"{n} must be float32, got {t.dtype.name}")
        kernels = [w[0] if isinstance(w[0], (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(w[0], tf.float32)
                   for w in weights[1:3] + weights[4:]]   # (non-TF values: float32, as the op would take them)
        kernel_dtypes = {k.dtype for k in kernels}
        if kernel_dtypes not in ({tf.float32}, {tf.bfloat16}):
            raise ValueError("decoder_block_step: the four kernels must all be float32 or all bfloat16, got "
                             + ", ".join(k.dtype.name for k in kernels))
        weights = [weights[0], (kernels[0], weights[1][1]), (kernels[1], weights[2][1]), weights[3],
                   (kernels[2], weights[4][1]), (kernels[3], weights[5][1])]
        index = int32_tensor(index, "index")
        key_lengths = int32_tensor(key_lengths, "key_lengths")
        if not _loader.use_custom("decoder_block_step",
                                  xla_lowering=_loader.has_xla_lowering("decoder_block_step")):
            return _reference(x, k_cache, v_cache, index, key_lengths, num_heads, weights, use_bias, epsilon,
                              in_place)
        empty = tf.zeros([0], tf.float32)
        flat = []
        for w, b in weights:
            flat += [w, b if use_bias else empty]
        return _loader.op_library().keraslm_decoder_block_step(
            x, k_cache, v_cache, index, key_lengths, *flat, num_heads=int(num_heads), epsilon=float(epsilon),
            use_bias=use_bias, in_place=bool(in_place))


def _reference(x, k_cache, v_cache, index, key_lengths, H, weights, use_bias, eps, in_place):
    (g1, b1), (w_qkv, b_qkv), (w_o, b_o), (g2, b2), (w_fc, b_fc), (w_proj, b_proj) = weights

    def layer_norm(t, gamma, beta):
        mean, var = tf.nn.moments(t, [-1], keepdims=True)
        t = (t - mean) * tf.math.rsqrt(var + eps) * gamma
        return t + beta if use_bias else t

    def dense(t, w, b):
        t = tf.matmul(t, tf.cast(w, tf.float32))
        return t + b if use_bias else t

    B, S = tf.shape(k_cache)[0], tf.shape(k_cache)[1]
    Hkv, D = k_cache.shape[2], k_cache.shape[3]
    if Hkv is None or D is None:
        Hkv, D = tf.shape(k_cache)[2], tf.shape(k_cache)[3]
    C = H * D
    qkv = dense(layer_norm(x, g1, b1), w_qkv, b_qkv)                        # [B, (H + 2 Hkv) D]
    q = tf.reshape(qkv[:, :C], [B, 1, H, D])
    k = tf.reshape(qkv[:, C: C + Hkv * D], [B, Hkv, D])
    v = tf.reshape(qkv[:, C + Hkv * D:], [B, Hkv, D])
    xla = _loader.in_xla_context()
    checks = [] if xla else [  # (XLA drops assertions: there the writes below skip a bad index)
        assert_all((index >= 0) & (index < S), index, "index", "must be in [0, S)", extra=("with S =", S)),
        assert_all((key_lengths >= 0) & (key_lengths <= S), key_lengths, "key_lengths", "must be in [0, S]",
                   extra=("with S =", S))]
    with tf.control_dependencies(checks):
        rows = tf.range(B) * S + index                                      # [B] rows of [B * S, Hkv, D]
        index = tf.identity(index)
    flat = tf.stack([B * S, Hkv, D])

    def write(cache, new):
        if in_place and not xla:  # (XLA's InplaceUpdate would clamp a bad index; a scatter drops it)
            return tf.reshape(tf.raw_ops.InplaceUpdate(x=tf.reshape(cache, flat), i=rows, v=new), tf.shape(cache))
        return tf.tensor_scatter_nd_update(cache, tf.stack([tf.range(B), index], 1), new)

    k_cache, v_cache = write(k_cache, k), write(v_cache, v)
    scale = 1.0 / math.sqrt(D) if isinstance(D, int) else None
    a, _ = attention_reference(q, k_cache, v_cache, causal=True, key_lengths=key_lengths, scale=scale)
    x1 = x + dense(tf.reshape(a, [B, C]), w_o, b_o)
    h = tf.nn.gelu(dense(layer_norm(x1, g2, b2), w_fc, b_fc), approximate=True)
    return x1 + dense(h, w_proj, b_proj), k_cache, v_cache


@tf.RegisterGradient("Keraslm>DecoderBlockStep")
def _no_gradient(op, *grads):
    raise LookupError(
        "keraslm.ops.decoder_block_step has no gradient (it is a decoding op); train through the model's "
        "call(), or run with keraslm.ops.set_implementation('reference')")
