"""Matrix products with bfloat16 inputs and float32 sums, and the switch that
lets the models' dense layers use them.

On CPUs with AMX (Intel Sapphire Rapids and later) a product whose inputs are
rounded to bfloat16 runs several times faster than a float32 one. Setting the
matmul precision to ``"bfloat16"`` lets the dense layers of keraslm's models
(inputs and weights stay float32) use such products, in training and in
inference, eagerly and inside ``jit_compile=True`` functions (the op is lowered
to an XLA custom call). It is what ``torch.set_float32_matmul_precision
("medium")`` does: the products of bfloat16 values are exact in float32 and the
sums are float32, so only the inputs lose precision (8 significant bits).

Example:
    >>> import tensorflow as tf, keraslm
    >>> a, b = tf.ones([3, 5]), tf.ones([5, 2])
    >>> keraslm.ops.matmul_bf16(a, b).numpy().tolist()
    [[5.0, 5.0], [5.0, 5.0], [5.0, 5.0]]
    >>> with keraslm.ops.matmul_precision_scope("bfloat16"):
    ...     keraslm.ops.matmul_precision()
    'bfloat16'
"""

from __future__ import annotations

import contextlib
import os
import warnings

import tensorflow as tf

from keraslm.ops import _loader, hardware

PRECISIONS = ("float32", "bfloat16")
_ENV = "KERASLM_MATMUL_PRECISION"
_state = {"precision": None, "warned": False}


def _check_precision(value) -> str:
    if not isinstance(value, str) or value.lower() not in PRECISIONS:
        raise ValueError(f"matmul precision must be one of {PRECISIONS}, got {value!r}")
    return value.lower()


def matmul_precision() -> str:
    """The current matmul precision of keraslm's dense layers: ``"float32"`` (default) or ``"bfloat16"``.

    The ``KERASLM_MATMUL_PRECISION`` environment variable sets the initial value.
    """
    if _state["precision"] is None:
        env = os.environ.get(_ENV)
        try:
            _state["precision"] = _check_precision(env) if env else "float32"
        except ValueError as e:
            raise ValueError(f"environment variable {_ENV}: {e}") from None
    return _state["precision"]


def set_matmul_precision(value: str) -> None:
    """Set the matmul precision for the whole process (read when a model is traced).

    Args:
        value: ``"float32"`` or ``"bfloat16"``. ``"bfloat16"`` is a permission,
            not an order: where the bfloat16 product is not accelerated (no AMX,
            no compiled ops, or ``set_implementation("reference")``) the layers
            keep float32 products and one warning says why.
    """
    _state["precision"] = _check_precision(value)


@contextlib.contextmanager
def matmul_precision_scope(value: str):
    """Temporarily set the matmul precision (not thread-local)."""
    previous = matmul_precision()
    set_matmul_precision(value)
    try:
        yield
    finally:
        _state["precision"] = previous


def bf16_products_active() -> bool:
    """True when the matmul precision is ``"bfloat16"`` and the accelerated
    product can be used in the current context; warns once when it is
    requested but cannot."""
    if matmul_precision() != "bfloat16":
        return False
    reason = hardware.bf16_products_unavailable_reason()
    if reason is None:
        return True
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(f"keraslm: matmul precision 'bfloat16' was requested but {reason}; the dense "
                      "layers use float32 products.", RuntimeWarning, stacklevel=3)
    return False


def _static_checks(a, b, transpose_a, transpose_b):
    for t, n in ((a, "a"), (b, "b")):
        if t.dtype != tf.float32:
            raise ValueError(f"{n} must be float32, got {t.dtype.name}")
        if t.shape.rank is not None and t.shape.rank != 2:
            raise ValueError(f"{n} must have rank 2, got shape {t.shape}")
    ka = a.shape[0 if transpose_a else 1] if a.shape.rank == 2 else None
    kb = b.shape[1 if transpose_b else 0] if b.shape.rank == 2 else None
    if ka is not None and kb is not None and ka != kb:
        raise ValueError(f"inner dimensions differ: op(a) has {ka} columns (a {a.shape}, transpose_a="
                         f"{transpose_a}) but op(b) has {kb} rows (b {b.shape}, transpose_b={transpose_b})")


