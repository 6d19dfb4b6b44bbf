"""Fuzz of the ops inside jit_compile functions (XLA) and in tf.functions whose input shapes are unknown while
tracing (every input a TensorSpec(None)): attention, sample, linear, layer_norm and decoder_block_step get
random, often invalid, arguments (wrong ranks and sizes, out-of-range values, NaN).  Valid arguments must
give the float64 / C++ reference results (NaN exactly where the reference has NaN); invalid ones must raise
InvalidArgumentError or ValueError naming the argument; nothing may crash or hang.  The eager paths have
their own fuzz tests (test_attention_errors.py, test_sampling.py).

A few cases per op and mode run by default (fixed seeds, a few seconds); ``--run-slow`` runs many more."""

import re

import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.ops import _loader
from test_decoder_step import make_inputs as step_inputs
from test_decoder_step import np_block

_C = pytest.importorskip("keraslm._C")

MODES = ("graph", "xla")
ERRORS = (tf.errors.InvalidArgumentError, ValueError)
# Words an error of each op must contain (argument names; the op names the kernel "w").
NAMES = {
    "attention": r"\b(q|k|v|key_lengths)\b|head size|heads",
    "sample": r"\b(logits|coins|temperature|top_k|top_p|min_p|repetition_penalty|previous_ids)\b",
    "linear": r"\b(x|w|kernel|bias)\b",
    "layer_norm": r"\b(x|gamma|beta)\b",
    "decoder_block_step": r"\b(x|k_cache|v_cache|index|key_lengths|num_heads|w_fc|b_qkv)\b",
}

pytestmark = pytest.mark.skipif(not _loader.custom_ops_available(), reason="no compiled ops")

_functions = {}


def _function(op, mode, key, fn, dtypes):
    """fn as a tf.function of len(dtypes) inputs of unknown shape (jit-compiled in mode 'xla'), cached."""
    k = (op, mode, key)
    if k not in _functions:
        _functions[k] = tf.function(fn, input_signature=[tf.TensorSpec(None, d) for d in dtypes],
                                    jit_compile=mode == "xla", autograph=False)
    return _functions[k]


def _dtype(a):
    return tf.as_dtype(np.asarray(a).dtype)


def _expect_error(op, call, what):
    try:
        call()
    except ERRORS as e:
        message = str(e)
    else:
        pytest.fail(f"{what}: invalid arguments raised no error")
    if keraslm.ops.implementation() != "reference":  # (the references' shape errors may come from TF's ops)
        assert re.search(NAMES[op], message), f"{what}: the error does not name an argument: {message[:400]}"


def _assert_nan_close(got, want, atol, rtol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN pattern")
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], atol=atol, rtol=rtol, err_msg=what)


# ---------------------------------------------------------------------------
# attention: random shapes and key lengths; NaN in q or k (and NaN / inf past the key lengths)
# ---------------------------------------------------------------------------

def _attention_case(rng):
    B, Tq, Tk = (int(rng.choice([0, 1, 2, 3, 5, 17])) for _ in range(3))
    Hkv = int(rng.choice([1, 1, 2, 2, 0]))
    H = Hkv * int(rng.choice([1, 2])) + int(rng.choice([0] * 5 + [1]))
    D = int(rng.choice([1, 4, 8, 33, 64, 257]))
    rank = lambda: int(rng.choice([4] * 25 + [3, 5]))  # noqa: E731

    def tensor(shape):
        r = rank()
        shape = shape[:r] if r < 4 else shape + (2,) * (r - 4)
        return rng.standard_normal(shape).astype(np.float32)

    q, k, v = tensor((B, Tq, H, D)), tensor((B, Tk, Hkv, D)), tensor((B, Tk, Hkv, D))
    if rng.random() < 0.1:
        v = v[:, :-1] if v.ndim == 4 and v.shape[1] > 1 else v
    kl = None
    if rng.random() < 0.6:
        kl = rng.integers(0, Tk + 1, size=B if rng.random() < 0.9 else B + 1).astype(np.int32)
        if kl.size and rng.random() < 0.15:
            kl[rng.integers(kl.size)] = rng.choice([-1, Tk + 1])
        if k.ndim == v.ndim == 4 and k.shape == v.shape and kl.size == B:
            for b in range(B):  # what lies past the length must never be read
                k[b, kl[b]:] = np.nan
                v[b, kl[b]:] = rng.choice([np.nan, np.inf])
    for t in (q, k):
        if t.size and rng.random() < 0.3:
            t.flat[rng.integers(t.size)] = np.nan
    return q, k, v, kl, bool(rng.random() < 0.6)


