"""keraslm.ops.linear (the decode-step dense kernel) against float64 numpy, on
both paths, every ISA variant, with gradients and errors; and the models use
it for one-token steps without changing their outputs."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keraslm
from np_reference import assert_close

IMPLS = ["custom", "reference"]
# (leading shape, K, N): rows in and across the 6-row blocks, N not a multiple of any panel width.
SHAPES = [((1,), 1, 1), ((1, 1), 384, 1152), ((3,), 37, 70), ((8, 1), 384, 1536), ((13,), 65, 129),
          ((2, 3), 100, 17), ((6,), 1536, 384), ((7, 1), 5, 600), ((0,), 4, 8), ((2,), 0, 5)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("lead, K, N", SHAPES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_float64(impl, lead, K, N, use_bias, rng):
    x = rng.standard_normal(lead + (K,)).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32) if use_bias else None
    with keraslm.ops.implementation_scope(impl):
        y = keraslm.ops.linear(x, w, b).numpy()
    expected = x.astype(np.float64) @ w + (0 if b is None else b)
    assert y.shape == lead + (N,)
    assert_close(y, expected, 1e-5 * np.sqrt(max(K, 1)) * 4, 1e-5, "linear")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("lead, K, N", [((1,), 77, 1031), ((3, 1), 384, 65), ((8,), 40, 300), ((2,), 768, 5000)])
def test_bfloat16_and_transposed_kernels_match_float64(impl, transpose, lead, K, N, rng):
    """A bfloat16 kernel ([K, N], or [N, K] transposed: the output layer of a decoding step) against float64 on
    the rounded values."""
    x = rng.standard_normal(lead + (K,)).astype(np.float32)
    w16 = tf.cast(tf.constant(rng.standard_normal((N, K) if transpose else (K, N)).astype(np.float32)), tf.bfloat16)
    w = tf.cast(w16, tf.float32).numpy().astype(np.float64)
    b = rng.standard_normal(N).astype(np.float32)
    with keraslm.ops.implementation_scope(impl):
        y = keraslm.ops.linear(x, w16, b, transpose_kernel=transpose).numpy()
        y32 = keraslm.ops.linear(x, w.astype(np.float32), b, transpose_kernel=transpose).numpy()
    expected = x.astype(np.float64) @ (w.T if transpose else w) + b
    assert y.shape == lead + (N,)
    assert_close(y, expected, 1e-5 * np.sqrt(K) * 4, 1e-5, "bfloat16 linear")
    assert_close(y32, expected, 1e-5 * np.sqrt(K) * 4, 1e-5, "transposed float32 linear")


def test_transposed_under_xla_and_its_gradient(rng):
    x = tf.constant(rng.standard_normal((4, 24)).astype(np.float32))
    w = tf.constant(rng.standard_normal((40, 24)).astype(np.float32))          # [N, K]
    with keraslm.ops.implementation_scope("custom"):
        y = tf.function(lambda x, w: keraslm.ops.linear(x, w, transpose_kernel=True), jit_compile=True)(x, w)
        np.testing.assert_allclose(y, x.numpy() @ w.numpy().T, rtol=1e-5, atol=1e-4)
        y16 = tf.function(lambda x, w: keraslm.ops.linear(x, tf.cast(w, tf.bfloat16), transpose_kernel=True),
                          jit_compile=True)(x, w)
        np.testing.assert_allclose(y16, x.numpy() @ tf.cast(tf.cast(w, tf.bfloat16), tf.float32).numpy().T,
                                   rtol=1e-5, atol=1e-4)
        theoretical, numerical = tf.test.compute_gradient(
            lambda x_, w_: keraslm.ops.linear(x_, w_, transpose_kernel=True), [x[:2], w[:7]])
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=2e-2)


def test_graph_with_unknown_rows_and_gradient(rng):
    x = rng.standard_normal((5, 24)).astype(np.float32)
    w = rng.standard_normal((24, 40)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 24], tf.float32)] * 1 + [tf.TensorSpec([24, 40])] * 1
                 + [tf.TensorSpec([40])])
    def f(x, w, b):
        with tf.GradientTape() as tape:
            tape.watch([x, w, b])
            y = keraslm.ops.linear(x, w, b)
            loss = tf.reduce_sum(tf.sin(y))
        return y, tape.gradient(loss, [x, w, b])

    with keraslm.ops.implementation_scope("custom"):
        y, grads = f(x, w, b)
    with keraslm.ops.implementation_scope("reference"):
        y_ref, grads_ref = f(x, w, b)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
    for g, r in zip(grads, grads_ref):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4)
    # Finite differences of the custom op itself.
    theoretical, numerical = tf.test.compute_gradient(
        lambda x_: keraslm.ops.linear(x_, w[:, :7], b[:7]), [tf.constant(x[:2].astype(np.float64).astype(np.float32))])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=2e-2)


def test_errors_name_the_bad_value():
    lib = keraslm.ops._loader.op_library()
    with pytest.raises(tf.errors.InvalidArgumentError, match="x has 3 columns but w has 4 rows"):
        lib.keraslm_linear(tf.zeros([2, 3]), tf.zeros([4, 5]), tf.zeros([0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"bias must have shape \[5\]"):
        lib.keraslm_linear(tf.zeros([2, 4]), tf.zeros([4, 5]), tf.zeros([3]), use_bias=True)
    with pytest.raises(ValueError, match="x has 3 features but kernel has 4 rows"):
        keraslm.ops.linear(tf.zeros([2, 3]), tf.zeros([4, 5]))
    with pytest.raises(ValueError, match="x must be float32, got float64"):
        keraslm.ops.linear(tf.zeros([2, 4], tf.float64), tf.zeros([4, 5]))
    with pytest.raises(ValueError, match="kernel must be float32 or bfloat16, got float16"):
        keraslm.ops.linear(tf.zeros([2, 4]), tf.zeros([4, 5], tf.float16))
    with pytest.raises(ValueError, match="x has 3 features but kernel has 4 columns"):
        keraslm.ops.linear(tf.zeros([2, 3]), tf.zeros([5, 4]), transpose_kernel=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x has 3 columns but w has 4 columns"):
        lib.keraslm_linear(tf.zeros([2, 3]), tf.zeros([5, 4]), tf.zeros([0]), transpose_w=True)


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_lower_isa_variants(isa):
    code = """
        import numpy as np, keraslm
        from keraslm import _C
        rng = np.random.default_rng(1)
        for M, K, N in [(1, 384, 1152), (9, 65, 131), (6, 17, 3)]:
            x = rng.standard_normal((M, K)).astype(np.float32)
            w = rng.standard_normal((K, N)).astype(np.float32)
            with keraslm.ops.implementation_scope("custom"):
                y = keraslm.ops.linear(x, w).numpy()
            np.testing.assert_allclose(y, x.astype(np.float64) @ w, atol=1e-3, rtol=1e-4)
        print(_C.cpu_isa(), "ok")
    """
    r = subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       env={**__import__("os").environ, "KERASLM_ISA": isa}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-2:] == [isa, "ok"]


def test_attention_layer_one_token_steps_use_the_op_and_match_the_full_pass(rng):
    # TransformerLM's blocks run one-token steps as one fused op (tests/ops/test_decoder_step.py); the
    # attention layer on its own runs its projections through the linear op.
    layer = keraslm.layers.CausalSelfAttention(num_heads=2, num_kv_heads=1)
    x = tf.constant(rng.standard_normal((3, 9, 16)), tf.float32)
    full = layer(x)
    cache = (tf.zeros([3, 16, 1, 8]), tf.zeros([3, 16, 1, 8]))
    _, cache = layer(x[:, :8], cache=cache, index=tf.zeros([3], tf.int32))
    step = tf.function(lambda x, c, idx: layer(x, cache=c, index=idx))
    y, _ = step(x[:, 8:], cache, tf.fill([3], 8))
    np.testing.assert_allclose(y[:, 0], full[:, 8], rtol=1e-4, atol=1e-4)
    graph = step.get_concrete_function(x[:, 8:], cache, tf.fill([3], 8)).graph
    ops_used = {op.type for op in graph.get_operations()}
    assert "Keraslm>Linear" in ops_used