def _round_bf16(x):
    return tf.cast(tf.cast(x, tf.bfloat16), tf.float32)


def _grads(fn, a, b, dc, ta, tb):
    """Gradients of c = op(a) @ op(b) through ``fn`` (a matmul with the same precision)."""
    if not ta and not tb:
        return fn(dc, b, False, True), fn(a, dc, True, False)
    if not ta and tb:
        return fn(dc, b, False, False), fn(dc, a, True, False)
    if ta and not tb:
        return fn(b, dc, False, True), fn(a, dc, False, False)
    return fn(b, dc, True, True), fn(dc, a, True, True)


def _reference(a, b, ta, tb):
    @tf.custom_gradient
    def product(a, b):
        c = tf.matmul(_round_bf16(a), _round_bf16(b), transpose_a=ta, transpose_b=tb)
        return c, lambda dc: _grads(_reference, a, b, dc, ta, tb)

    return product(a, b)


def matmul_bf16_reference(a, b, transpose_a=False, transpose_b=False):
    """Pure-TF ``matmul_bf16``: ``tf.matmul`` over the bfloat16-rounded inputs, in float32."""
    a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
    _static_checks(a, b, transpose_a, transpose_b)
    return _reference(a, b, bool(transpose_a), bool(transpose_b))


def _custom(a, b, ta, tb):
    return _loader.op_library().keraslm_matmul_bf16(a, b, transpose_a=ta, transpose_b=tb)


def matmul_bf16(a, b, transpose_a=False, transpose_b=False, name=None):
    """``op(a) @ op(b)`` with the inputs rounded to bfloat16 and float32 sums.

    Runs as the AMX custom op (also inside XLA) where it can, else as
    :func:`matmul_bf16_reference`. Gradients use the same precision (the
    rounding passes gradients straight through).

    Args:
        a: ``[M, K]`` float32, or ``[K, M]`` with ``transpose_a``.
        b: ``[K, N]`` float32, or ``[N, K]`` with ``transpose_b``.

    Returns:
        ``[M, N]`` float32.

    Raises:
        ValueError: statically known bad ranks, dtypes or inner dimensions
            (``tf.errors.InvalidArgumentError`` when they are only known at run time).
    """
    with tf.name_scope(name or "matmul_bf16"):
        a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
        _static_checks(a, b, transpose_a, transpose_b)
        ta, tb = bool(transpose_a), bool(transpose_b)
        if _loader.use_custom("matmul_bf16", xla_lowering=_loader.has_xla_lowering("matmul_bf16")) \
                and hardware.amx_bf16_available():
            return _custom(a, b, ta, tb)
        return _reference(a, b, ta, tb)


@tf.RegisterGradient("Keraslm>MatmulBf16")
def _matmul_bf16_grad(op, dc):
    a, b = op.inputs
    return _grads(_custom, a, b, dc, op.get_attr("transpose_a"), op.get_attr("transpose_b"))


def dense_matmul(x, kernel):
    """``x [..., K] @ kernel [K, N]`` for keraslm's dense layers: the bfloat16
    product when :func:`bf16_products_active`, else ``None`` (the caller
    keeps its float32 product)."""
    if x.dtype != tf.float32 or kernel.dtype != tf.float32 or not bf16_products_active():
        return None
    units = kernel.shape[-1]
    rows = tf.reshape(x, [-1, tf.shape(x)[-1]])
    y = _custom(rows, kernel, False, False)
    out = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [tf.shape(kernel)[-1]]], 0))
    if x.shape.rank is not None and units is not None:
        out = tf.ensure_shape(out, x.shape[:-1].concatenate([units]))
    return out
