"""Token sampling: the fused TF custom op and its pure-TF reference.

One call does, per row: repetition penalty over the distinct previous ids,
temperature (0 = greedy), top-k, top-p and min-p filtering of the ranking by
(logit descending, id ascending), and an inverse-CDF draw in id order at the
given coin.  The randomness is data (``coins``), so results are reproducible
and identical across the custom op, :mod:`keraslm._C` and the reference, up to
float rounding when a coin lies within ~1e-6 of a CDF boundary.  The exact
contract is in ``csrc/kernels/sampling.h``.
"""

from __future__ import annotations

import collections
import operator

import numpy as np
import tensorflow as tf

from keraslm.ops import _loader
from keraslm.validation import INT32_MAX, INT32_MIN, assert_all, in_xla_context, int32_tensor

_BELOW_ONE = float(np.nextafter(np.float32(1), np.float32(0)))


_F32 = np.finfo(np.float32)


def _finite(v):
    return np.isfinite(v) if isinstance(v, np.ndarray) else tf.math.is_finite(v)


def _divisor(v):
    """0 or a normal float32 magnitude: a divisor that float32 (with denormals flushed) neither
    overflows nor rounds to zero. Checked on the values before any narrowing cast."""
    a = abs(v)
    return (a <= _F32.max) & ((a == 0) | (a >= _F32.tiny))


# The rules of the sampler settings, written once: the op, generate() (keraslm.generation.settings) and
# the exported SavedModel (keraslm.export) all check these. name: (integer?, valid(values) on numpy arrays
# or tensors, rule for messages). NaN fails every rule.
SETTING_RULES = {
    "temperature": (False, lambda v: _finite(v) & (v >= 0) & _divisor(v),
                    "must be finite and >= 0 (0 = greedy), and 0 or in float32's normal range [1.2e-38, 3.4e38]"),
    "top_k": (True, lambda v: v >= 0, "must be a non-negative integer (0 = off; values >= V keep every token)"),
    "top_p": (False, lambda v: (v > 0) & (v <= 1), "must be in (0, 1] (1 = off)"),
    "min_p": (False, lambda v: (v >= 0) & (v <= 1), "must be in [0, 1] (0 = off)"),
    "repetition_penalty": (False, lambda v: _finite(v) & (v > 0) & _divisor(v),
                           "must be finite and > 0 (1 = off), in float32's normal range [1.2e-38, 3.4e38]"),
    "coins": (False, lambda v: (v >= 0) & (v < 1), "must be in [0, 1)"),
}
_PARAMS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")

_Args = collections.namedtuple("_Args", "logits coins params previous_ids pad_id")


def sample(logits, coins, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
           previous_ids=None, pad_id=-1, name=None):
    """Samples one token per row with penalty, temperature, top-k, top-p and min-p.

    Per row, in this order: ``x = logits`` (``-inf`` bans a token); each distinct
    id of ``previous_ids`` other than ``pad_id`` gets ``x / r`` if ``x > 0`` else
    ``x * r``; with ``temperature == 0`` the row is greedy (the lowest id among
    the largest ``x``, logprob 0); otherwise ``z = x / T`` is ranked by (``z``
    descending, id ascending) and the kept set is the ranks ``< top_k``, then the
    ranks whose preceding softmax mass (over the top-k set) is ``< top_p``, then
    the tokens with ``z >= max z + log(min_p)``; the result is the smallest kept
    id whose cumulative renormalised probability (id order) exceeds the coin.

    Runs as the fused custom op or as :func:`sample_reference` according to the
    :mod:`keraslm.ops` implementation switch. Not differentiable.

    Args:
        logits: ``[B, V]`` floating tensor (computed in float32).
        coins: ``[B]`` uniform numbers in ``[0, 1)``, e.g.
            ``tf.random.uniform([B])``; the only randomness.
        temperature: scalar or ``[B]``, finite and ``>= 0``.
        top_k: integer scalar or ``[B]``, ``>= 0`` (0 = off; ``k >= V`` keeps all).
        top_p: scalar or ``[B]`` in ``(0, 1]`` (1 = off).
        min_p: scalar or ``[B]`` in ``[0, 1]`` (0 = off).
        repetition_penalty: scalar or ``[B]``, finite and ``> 0`` (1 = off).
        previous_ids: optional ``[B, L]`` integer ids in ``[0, V)`` or ``pad_id``.
        pad_id: Python int; entries of ``previous_ids`` equal to it are ignored.
        name: optional name scope.

    Returns:
        ``(ids, logprobs)``: ``[B]`` int32 sampled ids and ``[B]`` float32
        log-probabilities of those ids under the filtered, renormalised
        distribution (0 for greedy rows).

    Raises:
        ValueError: statically known bad arguments (dtypes, ranks, batch sizes,
            ``pad_id``, or out-of-range parameters given as Python or numpy values).
        tf.errors.InvalidArgumentError: bad shapes or values found at run time:
            parameters out of range, coins outside ``[0, 1)``, NaN or ``+inf``
            logits, a row with no finite logit, previous ids out of range.
            Inside ``jit_compile`` functions the custom op lowers to an XLA
            custom call that runs the same checks (shapes when XLA compiles
            the function, values when it runs). The pure-TF reference cannot
            raise inside XLA, which drops assertions: there a row with an
            invalid value gets id 0 and logprob NaN. Ids are always in
            ``[0, V)``.

    Example:
        >>> import tensorflow as tf, keraslm
        >>> logits = tf.math.log([[0.1, 0.6, 0.3]])
        >>> ids, logprobs = keraslm.ops.sample(logits, coins=[0.5], top_k=2)
        >>> int(ids[0])
        1
    """
    with tf.name_scope(name or "sample"):
        a = _prepare(logits, coins, temperature, top_k, top_p, min_p, repetition_penalty, previous_ids, pad_id)
        if _loader.use_custom("sample", xla_lowering=_loader.has_xla_lowering("sample")):
            lib = _loader.op_library()
            ids, logprobs = lib.keraslm_sample(a.logits, a.coins, *a.params, a.previous_ids, pad_id=a.pad_id)
            return ids, logprobs
        return _sample_reference(a)


