"""keraslm.ops.matmul_bf16 (bfloat16 inputs, float32 sums; AMX) against float64
numpy, eagerly and inside XLA, with gradients and errors; the matmul precision
switch; and the models' dense layers under it."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.ops import matmul as matmul_mod

AMX = keraslm.ops.amx_bf16_available()
XLA = keraslm.ops.build_info().get("xla_matmul_bf16") == "1"
needs_amx = pytest.mark.skipif(not AMX, reason="no AMX-BF16 here (or no compiled ops): "
                               + keraslm.ops.build_info().get("amx_bf16_reason", "op library unavailable"))
needs_xla = pytest.mark.skipif(not (AMX and XLA), reason="no AMX or no XLA lowering in this build")

# (M, N, K): inside and across the 32 x 32 blocks and 32-wide k steps, none a multiple of 16 except
# the model-sized ones.
SHAPES = [(1, 1, 1), (5, 3, 2), (37, 53, 71), (45, 33, 100), (19, 70, 5), (64, 65, 129), (768, 96, 128),
          (33, 31, 300), (0, 4, 8), (3, 4, 0)]
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]


def bf16(x):
    """float32 -> nearest bfloat16 (ties to even), as float64: an implementation independent of TF's."""
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return rounded.view(np.float32).astype(np.float64)


def operands(rng, M, N, K, ta, tb):
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    return a, b


def expected(a, b, ta, tb):
    a64, b64 = bf16(a), bf16(b)
    return (a64.T if ta else a64) @ (b64.T if tb else b64)


def tolerance(K):
    # Products of bfloat16 values are exact in float32; only the float32 sums round.
    return 4e-6 * np.sqrt(max(K, 1)) + 1e-6


def test_bf16_rounding_helper_is_round_to_nearest_even():
    # 1 + 2^-8 is halfway between two bfloat16 values: ties go to the even one (1.0).
    assert bf16(np.float32(1 + 2 ** -8)) == 1.0
    assert bf16(np.float32(1 + 3 * 2 ** -8)) == 1 + 2 ** -6
    assert bf16(np.float32(1 + 2 ** -8 + 2 ** -12)) == 1 + 2 ** -7


@pytest.mark.parametrize("impl", ["custom", "reference"])
@pytest.mark.parametrize("M, N, K", SHAPES)
@pytest.mark.parametrize("ta, tb", TRANSPOSES)
def test_matches_float64(impl, M, N, K, ta, tb, rng):
    if impl == "custom" and not AMX:
        pytest.skip("no AMX-BF16 here")
    a, b = operands(rng, M, N, K, ta, tb)
    with keraslm.ops.implementation_scope(impl):
        c = keraslm.ops.matmul_bf16(a, b, transpose_a=ta, transpose_b=tb).numpy()
    assert c.shape == (M, N) and c.dtype == np.float32
    np.testing.assert_allclose(c, expected(a, b, ta, tb), rtol=1e-5, atol=tolerance(K))


def test_rounding_is_to_bfloat16_not_float32(rng):
    """The inputs really are rounded: the result differs from the float32 product by the
    rounding of the inputs, and equals the product of the rounded inputs."""
    a, b = operands(rng, 40, 30, 50, False, False)
    with keraslm.ops.implementation_scope("custom" if AMX else "reference"):
        c = keraslm.ops.matmul_bf16(a, b).numpy()
    exact = a.astype(np.float64) @ b
    assert np.abs(c - exact).max() > 1e-3           # bfloat16 keeps 8 significant bits
    np.testing.assert_allclose(c, expected(a, b, False, False), rtol=1e-5, atol=tolerance(50))


