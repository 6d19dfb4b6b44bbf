"""Tests of token sampling: the custom op, keraslm._C, the C++ reference and the
pure-TF reference against each other and against a float64 numpy model of the
contract (csrc/kernels/sampling.h).

Implementations may legitimately disagree only where float rounding decides:
a coin within TOL of a CDF boundary, a top-p threshold within TOL of a ranked
cumulative mass, or a logit within TOL of the min-p threshold.  Every
disagreement is checked against those margins, computed in float64.
"""

import inspect
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import keraslm
from keraslm.ops import _loader

_C = pytest.importorskip("keraslm._C")

TOL = 1e-5
IMPLS = ["custom", "reference"]
PARAMS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def _impl_scope(impl):
    if impl == "custom" and not _loader.custom_ops_available():
        pytest.skip(f"custom ops unavailable: {_loader.load_error()}")
    return keraslm.ops.implementation_scope(impl)


# ---------------------------------------------------------------------------
# float64 numpy model of the contract
# ---------------------------------------------------------------------------

def np_model(x, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, prev=(), pad_id=-1):
    """One row: (probs [V] float64 over the kept set, margin to the nearest kept-set decision)."""
    x = np.asarray(x, np.float64).copy()
    V = x.size
    for t in {int(t) for t in prev if t != pad_id}:
        x[t] = x[t] / repetition_penalty if x[t] > 0 else x[t] * repetition_penalty
    if temperature == 0:
        probs = np.zeros(V)
        probs[int(np.argmax(x))] = 1
        return probs, np.inf
    z = x / np.float64(np.float32(temperature))
    order = np.lexsort((np.arange(V), -z))
    zmax = z[order[0]]
    e = np.exp(z - zmax)
    rk = top_k if 0 < top_k < V else V
    margin, rp = np.inf, rk
    if top_p < 1:
        q = e[order[:rk]] / e[order[:rk]].sum()
        before = np.concatenate([[0.0], np.cumsum(q)[:-1]])
        rp = int(np.sum(before < np.float64(np.float32(top_p))))
        margin = min(margin, np.min(np.abs(before[1:] - np.float32(top_p)), initial=np.inf))
    rm = V
    if min_p > 0:
        threshold = zmax + np.log(np.float64(np.float32(min_p)))
        rm = int(np.sum(z[order] >= threshold))
        finite = np.isfinite(z)
        margin = min(margin, np.min(np.abs(z[finite] - threshold), initial=np.inf))
    kept = np.zeros(V, bool)
    kept[order[:min(rp, rm)]] = True
    probs = np.where(kept, e, 0.0)
    return probs / probs.sum(), margin


def coin_margin(probs, coin):
    cdf = np.cumsum(probs)
    return np.min(np.abs(cdf[:-1] - coin), initial=np.inf)


def random_case(rng, B, V, per_row=True, allow_greedy=True):
    """Random logits (some -inf, some ties) and random parameters."""
    scale = rng.choice([0.3, 1.0, 3.0, 10.0])
    logits = (rng.normal(size=(B, V)) * scale).astype(np.float32)
    logits[rng.random((B, V)) < 0.05] = -np.inf
    if V > 3:
        logits[:, 1] = logits[:, 2]  # a tie
    logits[np.arange(B), rng.integers(0, V, B)] = 0.5  # at least one finite value per row
    n = B if per_row else 1

    def pick(values, probs=None):
        out = np.asarray([values[i] for i in rng.choice(len(values), n, p=probs)])
        return out if per_row else out[0]

    params = dict(
        temperature=np.asarray(pick([0.0, 0.3, 0.7, 1.0, 1.5], [0.15 if allow_greedy else 0, 0.2, 0.25, 0.25,
                                                               0.15 if allow_greedy else 0.3]), np.float32),
        top_k=np.asarray(pick([0, 1, 3, 20, V, V + 5]), np.int32),
        top_p=np.asarray(pick([1.0, 0.95, 0.8, 0.5, 0.2]), np.float32),
        min_p=np.asarray(pick([0.0, 0.0, 0.02, 0.2]), np.float32),
        repetition_penalty=np.asarray(pick([1.0, 1.3, 0.7]), np.float32),
    )
    prev = rng.integers(-1, V, size=(B, 6)).astype(np.int32)
    return logits, params, prev


