"""The attention layer's cache paths: prefill, one-token steps and per-row positions equal the plain pass,
and the keys and values are written into the caller's buffers in place."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.layers import CausalSelfAttention

IMPLS = ["reference"] + (["custom"] if keraslm.ops.custom_ops_available() else [])


def _layer(kv=None):
    keras.utils.set_random_seed(7)
    layer = CausalSelfAttention(num_heads=4, num_kv_heads=kv)
    layer.build((None, None, 16))
    return layer


def _empty_cache(B, S, layer):
    shape = [B, S, layer.num_kv_heads, layer.head_dim]
    return tf.zeros(shape) + 0.0, tf.zeros(shape) + 0.0       # fresh buffers


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kv", [None, 2])
def test_prefill_then_steps_equal_the_full_pass(impl, kv, rng):
    layer = _layer(kv)
    x = tf.constant(rng.normal(size=(3, 9, 16)), tf.float32)
    with keraslm.ops.implementation_scope(impl):
        full = layer(x).numpy()
        cache = _empty_cache(3, 13, layer)
        y, cache = layer(x[:, :5], cache=cache, index=tf.zeros([3], tf.int32))
        outs = [y.numpy()]
        for t in range(5, 9):
            y, cache = layer(x[:, t:t + 1], cache=cache, index=tf.fill([3], t))
            outs.append(y.numpy())
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_rows_at_their_own_positions(impl, rng):
    """Right-padded prompts: key_lengths bound each row's prefill, then each row steps at its own index."""
    layer = _layer()
    a = tf.constant(rng.normal(size=(1, 6, 16)), tf.float32)
    b = tf.constant(rng.normal(size=(1, 3, 16)), tf.float32)
    x = tf.concat([a, tf.pad(b, [[0, 0], [0, 3], [0, 0]])], 0)              # [2, 6, 16], row 1 padded
    nxt = tf.constant(rng.normal(size=(2, 1, 16)), tf.float32)
    with keraslm.ops.implementation_scope(impl):
        cache = _empty_cache(2, 8, layer)
        y, cache = layer(x, cache=cache, index=tf.zeros([2], tf.int32), key_lengths=tf.constant([6, 3]))
        step, _ = layer(nxt, cache=cache, index=tf.constant([6, 3]))
        want_a = layer(tf.concat([a, nxt[:1]], 1)).numpy()
        want_b = layer(tf.concat([b, nxt[1:]], 1)).numpy()
    np.testing.assert_allclose(y[0].numpy(), want_a[0, :6], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(y[1, :3].numpy(), want_b[0, :3], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(step[0, 0].numpy(), want_a[0, 6], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(step[1, 0].numpy(), want_b[0, 3], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_cache_is_written_in_place(impl, rng):
    """The contract of CausalLM.next: the cache given is taken over and written in place."""
    layer = _layer()
    x = tf.constant(rng.normal(size=(2, 4, 16)), tf.float32)
    with keraslm.ops.implementation_scope(impl):
        k_in, v_in = _empty_cache(2, 6, layer)
        _, (k_out, v_out) = layer(x, cache=(k_in, v_in), index=tf.zeros([2], tf.int32))
    qkv = layer.c_attn(x).numpy()
    k_new = qkv[..., 16:32].reshape(2, 4, 4, 4)                                # [B, T, Hkv, D]
    np.testing.assert_allclose(k_out.numpy()[:, :4], k_new, atol=1e-6)
    np.testing.assert_array_equal(k_out.numpy()[:, 4:], 0.0)
    np.testing.assert_array_equal(k_in.numpy(), k_out.numpy())              # the same buffer
    np.testing.assert_array_equal(v_in.numpy(), v_out.numpy())