@needs_xla
@pytest.mark.parametrize("M, N, K", [(37, 53, 71), (768, 96, 128), (19, 70, 5)])
@pytest.mark.parametrize("ta, tb", TRANSPOSES)
def test_inside_xla_matches_eager_and_float64(M, N, K, ta, tb, rng):
    a, b = operands(rng, M, N, K, ta, tb)
    f = tf.function(lambda a, b: keraslm.ops.matmul_bf16(a, b, transpose_a=ta, transpose_b=tb), jit_compile=True)
    c_xla = f(a, b).numpy()
    hlo = f.experimental_get_compiler_ir(tf.constant(a), tf.constant(b))(stage="hlo")
    assert "keraslm_matmul_bf16" in hlo  # the custom call, not XLA's emulation
    c_eager = keraslm.ops.matmul_bf16(a, b, transpose_a=ta, transpose_b=tb).numpy()
    np.testing.assert_array_equal(c_xla, c_eager)  # the same kernel
    np.testing.assert_allclose(c_xla, expected(a, b, ta, tb), rtol=1e-5, atol=tolerance(K))


def grads(fn, a, b, dc, ta, tb):
    a, b = tf.constant(a), tf.constant(b)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss = tf.reduce_sum(fn(a, b, transpose_a=ta, transpose_b=tb) * dc)
    return [g.numpy() for g in tape.gradient(loss, [a, b])]


@pytest.mark.parametrize("impl", ["custom", "reference"])
@pytest.mark.parametrize("ta, tb", TRANSPOSES)
def test_gradients_match_float64(impl, ta, tb, rng):
    """Gradients are products of the same precision: dA = dC op(B)^T etc. over bfloat16-rounded
    operands (the rounding passes gradients straight through)."""
    if impl == "custom" and not AMX:
        pytest.skip("no AMX-BF16 here")
    M, N, K = 29, 41, 67
    a, b = operands(rng, M, N, K, ta, tb)
    dc = rng.standard_normal((M, N)).astype(np.float32)
    with keraslm.ops.implementation_scope(impl):
        da, db = grads(keraslm.ops.matmul_bf16, a, b, dc, ta, tb)
    dc64, a64, b64 = bf16(dc), bf16(a), bf16(b)
    opb = b64.T if tb else b64
    opa = a64.T if ta else a64
    da_op = dc64 @ opb.T                    # gradient w.r.t. op(A) [M, K]
    db_op = opa.T @ dc64                    # gradient w.r.t. op(B) [K, N]
    np.testing.assert_allclose(da, da_op.T if ta else da_op, rtol=1e-5, atol=tolerance(N))
    np.testing.assert_allclose(db, db_op.T if tb else db_op, rtol=1e-5, atol=tolerance(M))


def test_gradients_numerically_on_bf16_exact_inputs(rng):
    """Finite differences of the op itself. Inputs are multiples of 1/4 below 8, and so are the
    perturbed inputs (step 1/4): bfloat16 holds them exactly, the op is exactly linear in each
    operand there, and central differences are exact up to the float32 sums."""
    a = (rng.integers(-16, 17, (6, 9)) / 4).astype(np.float32)
    b = (rng.integers(-16, 17, (9, 5)) / 4).astype(np.float32)
    with keraslm.ops.implementation_scope("custom" if AMX else "reference"):
        theoretical, numerical = tf.test.compute_gradient(
            lambda x, y: keraslm.ops.matmul_bf16(x, y), [tf.constant(a), tf.constant(b)], delta=0.25)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=1e-3)