def sample_reference(logits, coins, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                     previous_ids=None, pad_id=-1, name=None):
    """The pure-TF implementation of :func:`sample` (stock TF ops only).

    Sorts every row (``tf.math.top_k`` with ``k = V``) and works in float64, so
    it is slower than the custom op, but it needs nothing beyond TensorFlow:
    exported SavedModels use it. Works eagerly, in ``tf.function`` (dynamic
    ``B`` and ``V``) and under XLA. Arguments, results and errors are those of
    :func:`sample`, except inside XLA, where it cannot raise (XLA drops
    assertions): rows with an invalid value get id 0 and logprob NaN; like
    the custom op it passes no gradient (differentiate
    :func:`filtered_logprobs` instead).

    Example:
        >>> import tensorflow as tf, keraslm
        >>> ids, _ = keraslm.ops.sample_reference([[0.0, 2.0, 1.0]], coins=[0.3], temperature=0.0)
        >>> int(ids[0])
        1
    """
    with tf.name_scope(name or "sample_reference"):
        return _sample_reference(
            _prepare(logits, coins, temperature, top_k, top_p, min_p, repetition_penalty, previous_ids, pad_id))


def filtered_logprobs(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                      previous_ids=None, pad_id=-1, name=None):
    """The final log-distribution that :func:`sample` draws from, in pure TF.

    Args:
        logits, temperature, top_k, top_p, min_p, repetition_penalty,
        previous_ids, pad_id: as in :func:`sample`.
        name: optional name scope.

    Returns:
        ``[B, V]`` float32: ``log pi`` on the kept set and ``-inf`` elsewhere
        (each row's ``exp`` sums to 1). Greedy rows put 0 on their argmax.
        Differentiable with respect to ``logits`` on the kept set (the kept
        set itself is piecewise constant).

    Example:
        >>> import tensorflow as tf, keraslm
        >>> lp = keraslm.ops.filtered_logprobs(tf.math.log([[0.5, 0.3, 0.2]]), top_k=2)
        >>> [round(float(v), 3) for v in tf.exp(lp[0])]
        [0.625, 0.375, 0.0]
    """
    with tf.name_scope(name or "filtered_logprobs"):
        a = _prepare(logits, None, temperature, top_k, top_p, min_p, repetition_penalty, previous_ids, pad_id)
        return tf.cast(_filter(a).logp, tf.float32)


tf.no_gradient("Keraslm>Sample")


# ---------------------------------------------------------------------------
# Argument conversion and static checks (ValueError).
# ---------------------------------------------------------------------------

