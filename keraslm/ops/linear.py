"""Small-batch dense layer (the matrix-vector products of a decoding step)."""

from __future__ import annotations

import tensorflow as tf

from keraslm.ops import _loader


def linear(x, kernel, bias=None, transpose_kernel=False, name=None):
    """``x @ kernel + bias`` with a kernel tuned for a few rows of ``x``.

    At decode time a model multiplies a handful of rows by each weight
    matrix, so the cost is reading the weights once per token. The custom op
    keeps up to 6 rows of the result in registers while it streams the
    weights (and splits large matrices across threads); the reference is
    ``tf.matmul``. Both give the same result to float32 rounding, and the op
    has a gradient (through ``tf.matmul``).

    Args:
        x: ``[..., K]`` float32.
        kernel: ``[K, N]`` float32 (a Keras ``Dense`` kernel), or bfloat16: decoding reads every
            weight once per token, so a bfloat16 copy halves the bytes (the products still
            accumulate in float32; the reference widens it to float32, which is exact).
        bias: optional ``[N]`` float32.
        transpose_kernel: ``kernel`` is ``[N, K]`` (an embedding table used as the output layer, whose
            rows the op reads whole and in order).
        name: optional op name.

    Returns:
        ``[..., N]`` float32.

    Raises:
        ValueError: statically known bad ranks, dtypes or sizes (a bias that
            is not ``[N]`` included: it is never broadcast).
        tf.errors.InvalidArgumentError: bad sizes found at run time (in a
            ``tf.function`` with unknown shapes, or when XLA compiles a
            ``jit_compile`` function: the custom op lowers to an XLA custom
            call with the same checks).

    Example:
        >>> import tensorflow as tf, keraslm
        >>> keraslm.ops.linear(tf.ones([2, 1, 3]), tf.ones([3, 4]), tf.zeros([4])).shape
        TensorShape([2, 1, 4])
    """
    with tf.name_scope(name or "linear"):
        x, kernel = tf.convert_to_tensor(x), tf.convert_to_tensor(kernel)
        bias = None if bias is None else tf.convert_to_tensor(bias)
        for t, n in ((x, "x"), (bias, "bias")):
            if t is not None and t.dtype != tf.float32:
                raise ValueError(f"{n} must be float32, got {t.dtype.name}")
        if kernel.dtype not in (tf.float32, tf.bfloat16):
            raise ValueError(f"kernel must be float32 or bfloat16, got {kernel.dtype.name}")
        layout = "[N, K]" if transpose_kernel else "[K, N]"
        if kernel.shape.rank is not None and kernel.shape.rank != 2:
            raise ValueError(f"kernel must have rank 2 {layout}, got shape {kernel.shape}")
        if x.shape.rank == 0:
            raise ValueError("x must have rank >= 1 [..., K], got a scalar")
        K, N = (kernel.shape[0], kernel.shape[1]) if kernel.shape.rank == 2 else (None, None)
        if transpose_kernel:
            K, N = N, K
        if x.shape.rank is not None and x.shape[-1] is not None and K is not None and x.shape[-1] != K:
            raise ValueError(f"x has {x.shape[-1]} features but kernel has {K} "
                             f"{'columns' if transpose_kernel else 'rows'}")
        if bias is not None and bias.shape.rank is not None and (
                bias.shape.rank != 1 or (N is not None and bias.shape[0] not in (None, N))):
            raise ValueError(f"bias must have shape [{N if N is not None else 'N'}] (the columns of kernel "
                             f"{kernel.shape}), got {bias.shape}")
        lead = tf.shape(x)[:-1]
        M = x.shape[:-1].num_elements() if x.shape.rank is not None else None
        M = tf.reduce_prod(lead) if M is None else M                          # (explicit, not -1: K may be 0)
        x2 = tf.reshape(x, tf.stack([M, tf.shape(x)[-1]]))                     # [M, K]
        if _loader.use_custom("linear", xla_lowering=_loader.has_xla_lowering("linear")):
            out = _loader.op_library().keraslm_linear(
                x2, kernel, bias if bias is not None else tf.zeros([0], tf.float32), use_bias=bias is not None,
                transpose_w=bool(transpose_kernel))
        else:
            out = _reference(x2, kernel, bias, bool(transpose_kernel))         # [M, N]
        width = tf.shape(kernel)[:1] if transpose_kernel else tf.shape(kernel)[1:]
        out = tf.reshape(out, tf.concat([lead, width], 0))                     # [..., N]
        if x.shape.rank is not None and N is not None:
            out = tf.ensure_shape(out, x.shape[:-1].concatenate([N]))
        return out


def _reference(x2, kernel, bias, transpose=False):
    """``x2 [M, K] @ kernel [K, N] + bias [N]`` (``kernel [N, K]`` transposed) in stock TF ops. Shapes known only at run time are checked
    there (assertions naming the argument; inside XLA, which drops assertions, ``MatMul`` and ``BiasAdd``
    still refuse mismatched sizes when the function is compiled, and a bias is never broadcast)."""
    checks = []
    if not _loader.in_xla_context():
        K, N = tf.shape(kernel)[0], tf.shape(kernel)[-1]
        if transpose:
            K, N = N, K
        checks.append(tf.debugging.Assert(tf.equal(tf.shape(x2)[1], K),
                                          ["x has", tf.shape(x2)[1], "features but kernel has", K,
                                           "columns" if transpose else "rows"]))
        if bias is not None:
            ok = tf.equal(tf.rank(bias), 1) & tf.equal(tf.size(bias), N)
            checks.append(tf.debugging.Assert(ok, ["bias must have shape [N] (the columns of kernel), N =", N,
                                                   "got shape", tf.shape(bias)]))
    with tf.control_dependencies(checks):
        y = tf.matmul(x2, tf.cast(kernel, tf.float32), transpose_b=transpose)  # [M, N]
    return y if bias is None else tf.nn.bias_add(y, bias)


@tf.RegisterGradient("Keraslm>Linear")
def _linear_grad(op, dy):
    x, w, _ = op.inputs
    w32 = tf.cast(w, tf.float32)
    if op.get_attr("transpose_w"):                                             # w [N, K]
        dx, dw = tf.matmul(dy, w32), tf.matmul(dy, x, transpose_a=True)
    else:                                                                      # w [K, N]
        dx, dw = tf.matmul(dy, w32, transpose_b=True), tf.matmul(x, dy, transpose_a=True)
    db = tf.reduce_sum(dy, 0) if op.get_attr("use_bias") else None
    return dx, tf.cast(dw, w.dtype), db
