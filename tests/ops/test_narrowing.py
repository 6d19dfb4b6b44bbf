"""Values are checked before every narrowing cast: nothing wraps around, overflows or flushes silently;
"large means off" settings stay off; and ops work when the head size is only known at run time."""

import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.data import CharTokenizer
from keraslm.models import TransformerLM

IMPLS = ["reference"] + (["custom"] if keraslm.ops.custom_ops_available() else [])


@pytest.fixture(scope="module")
def model():
    tok = CharTokenizer()
    tok.adapt(["hello world, the quick brown fox"])
    return TransformerLM(vocab_size=tok.vocab_size, max_length=24, num_layers=1, num_heads=2, width=8, tokenizer=tok)


def test_generation_settings_out_of_range(model):
    with pytest.raises(ValueError, match="max_new_tokens must be at most 2147483647, got 2147483648"):
        model.generate("he", max_new_tokens=2**31)
    with pytest.raises(ValueError, match=r"temperature must be finite .* float32's normal range .*got 1e\+39"):
        model.generate("he", max_new_tokens=3, temperature=1e39)
    with pytest.raises(ValueError, match=r"repetition_penalty must be finite and > 0 .*got 1e-38"):
        model.generate("he", max_new_tokens=3, repetition_penalty=1e-38)
    # top_k >= V keeps every token, documented: 2**40 is the same as off
    big = model.generate("he", max_new_tokens=8, top_k=2**40, seed=3, return_details=True)["ids"]
    assert big == model.generate("he", max_new_tokens=8, top_k=0, seed=3, return_details=True)["ids"]


@pytest.mark.parametrize("impl", IMPLS)
def test_sampler_tensors_wider_than_the_op(impl):
    logits, coins = tf.zeros([2, 5]), tf.constant([0.2, 0.7])
    with keraslm.ops.implementation_scope(impl):
        with pytest.raises(tf.errors.InvalidArgumentError, match="temperature"):
            keraslm.ops.sample(logits, coins, temperature=tf.constant([1e39, 1.0], tf.float64))
        with pytest.raises(tf.errors.InvalidArgumentError, match="repetition_penalty"):
            keraslm.ops.sample(logits, coins, repetition_penalty=tf.constant([1e-38, 1.0], tf.float64))
        with pytest.raises(tf.errors.InvalidArgumentError, match="previous_ids must fit in int32"):
            keraslm.ops.sample(logits, coins, previous_ids=tf.constant([[2**32 + 1], [0]], tf.int64))
        wide = keraslm.ops.sample(logits, coins, top_k=tf.constant([2**40, 2**40], tf.int64))[0].numpy()
        assert wide.tolist() == keraslm.ops.sample(logits, coins, top_k=0)[0].numpy().tolist()


@pytest.mark.parametrize("impl", IMPLS)
def test_key_lengths_never_wrap_or_truncate(impl, rng):
    q = tf.constant(rng.normal(size=(2, 3, 2, 4)), tf.float32)
    kv = tf.constant(rng.normal(size=(2, 3, 1, 4)), tf.float32)
    with keraslm.ops.implementation_scope(impl):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"key_lengths must fit in int32; got key_lengths"):
            keraslm.ops.attention(q, kv, kv, key_lengths=tf.constant([2**32 + 1, 3], tf.int64))
        with pytest.raises(ValueError, match="key_lengths must be an integer tensor, got float32"):
            keraslm.ops.attention(q, kv, kv, key_lengths=tf.constant([1.7, 3.0]))
        ok = keraslm.ops.attention(q, kv, kv, key_lengths=tf.constant([2, 3], tf.int64))
        want = keraslm.ops.attention_reference(q, kv, kv, key_lengths=[2, 3])[0]
        np.testing.assert_allclose(ok.numpy(), want.numpy(), atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_attention_with_a_head_size_unknown_while_tracing(impl, rng):
    q = tf.constant(rng.normal(size=(2, 5, 2, 6)), tf.float32)
    k = tf.constant(rng.normal(size=(2, 7, 1, 6)), tf.float32)
    v = tf.constant(rng.normal(size=(2, 7, 1, 6)), tf.float32)
    spec = [tf.TensorSpec([None] * 4, tf.float32)] * 3

    def loss_and_grads(a, b, c):
        with tf.GradientTape() as tape:
            tape.watch([a, b, c])
            y = keraslm.ops.attention(a, b, c, causal=True)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, [a, b, c])

    with keraslm.ops.implementation_scope(impl):
        y, grads = tf.function(loss_and_grads, input_signature=spec)(q, k, v)
        y_ref, grads_ref = loss_and_grads(q, k, v)       # eager: D known
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), atol=1e-5, rtol=1e-4)
    for g, r in zip(grads, grads_ref):
        np.testing.assert_allclose(g.numpy(), r.numpy(), atol=1e-4, rtol=1e-3)