def _check_attention(rng, mode, log=None):
    q, k, v, kl, causal = _attention_case(rng)
    args = [q, k, v] + ([kl] if kl is not None else [])
    fn = _function("attention", mode, (causal, kl is not None), lambda q, k, v, *kl: keraslm.ops.attention(
        q, k, v, causal=causal, key_lengths=kl[0] if kl else None, return_lse=True), [_dtype(a) for a in args])
    what = f"attention {mode} q{q.shape} k{k.shape} v{v.shape} key_lengths={kl} causal={causal}"
    try:
        _C.attention_forward(q, k, v, causal=causal, key_lengths=kl)  # the op's checks
    except ValueError:
        _expect_error("attention", lambda: fn(*args), what)
        return "error"
    want = _C.attention_forward_reference(q, k, v, causal=causal, key_lengths=kl)
    out, lse = fn(*args)
    _assert_nan_close(out, want[0], 2e-5, 2e-4, what + ": out")
    _assert_nan_close(lse, want[1], 2e-5, 2e-5, what + ": lse")
    return "ok"


# ---------------------------------------------------------------------------
# sample: the generator of test_sampling.py; the kernel through _C is the oracle (same checks, same kernel)
# ---------------------------------------------------------------------------

def _check_sample(rng, mode):
    from test_sampling import _check_success, _fuzz_args

    args, pad = _fuzz_args(rng)
    with np.errstate(over="ignore"):
        args["logits"] = args["logits"].astype(np.float32)
    values = list(args.values())
    fn = _function("sample", mode, pad, lambda *a: keraslm.ops.sample(*a, pad_id=pad), [_dtype(a) for a in values])
    what = f"sample {mode} " + ", ".join(f"{n}{np.shape(a)}" for n, a in args.items())
    try:
        want_ids, want_lp = _C.sample(**args, pad_id=pad)
    except ValueError:
        _expect_error("sample", lambda: fn(*values), what)
        return "error"
    ids, lp = (t.numpy() for t in fn(*values))
    _check_success(args, ids, lp)
    np.testing.assert_array_equal(ids, want_ids, err_msg=what)
    np.testing.assert_array_equal(lp, want_lp, err_msg=what)
    return "ok"


# ---------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------

def _check_linear(rng, mode):
    lead = tuple(int(d) for d in rng.integers(0, 4, size=rng.integers(0, 3)))
    K, N = int(rng.choice([0, 1, 5, 37])), int(rng.choice([1, 3, 70]))
    x = rng.standard_normal(lead + (K,)).astype(np.float32)
    kernel_shape = [(K, N)] * 8 + [(K + 1, N), (N,), (K, N, 1)]
    w = rng.standard_normal(kernel_shape[rng.integers(len(kernel_shape))]).astype(np.float32)
    bias_shape = [None, None, (N,), (N,), (N,), (1,), (N + 1,), (N, 1), ()][rng.integers(9)]
    b = None if bias_shape is None else rng.standard_normal(bias_shape).astype(np.float32)
    if x.size and rng.random() < 0.2:
        x.flat[rng.integers(x.size)] = np.nan
    args = [x, w] + ([b] if b is not None else [])
    fn = _function("linear", mode, b is not None, lambda x, w, *b: keraslm.ops.linear(x, w, b[0] if b else None),
                   [tf.float32] * len(args))
    what = f"linear {mode} x{x.shape} kernel{w.shape} bias{None if b is None else b.shape}"
    valid = w.shape == (K, N) and (b is None or b.shape == (N,))
    if not valid:
        _expect_error("linear", lambda: fn(*args), what)
        return "error"
    want = x.astype(np.float64) @ w + (0 if b is None else b)
    _assert_nan_close(fn(*args), want, 1e-5 * np.sqrt(max(K, 1)) * 4, 1e-5, what)
    return "ok"


