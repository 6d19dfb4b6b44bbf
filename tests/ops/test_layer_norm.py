"""keraslm.ops.layer_norm (fused forward / backward) against float64 numpy, on
both paths and inside XLA, with numerical gradients and errors; and the
transformer blocks use it without changing their outputs beyond rounding."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm

XLA = keraslm.ops.build_info().get("xla_layer_norm") == "1"
IMPLS = ["custom", "reference"]
# Leading shapes and widths: rows not a multiple of the thread chunks, C below, at and above a
# vector width, not a multiple of 16.
SHAPES = [((1,), 1), ((3,), 5), ((2, 7), 16), ((5, 3), 37), ((130,), 128), ((4, 9), 200), ((0,), 8)]


def np_layer_norm(x, gamma, beta, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * gamma
    return y if beta is None else y + beta


def np_layer_norm_grads(x, gamma, dy, eps):
    """Gradients of sum(y * dy) in float64 (the textbook formulas, derived independently)."""
    x, gamma, dy = (a.astype(np.float64) for a in (x, gamma, dy))
    C = x.shape[-1]
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd / C * (C * g - g.sum(-1, keepdims=True) - xhat * (g * xhat).sum(-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return dx, (dy * xhat).sum(rows), dy.sum(rows)


def run(impl, x, gamma, beta, dy, eps, jit=False):
    def f(x, gamma, beta):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y = keraslm.ops.layer_norm(x, gamma, beta, eps)
            loss = tf.reduce_sum(y * dy)
        return [y] + tape.gradient(loss, [x, gamma, beta])

    with keraslm.ops.implementation_scope(impl):
        fn = tf.function(f, jit_compile=True) if jit else f
        return [t.numpy() for t in fn(tf.constant(x), tf.constant(gamma), tf.constant(beta))]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("lead, C", SHAPES)
def test_forward_and_gradients_match_float64(impl, lead, C, rng):
    if impl == "custom" and not keraslm.ops.custom_ops_available():
        pytest.skip("no compiled ops")
    x = (rng.standard_normal(lead + (C,)) * 3 + 1).astype(np.float32)
    gamma = rng.standard_normal(C).astype(np.float32)
    beta = rng.standard_normal(C).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, dx, dgamma, dbeta = run(impl, x, gamma, beta, dy, 1e-5)
    np.testing.assert_allclose(y, np_layer_norm(x, gamma, beta, 1e-5), rtol=1e-5, atol=2e-5)
    rdx, rdgamma, rdbeta = np_layer_norm_grads(x, gamma, dy, 1e-5)
    rows = max(int(np.prod(lead)), 1)
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dgamma, rdgamma, rtol=1e-4, atol=2e-5 * rows)
    np.testing.assert_allclose(dbeta, rdbeta, rtol=1e-4, atol=2e-5 * rows)


@pytest.mark.skipif(not XLA, reason="this build has no XLA lowering of layer_norm")
def test_inside_xla_runs_the_custom_call_and_matches_eager(rng):
    x = rng.standard_normal((6, 11, 48)).astype(np.float32)
    gamma, beta = rng.standard_normal(48).astype(np.float32), rng.standard_normal(48).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    f = tf.function(lambda x, g, b: keraslm.ops.layer_norm(x, g, b, 1e-5), jit_compile=True)
    assert "keraslm_layer_norm_forward" in f.experimental_get_compiler_ir(x, gamma, beta)(stage="hlo")
    for got, want in zip(run("auto", x, gamma, beta, dy, 1e-5, jit=True), run("custom", x, gamma, beta, dy, 1e-5)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_without_beta_and_numerical_gradients(rng):
    x = rng.standard_normal((3, 10)).astype(np.float64).astype(np.float32)
    gamma = rng.standard_normal(10).astype(np.float32)
    y = keraslm.ops.layer_norm(x, gamma, None, 1e-3).numpy()
    np.testing.assert_allclose(y, np_layer_norm(x, gamma, None, 1e-3), rtol=1e-5, atol=2e-5)
    theoretical, numerical = tf.test.compute_gradient(
        lambda x_, g_: keraslm.ops.layer_norm(x_, g_, None, 1e-3), [tf.constant(x), tf.constant(gamma)], delta=1e-2)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=2e-2)


@pytest.mark.parametrize("impl", IMPLS)
def test_errors_name_the_bad_value(impl):
    with keraslm.ops.implementation_scope(impl):
        with pytest.raises(ValueError, match=r"gamma must have shape \[4\].*got \(5,\)"):
            keraslm.ops.layer_norm(tf.zeros([2, 4]), tf.zeros([5]))
        with pytest.raises(ValueError, match="epsilon must be a positive finite number, got 0"):
            keraslm.ops.layer_norm(tf.zeros([2, 4]), tf.zeros([4]), epsilon=0)
        with pytest.raises(ValueError, match="x must be float32, got float64"):
            keraslm.ops.layer_norm(tf.zeros([2, 4], tf.float64), tf.zeros([4]))


def test_runtime_shape_error_from_the_op():
    if not keraslm.ops.custom_ops_available():
        pytest.skip("no compiled ops")
    f = tf.function(lambda x, g: keraslm.ops.layer_norm(x, g), input_signature=[tf.TensorSpec([None, None]),
                                                                                  tf.TensorSpec([None])])
    with keraslm.ops.implementation_scope("custom"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"gamma must have shape \[4\].*got \[3\]"):
            f(tf.zeros([2, 4]), tf.zeros([3]))


def test_transformer_blocks_match_keras_layer_norm(rng):
    """The model's ln_1 / ln_2 / ln_f through the fused op give Keras' LayerNormalization outputs."""
    keras.utils.set_random_seed(2)
    model = keraslm.models.TransformerLM(vocab_size=17, max_length=20, num_layers=2, num_heads=2, width=24)
    model.build_for_inference()
    for ln in [model.ln_f] + [b.ln_1 for b in model.blocks]:
        ln.gamma.assign(rng.standard_normal(ln.gamma.shape).astype(np.float32))
        ln.beta.assign(rng.standard_normal(ln.beta.shape).astype(np.float32))
    x = tf.constant(rng.standard_normal((3, 7, 24)).astype(np.float32))
    for ln in [model.ln_f] + [b.ln_1 for b in model.blocks]:
        np.testing.assert_allclose(keraslm.layers.dispatch.layer_norm(ln, x).numpy(), ln(x).numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS + ["xla"])
def test_rows_whose_squares_overflow_float32(impl, rng):
    """Deviations around 1e19 overflow float32 sums of squares (and 3e37 the row sums): the kernel redoes such
    rows in double and matches the float64 result (it used to return rstd = 0 and y = beta)."""
    if impl != "reference" and not keraslm.ops.custom_ops_available():
        pytest.skip("no compiled ops")
    x = rng.standard_normal((6, 40)).astype(np.float32)
    x[1] *= np.float32(1e19)
    x[2] = x[2] * np.float32(3e37)
    x[3] = x[3] * np.float32(1e20) + np.float32(2e20)
    gamma, beta = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
    f = lambda x: keraslm.ops.layer_norm(x, gamma, beta)  # noqa: E731
    with keraslm.ops.implementation_scope("auto" if impl == "xla" else impl):
        y = (tf.function(f, jit_compile=True) if impl == "xla" else f)(tf.constant(x)).numpy()
    want = np_layer_norm(x, gamma, beta, 1e-5)
    if impl == "reference":  # TF's float32 moments overflow too: only the compiled kernel is exact here
        np.testing.assert_allclose(y[[0, 4, 5]], want[[0, 4, 5]], rtol=1e-5, atol=2e-5)
        return
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=2e-5)
