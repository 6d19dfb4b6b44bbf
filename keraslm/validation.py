"""Argument rules that every part of keraslm shares, each written once.

This module imports nothing from keraslm, so any module may use it, and TensorFlow only when an
in-graph check is built (the plain checks serve TF-free code such as the CLI's flags). Messages
have one style: the argument's name, the rule, and the bad value, e.g.
``"steps must be a positive integer, got 0"``.

Example:
    >>> positive_int("num_layers", 4)
    4
    >>> positive_int("num_layers", 0)
    Traceback (most recent call last):
    ...
    ValueError: num_layers must be a positive integer, got 0
"""

from __future__ import annotations

import math
import numbers


def is_integer(value) -> bool:
    """True for Python and numpy integers (``bool`` is not an integer here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name, value, *, allow_none=False):
    """Returns ``value`` when it is an integer >= 1 (or None with ``allow_none``), else raises ValueError."""
    if value is None and allow_none:
        return None
    if not is_integer(value) or value < 1:
        suffix = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{suffix}, got {value!r}")
    return value


def non_negative_int(name, value):
    """Returns ``value`` when it is an integer >= 0, else raises ValueError."""
    if not is_integer(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def number(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """Returns ``value`` as a float when it is a finite real number within the bounds, else raises ValueError.

    Example:
        >>> number("dropout", 0.5, low=0, high=1, high_open=True)
        0.5
        >>> number("learning_rate", float("nan"), low=0, low_open=True)
        Traceback (most recent call last):
        ...
        ValueError: learning_rate must be a finite number > 0, got nan
    """
    if low is not None and high is not None:
        rule = f"{name} must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"{name} must be a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        rule = f"{name} must be a finite number {'<' if high_open else '<='} {high:g}"
    else:
        rule = f"{name} must be a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{rule}, got {value!r}")
    x = float(value)
    ok = math.isfinite(x)
    if ok and low is not None:
        ok = x > low if low_open else x >= low
    if ok and high is not None:
        ok = x < high if high_open else x <= high
    if not ok:
        raise ValueError(f"{rule}, got {value!r}")
    return x


def assert_all(ok, values, name, rule, width=None, extra=()):
    """An in-graph assertion that ``ok`` holds everywhere, naming the first offending entry.

    The message reads ``"<name> <rule>; got <name>[i] = <value>"`` (``[i, j]`` for
    ``[B, T]`` values when ``width`` (= T) is given, no index for scalars), then the
    ``extra`` items (strings and scalar tensors), space separated. Only static-shape
    ops (argmin and gather, no boolean_mask); inside XLA, which has no string
    formatting, the pieces go to the assertion as separate data items.

    Args:
        ok: bool tensor, the shape of ``values``.
        values: the checked tensor.
        name: the argument's name.
        rule: what it must be, e.g. ``"must be in (0, 1]"``.
        width: the row length of 2-D ``values`` (reported as ``[row, column]``).
        extra: strings and scalar tensors appended to the message.

    Returns:
        The ``tf.debugging.Assert`` op (use it as a control dependency).
    """
    import tensorflow as tf

    ok_flat = tf.concat([tf.reshape(ok, [-1]), [False]], 0)
    first = tf.argmin(tf.cast(ok_flat, tf.int32), output_type=tf.int32)
    value = tf.gather(tf.concat([tf.reshape(values, [-1]), tf.zeros([1], values.dtype)], 0), first)
    parts = [f"{name} {rule}; got {name}"]
    if values.shape.rank != 0 and width is None:
        parts += ["[", first, "]"]
    elif values.shape.rank != 0:
        width = tf.maximum(tf.cast(width, tf.int32), 1)
        parts += ["[", first // width, ", ", first % width, "]"]
    parts += [" = ", value]
    for item in extra:
        parts += [" ", item]
    if in_xla_context():  # XLA has no string formatting: the pieces are the assertion's data
        return tf.debugging.Assert(tf.reduce_all(ok), parts)
    template = "".join(p if isinstance(p, str) else "{}" for p in parts)   # (the rules hold no braces)
    message = tf.strings.format(template, [p for p in parts if not isinstance(p, str)])
    return tf.debugging.Assert(tf.reduce_all(ok), [message])


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def int32_tensor(value, name):
    """``value`` as an int32 tensor, without ever wrapping around.

    Integer dtypes only (floats and bools raise ValueError: they would be
    truncated); wider integers are checked in the graph before the cast, so
    ``2**32 + 1`` fails (InvalidArgumentError naming ``name``) instead of
    becoming 1.
    """
    import tensorflow as tf

    t = tf.convert_to_tensor(value)
    if not t.dtype.is_integer or t.dtype.is_bool:
        raise ValueError(f"{name} must be integers, got dtype {t.dtype.name}")
    if t.dtype == tf.int32:
        return t
    if t.dtype in (tf.int8, tf.int16, tf.uint8, tf.uint16):
        return tf.cast(t, tf.int32)
    wide = tf.cast(t, tf.int64)
    check = assert_all((wide >= INT32_MIN) & (wide <= INT32_MAX), wide, name, "must fit in int32")
    with tf.control_dependencies([check]):
        return tf.cast(wide, tf.int32)


def in_xla_context() -> bool:
    """True while tracing a function that XLA will compile (``jit_compile=True``)."""
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph()))
    except Exception:  # noqa: BLE001 - private API moved: assume no XLA
        return False
