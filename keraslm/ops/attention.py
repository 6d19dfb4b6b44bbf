"""Fused causal attention: the TF custom op, its gradient, and the pure-TF reference.

Layout is ``[B, T, H, D]`` (batch, time, heads, head size). Keys and values may
have fewer heads than the queries (grouped / multi-query attention).
"""

from __future__ import annotations

import math

import tensorflow as tf

from keraslm.ops import _loader
from keraslm.validation import int32_tensor

_FLOAT_TYPES = (tf.float32, tf.bfloat16, tf.float16)


def attention(q, k, v, *, causal=False, key_lengths=None, scale=None, return_lse=False, name=None):
    """Scaled dot-product attention with an O(T)-memory fused kernel.

    Contract (shared by the custom op, the pure-TF reference and ``keraslm._C``):

    * ``q`` ``[B, Tq, H, D]``; ``k`` and ``v`` ``[B, Tk, Hkv, D]`` with
      ``H % Hkv == 0`` (query head ``h`` reads key/value head ``h // (H // Hkv)``)
      and ``1 <= D <= 256``.
    * ``causal=True`` aligns the mask bottom-right: query ``i`` sees keys
      ``j <= i + (Tk - Tq)``. Training and prefill (``Tq == Tk``) and KV-cache
      decode (``Tq = 1``, ``Tk`` = cache length) are the same call.
    * ``key_lengths`` ``[B]`` int32 masks keys ``j >= key_lengths[b]`` (right
      padding, e.g. a batch of prompts of different lengths).
    * A row that sees no key gets output 0, log-sum-exp ``-inf`` and zero
      gradient (never NaN).
    * NaN in, NaN out: a NaN in a query row, or in a key that the row can
      see, makes the row's output and log-sum-exp NaN (so does a score of
      ``+inf``); keys a row cannot see (causal mask, ``key_lengths``) do not
      matter, whatever they hold. Gradients of such rows are NaN. (A NaN or
      infinite value vector that a row cannot see only because of the causal
      mask may still reach it through ``0 * NaN`` in the products; past
      ``key_lengths`` nothing is read.)

    dtypes: float32 runs natively. bfloat16 and float16 inputs are converted to
    float32 at the op boundary (float32 accumulation) and the output is cast
    back; the log-sum-exp is always float32.

    Args:
        q: queries ``[B, Tq, H, D]``.
        k: keys ``[B, Tk, Hkv, D]``.
        v: values ``[B, Tk, Hkv, D]``.
        causal: bottom-right aligned causal mask.
        key_lengths: optional ``[B]`` int32 number of valid keys per row.
        scale: score scale; default ``1 / sqrt(D)``.
        return_lse: also return the per-row log-sum-exp ``[B, H, Tq]``.
        name: optional op name.

    Returns:
        ``out`` ``[B, Tq, H, D]`` in the dtype of ``q``, or ``(out, lse)`` when
        ``return_lse``.

    Raises:
        ValueError: statically known bad ranks, dtypes or sizes.
        tf.errors.InvalidArgumentError: bad shapes or key lengths found at run time.

    Example:
        >>> import tensorflow as tf, keraslm
        >>> q = tf.random.normal([2, 5, 4, 8]); kv = tf.random.normal([2, 5, 2, 8])
        >>> keraslm.ops.attention(q, kv, kv, causal=True).shape
        TensorShape([2, 5, 4, 8])
    """
    with tf.name_scope(name or "attention"):
        q = tf.convert_to_tensor(q)
        k = tf.convert_to_tensor(k)
        v = tf.convert_to_tensor(v)
        _static_checks(q, k, v, key_lengths)
        out_dtype = q.dtype
        q, k, v = (tf.cast(x, tf.float32) if x.dtype != tf.float32 else x for x in (q, k, v))
        if scale is None:
            d = q.shape[-1]
            scale = 1.0 / math.sqrt(d) if d is not None else tf.math.rsqrt(tf.cast(tf.shape(q)[-1], tf.float32))
        elif not isinstance(scale, (int, float)) and tf.get_static_value(scale) is not None:
            scale = float(tf.get_static_value(scale))
        use_lengths = key_lengths is not None
        if use_lengths:
            key_lengths = int32_tensor(key_lengths, "key_lengths")
        # Inside XLA the fused kernels run as custom calls where this build has the lowering.
        if _loader.use_custom("attention", xla_lowering=_loader.has_xla_lowering("attention")):
            if not isinstance(scale, (int, float)):
                # A scale known only at run time (e.g. 1/sqrt(D) with D unknown while tracing): the op takes
                # its scale as an attribute, so scale the queries instead (the gradient flows through).
                q, scale = q * tf.cast(scale, q.dtype), 1.0
            lib = _loader.op_library()
            out, lse = lib.keraslm_flash_attention(
                q, k, v, key_lengths if use_lengths else tf.zeros([0], tf.int32),
                causal=bool(causal), scale=float(scale), use_key_lengths=use_lengths)
        else:
            out, lse = attention_reference(q, k, v, causal=causal, key_lengths=key_lengths, scale=scale)
        if out_dtype != tf.float32:
            out = tf.cast(out, out_dtype)
        return (out, lse) if return_lse else out