def row_params(params, b):
    return {k: (v[b] if np.ndim(v) else v).item() for k, v in params.items()}


def run(impl, logits, coins, params, prev=None, pad_id=-1):
    """(ids, logprobs) as numpy from one implementation."""
    if impl in ("C", "C_ref"):
        fn = _C.sample if impl == "C" else _C.sample_reference
        return fn(logits, coins, **params, previous_ids=prev, pad_id=pad_id)
    with _impl_scope(impl):
        ids, lp = keraslm.ops.sample(logits, coins, **params, previous_ids=prev, pad_id=pad_id)
    return ids.numpy(), lp.numpy()


_FUNCTIONS = {}


def run_function(impl, logits, coins, params, prev):
    """The same through a tf.function with dynamic shapes (traced once per implementation)."""
    if impl not in _FUNCTIONS:
        spec = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.float32)]
        spec += [tf.TensorSpec(None, tf.int32 if n == "top_k" else tf.float32) for n in PARAMS]
        spec += [tf.TensorSpec([None, None], tf.int32)]
        with _impl_scope(impl):
            fn = tf.function(lambda x, u, t, k, p, m, r, ids: keraslm.ops.sample(x, u, t, k, p, m, r, ids),
                             input_signature=spec, autograph=False)
            fn.get_concrete_function()
        _FUNCTIONS[impl] = fn
    ids, lp = _FUNCTIONS[impl](logits, coins, *[params[n] for n in PARAMS], prev)
    return ids.numpy(), lp.numpy()


def check_against_model(logits, coins, params, prev, ids, logprobs, what):
    for b in range(logits.shape[0]):
        rp = row_params(params, b)
        probs, margin = np_model(logits[b], **rp, prev=prev[b] if prev is not None else ())
        near = margin < TOL or coin_margin(probs, coins[b]) < TOL
        expected = int(np.searchsorted(np.cumsum(probs), coins[b], side="right"))
        if ids[b] != expected:
            assert near, f"{what}: row {b} id {ids[b]} != {expected} away from any boundary ({rp})"
        assert probs[ids[b]] > 0 or near, f"{what}: row {b} drew a token outside the kept set"
        if probs[ids[b]] > 0 and not (near and ids[b] != expected):
            np.testing.assert_allclose(logprobs[b], np.log(probs[ids[b]]), rtol=1e-4, atol=2e-5,
                                       err_msg=f"{what}: row {b} logprob")


# ---------------------------------------------------------------------------
# Agreement between implementations
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_all_implementations_agree_with_model(seed):
    rng = np.random.default_rng(seed)
    B, V = 24, [7, 100, 513][seed]
    logits, params, prev = random_case(rng, B, V)
    coins = rng.random(B).astype(np.float32)
    for impl in ("C", "C_ref", "custom", "reference"):
        ids, lp = run(impl, logits, coins, params, prev)
        assert ids.dtype == np.int32 and lp.dtype == np.float32 and ids.shape == (B,)
        check_against_model(logits, coins, params, prev, ids, lp, impl)
    for impl in IMPLS:
        ids, lp = run_function(impl, logits, coins, params, prev)
        check_against_model(logits, coins, params, prev, ids, lp, impl + " tf.function")


@pytest.mark.parametrize("config", [
    dict(top_k=5), dict(top_p=0.7), dict(min_p=0.05), dict(top_k=40, top_p=0.9),
    dict(top_p=0.9, min_p=0.01, repetition_penalty=1.5), dict(temperature=0.6, top_k=10, top_p=0.5),
    dict(temperature=2.0, repetition_penalty=0.8), dict(),
])
def test_filtered_distribution(config):
    """Probing each kept token's CDF interval at its midpoint recovers the reference distribution."""
    rng = np.random.default_rng(zlib.crc32(repr(sorted(config.items())).encode()))
    V = 300
    for _ in range(20):  # keep the top-p / min-p decisions away from rounding
        logits = (rng.normal(size=V) * 2).astype(np.float32)
        logits[rng.random(V) < 0.03] = -np.inf
        prev = rng.integers(-1, V, size=8).astype(np.int32)
        if np_model(logits, **config, prev=prev)[1] > 1e-4:
            break
    log_pi = keraslm.ops.filtered_logprobs(logits[None], **config, previous_ids=prev[None]).numpy()[0]
    probs, _ = np_model(logits, **config, prev=prev)
    np.testing.assert_allclose(np.exp(log_pi.astype(np.float64)), probs, atol=1e-6)
    assert np.array_equal(np.isfinite(log_pi), probs > 0)
    cdf = np.cumsum(probs)
    start = np.concatenate([[0.0], cdf[:-1]])
    probe = np.flatnonzero(probs > 4 * TOL)
    coins = ((start + cdf) / 2)[probe].astype(np.float32)
    n = probe.size
    tiled = np.repeat(logits[None], n, 0)
    tiled_prev = np.repeat(prev[None], n, 0)
    assert probs[probe].sum() > 1 - 1e-3
    for impl in ("C", "C_ref", "custom", "reference"):
        ids, lp = run(impl, tiled, coins, config, tiled_prev)
        np.testing.assert_array_equal(ids, probe, err_msg=impl)
        np.testing.assert_allclose(lp, log_pi[probe], rtol=1e-4, atol=1e-5, err_msg=impl)


