"""RecurrentLM's own LSTM / GRU sequence loop against the Keras layers whose weights it uses."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keraslm.models import RecurrentLM
from keraslm.layers.recurrence import fast_path_applies, fast_sequence, run_recurrent_layer


def _layer(kind, units, width, rng):
    cls = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind]
    layer = cls(units, return_sequences=True, return_state=True)
    layer.build((None, None, width))
    for w in layer.weights:      # random non-zero biases too, so every term is exercised
        w.assign(rng.standard_normal(w.shape).astype(np.float32) * 0.5)
    return layer


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("with_state", [False, True])
def test_sequence_matches_the_keras_layer(kind, with_state, rng):
    B, T, E, U = 3, 7, 5, 9
    layer = _layer(kind, U, E, rng)
    assert fast_path_applies(layer)
    x = tf.constant(rng.standard_normal((B, T, E)), tf.float32)
    states = [tf.constant(rng.standard_normal((B, U)), tf.float32) for _ in range(2 if kind == "lstm" else 1)]
    initial = states if with_state else None
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, *states])
        ours = fast_sequence(layer, x, initial)
        theirs = layer(x, initial_state=initial)
        loss_ours = tf.reduce_sum(ours[0] * tf.cos(ours[0])) + sum(tf.reduce_sum(s) for s in ours[1:])
        loss_theirs = tf.reduce_sum(theirs[0] * tf.cos(theirs[0])) + sum(tf.reduce_sum(s) for s in theirs[1:])
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    wrt = [x, *layer.weights, *(states if with_state else [])]
    for a, b in zip(tape.gradient(loss_ours, wrt), tape.gradient(loss_theirs, wrt)):
        assert a is not None and b is not None
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def test_sequence_gradient_matches_finite_differences(rng):
    layer = _layer("gru", 4, 3, rng)
    x = tf.constant(rng.standard_normal((2, 5, 3)), tf.float64)
    kernel = layer.cell.kernel

    def loss():
        return tf.reduce_sum(tf.cast(fast_sequence(layer, tf.cast(x, tf.float32))[0], tf.float64) ** 2)

    with tf.GradientTape() as tape:
        value = loss()
    grad = tape.gradient(value, kernel).numpy()
    w0 = kernel.numpy()

    def at(w):
        kernel.assign(w)
        return float(loss())

    eps = 1e-2
    for idx in [(0, 0), (1, 5), (2, 11)]:
        step = np.zeros_like(w0)
        step[idx] = eps
        numeric = (at(w0 + step) - at(w0 - step)) / (2 * eps)
        assert np.isclose(grad[idx], numeric, rtol=2e-2, atol=2e-3), (idx, grad[idx], numeric)
    kernel.assign(w0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_model_fast_and_keras_paths_agree(cell, rng):
    keras.utils.set_random_seed(1)
    models = [RecurrentLM(vocab_size=17, embedding_dim=6, hidden_units=[8, 5], num_layers=2, cell=cell, fast=f)
              for f in (True, False)]
    ids = tf.constant(rng.integers(0, 17, (3, 9)), tf.int32)
    models[0](ids)
    models[1](ids)
    models[1].set_weights(models[0].get_weights())
    (fast, fast_states), (slow, slow_states) = [m.next(ids, m.init_cache(3), tf.zeros([3], tf.int32))
                                                for m in models]
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(tf.nest.flatten(fast_states), tf.nest.flatten(slow_states)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_fast_switch(rng):
    layer = keras.layers.GRU(4, return_sequences=True, return_state=True)
    x = tf.constant(rng.normal(size=(2, 5, 3)), tf.float32)
    layer(x)
    calls = []
    original = layer.call
    layer.call = lambda *a, **k: calls.append(1) or original(*a, **k)
    run_recurrent_layer(layer, x, fast=True)
    run_recurrent_layer(layer, x, fast="auto")
    assert calls == ([1] if tf.config.list_physical_devices("GPU") else [])
    run_recurrent_layer(layer, x, fast=False)
    run_recurrent_layer(layer, x, mask=tf.ones([2, 5], tf.bool), fast=True)   # masks: the Keras layer
    assert len(calls) == (3 if tf.config.list_physical_devices("GPU") else 2)
    with pytest.raises(ValueError, match="fast must be 'auto', True or False, got 'yes'"):
        RecurrentLM(vocab_size=5, embedding_dim=2, hidden_units=2, fast="yes")


def test_fast_path_only_for_plain_layers():
    assert not fast_path_applies(keras.layers.SimpleRNN(3))
    for layer in (keras.layers.GRU(3, reset_after=False), keras.layers.LSTM(3, activation="relu"),
                  keras.layers.LSTM(3, go_backwards=True), keras.layers.GRU(3, recurrent_dropout=0.1)):
        layer.build((None, None, 2))
        assert not fast_path_applies(layer), layer.get_config()
