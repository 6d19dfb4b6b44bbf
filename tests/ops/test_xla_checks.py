"""Inside jit_compile functions every documented check still raises: the custom ops lower to XLA custom calls
that check shapes when XLA compiles (OP_REQUIRES) and values when they run (an ffi::Error, an
InvalidArgumentError naming the value), and the pure-TF references, whose assertions XLA drops, stay safe
(sampled ids in [0, V), never -1)."""

import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.ops import _loader

LOWERED = ("attention", "layer_norm", "sample", "linear", "decoder_block_step")


def _needs(op):
    return pytest.mark.skipif(not _loader.has_xla_lowering(op), reason=f"this build has no XLA lowering of {op}")


def _xla(fn, impl="auto", **kw):
    """fn jit-compiled (autograph off), called under the implementation switch `impl`."""
    compiled = tf.function(fn, jit_compile=True, autograph=False, **kw)

    def call(*args):
        with keraslm.ops.implementation_scope(impl):
            return compiled(*args)

    call.hlo = lambda *args: compiled.experimental_get_compiler_ir(*args)(stage="hlo")
    return call


def test_build_info_names_every_lowering():
    if not _loader.custom_ops_available():
        pytest.skip("no compiled ops")
    info = keraslm.ops.build_info()
    for op in LOWERED:
        assert info.get(f"xla_{op}") in ("0", "1"), (op, info)
    if info.get("xla_attention") == "1":  # built with the XLA glue: all of them
        assert all(info[f"xla_{op}"] == "1" for op in LOWERED), info


# ---------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------

def _linear(x, w, b):
    return keraslm.ops.linear(x, w, b)


def _sample_fn(x, u, t):
    return keraslm.ops.sample(x, u, temperature=t, top_k=3)


@_needs("sample")
def test_sample_inside_xla_runs_the_custom_call_with_the_op_checks():
    f = _xla(_sample_fn)
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 11)), tf.float32)
    u, t = tf.constant([0.1, 0.5, 0.9]), tf.constant(0.7)
    assert "keraslm_sample" in f.hlo(x, u, t)
    ids, lp = f(x, u, t)
    with keraslm.ops.implementation_scope("custom"):
        eager = _sample_fn(x, u, t)
    np.testing.assert_array_equal(ids.numpy(), eager[0].numpy())
    np.testing.assert_array_equal(lp.numpy(), eager[1].numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"temperature must be finite and >= 0.*got temperature = nan"):
        f(x, u, tf.constant(float("nan")))
    bad = x.numpy()
    bad[1, 4] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"logits must not contain NaN.*logits\[1, 4\] = nan"):
        f(tf.constant(bad), u, t)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"coins must be in \[0, 1\); got coins\[2\] = 1"):
        f(x, tf.constant([0.1, 0.5, 1.0]), t)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"every row of logits needs at least one finite value"):
        f(tf.fill([3, 11], -np.inf), u, t)