@pytest.mark.parametrize("impl", ["C", "custom"])
def test_chi_square(impl):
    """Sampled frequencies follow the filtered distribution."""
    rng = np.random.default_rng(7)
    V, n = 60, 20000
    logits = (rng.normal(size=V) * 1.5).astype(np.float32)
    config = dict(temperature=0.8, top_k=30, top_p=0.95, min_p=0.01, repetition_penalty=1.2)
    prev = np.array([[3, 3, 10, -1]] * n, np.int32)
    probs, _ = np_model(logits, **config, prev=prev[0])
    coins = rng.random(n).astype(np.float32)
    ids, _ = run(impl, np.repeat(logits[None], n, 0), coins, config, prev)
    counts = np.bincount(ids, minlength=V)
    assert np.all(counts[probs == 0] == 0)
    kept = probs > 0
    expected = probs[kept] * n
    assert expected.min() > 5, "the test distribution needs a few expected counts per cell"
    assert scipy.stats.chisquare(counts[kept], expected).pvalue > 1e-3


# ---------------------------------------------------------------------------
# Greedy, per-row parameters, shapes, -inf, penalty
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["C", "C_ref", "custom", "reference"])
def test_greedy_lowest_id_on_ties(impl):
    logits = np.array([[0, 3, 1, 3, 3], [-np.inf, -2, -1, -1, -np.inf], [5, 5, 5, 5, 5]], np.float32)
    ids, lp = run(impl, logits, np.array([0.9, 0.1, 0.5], np.float32), dict(temperature=0.0, top_k=2))
    np.testing.assert_array_equal(ids, [1, 2, 0])
    np.testing.assert_array_equal(lp, [0, 0, 0])
    # Penalised ties: id 1 drops below 3, so the first of the remaining maxima wins.
    ids, _ = run(impl, logits[:1], np.array([0.5], np.float32), dict(temperature=0.0, repetition_penalty=2.0),
                 np.array([[1, -1]], np.int32))
    assert ids[0] == 3


@pytest.mark.parametrize("impl", ["C", "custom", "reference"])
def test_per_row_parameters_match_scalars(impl):
    rng = np.random.default_rng(11)
    B, V = 6, 50
    logits, params, prev = random_case(rng, B, V)
    coins = rng.random(B).astype(np.float32)
    ids, lp = run(impl, logits, coins, params, prev)
    for b in range(B):
        ids_b, lp_b = run(impl, logits[b:b + 1], coins[b:b + 1], row_params(params, b), prev[b:b + 1])
        assert ids_b[0] == ids[b]
        np.testing.assert_allclose(lp_b[0], lp[b], rtol=1e-6)


@pytest.mark.parametrize("V", [1, 7, 17, 50257])
def test_vocab_sizes(V):
    rng = np.random.default_rng(V)
    B = 3 if V > 1000 else 16
    logits, params, prev = random_case(rng, B, V, allow_greedy=False)
    coins = rng.random(B).astype(np.float32)
    for impl in ("C", "custom", "reference"):
        ids, lp = run(impl, logits, coins, params, prev)
        assert np.all((ids >= 0) & (ids < V))
        check_against_model(logits, coins, params, prev, ids, lp, f"{impl} V={V}")


