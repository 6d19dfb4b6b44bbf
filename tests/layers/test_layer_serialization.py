"""Every public layer survives Keras serialization: identical outputs and identical config JSON."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keraslm.layers import CausalSelfAttention, PositionEmbedding, TransformerBlock


def _layers():
    return {
        "attention": (lambda: CausalSelfAttention(num_heads=4, num_kv_heads=2, use_bias=False), "float", (2, 7, 16)),
        "block": (lambda: TransformerBlock(num_heads=2, mlp_ratio=3, layer_norm_epsilon=1e-6, proj_init_std=0.05),
                  "float", (2, 7, 12)),
        "learned-positions": (lambda: PositionEmbedding(11, 6), "int", (2, 7)),
        "sinusoidal-positions": (lambda: PositionEmbedding(11, 6, kind="sinusoidal"), "int", (2, 7)),
    }


def _input(kind, shape, rng):
    if kind == "int":
        return tf.constant(rng.integers(0, 11, shape), tf.int32)
    return tf.constant(rng.normal(size=shape), tf.float32)


@pytest.mark.parametrize("name", list(_layers()))
def test_serialize_round_trip(name, rng):
    make, kind, shape = _layers()[name]
    keras.utils.set_random_seed(3)
    layer = make()
    x = _input(kind, shape, rng)
    before = layer(x).numpy()
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == f"keraslm>{type(layer).__name__}"
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    clone(x)  # builds the weights
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), before)
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(layer.get_config(), sort_keys=True)


@pytest.mark.parametrize("name", list(_layers()))
def test_saved_inside_a_model(name, rng, tmp_path):
    make, kind, shape = _layers()[name]
    keras.utils.set_random_seed(4)
    inputs = keras.Input(shape=shape[1:], dtype="int32" if kind == "int" else "float32")
    model = keras.Model(inputs, make()(inputs))
    x = _input(kind, shape, rng)
    before = model(x).numpy()
    path = str(tmp_path / "layer.keras")
    model.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path)(x).numpy(), before)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        CausalSelfAttention(num_heads=0)
    with pytest.raises(ValueError, match="num_heads=4 must be a multiple of num_kv_heads=3"):
        CausalSelfAttention(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="mlp_ratio must be a positive integer, got 0"):
        TransformerBlock(num_heads=2, mlp_ratio=0)
    with pytest.raises(ValueError, match="dim must be a positive integer, got -1"):
        PositionEmbedding(4, -1)
