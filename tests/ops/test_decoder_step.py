"""keraslm.ops.decoder_block_step (one fused decoding step of a GPT block)
against a float64 numpy block, on both paths; cache semantics, errors, and
the models' one-token steps through it."""

import numpy as np
import pytest
import tensorflow as tf

import keraslm
from np_reference import assert_close
from np_reference import attention as np_attention

IMPLS = ["custom", "reference"]
# (B, S, H, Hkv, D, F): batches inside and across the linear kernel's 6-row blocks, widths and MLP
# sizes that are not multiples of the 64-column chunks, grouped and multi-query heads, S = 1, and
# caches long enough for the attention to be split into 512-key parts and merged.
SHAPES = [(1, 5, 2, 2, 8, 32), (3, 37, 6, 2, 16, 100), (7, 130, 4, 1, 24, 70), (2, 1, 1, 1, 3, 5),
          (1, 300, 6, 6, 64, 1536), (4, 1100, 4, 2, 16, 40), (1, 2000, 2, 1, 8, 16)]


def make_inputs(rng, B, S, H, Hkv, D, F, use_bias):
    C = H * D
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    w = {"ln_1": (1 + 0.1 * f(C), f(C) if use_bias else None),
         "c_attn": (f(C, (H + 2 * Hkv) * D) / np.sqrt(C), f((H + 2 * Hkv) * D) if use_bias else None),
         "c_proj": (f(C, C) / np.sqrt(C), f(C) if use_bias else None),
         "ln_2": (1 + 0.1 * f(C), f(C) if use_bias else None),
         "mlp_c_fc": (f(C, F) / np.sqrt(C), f(F) if use_bias else None),
         "mlp_c_proj": (f(F, C) / np.sqrt(F), f(C) if use_bias else None)}
    index = rng.integers(0, S, B).astype(np.int32)
    index[-1] = S - 1                                 # one row sees the whole cache
    lengths = (index + 1).astype(np.int32)
    if B > 1:
        lengths[0] = rng.integers(0, index[0] + 1)   # a row that sees fewer keys (0 possible)
    if B > 2:
        lengths[1] = 0                                # a row that sees none
    return f(B, C), f(B, S, Hkv, D), f(B, S, Hkv, D), index, lengths, w


def np_block(x, k_cache, v_cache, index, lengths, w, H, eps=1e-5):
    """The step in float64: returns (y, k_cache, v_cache)."""
    x = x.astype(np.float64)
    k_cache, v_cache = k_cache.astype(np.float64).copy(), v_cache.astype(np.float64).copy()
    B, S, Hkv, D = k_cache.shape
    C = H * D

    def ln(t, gb):
        g, b = gb
        t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + eps) * g
        return t if b is None else t + b

    def dense(t, wb):
        t = t @ wb[0].astype(np.float64)
        return t if wb[1] is None else t + wb[1]

    qkv = dense(ln(x, w["ln_1"]), w["c_attn"])
    q = qkv[:, :C].reshape(B, 1, H, D)
    for b in range(B):
        k_cache[b, index[b]] = qkv[b, C: C + Hkv * D].reshape(Hkv, D)
        v_cache[b, index[b]] = qkv[b, C + Hkv * D:].reshape(Hkv, D)
    a, _ = np_attention(q, k_cache, v_cache, causal=True, key_lengths=lengths)
    x1 = x + dense(a.reshape(B, C), w["c_proj"])
    u = dense(ln(x1, w["ln_2"]), w["mlp_c_fc"])
    g = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
    return x1 + dense(g, w["mlp_c_proj"]), k_cache, v_cache