def test_empty_batch():
    logits = np.zeros((0, 5), np.float32)
    coins = np.zeros((0,), np.float32)
    for impl in ("C", "C_ref", "custom", "reference"):
        ids, lp = run(impl, logits, coins, dict(top_k=2, top_p=0.5))
        assert ids.shape == (0,) and ids.dtype == np.int32 and lp.shape == (0,) and lp.dtype == np.float32
    for impl in IMPLS:
        ids, lp = run_function(impl, logits, coins, dict(zip(PARAMS, [1.0, 2, 0.5, 0.0, 1.0])),
                               np.zeros((0, 3), np.int32))
        assert ids.shape == (0,) and lp.shape == (0,)


@pytest.mark.parametrize("impl", ["C", "C_ref", "custom", "reference"])
def test_minus_inf_logits(impl):
    rng = np.random.default_rng(3)
    V, n = 40, 200
    logits = rng.normal(size=V).astype(np.float32)
    banned = rng.random(V) < 0.5
    logits[banned] = -np.inf
    coins = rng.random(n).astype(np.float32)
    for config in (dict(), dict(top_k=V - 1), dict(top_p=0.999), dict(min_p=1e-30)):
        ids, lp = run(impl, np.repeat(logits[None], n, 0), coins, config)
        assert not banned[ids].any() and np.all(np.isfinite(lp)) and np.all(lp <= 0)
    single = np.full((2, V), -np.inf, np.float32)
    single[:, 13] = -1e30
    ids, lp = run(impl, single, np.array([0.0, 0.999], np.float32), dict(top_p=0.3, min_p=0.5))
    np.testing.assert_array_equal(ids, [13, 13])
    np.testing.assert_allclose(lp, [0, 0], atol=1e-6)


@pytest.mark.parametrize("impl", ["C", "C_ref", "custom", "reference"])
def test_repetition_penalty_distinct_ids_and_pads(impl):
    rng = np.random.default_rng(5)
    V, n = 30, 64
    # Multiples of 1/4: x / 2 and x * 2 are exact in float32, so pre-penalised
    # logits give bit-identical results.
    logits = (np.round(rng.normal(size=V) * 8) / 4).astype(np.float32)
    prev = np.array([4, 4, 4, 9, 7, 7, 5, 5], np.int32)  # repeats count once; 5 is the pad id here
    manual = logits.copy()
    for t in (4, 9, 7):
        manual[t] = manual[t] / 2 if manual[t] > 0 else manual[t] * 2
    coins = rng.random(n).astype(np.float32)
    config = dict(top_k=12, top_p=0.9)
    got = run(impl, np.repeat(logits[None], n, 0), coins, dict(config, repetition_penalty=2.0),
              np.repeat(prev[None], n, 0), pad_id=5)
    want = run(impl, np.repeat(manual[None], n, 0), coins, config)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


def test_float64_coins_below_one_stay_valid():
    coins = np.array([np.nextafter(1.0, 0.0), 0.5])  # rounds to 1.0 in float32
    logits = np.zeros((2, 4), np.float32)
    assert _C.sample(logits, coins)[0][0] == 3
    for impl in IMPLS:
        with _impl_scope(impl):
            assert keraslm.ops.sample(logits, coins)[0].numpy()[0] == 3
            assert keraslm.ops.sample(logits, tf.constant(coins))[0].numpy()[0] == 3


def test_not_differentiable():
    logits = tf.Variable(np.random.default_rng(0).normal(size=(2, 10)).astype(np.float32))
    for impl in IMPLS:
        with _impl_scope(impl), tf.GradientTape() as tape:
            _, lp = keraslm.ops.sample(logits, [0.3, 0.6], top_k=3)
        assert tape.gradient(lp, logits) is None
    with tf.GradientTape() as tape:
        lp = keraslm.ops.filtered_logprobs(logits, top_k=3)
        loss = tf.reduce_sum(tf.where(tf.math.is_finite(lp), lp, 0.0))
    assert tape.gradient(loss, logits) is not None


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_inside_xla_matches_model(impl):
    """auto: the op's XLA custom call (where this build has it); reference: the pure-TF sampler compiled."""
    rng = np.random.default_rng(2)
    logits, params, prev = random_case(rng, 4, 64)
    coins = rng.random(4).astype(np.float32)
    fn = tf.function(lambda x, u: keraslm.ops.sample(x, u, **params, previous_ids=prev), jit_compile=True,
                     autograph=False)
    with keraslm.ops.implementation_scope(impl):
        ids, lp = fn(logits, coins)
        hlo = fn.experimental_get_compiler_ir(logits, coins)(stage="hlo")
    assert ("keraslm_sample" in hlo) == (impl == "auto" and _loader.has_xla_lowering("sample"))
    check_against_model(logits, coins, params, prev, ids.numpy(), lp.numpy(), f"xla {impl}")