def _prepare(logits, coins, temperature, top_k, top_p, min_p, repetition_penalty, previous_ids, pad_id):
    try:
        pad_id = operator.index(pad_id)
    except TypeError:
        raise ValueError(f"pad_id must be a Python integer; got {pad_id!r}") from None
    if not INT32_MIN <= pad_id <= INT32_MAX:
        raise ValueError(f"pad_id must fit in int32; got {pad_id}")
    logits = _tensor(logits, "logits", integer=False)
    _static_rank(logits, "logits", (2,), "[batch, vocab]")
    if logits.dtype != tf.float32:
        logits = tf.cast(logits, tf.float32)
    batch = logits.shape[0] if logits.shape.rank == 2 else None
    if coins is not None:
        coins = _param(coins, "coins", batch, ranks=(1,))
    values = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                  repetition_penalty=repetition_penalty)
    params = tuple(_param(values[n], n, batch, ranks=(0, 1)) for n in _PARAMS)
    if previous_ids is None:  # (the batch size read so that a bad rank is reported by the checks)
        previous_ids = tf.zeros(tf.stack([tf.concat([tf.shape(logits), [0]], 0)[0], 0]), tf.int32)
    else:
        previous_ids = _tensor(previous_ids, "previous_ids", integer=True)
        _static_rank(previous_ids, "previous_ids", (2,), "[batch, L]")
        _static_batch(previous_ids, "previous_ids", batch)
        previous_ids = int32_tensor(previous_ids, "previous_ids")  # refuses values that int32 would wrap
    return _Args(logits, coins, params, previous_ids, pad_id)


def _tensor(value, name, integer):
    if not tf.is_tensor(value):
        array = np.asarray(value)
        if array.dtype.kind not in ("iu" if integer else "fiu"):
            raise ValueError(f"{name} must be {'integer' if integer else 'real'}-valued; got dtype {array.dtype}")
        return tf.convert_to_tensor(array)
    value = tf.convert_to_tensor(value)
    if not (value.dtype.is_integer or (not integer and value.dtype.is_floating)) or value.dtype.is_bool:
        raise ValueError(f"{name} must be {'integer' if integer else 'real'}-valued; got dtype {value.dtype.name}")
    return value


def _static_rank(t, name, ranks, what):
    if t.shape.rank is not None and t.shape.rank not in ranks:
        raise ValueError(f"{name} must be {what}; got shape {t.shape}")


def _static_batch(t, name, batch):
    if batch is not None and t.shape.rank and t.shape[0] is not None and t.shape[0] != batch:
        raise ValueError(f"{name} must have {batch} rows (one per row of logits); got shape {t.shape}")


def _param(value, name, batch, ranks):
    """A per-row parameter (or the coins) as an int32/float32 tensor."""
    integer, valid, rule = SETTING_RULES[name]
    what = "a scalar or [batch]" if ranks == (0, 1) else "[batch]"
    if not tf.is_tensor(value):  # statically known: check the values now
        array = np.asarray(value)
        if array.dtype.kind not in ("iu" if integer else "fiu"):
            raise ValueError(f"{name} must be {'integer' if integer else 'real'}-valued; got dtype {array.dtype}")
        if array.ndim not in ranks:
            raise ValueError(f"{name} must be {what}; got shape {array.shape}")
        bad = ~valid(array)
        if np.any(bad):
            where = f"{name}[{int(np.argmax(bad.ravel()))}]" if array.ndim else name
            raise ValueError(f"{name} {rule}; got {where} = {array.ravel()[np.argmax(bad.ravel())]!r}")
        if integer:
            array = np.clip(array, INT32_MIN, INT32_MAX)
        elif name == "coins" and array.dtype.itemsize > 4:
            array = np.where(array.astype(np.float32) >= 1, _BELOW_ONE, array)
        value = tf.constant(array, tf.int32 if integer else tf.float32)
    else:
        value = _tensor(value, name, integer)
        _static_rank(value, name, ranks, what)
        if integer and value.dtype != tf.int32:
            value = tf.cast(tf.clip_by_value(tf.cast(value, tf.int64), INT32_MIN, INT32_MAX), tf.int32)
        elif name == "coins" and value.dtype.size > 4:
            value = tf.where((value < 1) & (tf.cast(value, tf.float32) >= 1), _BELOW_ONE, tf.cast(value, tf.float32))
        elif not integer and value.dtype != tf.float32:
            value = tf.cast(value, tf.float32)
    if value.shape.rank == 1:
        _static_batch(value, name, batch)
    return value