# ---------------------------------------------------------------------------
# layer_norm (rows whose squares overflow float32 included)
# ---------------------------------------------------------------------------

def _check_layer_norm(rng, mode):
    from test_layer_norm import np_layer_norm

    C = int(rng.choice([1, 5, 16, 37, 200]))
    x = rng.standard_normal(tuple(int(d) for d in rng.integers(0, 4, size=rng.integers(0, 3))) + (C,))
    if x.ndim > 1 and x.shape[0] and rng.random() < 0.3:
        # (huge rows: only the compiled kernel is exact there; TF's float32 moments overflow)
        x[0] *= rng.choice([1e-20] if keraslm.ops.implementation() == "reference" else [1e19, 3e37, 1e-20])
    x = x.astype(np.float32)
    if rng.random() < 0.08:
        x = np.float32(rng.standard_normal())  # a scalar
    if x.size and rng.random() < 0.2:
        x.flat[rng.integers(x.size)] = np.nan
    shapes = [(C,)] * 6 + [(C + 1,), (1,), (C, 1)]
    gamma = rng.standard_normal(shapes[rng.integers(len(shapes))]).astype(np.float32)
    beta = None if rng.random() < 0.3 else rng.standard_normal(shapes[rng.integers(len(shapes))]).astype(np.float32)
    args = [x, gamma] + ([beta] if beta is not None else [])
    fn = _function("layer_norm", mode, beta is not None,
                   lambda x, g, *b: keraslm.ops.layer_norm(x, g, b[0] if b else None), [tf.float32] * len(args))
    what = f"layer_norm {mode} x{np.shape(x)} gamma{gamma.shape} beta{None if beta is None else beta.shape}"
    if np.ndim(x) == 0 or gamma.shape != (C,) or (beta is not None and beta.shape != (C,)):
        _expect_error("layer_norm", lambda: fn(*args), what)
        return "error"
    _assert_nan_close(fn(*args), np_layer_norm(x, gamma, beta, 1e-5), 2e-5, 1e-5, what)
    return "ok"


# ---------------------------------------------------------------------------
# decoder_block_step: a valid step, or one input made invalid
# ---------------------------------------------------------------------------

_WEIGHTS = ("ln_1", "c_attn", "c_proj", "ln_2", "mlp_c_fc", "mlp_c_proj")


def _check_decoder_block_step(rng, mode):
    B, S, Hkv, D, F = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.choice([1, 2])), \
        int(rng.choice([2, 8])), int(rng.integers(1, 20))
    H, use_bias = Hkv * int(rng.choice([1, 2])), bool(rng.random() < 0.5)
    x, kc, vc, index, lengths, w = step_inputs(rng, B, S, H, Hkv, D, F, use_bias)
    w = {n: tuple(None if t is None else t.astype(np.float32) for t in wb) for n, wb in w.items()}
    bad = rng.choice(["none"] * 5 + ["index", "key_lengths", "v_cache", "w_fc", "x", "b_qkv"])
    if bad == "index":
        index[rng.integers(B)] = rng.choice([-1, S, S + 7])
    elif bad == "key_lengths":
        lengths[rng.integers(B)] = rng.choice([-1, S + 1])
    elif bad == "v_cache":
        vc = vc[:, :, :, :-1] if D > 1 else vc[:, :-1]
    elif bad == "w_fc":
        w["mlp_c_fc"] = (w["mlp_c_fc"][0][:-1], w["mlp_c_fc"][1])
    elif bad == "x":
        x = np.concatenate([x, x[:, :1]], 1)
    elif bad == "b_qkv" and use_bias:
        w["c_attn"] = (w["c_attn"][0], w["c_attn"][1][1:])
    flat = [t for name in _WEIGHTS for t in w[name] if t is not None]
    args = [x, kc, vc, index, lengths] + flat

    def step(x, k, v, i, n, *weights):
        it = iter(weights)
        ws = {name: (next(it), next(it) if use_bias else None) for name in _WEIGHTS}
        return keraslm.ops.decoder_block_step(x, k, v, i, n, num_heads=H, **ws)

    fn = _function("decoder_block_step", mode, (H, use_bias, len(flat)), step, [_dtype(a) for a in args])
    what = f"decoder_block_step {mode} B={B} S={S} H={H} Hkv={Hkv} D={D} F={F} bias={use_bias} bad={bad}"
    if bad != "none" and not (bad == "b_qkv" and not use_bias):
        _expect_error("decoder_block_step", lambda: fn(*args), what)
        return "error"
    got = fn(*args)
    for name, g, r in zip(("y", "k_cache", "v_cache"), got, np_block(x, kc, vc, index, lengths, w, H)):
        _assert_nan_close(g, r, 2e-5 * np.sqrt(F) + 1e-5, 1e-4, f"{what}: {name}")
    return "ok"