def test_saved_model_export_uses_stock_ops(tmp_path):
    """Exported with the reference switch, the graph holds no custom op and reloads anywhere."""
    class Sampler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.float32)])
        def __call__(self, logits, coins):
            return keraslm.ops.sample(logits, coins, temperature=0.8, top_k=5, top_p=0.9)

    with keraslm.ops.implementation_scope("reference"):
        module = Sampler()
        graph = module.__call__.get_concrete_function().graph.as_graph_def()
        tf.saved_model.save(module, str(tmp_path))
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert not any(op.startswith("Keraslm") for op in ops), ops
    loaded = tf.saved_model.load(str(tmp_path))
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(5, 40)).astype(np.float32)
    coins = rng.random(5).astype(np.float32)
    ids, lp = loaded(logits, coins)
    params = dict(temperature=np.float32(0.8), top_k=np.int32(5), top_p=np.float32(0.9),
                  min_p=np.float32(0), repetition_penalty=np.float32(1))
    check_against_model(logits, coins, params, None, ids.numpy(), lp.numpy(), "saved model")


def test_isa_variants_match_reference(tmp_path):
    """_C.sample under KERASLM_ISA=generic / avx2 (loaded without TensorFlow) against the C++ reference."""
    helpers = "".join(inspect.getsource(f) + "\n" for f in (np_model, coin_margin, random_case, row_params))
    script = tmp_path / "isa_check.py"
    script.write_text(f"""
import importlib.util
import numpy as np
spec = importlib.util.spec_from_file_location("_C", {_C.__file__!r})
C = importlib.util.module_from_spec(spec)
spec.loader.exec_module(C)
{helpers}
print(C.cpu_isa())
rng = np.random.default_rng(0)
for B, V in [(40, 7), (40, 300), (8, 5000)]:
    logits, params, prev = random_case(rng, B, V)
    coins = rng.random(B).astype(np.float32)
    ids, lp = C.sample(logits, coins, **params, previous_ids=prev)
    ref_ids, ref_lp = C.sample_reference(logits, coins, **params, previous_ids=prev)
    for b in np.flatnonzero(ids != ref_ids):
        probs, margin = np_model(logits[b], **row_params(params, b), prev=prev[b])
        assert margin < 1e-5 or coin_margin(probs, coins[b]) < 1e-5, (B, V, b)
    same = ids == ref_ids
    np.testing.assert_allclose(lp[same], ref_lp[same], rtol=1e-4, atol=2e-5)
""")
    for isa in ("generic", "avx2"):
        env = dict(os.environ, KERASLM_ISA=isa)
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        got = out.stdout.split()[0]
        assert got == isa or (isa == "avx2" and got == "generic"), got  # never above what the CPU has


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

def _base():
    return dict(logits=np.zeros((2, 5), np.float32), coins=np.array([0.2, 0.7], np.float32))


BAD_VALUES = [  # (argument, bad value)
    ("temperature", [1.0, -0.5]), ("temperature", [np.nan, 1.0]), ("temperature", [np.inf, 1.0]),
    ("top_k", [-1, 2]), ("top_p", [0.0, 0.5]), ("top_p", [0.5, 1.5]), ("top_p", [np.nan, 0.5]),
    ("min_p", [-0.1, 0.0]), ("min_p", [0.0, 1.01]), ("repetition_penalty", [0.0, 1.0]),
    ("repetition_penalty", [1.0, -2.0]), ("repetition_penalty", [np.inf, 1.0]),
    ("coins", [0.2, 1.0]), ("coins", [-0.1, 0.5]), ("coins", [np.nan, 0.5]),
    ("logits", [[0, 1, np.nan, 0, 0], [0] * 5]), ("logits", [[0] * 5, [0, np.inf, 0, 0, 0]]),
    ("logits", [[0] * 5, [-np.inf] * 5]), ("previous_ids", [[0, 5], [1, 2]]), ("previous_ids", [[0, 1], [-3, 2]]),
]