# ---------------------------------------------------------------------------
# The pure-TF path: run-time checks (InvalidArgumentError) and the maths.
# ---------------------------------------------------------------------------

def _require(ok, *data):
    return tf.debugging.Assert(ok, list(data), summarize=16)


def _validate(a):
    """The run-time checks; returns a with its logits gated on them."""
    x = a.logits
    with tf.control_dependencies([_require(tf.equal(tf.rank(x), 2),
                                           "logits must be a 2-D tensor [batch, vocab]; got shape", tf.shape(x))]):
        shape = tf.shape(x)
    B, V = shape[0], shape[1]
    named = list(zip(_PARAMS, a.params)) + ([("coins", a.coins)] if a.coins is not None else [])
    checks = [_require(V > 0, "logits must have at least one column (vocabulary size); got shape", shape)]
    for name, t in named:
        ok = tf.equal(tf.rank(t), 1) & tf.equal(tf.size(t), B)
        if name != "coins":
            ok |= tf.equal(tf.rank(t), 0)
        what = "have shape [batch]" if name == "coins" else "be a scalar or have shape [batch]"
        checks.append(_require(ok, f"{name} must {what}; batch =", B, "got shape", tf.shape(t)))
    prev = a.previous_ids
    prev_rows = tf.concat([tf.shape(prev), [-1]], 0)[0]
    checks.append(_require(tf.equal(tf.rank(prev), 2) & tf.equal(prev_rows, B),
                           "previous_ids must have shape [batch, L]; batch =", B, "got shape", tf.shape(prev)))
    with tf.control_dependencies(checks):
        checks = [assert_all(SETTING_RULES[n][1](t), t, n, SETTING_RULES[n][2]) for n, t in named]
        checks.append(assert_all((prev == a.pad_id) | ((prev >= 0) & (prev < V)), prev, "previous_ids",
                                   f"must be in [0, V) or equal to pad_id={a.pad_id}", width=tf.shape(prev)[1],
                                   extra=("with V =", V)))
        checks.append(assert_all(~tf.math.is_nan(x) & (x < np.inf), x, "logits",
                                   "must not contain NaN or +inf (use -inf to ban a token)", width=V))
        has_finite = tf.concat([tf.reduce_any(x > -np.inf, axis=1), [False]], 0)
        checks.append(_require(tf.reduce_all(has_finite[:-1]), "every row of logits needs at least one finite "
                               "value; logits[", tf.argmin(tf.cast(has_finite, tf.int32)), ", :] is all -inf"))
    with tf.control_dependencies(checks):  # gate every input on the checks
        return _Args(tf.identity(x), None if a.coins is None else tf.identity(a.coins),
                     tuple(tf.identity(t) for t in a.params), tf.identity(prev), a.pad_id)


_Filtered = collections.namedtuple("_Filtered", "args z zmax kept e cum greedy first logp")


