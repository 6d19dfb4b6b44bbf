"""Fused attention: custom op, pure-TF reference and keraslm._C against float64 numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm import _C
from attention_shapes import SHAPES, _ids, make_inputs
from np_reference import assert_close, attention as np_attention, attention_grad as np_attention_grad

IMPLS = ["custom", "reference"]
XLA_ATTENTION = keraslm.ops.build_info().get("xla_attention") == "1"
needs_xla_lowering = pytest.mark.skipif(not XLA_ATTENTION, reason="this build has no XLA lowering of attention")

def run_tf(impl, q, k, v, causal, kl, dout, dlse=None):
    with keraslm.ops.implementation_scope(impl):
        qt, kt, vt = (tf.constant(x) for x in (q, k, v))
        with tf.GradientTape() as tape:
            tape.watch([qt, kt, vt])
            out, lse = keraslm.ops.attention(qt, kt, vt, causal=causal, key_lengths=kl, return_lse=True)
            loss = tf.reduce_sum(out * dout)
            if dlse is not None:
                loss += tf.reduce_sum(tf.where(tf.math.is_finite(lse), lse * dlse, 0.0))
        grads = tape.gradient(loss, [qt, kt, vt])
    return out.numpy(), lse.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_forward_and_gradients_match_float64(impl, shape, rng):
    q, k, v, causal, kl = make_inputs(rng, shape)
    dout = rng.standard_normal(q.shape).astype(np.float32)
    ref_out, ref_lse = np_attention(q, k, v, causal, kl)
    ref_grads = np_attention_grad(q, k, v, dout, causal, kl)
    out, lse, grads = run_tf(impl, q, k, v, causal, kl, dout)
    assert_close(out, ref_out, 2e-5, 2e-4, "out")
    assert_close(lse, ref_lse, 2e-5, 2e-5, "lse")
    for name, g, r in zip("qkv", grads, ref_grads):
        assert np.isfinite(g).all(), f"d{name} has non-finite values"
        assert_close(g, r, 1e-4, 1e-3, f"d{name}")


@needs_xla_lowering
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_inside_xla_runs_the_fused_kernels_and_matches_float64(shape, rng):
    """Inside jit_compile the op lowers to XLA custom calls running the same CPU kernels."""
    q, k, v, causal, kl = make_inputs(rng, shape)
    dout = rng.standard_normal(q.shape).astype(np.float32)
    lens = None if kl is None else tf.constant(kl)

    @tf.function(jit_compile=True)
    def f(q, k, v):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out, lse = keraslm.ops.attention(q, k, v, causal=causal, key_lengths=lens, return_lse=True)
            loss = tf.reduce_sum(out * dout)
        return [out, lse] + tape.gradient(loss, [q, k, v])

    args = [tf.constant(x) for x in (q, k, v)]
    hlo = f.experimental_get_compiler_ir(*args)(stage="hlo")
    assert "keraslm_attention_forward" in hlo and "keraslm_attention_backward" in hlo
    out, lse, *grads = (x.numpy() for x in f(*args))
    ref_out, ref_lse = np_attention(q, k, v, causal, kl)
    assert_close(out, ref_out, 2e-5, 2e-4, "out")
    assert_close(lse, ref_lse, 2e-5, 2e-5, "lse")
    for name, g, r in zip("qkv", grads, np_attention_grad(q, k, v, dout, causal, kl)):
        assert_close(g, r, 1e-4, 1e-3, f"d{name}")


@needs_xla_lowering
def test_inside_xla_bad_key_lengths_fail_with_the_value(rng):
    q, k, v, _, _ = make_inputs(rng, (2, 4, 5, 2, 2, 8, True, None))
    f = tf.function(lambda q, k, v, kl: keraslm.ops.attention(q, k, v, key_lengths=kl), jit_compile=True)
    np.testing.assert_allclose(f(q, k, v, tf.constant([5, 3])).numpy(),
                               np_attention(q, k, v, False, [5, 3])[0], atol=2e-5)
    with pytest.raises(tf.errors.OpError, match=r"key_lengths\[1\] must be in \[0, Tk=5\], got 9"):
        f(q, k, v, tf.constant([2, 9]))


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_through_lse(impl, rng):
    shape = (2, 21, 30, 4, 2, 16, True, "random")
    q, k, v, causal, kl = make_inputs(rng, shape)
    dout = rng.standard_normal(q.shape).astype(np.float32)
    dlse = rng.standard_normal((2, 4, 21)).astype(np.float32)
    _, lse, grads = run_tf(impl, q, k, v, causal, kl, dout, dlse)
    dlse_eff = np.where(np.isfinite(lse), dlse, 0)
    for name, g, r in zip("qkv", grads, np_attention_grad(q, k, v, dout, causal, kl, dlse=dlse_eff)):
        assert_close(g, r, 1e-4, 1e-3, f"d{name}")


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_numpy_module_matches_float64(shape, rng):
    q, k, v, causal, kl = make_inputs(rng, shape)
    dout = rng.standard_normal(q.shape).astype(np.float32)
    ref_out, ref_lse = np_attention(q, k, v, causal, kl)
    for fwd, bwd in ((_C.attention_forward, _C.attention_backward),
                     (_C.attention_forward_reference, _C.attention_backward_reference)):
        out, lse = fwd(q, k, v, causal=causal, key_lengths=kl)
        assert out.dtype == np.float32 and lse.dtype == np.float32
        assert_close(out, ref_out, 2e-5, 2e-4, "out")
        assert_close(lse, ref_lse, 2e-5, 2e-5, "lse")
        grads = bwd(q, k, v, out, lse, dout, causal=causal, key_lengths=kl)
        for name, g, r in zip("qkv", grads, np_attention_grad(q, k, v, dout, causal, kl)):
            assert_close(g, r, 1e-4, 1e-3, f"d{name}")


def test_custom_reference_and_numpy_module_agree(rng):
    q, k, v, causal, kl = make_inputs(rng, (2, 45, 61, 4, 2, 64, True, "random"))
    dout = rng.standard_normal(q.shape).astype(np.float32)
    c_out, c_lse, c_grads = run_tf("custom", q, k, v, causal, kl, dout)
    r_out, r_lse, r_grads = run_tf("reference", q, k, v, causal, kl, dout)
    n_out, n_lse = _C.attention_forward(q, k, v, causal=causal, key_lengths=kl)
    n_grads = _C.attention_backward(q, k, v, n_out, n_lse, dout, causal=causal, key_lengths=kl)
    # The op and _C run the same kernel on the same inputs: identical bits.
    np.testing.assert_array_equal(c_out, n_out)
    np.testing.assert_array_equal(c_lse, n_lse)
    for a, b in zip(c_grads, n_grads):
        np.testing.assert_array_equal(a, b)
    assert_close(c_out, r_out, 1e-5, 1e-4, "custom vs reference out")
    for a, b in zip(c_grads, r_grads):
        assert_close(a, b, 1e-4, 1e-3, "custom vs reference grads")


def _finite_difference(f, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("causal,lengths", [(True, None), (False, [3, 0]), (True, [5, 2])])
def test_analytic_gradient_matches_finite_differences(causal, lengths, rng):
    """The float64 formulas the kernels are held to, checked numerically."""
    B, Tq, Tk, H, Hkv, D = 2, 4, 5, 2, 1, 3
    q = rng.standard_normal((B, Tq, H, D))
    k = rng.standard_normal((B, Tk, Hkv, D))
    v = rng.standard_normal((B, Tk, Hkv, D))
    dout = rng.standard_normal((B, Tq, H, D))
    dlse = rng.standard_normal((B, H, Tq))
    kl = None if lengths is None else np.array(lengths)

    def loss(q_, k_, v_):
        out, lse = np_attention(q_, k_, v_, causal, kl)
        return (out * dout).sum() + np.where(np.isfinite(lse), lse * dlse, 0).sum()

    _, lse = np_attention(q, k, v, causal, kl)
    dq, dk, dv = np_attention_grad(q, k, v, dout, causal, kl, dlse=np.where(np.isfinite(lse), dlse, 0))
    assert_close(dq, _finite_difference(lambda x: loss(x, k, v), q), 1e-7, 1e-6, "dq")
    assert_close(dk, _finite_difference(lambda x: loss(q, x, v), k), 1e-7, 1e-6, "dk")
    assert_close(dv, _finite_difference(lambda x: loss(q, k, x), v), 1e-7, 1e-6, "dv")


def test_custom_op_gradient_numerically():
    """tf.test.compute_gradient (float32 finite differences) on the custom op."""
    rng = np.random.default_rng(7)
    q = tf.constant(rng.standard_normal((1, 5, 2, 4)).astype(np.float32))
    k = tf.constant(rng.standard_normal((1, 6, 1, 4)).astype(np.float32))
    v = tf.constant(rng.standard_normal((1, 6, 1, 4)).astype(np.float32))
    with keraslm.ops.implementation_scope("custom"):
        for i in range(3):
            def f(x, i=i):
                args = [q, k, v]
                args[i] = x
                return keraslm.ops.attention(*args, causal=True, key_lengths=[4])
            theoretical, numerical = tf.test.compute_gradient(f, [[q, k, v][i]], delta=1e-2)
            np.testing.assert_allclose(theoretical[0], numerical[0], atol=3e-3, rtol=3e-2)


@pytest.mark.parametrize("impl", IMPLS)
def test_rows_without_keys_are_zero_with_zero_gradient(impl, rng):
    q, k, v, _, _ = make_inputs(rng, (2, 6, 4, 2, 2, 8, True, None))
    kl = np.array([0, 4], np.int32)
    dout = np.ones(q.shape, np.float32)
    out, lse, grads = run_tf(impl, q, k, v, True, kl, dout)
    assert np.all(out[0] == 0) and np.all(np.isneginf(lse[0]))
    # causal with Tq > Tk: queries 0 and 1 of batch 1 see no key.
    assert np.all(out[1, :2] == 0) and np.all(np.isneginf(lse[1, :, :2]))
    assert all(np.isfinite(g).all() for g in grads)
    assert np.all(grads[0][0] == 0) and np.all(grads[1][0] == 0) and np.all(grads[2][0] == 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_decode_step_equals_last_row_of_full_pass(impl, rng):
    """KV-cache decode (Tq = 1 over a longer cache) is the same op as prefill."""
    T, cache = 37, 64
    q = rng.standard_normal((2, T, 4, 16)).astype(np.float32)
    k = rng.standard_normal((2, cache, 2, 16)).astype(np.float32)
    v = rng.standard_normal((2, cache, 2, 16)).astype(np.float32)
    with keraslm.ops.implementation_scope(impl):
        full = keraslm.ops.attention(q, k[:, :T], v[:, :T], causal=True).numpy()
        # A cache padded to 64 rows, valid up to T: key_lengths hides the rest.
        step = keraslm.ops.attention(q[:, -1:], k, v, key_lengths=[T, T]).numpy()
    assert_close(step[:, 0], full[:, -1], 1e-6, 1e-5, "decode vs prefill")


@pytest.mark.parametrize("impl", IMPLS)
def test_tf_function_with_dynamic_shapes(impl, rng):
    spec = tf.TensorSpec([None, None, None, None], tf.float32)

    @tf.function(input_signature=[spec, spec, spec, tf.TensorSpec([None], tf.int32)])
    def f(q, k, v, kl):
        with tf.GradientTape() as tape:
            tape.watch(q)
            out = keraslm.ops.attention(q, k, v, causal=True, key_lengths=kl, scale=0.25)
            loss = tf.reduce_sum(out * out)
        return out, tape.gradient(loss, q)

    with keraslm.ops.implementation_scope(impl):
        for shape in [(1, 5, 2, 16, True, "random"), (3, 19, 4, 16, True, "random")]:
            B, T, H, D, causal, lengths = shape
            q, k, v, _, kl = make_inputs(rng, (B, T, T, H, H, D, causal, lengths))
            out, dq = f(q, k, v, kl)
            ref, _ = np_attention(q, k, v, True, kl, scale=0.25)
            assert_close(out.numpy(), ref, 2e-5, 2e-4, "tf.function out")
            ref_dq, _, _ = np_attention_grad(q, k, v, 2 * ref, True, kl, scale=0.25)
            assert_close(dq.numpy(), ref_dq, 1e-4, 1e-3, "tf.function dq")


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_inputs(dtype, rng):
    q, k, v, causal, kl = make_inputs(rng, (2, 20, 20, 2, 2, 32, True, None))
    qt, kt, vt = (tf.cast(x, dtype) for x in (q, k, v))
    ref, _ = np_attention(*(tf.cast(x, tf.float32).numpy() for x in (qt, kt, vt)), True)
    for impl in IMPLS:
        with keraslm.ops.implementation_scope(impl):
            out = keraslm.ops.attention(qt, kt, vt, causal=True)
        assert out.dtype == dtype
        tol = 1e-2 if dtype == tf.bfloat16 else 2e-3
        assert_close(out.numpy().astype(np.float32), ref, tol, tol, str(dtype))


class _SelfAttention(keras.layers.Layer):
    def __init__(self, heads, head_dim, **kw):
        super().__init__(**kw)
        self.heads, self.head_dim = heads, head_dim

    def build(self, input_shape):
        self.qkv = keras.layers.Dense(3 * self.heads * self.head_dim)
        self.qkv.build(input_shape)
        self.proj = keras.layers.Dense(input_shape[-1])
        self.proj.build(input_shape[:-1] + (self.heads * self.head_dim,))

    def call(self, x):
        B, T = tf.shape(x)[0], tf.shape(x)[1]
        qkv = tf.reshape(self.qkv(x), [B, T, 3, self.heads, self.head_dim])   # [B, T, 3, H, D]
        out = keraslm.ops.attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal=True)
        return self.proj(tf.reshape(out, [B, T, self.heads * self.head_dim]))  # [B, T, C]


@pytest.mark.parametrize("impl,jit", [("custom", False), ("reference", False), ("auto", True)])
def test_trains_inside_keras_fit(impl, jit):
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(0).standard_normal((32, 12, 16)).astype(np.float32)
    y = np.cumsum(x, axis=1) / 4  # causal target: running sums
    inp = keras.Input((12, 16))
    model = keras.Model(inp, _SelfAttention(2, 8)(inp))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=jit)
    with keraslm.ops.implementation_scope(impl):
        hist = model.fit(x, y, epochs=15, batch_size=8, verbose=0)
    losses = hist.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