def _static_checks(q, k, v, key_lengths):
    for t, n in ((q, "q"), (k, "k"), (v, "v")):
        if t.dtype not in _FLOAT_TYPES:
            raise ValueError(f"{n} must be float32, bfloat16 or float16, got {t.dtype.name}")
        if t.shape.rank is not None and t.shape.rank != 4:
            raise ValueError(f"{n} must have rank 4 [B, T, H, D], got shape {t.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share a dtype, got {q.dtype.name}, {k.dtype.name}, {v.dtype.name}")
    if q.shape.rank == 4 and k.shape.rank == 4:
        d, dk = q.shape[3], k.shape[3]
        if d is not None and dk is not None and d != dk:
            raise ValueError(f"k head size {dk} does not match q head size {d}")
        if d is not None and not 1 <= d <= 256:
            raise ValueError(f"head size D must be in [1, 256], got {d}")
        h, hkv = q.shape[2], k.shape[2]
        if h is not None and hkv is not None and (hkv < 1 or h % hkv):
            raise ValueError(f"number of query heads H={h} must be a positive multiple of the key/value heads Hkv={hkv}")
    if key_lengths is not None:
        dtype = tf.convert_to_tensor(key_lengths).dtype
        if not dtype.is_integer or dtype.is_bool:
            raise ValueError(f"key_lengths must be an integer tensor, got {dtype.name}")


def attention_reference(q, k, v, *, causal=False, key_lengths=None, scale=None):
    """The pure-TF reference of :func:`attention` (stock TF ops only, float32).

    Materialises the ``[B, Hkv, G, Tq, Tk]`` score tensor; differentiable by TF
    autodiff, NaN-free for rows with no visible key, NaN for rows that see a
    NaN (the contract of :func:`attention`). Exported models use it.

    Args:
        q, k, v, causal, key_lengths, scale: as in :func:`attention`.

    Returns:
        ``(out [B, Tq, H, D], lse [B, H, Tq])``.
    """
    q = tf.convert_to_tensor(q, tf.float32)
    k = tf.convert_to_tensor(k, tf.float32)
    v = tf.convert_to_tensor(v, tf.float32)
    shape_q = tf.shape(q)
    B, Tq, H, D = shape_q[0], shape_q[1], shape_q[2], shape_q[3]
    Tk, Hkv = tf.shape(k)[1], tf.shape(k)[2]
    if key_lengths is not None:
        key_lengths = int32_tensor(key_lengths, "key_lengths")
    # Run-time checks (XLA drops Assert ops, so they are only added outside it).
    checks = [] if _loader.in_xla_context() else _reference_checks(q, k, v, key_lengths)
    with tf.control_dependencies(checks):
        G = H // tf.maximum(Hkv, 1)
    if scale is None:
        scale = tf.math.rsqrt(tf.cast(D, tf.float32))
    qg = tf.reshape(q, [B, Tq, Hkv, G, D])                              # [B, Tq, Hkv, G, D]
    s = tf.einsum("bqkgd,bskd->bkgqs", qg, k) * scale                   # [B, Hkv, G, Tq, Tk]
    visible = tf.ones([B, 1, 1, Tq, Tk], tf.bool)                       # [B, 1, 1, Tq, Tk]
    if causal:
        i = tf.range(Tq)[:, None]
        j = tf.range(Tk)[None, :]
        visible = tf.logical_and(visible, (j <= i + (Tk - Tq))[None, None, None])
    if key_lengths is not None:
        live = tf.range(Tk)[None, :] < key_lengths[:, None]            # [B, Tk]
        visible = tf.logical_and(visible, live[:, None, None, None, :])
        v = tf.where(live[:, :, None, None], v, tf.zeros_like(v))       # past the lengths: never read
    neg_inf = tf.constant(-math.inf, tf.float32)
    s = tf.where(visible, s, neg_inf)                                   # masked scores: -inf, even NaN ones
    m = tf.reduce_max(s, axis=-1, keepdims=True)                        # [B, Hkv, G, Tq, 1]
    m = tf.where(tf.equal(m, neg_inf), tf.zeros_like(m), m)             # (NaN or +inf stay: the row is NaN)
    e = tf.exp(s - tf.stop_gradient(m))                                 # 0 where masked
    l = tf.reduce_sum(e, axis=-1, keepdims=True)                        # [B, Hkv, G, Tq, 1]
    has_key = tf.not_equal(l, 0)                                        # (true for NaN: NaN out, NaN lse)
    p = e / tf.where(has_key, l, tf.ones_like(l))
    out = tf.einsum("bkgqs,bskd->bqkgd", p, v)                          # [B, Tq, Hkv, G, D]
    out = tf.reshape(out, [B, Tq, H, D])                                # [B, Tq, H, D]
    lse = tf.where(has_key, tf.stop_gradient(m) + tf.math.log(tf.where(has_key, l, tf.ones_like(l))), neg_inf)
    lse = tf.reshape(lse, [B, H, Tq])                                   # [B, H, Tq]
    return out, lse