def _kwargs(arg, value, as_tensor):
    kw = _base()
    dtype = np.int32 if arg in ("top_k", "previous_ids") else np.float32
    kw[arg] = tf.constant(np.asarray(value, dtype)) if as_tensor else np.asarray(value, dtype)
    return kw


@pytest.mark.parametrize("arg,value", BAD_VALUES)
def test_bad_values(arg, value):
    kw = _kwargs(arg, value, as_tensor=False)
    with pytest.raises(ValueError, match=arg):
        _C.sample(**kw)
    with pytest.raises(ValueError, match=arg):
        _C.sample_reference(**kw)
    for impl in IMPLS:
        with _impl_scope(impl):
            with pytest.raises(tf.errors.InvalidArgumentError, match=arg):
                keraslm.ops.sample(**_kwargs(arg, value, as_tensor=True))
            if arg not in ("logits", "previous_ids"):  # statically known Python / numpy values
                with pytest.raises(ValueError, match=arg):
                    keraslm.ops.sample(**_kwargs(arg, value, as_tensor=False))


BAD_SHAPES = [
    ("logits", np.zeros(5, np.float32)), ("logits", np.zeros((2, 0), np.float32)),
    ("coins", np.zeros(3, np.float32)), ("coins", np.float32(0.5)), ("temperature", np.ones(3, np.float32)),
    ("top_k", np.ones((2, 1), np.int32)), ("previous_ids", np.zeros((3, 2), np.int32)),
    ("previous_ids", np.zeros(2, np.int32)),
]


@pytest.mark.parametrize("arg,value", BAD_SHAPES)
def test_bad_shapes(arg, value):
    kw = dict(_base(), **{arg: value})
    with pytest.raises(ValueError, match=arg):
        _C.sample(**kw)
    # Run time (unknown static shapes): InvalidArgumentError naming the argument.
    names = ["logits", "coins", *PARAMS, "previous_ids"]
    full = dict(zip(PARAMS, [np.float32(1), np.int32(0), np.float32(1), np.float32(0), np.float32(1)]),
                previous_ids=np.zeros((2, 0), np.int32), **_base())
    full[arg] = value
    for impl in IMPLS:
        with _impl_scope(impl):
            fn = tf.function(lambda *a: keraslm.ops.sample(*a),
                             input_signature=[tf.TensorSpec(None, tf.as_dtype(full[n].dtype)) for n in names],
                             autograph=False)
            if arg == "logits" and value.ndim == 2:
                with pytest.raises(tf.errors.InvalidArgumentError, match="logits"):
                    fn(*[full[n] for n in names])
                continue
            with pytest.raises(tf.errors.InvalidArgumentError, match=arg):
                fn(*[full[n] for n in names])
            with pytest.raises(ValueError, match=arg):  # statically known shapes
                keraslm.ops.sample(**{k: v for k, v in full.items()})


def test_bad_dtypes_and_pad_id():
    kw = _base()
    for bad in (dict(top_k=1.5), dict(logits=np.zeros((2, 5), bool)), dict(previous_ids=np.zeros((2, 1), np.float32)),
                dict(coins=["a", "b"]), dict(pad_id=1.5), dict(pad_id=2**40)):
        arg = next(iter(bad))
        with pytest.raises(ValueError, match=arg):
            _C.sample(**dict(kw, **bad))
        for impl in IMPLS:
            with _impl_scope(impl), pytest.raises(ValueError, match=arg):
                keraslm.ops.sample(**dict(kw, **bad))


# ---------------------------------------------------------------------------
# Fuzz: never crash, only documented errors
# ---------------------------------------------------------------------------

