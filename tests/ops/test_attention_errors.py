"""Bad input to attention gives clear errors (never a crash), on every path."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm import _C

REPO = Path(__file__).resolve().parents[2]
DYN = tf.TensorSpec(None, tf.float32)


def _dynamic_attention(impl, q, k, v, key_lengths=None, causal=True):
    """Calls attention with shapes unknown at trace time, so only run-time checks apply."""
    sig = [DYN, DYN, DYN] + ([tf.TensorSpec(None, tf.int32)] if key_lengths is not None else [])

    @tf.function(input_signature=sig)
    def f(*args):
        kl = args[3] if len(args) > 3 else None
        return keraslm.ops.attention(tf.ensure_shape(args[0], [None] * 4) if args[0].shape.rank == 4 else args[0],
                                     args[1], args[2], causal=causal, key_lengths=kl, scale=0.5)

    with keraslm.ops.implementation_scope(impl):
        args = [q, k, v] + ([key_lengths] if key_lengths is not None else [])
        return f(*args)


def z(*shape):
    return np.zeros(shape, np.float32)


BAD = [
    # (q, k, v, key_lengths, words expected in the message (custom op / _C))
    (z(2, 3, 4), z(2, 3, 4, 8), z(2, 3, 4, 8), None, "q must have rank 4"),
    (z(2, 3, 4, 8), z(2, 3, 4, 8), z(2, 5, 4, 8), None, "v must have the shape of k"),
    (z(2, 3, 4, 8), z(3, 3, 4, 8), z(3, 3, 4, 8), None, "batch size"),
    (z(2, 3, 4, 8), z(2, 3, 4, 16), z(2, 3, 4, 16), None, "head size"),
    (z(1, 3, 2, 300), z(1, 3, 2, 300), z(1, 3, 2, 300), None, "head size D must be in [1, 256], got 300"),
    (z(1, 3, 3, 8), z(1, 3, 2, 8), z(1, 3, 2, 8), None, "H=3 must be a positive multiple"),
    (z(2, 3, 4, 8), z(2, 3, 4, 8), z(2, 3, 4, 8), np.array([3, -1], np.int32), "key_lengths[1] must be in [0, Tk=3], got -1"),
    (z(2, 3, 4, 8), z(2, 3, 4, 8), z(2, 3, 4, 8), np.array([4, 1], np.int32), "key_lengths[0] must be in [0, Tk=3], got 4"),
    (z(2, 3, 4, 8), z(2, 3, 4, 8), z(2, 3, 4, 8), np.array([3], np.int32), "key_lengths must have shape"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_custom_op_errors_name_the_bad_value(case):
    q, k, v, kl, words = BAD[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=words.replace("[", r"\[").replace("]", r"\]")):
        _dynamic_attention("custom", q, k, v, kl)


@pytest.mark.parametrize("case", range(len(BAD)))
def test_reference_errors(case):
    q, k, v, kl, _ = BAD[case]
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        _dynamic_attention("reference", q, k, v, kl)


@pytest.mark.parametrize("case", range(len(BAD)))
def test_numpy_module_errors_name_the_bad_value(case):
    q, k, v, kl, words = BAD[case]
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        _C.attention_forward(q, k, v, causal=True, key_lengths=kl)


def test_static_errors_are_value_errors():
    with pytest.raises(ValueError, match="rank 4"):
        keraslm.ops.attention(z(2, 3, 4), z(2, 3, 4, 8), z(2, 3, 4, 8))
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        keraslm.ops.attention(np.zeros((1, 2, 2, 4), np.int32), z(1, 2, 2, 4), z(1, 2, 2, 4))
    with pytest.raises(ValueError, match="share a dtype"):
        keraslm.ops.attention(z(1, 2, 2, 4), z(1, 2, 2, 4), np.zeros((1, 2, 2, 4), np.float16))
    with pytest.raises(ValueError, match="dtype float32"):
        _C.attention_forward(np.zeros((1, 2, 2, 4)), z(1, 2, 2, 4), z(1, 2, 2, 4))
    with pytest.raises(ValueError, match="scale must be finite"):
        _C.attention_forward(z(1, 2, 2, 4), z(1, 2, 2, 4), z(1, 2, 2, 4), scale=float("nan"))
    with pytest.raises(ValueError, match="implementation must be one of"):
        keraslm.ops.set_implementation("fast")


@pytest.mark.parametrize("impl", ["custom", "reference"])
@pytest.mark.parametrize("shape", [(0, 3, 3, 2, 2, 8), (2, 0, 3, 2, 2, 8), (2, 3, 0, 2, 2, 8)])
def test_empty_tensors(impl, shape):
    B, Tq, Tk, H, Hkv, D = shape
    with keraslm.ops.implementation_scope(impl):
        out, lse = keraslm.ops.attention(z(B, Tq, H, D), z(B, Tk, Hkv, D), z(B, Tk, Hkv, D), causal=True,
                                         return_lse=True)
    assert out.shape == (B, Tq, H, D) and lse.shape == (B, H, Tq)
    assert np.all(out.numpy() == 0) and np.all(np.isneginf(lse.numpy()))
    out_c, lse_c = _C.attention_forward(z(B, Tq, H, D), z(B, Tk, Hkv, D), z(B, Tk, Hkv, D), causal=True)
    assert out_c.shape == (B, Tq, H, D)


def _random_args(rng):
    """A random, often invalid, argument set for the attention entry points."""
    rank = lambda: int(rng.choice([4, 4, 4, 4, 3, 5, 0]))  # noqa: E731
    size = lambda: int(rng.choice([0, 1, 2, 3, 5, 17]))  # noqa: E731
    B, Tq, Tk, Hkv = size(), size(), size(), int(rng.choice([1, 2, 3, 0]))
    H = Hkv * int(rng.choice([1, 2])) + int(rng.choice([0, 0, 0, 1]))
    D = int(rng.choice([1, 4, 8, 33, 256, 257, 0]))

    def tensor(shape):
        r = rank()
        if r != 4:
            shape = shape[:r] if r < 4 else shape + (2,)
        dtype = rng.choice([np.float32] * 6 + [np.float64, np.float16, np.int32])
        x = rng.standard_normal(shape).astype(dtype)
        if x.size and x.dtype.kind == "f" and rng.random() < 0.2:
            x.flat[rng.integers(x.size)] = rng.choice([np.nan, np.inf, -np.inf])
        return x

    q = tensor((B, Tq, H, D))
    k = tensor((B, Tk, Hkv, D))
    v = tensor((B, Tk, Hkv, D)) if rng.random() < 0.8 else k
    kl = None
    if rng.random() < 0.5:
        n = B if rng.random() < 0.8 else B + 1
        kl = rng.integers(-2, Tk + 3, size=n).astype(np.int32)
    causal = bool(rng.random() < 0.5)
    return q, k, v, kl, causal


def test_fuzz_numpy_module_never_crashes():
    rng = np.random.default_rng(2024)
    ok = 0
    for _ in range(3000):
        q, k, v, kl, causal = _random_args(rng)
        try:
            out, lse = _C.attention_forward(q, k, v, causal=causal, key_lengths=kl)
        except ValueError:
            continue
        ok += 1
        assert out.shape == q.shape and lse.shape == (q.shape[0], q.shape[2], q.shape[1])
        dq, dk, dv = _C.attention_backward(q, k, v, out, lse, out, causal=causal, key_lengths=kl)
        assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    assert ok > 30  # the fuzzer also exercises valid calls


def test_fuzz_tf_op_never_crashes():
    rng = np.random.default_rng(99)
    lib = keraslm.ops._loader.op_library()
    assert lib is not None, keraslm.ops.load_error()
    ok = 0
    for _ in range(600):
        q, k, v, kl, causal = _random_args(rng)
        try:
            out, lse = lib.keraslm_flash_attention(
                q, k, v, kl if kl is not None else np.zeros([0], np.int32), causal=causal,
                scale=float(rng.choice([0.5, 0.0, -1.0])), use_key_lengths=kl is not None)
            g = lib.keraslm_flash_attention_grad(q, k, v, kl if kl is not None else np.zeros([0], np.int32),
                                                 out, lse, out, np.zeros([0], np.float32), causal=causal,
                                                 scale=0.5, use_key_lengths=kl is not None)
        except (tf.errors.InvalidArgumentError, TypeError, ValueError):
            continue
        ok += 1
        assert out.shape == q.shape and g[1].shape == k.shape
    assert ok > 20


def _run_python(code, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=300)


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_lower_isa_variants_match_reference(isa):
    """Every compiled variant (portable SSE2, AVX2) is correct, not only the one this CPU picks."""
    r = _run_python("""
        import numpy as np
        from keraslm import _C
        print(_C.cpu_isa())
        rng = np.random.default_rng(0)
        for (B, Tq, Tk, H, Hkv, D) in [(2, 37, 50, 4, 2, 24), (1, 1, 300, 2, 1, 64), (1, 70, 70, 2, 2, 80)]:
            q = rng.standard_normal((B, Tq, H, D)).astype(np.float32)
            k = rng.standard_normal((B, Tk, Hkv, D)).astype(np.float32)
            v = rng.standard_normal((B, Tk, Hkv, D)).astype(np.float32)
            kl = rng.integers(0, Tk + 1, size=B).astype(np.int32)
            a = _C.attention_forward(q, k, v, causal=True, key_lengths=kl)
            b = _C.attention_forward_reference(q, k, v, causal=True, key_lengths=kl)
            np.testing.assert_allclose(a[0], b[0], atol=2e-5, rtol=2e-4)
            ga = _C.attention_backward(q, k, v, a[0], a[1], v[:, :1].repeat(Tq, 1).repeat(H // Hkv, 2), causal=True, key_lengths=kl)
            gb = _C.attention_backward_reference(q, k, v, b[0], b[1], v[:, :1].repeat(Tq, 1).repeat(H // Hkv, 2), causal=True, key_lengths=kl)
            for x, y in zip(ga, gb):
                np.testing.assert_allclose(x, y, atol=1e-4, rtol=1e-3)
        print("ok")
    """, {"KERASLM_ISA": isa})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.split()
    assert lines[-1] == "ok"
    assert lines[0] == isa


def test_missing_library_falls_back_with_one_warning():
    r = _run_python("""
        import warnings
        import numpy as np
        import keraslm
        from keraslm.ops import _loader
        _loader._library_path = lambda: "/nonexistent/_tf_ops.so"
        q = np.random.default_rng(0).standard_normal((1, 6, 2, 8)).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = keraslm.ops.attention(q, q, q, causal=True).numpy()
            b = keraslm.ops.attention(q, q, q, causal=True).numpy()
        msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(msgs) == 1, msgs
        assert "falling back to the pure-TF reference" in msgs[0] and "/nonexistent" in msgs[0], msgs
        ref, _ = keraslm._C.attention_forward_reference(q, q, q, causal=True)
        np.testing.assert_allclose(a, ref, atol=1e-5)
        keraslm.ops.set_implementation("custom")
        try:
            keraslm.ops.attention(q, q, q)
        except RuntimeError as e:
            assert "could not be loaded" in str(e), e
            print("ok")
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-1] == "ok"


def test_environment_variable_selects_implementation():
    r = _run_python("""
        import keraslm
        print(keraslm.ops.implementation())
    """, {"KERASLM_OPS": "reference"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "reference"


@pytest.mark.skipif(not (REPO / "CMakeLists.txt").exists() or shutil.which("cmake") is None,
                    reason="needs the source tree and cmake")
def test_kernels_pass_under_address_and_undefined_sanitizers(tmp_path):
    """Builds csrc/ with -fsanitize=address,undefined and runs the C++ kernel tests."""
    build = tmp_path / "asan"
    cfg = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-DKERASLM_PYTHON=OFF",
                          "-DKERASLM_SANITIZE=ON", "-DKERASLM_BUILD_TESTS=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                         capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stdout[-2000:] + cfg.stderr[-2000:]
    bld = subprocess.run(["cmake", "--build", str(build), "-j", "2", "--target", "keraslm_kernel_tests"],
                         capture_output=True, text=True, timeout=900)
    assert bld.returncode == 0, bld.stdout[-3000:] + bld.stderr[-3000:]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
    for isa in ("avx512", "avx2", "generic"):
        run = subprocess.run([str(build / "keraslm_kernel_tests"), "40", "5"], capture_output=True, text=True,
                             timeout=600, env=dict(env, KERASLM_ISA=isa))
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "all kernel tests passed" in run.stdout


# ---------------------------------------------------------------------------
# NaN in, NaN out: every path agrees with the float64 oracle
# ---------------------------------------------------------------------------

def _nan_case(B, Tq, Tk, H, Hkv, D, rng):
    """Inputs with a NaN query row, a NaN in a key that only some rows see, and NaN / inf past the key
    lengths; returns (q, k, v, lengths, expected NaN rows [B, H, Tq], clean copies for the oracle)."""
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in [(B, Tq, H, D), (B, Tk, Hkv, D), (B, Tk, Hkv, D)])
    lengths = np.array([Tk, Tk - 3], np.int32)
    qc, kc, vc = q.copy(), k.copy(), v.copy()
    q[0, 2, 1, 3] = np.nan                   # query row (b 0, i 2, h 1)
    k[1, 3, 0, D - 1] = np.nan               # key 3 of batch 1, kv head 0: visible to rows i >= 3 - (Tk - Tq)
    k[1, Tk - 3:] = np.nan                   # past batch 1's length: never read
    v[1, Tk - 3:, 0] = np.inf
    v[1, Tk - 2:, -1] = np.nan
    G = H // Hkv
    rows = np.zeros((B, H, Tq), bool)
    rows[0, 1, 2] = True
    rows[1, :G, np.arange(Tq) >= 3 - (Tk - Tq)] = True
    return q, k, v, lengths, rows, (qc, kc, vc)


@pytest.mark.parametrize("shape", [(2, 5, 9, 4, 2, 8), (2, 40, 40, 2, 1, 16), (2, 20, 70, 4, 1, 33)],
                         ids=["decode", "tiled", "tiled-gqa"])
@pytest.mark.parametrize("path", ["custom", "reference", "xla", "xla-reference", "numpy-module", "numpy-reference"])
def test_nan_in_nan_out_on_every_path(shape, path, rng):
    from np_reference import attention as np_attention

    q, k, v, lengths, nan_rows, (qc, kc, vc) = _nan_case(*shape, rng)
    if path.startswith("numpy"):
        fn = _C.attention_forward if path == "numpy-module" else _C.attention_forward_reference
        out, lse = fn(q, k, v, causal=True, key_lengths=lengths)
    else:
        impl = {"custom": "custom", "reference": "reference", "xla": "auto", "xla-reference": "reference"}[path]
        f = lambda q, k, v: keraslm.ops.attention(q, k, v, causal=True, key_lengths=lengths, return_lse=True)  # noqa: E731
        if path.startswith("xla"):
            f = tf.function(f, jit_compile=True)
        with keraslm.ops.implementation_scope(impl):
            out, lse = (t.numpy() for t in f(q, k, v))
    np.testing.assert_array_equal(np.isnan(lse), nan_rows)
    np.testing.assert_array_equal(np.isnan(out), np.broadcast_to(nan_rows.transpose(0, 2, 1)[..., None], out.shape))
    ref_out, ref_lse = np_attention(qc, kc, vc, causal=True, key_lengths=lengths)
    ok = ~nan_rows
    np.testing.assert_allclose(lse[ok], ref_lse[ok], rtol=2e-5, atol=2e-5)
    ok_out = ok.transpose(0, 2, 1)
    np.testing.assert_allclose(out[ok_out], ref_out[ok_out], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("impl", ["custom", "reference"])
def test_nan_rows_have_nan_gradients(impl, rng):
    q, k, v, lengths, nan_rows, _ = _nan_case(2, 40, 40, 2, 1, 16, rng)
    q, k, v = (tf.constant(t) for t in (q, k, v))
    with keraslm.ops.implementation_scope(impl), tf.GradientTape() as tape:
        tape.watch([q, k, v])
        out = keraslm.ops.attention(q, k, v, causal=True, key_lengths=lengths)
        loss = tf.reduce_sum(out)
    dq, dk, dv = (g.numpy() for g in tape.gradient(loss, [q, k, v]))
    assert np.isnan(dq[0, 2, 1]).all()                    # the NaN query row
    assert np.isnan(dk[0, :3, 0]).all() and np.isnan(dv[0, :3, 0]).all()   # the keys it sees
    assert np.isfinite(dq[0, :, 0]).all()                 # batch 0, head 0 sees no NaN
    np.testing.assert_array_equal(dk[1, 40 - 3:], 0)      # past the key length: zero, never NaN
    np.testing.assert_array_equal(dv[1, 40 - 3:], 0)