def _reference_checks(q, k, v, key_lengths):
    """Run-time validation of the reference path's inputs (assert ops)."""
    shape_q = tf.shape(q)
    B, H, D = shape_q[0], shape_q[2], shape_q[3]
    Tk, Hkv = tf.shape(k)[1], tf.shape(k)[2]
    checks = [
        tf.debugging.assert_equal(tf.rank(q), 4, message="q must have rank 4 [B, Tq, H, D]"),
        tf.debugging.assert_equal(tf.rank(k), 4, message="k must have rank 4 [B, Tk, Hkv, D]"),
        tf.debugging.assert_equal(tf.rank(v), 4, message="v must have rank 4 [B, Tk, Hkv, D]"),
        tf.debugging.assert_equal(tf.shape(k), tf.shape(v), message="v must have the shape of k"),
        tf.debugging.assert_equal(tf.shape(k)[0], B, message="k batch size does not match q"),
        tf.debugging.assert_equal(tf.shape(k)[3], D, message="k head size does not match q"),
        tf.debugging.assert_equal(H % tf.maximum(Hkv, 1), 0, message="H must be a multiple of Hkv"),
        tf.debugging.assert_greater(Hkv, 0, message="Hkv must be positive"),
        tf.debugging.assert_less_equal(D, 256, message="head size D must be <= 256"),
        tf.debugging.assert_greater(D, 0, message="head size D must be >= 1"),
    ]
    if key_lengths is not None:
        checks += [
            tf.debugging.assert_equal(tf.shape(key_lengths), tf.reshape(B, [1]),
                                      message="key_lengths must have shape [B]"),
            tf.debugging.assert_non_negative(key_lengths, message="key_lengths must be >= 0"),
            tf.debugging.assert_less_equal(key_lengths, Tk, message="key_lengths must be <= Tk"),
        ]
    return checks


def _register_gradient():
    @tf.RegisterGradient("Keraslm>FlashAttention")
    def _flash_attention_grad(op, dout, dlse):
        q, k, v, key_lengths = op.inputs
        out, lse = op.outputs
        use_dlse = dlse is not None
        if dout is None:
            dout = tf.zeros_like(out)
        lib = _loader.op_library()
        dq, dk, dv = lib.keraslm_flash_attention_grad(
            q, k, v, key_lengths, out, lse, dout,
            dlse if use_dlse else tf.zeros([0], tf.float32),
            causal=op.get_attr("causal"), scale=op.get_attr("scale"),
            use_key_lengths=op.get_attr("use_key_lengths"), use_dlse=use_dlse)
        return dq, dk, dv, None

    tf.no_gradient("Keraslm>FlashAttentionGrad")


_register_gradient()