CHECKS = {"attention": _check_attention, "sample": _check_sample, "linear": _check_linear,
          "layer_norm": _check_layer_norm, "decoder_block_step": _check_decoder_block_step}
COUNTS = {"attention": 10, "sample": 14, "linear": 10, "layer_norm": 10, "decoder_block_step": 8}


def _fuzz(op, mode, n, seed, impl="auto"):
    if mode == "xla" and not _loader.has_xla_lowering(op):
        pytest.skip(f"this build has no XLA lowering of {op}")
    rng = np.random.default_rng([seed, list(CHECKS).index(op), MODES.index(mode)])
    outcomes = {"ok": 0, "error": 0}
    _functions.clear()  # (traced under the implementation switch)
    with keraslm.ops.implementation_scope(impl):
        for _ in range(n):
            outcomes[CHECKS[op](rng, mode)] += 1
    return outcomes


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", list(CHECKS))
def test_fuzz(op, mode):
    outcomes = _fuzz(op, mode, COUNTS[op], seed=7)
    assert outcomes["ok"] > 0, outcomes  # the fuzzer also exercises valid calls


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", list(CHECKS))
def test_fuzz_long(op, mode):
    outcomes = _fuzz(op, mode, 25 * COUNTS[op], seed=2024)
    assert outcomes["ok"] > 10 and outcomes["error"] > 10, outcomes


@pytest.mark.parametrize("op", ["attention", "linear", "layer_norm", "decoder_block_step"])
def test_fuzz_references_with_unknown_shapes(op):
    """The pure-TF references in the unknown-shape graph mode: valid arguments give the float64 results and
    invalid ones raise (their shape errors may be TF's own, which need not name the argument)."""
    outcomes = _fuzz(op, "graph", COUNTS[op], seed=3, impl="reference")
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes


@pytest.mark.parametrize("mode", MODES)
def test_reference_sampler_ids_stay_in_the_vocabulary(mode):
    """The pure-TF sampler on the fuzz inputs: outside XLA it raises like the op; inside XLA, where it cannot
    raise, every id is in [0, V) (rows with invalid values get id 0 and logprob NaN)."""
    from test_sampling import _fuzz_args

    rng = np.random.default_rng(11)
    n = {"graph": 12, "xla": 10}[mode]
    with keraslm.ops.implementation_scope("reference"):
        for _ in range(n):
            args, pad = _fuzz_args(rng)
            with np.errstate(over="ignore"):
                args["logits"] = args["logits"].astype(np.float32)
            values = list(args.values())
            fn = _function("sample-reference", mode, pad, lambda *a: keraslm.ops.sample(*a, pad_id=pad),
                           [_dtype(a) for a in values])
            try:
                want = _C.sample_reference(**args, pad_id=pad)
            except ValueError:
                want = None
            try:
                ids, lp = (t.numpy() for t in fn(*values))
            except ERRORS as e:  # (the pure-TF rules also refuse float32 denormal divisors, and check
                B = args["logits"].shape[0] if np.ndim(args["logits"]) == 2 else None  # scalars when B = 0)
                assert want is None or "normal range" in str(e) or B == 0, str(e)[:400]
                continue
            V = args["logits"].shape[1]
            assert np.all((ids >= 0) & (ids < V)), ids
            if want is not None:
                assert np.array_equal(ids, want[0]) or np.all(np.abs(lp - want[1]) < 1e-3), (ids, want)
            else:
                assert mode == "xla" and (np.isnan(lp).any() or ids.size == 0), (ids, lp)