def _fuzz_value(rng, kind, B, V):
    """A random argument: valid (including extreme but legal values) nine times in ten."""
    bad = rng.random() < 0.1
    if kind == "logits":
        shape = (B, V) if not bad else [(V,), (B, V, 1), (B, 0), ()][rng.integers(4)]
        x = rng.normal(size=shape) * rng.choice([1e-3, 1, 1e3, 1e30])
        if x.ndim == 2 and x.size:
            x[rng.random(x.shape) < rng.choice([0, 0.3, 0.9])] = -np.inf
            x[np.arange(B), rng.integers(0, V, B)] = rng.choice([0, -1e30, 3e38])
            if bad:
                x.flat[rng.integers(x.size)] = rng.choice([np.nan, np.inf])
        with np.errstate(over="ignore"):  # large values become inf in float16 / float32: also a case
            return x.astype(rng.choice([np.float32, np.float32, np.float64, np.float16]))
    if kind == "coins":
        if bad:
            return rng.choice([1.0, -0.1, np.nan, 0.5], size=[(B,), (B + 1,), ()][rng.integers(3)]).astype(np.float32)
        return rng.choice([0.0, 0.5, 0.99999994, 1e-30, rng.random()], size=B).astype(np.float32)
    if kind == "previous_ids":
        if bad:
            shape = [(B, 3), (B + 1, 2), (3,)][rng.integers(3)]
            return rng.integers(-3, V + 3, size=shape).astype(np.int32)
        return rng.integers(-1, V, size=(B, int(rng.choice([0, 1, 5])))).astype(np.int32)
    good = dict(temperature=[0, 1e-30, 1e-45, 0.5, 1, 1e30], top_k=[0, 1, 5, V, 2**31 - 1],
                top_p=[1, 0.5, 1e-30, 0.999], min_p=[0, 0.5, 1, 1e-30],
                repetition_penalty=[1, 1e-30, 0.5, 1e30])[kind]
    invalid = dict(temperature=[-1, np.nan, np.inf], top_k=[-1], top_p=[0, 1.1, np.nan], min_p=[-0.1, 2, np.nan],
                   repetition_penalty=[0, -1, np.inf, np.nan])[kind]
    dtype = np.int32 if kind == "top_k" else np.float32
    v = rng.choice(invalid if bad else good)
    shape = () if rng.random() < 0.5 else (B,) if not bad or rng.random() < 0.5 else (B + 1,)
    return np.full(shape, v, dtype)


def _fuzz_args(rng):
    B, V = int(rng.integers(0, 4)), int(rng.integers(1, 40))
    args = {k: _fuzz_value(rng, k, B, V) for k in ["logits", "coins", *PARAMS, "previous_ids"]}
    return args, int(rng.choice([-1, 0, 2]))


def _check_success(args, ids, lp):
    x = np.asarray(args["logits"], np.float32)
    assert ids.shape == lp.shape == (x.shape[0],)
    assert np.all((ids >= 0) & (ids < x.shape[1]))
    assert np.all(np.isfinite(x[np.arange(x.shape[0]), ids]))
    assert np.all(lp <= 1e-6) and not np.any(np.isnan(lp))


def test_fuzz_c_module():
    rng = np.random.default_rng(1234)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        args, pad = _fuzz_args(rng)
        try:
            ids, lp = _C.sample(**args, pad_id=pad)
        except ValueError:
            outcomes["error"] += 1
            continue
        _check_success(args, ids, lp)
        outcomes["ok"] += 1
    assert outcomes["ok"] > 200 and outcomes["error"] > 200, outcomes


def test_fuzz_tf_op():
    if not _loader.custom_ops_available():
        pytest.skip(f"custom ops unavailable: {_loader.load_error()}")
    lib = _loader.op_library()
    rng = np.random.default_rng(4321)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(1500):
        args, pad = _fuzz_args(rng)
        args["logits"] = args["logits"].astype(np.float32)
        try:
            ids, lp = lib.keraslm_sample(*args.values(), pad_id=pad)
        except tf.errors.InvalidArgumentError:
            outcomes["error"] += 1
            continue
        _check_success(args, ids.numpy(), lp.numpy())
        outcomes["ok"] += 1
    assert outcomes["ok"] > 100 and outcomes["error"] > 100, outcomes


@pytest.mark.parametrize("impl", IMPLS)
def test_fuzz_python_api(impl):
    rng = np.random.default_rng(99)
    n = 300 if impl == "custom" else 120
    with _impl_scope(impl):
        for _ in range(n):
            args, pad = _fuzz_args(rng)
            as_tensor = rng.random() < 0.5
            if as_tensor:
                args = {k: tf.constant(v) for k, v in args.items()}
            try:
                ids, lp = keraslm.ops.sample(**args, pad_id=pad)
            except (ValueError, tf.errors.InvalidArgumentError):
                continue
            _check_success({k: np.asarray(v) for k, v in args.items()}, ids.numpy(), lp.numpy())
