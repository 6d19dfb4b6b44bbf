"""TransformerLM under mixed_bfloat16: the XLA-fused LayerNorm / GELU of training steps against the plain ops."""

import keras
import numpy as np
import tensorflow as tf

from keraslm.layers import TransformerBlock
from keraslm.models import TransformerLM


def _loss_and_grads(model, ids, labels):
    with tf.GradientTape() as tape:
        logits = tf.cast(model(ids, training=True), tf.float32)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return loss, tape.gradient(loss, model.trainable_weights)


def test_fused_training_ops_match_the_plain_ops_in_bfloat16(rng, monkeypatch):
    keras.utils.set_random_seed(3)
    model = TransformerLM(vocab_size=23, max_length=16, num_layers=2, num_heads=2, width=24, use_bias=True,
                          dtype="mixed_bfloat16")
    ids = tf.constant(rng.integers(0, 23, (3, 13)), tf.int32)
    labels = tf.constant(rng.integers(0, 23, (3, 13)), tf.int32)
    model(ids)
    for w in model.trainable_weights:   # LayerNorm gains / biases away from 1 / 0
        w.assign(w + rng.standard_normal(w.shape).astype(np.float32) * 0.05)
    assert model.blocks[0]._compiles_elementwise(True) and not model.blocks[0]._compiles_elementwise(False)
    fused_loss, fused_grads = _loss_and_grads(model, ids, labels)
    monkeypatch.setattr(TransformerBlock, "_compiles_elementwise", lambda self, training: False)
    plain_loss, plain_grads = _loss_and_grads(model, ids, labels)
    assert abs(float(fused_loss) - float(plain_loss)) < 0.02
    for w, a, b in zip(model.trainable_weights, fused_grads, plain_grads):
        a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
        scale = np.abs(b).max() + 1e-6
        assert np.abs(a - b).max() < 0.05 * scale, w.path


def test_float32_training_keeps_the_plain_ops():
    block = TransformerBlock(num_heads=2)
    assert not block._compiles_elementwise(True)


def test_compiled_gelu_and_layer_norm_formulas(rng):
    from keraslm.layers.transformer_block import _compiled_gelu, _compiled_layer_norm

    x = (rng.standard_normal((5, 7, 11)) * 3).astype(np.float32)
    z = x.astype(np.float64)
    gelu = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
    np.testing.assert_allclose(_compiled_gelu(tf.constant(x)).numpy(), gelu, rtol=1e-5, atol=1e-6)
    gamma, beta = rng.standard_normal(11).astype(np.float32), rng.standard_normal(11).astype(np.float32)
    norm = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5) * gamma + beta
    np.testing.assert_allclose(_compiled_layer_norm(tf.constant(x), tf.constant(gamma), tf.constant(beta), 1e-5).numpy(),
                               norm, rtol=1e-4, atol=1e-5)
    without_beta = _compiled_layer_norm(tf.constant(x), tf.constant(gamma), None, 1e-5).numpy()
    np.testing.assert_allclose(without_beta, norm - beta, rtol=1e-4, atol=1e-5)