def _filter(a):
    """Steps 1-7 of the contract in float64; see csrc/kernels/sampling_reference.cc.

    Every input is first gated on the run-time checks, so that in graph mode
    no op can consume an invalid tensor (and fail with an unrelated error).
    """
    a = _validate(a)
    x = tf.cast(a.logits, tf.float64)                                   # [B, V]
    B, V = tf.shape(x)[0], tf.shape(x)[1]

    def per_row(t, dtype):                                              # scalar or [B] -> [B, 1]
        return tf.broadcast_to(tf.reshape(tf.cast(t, dtype), [-1]), [B])[:, None]

    temperature, top_k, top_p, min_p, penalty = (
        per_row(t, tf.int32 if n == "top_k" else tf.float64) for n, t in zip(_PARAMS, a.params))
    # 2. Repetition penalty on the distinct previous ids (pads go to a spare column).
    prev = a.previous_ids
    cols = tf.where(tf.equal(prev, a.pad_id), V, prev)
    rows = tf.broadcast_to(tf.range(B)[:, None], tf.shape(prev))
    hits = tf.scatter_nd(tf.reshape(tf.stack([rows, cols], -1), [-1, 2]), tf.ones([tf.size(prev)], tf.int32),
                         tf.stack([B, V + 1]))[:, :V] > 0
    x = tf.where(hits, tf.where(x > 0, x / penalty, x * penalty), x)
    # 3. Temperature; greedy rows rank x itself.
    greedy = tf.equal(temperature, 0)                                   # [B, 1]
    z = x / tf.where(greedy, tf.ones_like(temperature), temperature)
    # 4. Ranking by (z desc, id asc): top_k orders equal values by lower index.
    ranked, order = tf.math.top_k(z, k=V, sorted=True)                  # [B, V]
    zmax = ranked[:, :1]
    e_ranked = tf.exp(ranked - zmax)
    rank = tf.range(V)[None, :]
    in_k = rank < tf.where((top_k > 0) & (top_k < V), top_k, V)
    # 5. top-p on softmax over the top-k set; 6. min-p (log(0) = -inf keeps all).
    q = tf.where(in_k, e_ranked, tf.zeros_like(e_ranked))
    q = q / tf.reduce_sum(q, axis=1, keepdims=True)
    in_p = (top_p >= 1) | (tf.cumsum(q, axis=1, exclusive=True) < top_p)
    in_m = ranked >= zmax + tf.math.log(min_p)
    # The kept set is a prefix of the ranking: keep up to its last token.
    last = tf.reduce_sum(tf.cast(in_k & in_p & in_m, tf.int32), axis=1, keepdims=True) - 1
    cut_z = tf.gather(ranked, last, batch_dims=1)
    cut_id = tf.gather(order, last, batch_dims=1)
    ids = tf.range(V)[None, :]
    first = order[:, :1]
    kept = tf.where(greedy, tf.equal(ids, first), (z > cut_z) | ((z == cut_z) & (ids <= cut_id)))
    # 7. Renormalised weights and their cumulative sum in id order.
    e = tf.where(kept, tf.exp(z - zmax), tf.zeros_like(z))
    cum = tf.cumsum(e, axis=1)
    total = cum[:, -1:]
    zero, minus_inf = tf.constant(0.0, tf.float64), tf.constant(-np.inf, tf.float64)
    logp = tf.where(kept & ~greedy, z - zmax - tf.math.log(total), tf.where(kept, zero, minus_inf))
    return _Filtered(a, z, zmax, kept, e, cum, greedy, first, logp)


def _rows_valid(a):
    """[B] bool: the rows whose values pass every check of _validate (for XLA, which drops the assertions)."""
    x = a.logits
    B, V = tf.shape(x)[0], tf.shape(x)[1]
    ok = tf.reduce_all(~tf.math.is_nan(x) & (x < np.inf), axis=1) & tf.reduce_any(x > -np.inf, axis=1)
    named = list(zip(_PARAMS, a.params)) + ([("coins", a.coins)] if a.coins is not None else [])
    for name, t in named:  # scalar or [B]
        ok &= tf.broadcast_to(tf.reshape(SETTING_RULES[name][1](t), [-1]), tf.reshape(B, [1]))
    prev = a.previous_ids
    return ok & tf.reduce_all((prev == a.pad_id) | ((prev >= 0) & (prev < V)), axis=1)


def _sample_reference(a):
    f = _filter(a)
    V = tf.shape(f.z)[1]
    # 8. The first kept id whose cumulative weight exceeds coin * total; never
    #    past the last id of positive weight (reachable only through rounding).
    target = tf.cast(f.args.coins, tf.float64)[:, None] * f.cum[:, -1:]  # the validated coins
    chosen = tf.reduce_sum(tf.cast(f.cum <= target, tf.int32), axis=1)
    last_positive = tf.reduce_max(tf.where(f.e > 0, tf.range(V)[None, :], -1), axis=1)
    chosen = tf.minimum(chosen, last_positive)
    greedy = f.greedy[:, 0]
    ids = tf.where(greedy, f.first[:, 0], chosen)
    # Inside XLA the checks of _validate are dropped: rows with invalid values (a NaN temperature makes
    # every weight NaN, so no id is chosen) get the defined id 0 and logprob NaN. Ids are always in [0, V).
    valid = _rows_valid(f.args) if in_xla_context() else None
    if valid is not None:
        ids = tf.where(valid, ids, tf.zeros_like(ids))
    ids = tf.clip_by_value(ids, 0, tf.maximum(V - 1, 0))
    logp = tf.gather(f.logp, ids[:, None], batch_dims=1)[:, 0]
    logp = tf.cast(tf.where(greedy, tf.zeros_like(logp), logp), tf.float32)
    if valid is not None:
        logp = tf.where(valid, logp, tf.fill(tf.shape(logp), np.float32(np.nan)))
    return ids, tf.stop_gradient(logp)  # like the custom op (use filtered_logprobs for gradients)