@needs_xla
def test_gradients_inside_xla_match_eager(rng):
    a, b = operands(rng, 50, 70, 90, False, False)
    dc = rng.standard_normal((50, 70)).astype(np.float32)
    eager = grads(keraslm.ops.matmul_bf16, a, b, dc, False, False)

    @tf.function(jit_compile=True)
    def xla_grads(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss = tf.reduce_sum(keraslm.ops.matmul_bf16(a, b) * dc)
        return tape.gradient(loss, [a, b])

    for g, e in zip(xla_grads(tf.constant(a), tf.constant(b)), eager):
        np.testing.assert_array_equal(g.numpy(), e)


@pytest.mark.parametrize("impl", ["custom", "reference"])
def test_static_shape_errors_name_the_bad_value(impl):
    with keraslm.ops.implementation_scope(impl):
        with pytest.raises(ValueError, match=r"inner dimensions differ.*\(3, 4\).*\(5, 2\)"):
            keraslm.ops.matmul_bf16(tf.zeros([3, 4]), tf.zeros([5, 2]))
        with pytest.raises(ValueError, match="a must have rank 2"):
            keraslm.ops.matmul_bf16(tf.zeros([2, 3, 4]), tf.zeros([4, 2]))
        with pytest.raises(ValueError, match="b must be float32, got float64"):
            keraslm.ops.matmul_bf16(tf.zeros([3, 4]), tf.zeros([4, 2], tf.float64))


@needs_amx
def test_runtime_shape_error_from_the_op():
    f = tf.function(lambda a, b: keraslm.ops.matmul_bf16(a, b, transpose_b=True),
                    input_signature=[tf.TensorSpec([None, None])] * 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inner dimensions differ.*\[3, 4\].*\[2, 5\]"):
        f(tf.zeros([3, 4]), tf.zeros([2, 5]))


def test_precision_switch_and_validation(monkeypatch):
    assert keraslm.ops.matmul_precision() == "float32"
    with keraslm.ops.matmul_precision_scope("bfloat16"):
        assert keraslm.ops.matmul_precision() == "bfloat16"
    assert keraslm.ops.matmul_precision() == "float32"
    with pytest.raises(ValueError, match=r"matmul precision must be one of .* got 'float16'"):
        keraslm.ops.set_matmul_precision("float16")
    monkeypatch.setitem(matmul_mod._state, "precision", None)
    monkeypatch.setenv("KERASLM_MATMUL_PRECISION", "tf32")
    with pytest.raises(ValueError, match="KERASLM_MATMUL_PRECISION.*'tf32'"):
        keraslm.ops.matmul_precision()
    monkeypatch.setenv("KERASLM_MATMUL_PRECISION", "bfloat16")
    assert keraslm.ops.matmul_precision() == "bfloat16"
    monkeypatch.setitem(matmul_mod._state, "precision", "float32")


def small_gpt(**kw):
    keras.utils.set_random_seed(5)
    model = keraslm.models.TransformerLM(vocab_size=23, max_length=40, num_layers=2, num_heads=2, width=32, **kw)
    model.build_for_inference()
    return model


@needs_amx
@pytest.mark.parametrize("tie", [True, False])
def test_model_under_bfloat16_precision(tie, rng):
    """Under bfloat16 precision the dense layers use the op (the logits move by the input
    rounding, not more); float32 precision leaves the model exactly as it was."""
    model = small_gpt(tie_embeddings=tie, use_bias=True)
    ids = tf.constant(rng.integers(0, 23, (3, 17)), tf.int32)
    base = model(ids).numpy()
    with keraslm.ops.matmul_precision_scope("bfloat16"):
        low = model(ids).numpy()
        graph = tf.function(model.__call__).get_concrete_function(ids).graph
    ops_used = {op.type for op in graph.get_operations()}
    assert "Keraslm>MatmulBf16" in ops_used
    assert not np.array_equal(low, base)
    np.testing.assert_allclose(low, base, atol=0.05 * np.abs(base).max())
    np.testing.assert_array_equal(model(ids).numpy(), base)


def test_unaccelerated_request_warns_once_and_keeps_float32(monkeypatch, rng):
    model = small_gpt()
    ids = tf.constant(rng.integers(0, 23, (2, 9)), tf.int32)
    with keraslm.ops.implementation_scope("reference"):
        base = model(ids).numpy()
    monkeypatch.setitem(matmul_mod._state, "warned", False)
    with keraslm.ops.implementation_scope("reference"), keraslm.ops.matmul_precision_scope("bfloat16"):
        with pytest.warns(RuntimeWarning, match="matmul precision 'bfloat16' was requested but .*reference"):
            out = model(ids).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model(ids)  # warned once only
    np.testing.assert_array_equal(out, base)