def check_against_float64(impl, x, kc, vc, index, lengths, w, w_ref, H, F):
    """The step on ``impl`` with weights ``w`` against :func:`np_block` with ``w_ref`` (the same values as
    float32 numpy); returns the new k_cache."""
    with keraslm.ops.implementation_scope(impl):
        y, k_out, v_out = keraslm.ops.decoder_block_step(x, kc, vc, index, lengths, num_heads=H, **w)
    y_ref, k_ref, v_ref = np_block(x, kc, vc, index, lengths, w_ref, H)
    tol = 2e-5 * np.sqrt(F)
    assert_close(y, y_ref, tol, 1e-4, "y")
    assert_close(k_out, k_ref, tol, 1e-4, "k_cache")
    assert_close(v_out, v_ref, tol, 1e-4, "v_cache")
    return k_out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("B, S, H, Hkv, D, F", SHAPES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_float64(impl, B, S, H, Hkv, D, F, use_bias, rng):
    x, kc, vc, index, lengths, w = make_inputs(rng, B, S, H, Hkv, D, F, use_bias)
    k_out = check_against_float64(impl, x, kc, vc, index, lengths, w, w, H, F)
    # Only row index[b] of each cache row changed.
    mask = np.ones(kc.shape[:2], bool)
    mask[np.arange(B), index] = False
    np.testing.assert_array_equal(k_out.numpy()[mask], kc[mask])


def test_custom_equals_reference_in_a_compiled_loop(rng):
    B, S, H, Hkv, D, F = 3, 20, 4, 2, 8, 48
    x, kc, _, _, _, w = make_inputs(rng, B, S, H, Hkv, D, F, True)

    def run(impl):
        with keraslm.ops.implementation_scope(impl):
            @tf.function
            def loop():
                def body(t, x, k, v):
                    y, k, v = keraslm.ops.decoder_block_step(x, k, v, tf.fill([B], t), tf.fill([B], t + 1),
                                                             num_heads=H, in_place=True, **w)
                    return t + 1, y / tf.norm(y, axis=-1, keepdims=True), k, v
                # In-place caches must be distinct buffers the loop owns (constants may be shared).
                empty = lambda: tf.raw_ops.Empty(shape=kc.shape, dtype=tf.float32, init=True)  # noqa: E731
                return tf.while_loop(lambda t, *_: t < S, body, (0, tf.constant(x), empty(), empty()))[1:]
            return [t.numpy() for t in loop()]

    for got, want in zip(run("custom"), run("reference")):
        assert_close(got, want, 1e-4, 1e-4, "loop")


def test_cache_inputs_unchanged_unless_in_place(rng):
    x, kc, vc, index, lengths, w = make_inputs(rng, 2, 9, 2, 2, 4, 16, False)
    k_in, v_in = tf.constant(kc), tf.constant(vc)
    _, k_out, _ = keraslm.ops.decoder_block_step(x, k_in, v_in, index, lengths, num_heads=2, **w)
    np.testing.assert_array_equal(k_in.numpy(), kc)
    assert not np.array_equal(k_out.numpy(), kc)
    with keraslm.ops.implementation_scope("custom"):
        _, k_out, _ = keraslm.ops.decoder_block_step(x, k_in, v_in, index, lengths, num_heads=2, in_place=True,
                                                     **w)
    np.testing.assert_array_equal(k_in.numpy(), k_out.numpy())   # written into the input buffer


@pytest.mark.parametrize("impl", IMPLS)
def test_errors_name_the_bad_value(impl, rng):
    x, kc, vc, index, lengths, w = make_inputs(rng, 2, 6, 2, 1, 4, 16, True)
    call = lambda **kw: keraslm.ops.decoder_block_step(**{**dict(  # noqa: E731
        x=x, k_cache=kc, v_cache=vc, index=index, key_lengths=lengths, num_heads=2, **w), **kw})
    with keraslm.ops.implementation_scope(impl):
        with pytest.raises(tf.errors.InvalidArgumentError, match="index"):
            call(index=np.array([0, 6], np.int32))
        with pytest.raises(tf.errors.InvalidArgumentError, match="index"):
            call(index=np.array([-1, 0], np.int32))
        with pytest.raises(ValueError, match="float32"):
            call(x=x.astype(np.float64))
        with pytest.raises(ValueError, match="bias"):
            call(mlp_c_fc=(w["mlp_c_fc"][0], None))
    with keraslm.ops.implementation_scope("custom"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"key_lengths\[1\] must be in \[0, S=6\], got 7"):
            call(key_lengths=np.array([1, 7], np.int32))
        with pytest.raises(tf.errors.InvalidArgumentError, match="w_fc must have shape"):
            call(mlp_c_fc=(w["mlp_c_fc"][0][:-1], w["mlp_c_fc"][1]))
        with pytest.raises(tf.errors.InvalidArgumentError, match="b_qkv must have shape"):
            call(c_attn=(w["c_attn"][0], w["c_attn"][1][:-1]))
        with pytest.raises(tf.errors.InvalidArgumentError, match="x width 8 must equal num_heads"):
            call(num_heads=1)
        with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of the cache's key/value heads"):
            call(k_cache=np.zeros((2, 6, 3, 4), np.float32), v_cache=np.zeros((2, 6, 3, 4), np.float32))
        with pytest.raises(tf.errors.InvalidArgumentError, match="v_cache must have the shape"):
            call(v_cache=vc[:, :-1])


def test_no_gradient(rng):
    x, kc, vc, index, lengths, w = make_inputs(rng, 1, 4, 2, 2, 4, 8, False)
    x = tf.constant(x)
    with keraslm.ops.implementation_scope("custom"), tf.GradientTape() as tape:
        tape.watch(x)
        y, _, _ = keraslm.ops.decoder_block_step(x, kc, vc, index, lengths, num_heads=2, **w)
    with pytest.raises(LookupError, match="no gradient"):
        tape.gradient(y, x)


@pytest.mark.parametrize("use_bias, kv", [(True, None), (False, 2)])
def test_model_steps_use_it_and_match_the_full_pass(use_bias, kv, rng):
    from keraslm.models import TransformerLM

    model = TransformerLM(vocab_size=23, max_length=30, num_layers=2, num_heads=4, width=32, num_kv_heads=kv,
                          use_bias=use_bias)
    ids = tf.constant(rng.integers(0, 23, (3, 12)), tf.int32)
    full = model(ids).numpy()
    for impl in IMPLS:
        with keraslm.ops.implementation_scope(impl):
            step = tf.function(model.next)
            cache = model.init_cache(3, 30)
            _, cache = model.next(ids[:, :4], cache, tf.zeros([3], tf.int32))
            for t in range(4, 12):
                logits, cache = step(ids[:, t:t + 1], cache, tf.fill([3], t))
                assert_close(logits[:, 0], full[:, t], 2e-5, 1e-4, f"{impl} step {t}")
            ops = {op.type for op in step.get_concrete_function(ids[:, :1], cache, tf.fill([3], 4)).graph
                   .get_operations()}
            assert ("Keraslm>DecoderBlockStep" in ops) == (impl == "custom"), ops