@_needs("sample")
def test_sample_inside_xla_unknown_shapes_fail_when_compiled():
    f = _xla(lambda x, u: keraslm.ops.sample(x, u), input_signature=[tf.TensorSpec(None, tf.float32)] * 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"coins must have shape \[2\]"):
        f(tf.zeros([2, 5]), tf.constant([0.5, 0.5, 0.5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="logits must be a 2-D tensor"):
        f(tf.zeros([5]), tf.constant([0.5]))


@pytest.mark.parametrize("case", ["nan temperature", "nan logits", "inf logits", "all -inf row", "bad coin",
                                  "bad previous id", "negative top_k"])
def test_reference_sampler_inside_xla_never_returns_an_id_outside_the_vocabulary(case):
    """XLA drops the reference's assertions: invalid rows get the defined id 0 and logprob NaN."""
    rng = np.random.default_rng(1)
    B, V = 4, 9
    x = rng.normal(size=(B, V)).astype(np.float32)
    coins, temperature, top_k = np.array([0.3, 0.6, 0.9, 0.1], np.float32), np.ones(B, np.float32), np.zeros(B, np.int32)
    prev = rng.integers(0, V, (B, 3)).astype(np.int32)
    bad_row = 2
    if case == "nan temperature":
        temperature[bad_row] = np.nan
    elif case == "nan logits":
        x[bad_row, 3] = np.nan
    elif case == "inf logits":
        x[bad_row, 0] = np.inf
    elif case == "all -inf row":
        x[bad_row] = -np.inf
    elif case == "bad coin":
        coins[bad_row] = 1.5
    elif case == "bad previous id":
        prev[bad_row, 1] = V + 4
    else:
        top_k[bad_row] = -2
    f = _xla(lambda x, u, t, k, p: keraslm.ops.sample(x, u, temperature=t, top_k=k, previous_ids=p), "reference")
    ids, lp = (r.numpy() for r in f(x, coins, temperature, top_k, prev))
    assert np.all((ids >= 0) & (ids < V)), ids
    assert ids[bad_row] == 0 and np.isnan(lp[bad_row]), (ids, lp)
    good = np.arange(B) != bad_row
    with keraslm.ops.implementation_scope("reference"):
        want = keraslm.ops.sample(x[good], coins[good], temperature=temperature[good], top_k=top_k[good],
                                  previous_ids=prev[good])
    np.testing.assert_array_equal(ids[good], want[0].numpy())
    np.testing.assert_allclose(lp[good], want[1].numpy(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------

@_needs("linear")
def test_linear_inside_xla_runs_the_custom_call():
    rng = np.random.default_rng(2)
    x, w, b = (tf.constant(rng.normal(size=s), tf.float32) for s in [(3, 1, 7), (7, 5), (5,)])
    f = _xla(_linear)
    assert "keraslm_linear" in f.hlo(x, w, b)
    np.testing.assert_allclose(f(x, w, b), x.numpy() @ w.numpy() + b.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_linear_inside_xla_never_broadcasts_a_wrong_bias(impl):
    x, w = tf.ones([2, 3]), tf.ones([3, 4])
    with pytest.raises(ValueError, match=r"bias must have shape \[4\]"):  # shapes known while tracing
        _xla(_linear, impl)(x, w, tf.ones([1]))
    dyn = _xla(_linear, impl, input_signature=[tf.TensorSpec(None, tf.float32)] * 3)
    np.testing.assert_allclose(dyn(x, w, tf.ones([4])), np.full((2, 4), 4.0))
    match = r"bias must have shape \[4\]" if impl == "auto" and _loader.has_xla_lowering("linear") else "bias"
    for bias in (tf.ones([1]), tf.ones([5]), tf.ones([1, 4])):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            dyn(x, w, bias)


# ---------------------------------------------------------------------------
# decoder_block_step
# ---------------------------------------------------------------------------

def _step_inputs(rng, B=2, S=6, H=2, Hkv=1, D=4, F=16):
    from test_decoder_step import make_inputs

    return make_inputs(rng, B, S, H, Hkv, D, F, True), H


@_needs("decoder_block_step")
def test_decoder_step_inside_xla_checks_index_and_key_lengths():
    from test_decoder_step import np_block

    rng = np.random.default_rng(3)
    (x, kc, vc, index, lengths, w), H = _step_inputs(rng)
    f = _xla(lambda x, k, v, i, n: keraslm.ops.decoder_block_step(x, k, v, i, n, num_heads=H, **w))
    assert "keraslm_decoder_block_step" in f.hlo(x, kc, vc, index, lengths)
    y, k_out, v_out = f(x, kc, vc, index, lengths)
    for got, want in zip((y, k_out, v_out), np_block(x, kc, vc, index, lengths, w, H)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"index\[1\] must be in \[0, S=6\), got 6"):
        f(x, kc, vc, np.array([0, 6], np.int32), lengths)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"index\[0\] must be in \[0, S=6\), got -1"):
        f(x, kc, vc, np.array([-1, 0], np.int32), lengths)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"key_lengths\[1\] must be in \[0, S=6\], got 7"):
        f(x, kc, vc, index, np.array([1, 7], np.int32))


@_needs("decoder_block_step")
def test_decoder_step_inside_xla_shape_errors_name_the_input():
    rng = np.random.default_rng(4)
    (x, kc, vc, index, lengths, w), H = _step_inputs(rng)
    spec = [tf.TensorSpec(None, tf.float32)] * 3 + [tf.TensorSpec(None, tf.int32)] * 2
    f = _xla(lambda x, k, v, i, n: keraslm.ops.decoder_block_step(x, k, v, i, n, num_heads=H, **w),
             input_signature=spec)
    with pytest.raises(tf.errors.InvalidArgumentError, match="v_cache must have the shape of k_cache"):
        f(x, kc, vc[:, :-1], index, lengths)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"index must have shape \[2\]"):
        f(x, kc, vc, index[:1], lengths)


@_needs("decoder_block_step")
def test_decoder_step_inside_a_compiled_loop_updates_the_caches():
    """The cache results alias the cache operands inside a jit-compiled while loop (written in place)."""
    from test_decoder_step import make_inputs

    rng = np.random.default_rng(5)
    B, S, H, Hkv, D, F = 3, 12, 4, 2, 8, 24
    x, _, _, _, _, w = make_inputs(rng, B, S, H, Hkv, D, F, True)

    def loop():
        def body(t, x, k, v):
            y, k, v = keraslm.ops.decoder_block_step(x, k, v, tf.fill([B], t), tf.fill([B], t + 1), num_heads=H,
                                                     in_place=True, **w)
            return t + 1, y / tf.norm(y, axis=-1, keepdims=True), k, v
        empty = lambda: tf.raw_ops.Empty(shape=[B, S, Hkv, D], dtype=tf.float32, init=True)  # noqa: E731
        return tf.while_loop(lambda t, *_: t < S, body, (0, tf.constant(x), empty(), empty()))[1:]

    got = [t.numpy() for t in _xla(loop)()]
    assert "keraslm_decoder_block_step" in _xla(loop).hlo()
    with keraslm.ops.implementation_scope("reference"):
        want = [t.numpy() for t in tf.function(loop)()]
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(got[1]).sum(-1).sum(-1) > 0)  # every cache row was written


def test_reference_decoder_step_inside_xla_does_not_crash_on_a_bad_index():
    """Documented: the reference cannot raise inside XLA; a bad index writes no cache row."""
    rng = np.random.default_rng(6)
    (x, kc, vc, index, lengths, w), H = _step_inputs(rng)
    for in_place in (False, True):
        f = _xla(lambda x, k, v, i, n: keraslm.ops.decoder_block_step(x, k, v, i, n, num_heads=H,
                                                                      in_place=in_place, **w), "reference")
        y, k_out, _ = f(x, tf.constant(kc), tf.constant(vc), np.array([0, 6], np.int32), lengths)
        assert np.isfinite(y.numpy()).all()
        np.testing.assert_array_equal(k_out.numpy()[1], kc[1])  # row 1's write was dropped
