"""TransformerLM's activation switch: "gelu_tanh" (GPT-2, the default) or "gelu" (exact erf, nanoGPT)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from convert_helpers import IMPLS

import keraslm
from keraslm.models import TransformerLM

ARGS = dict(vocab_size=23, max_length=16, num_layers=2, num_heads=2, width=16)


def _model(activation, seed=0):
    keras.utils.set_random_seed(seed)
    model = TransformerLM(**ARGS, activation=activation)
    model.build_for_inference()
    for w in model.weights:  # large weights: the two GELUs give visibly different logits
        w.assign(np.random.default_rng(seed).normal(1.0 if w.path.endswith("gamma") else 0.0, 0.3, w.shape))
    return model


def test_config_and_old_configs():
    model = TransformerLM(**ARGS, activation="gelu")
    config = model.get_config()
    assert config["activation"] == "gelu" and model.blocks[0].get_config()["activation"] == "gelu"
    assert TransformerLM.from_config(config).activation == "gelu"
    old = {k: v for k, v in config.items() if k != "activation"}  # saved before the switch existed
    assert TransformerLM.from_config(old).activation == "gelu_tanh"
    with pytest.raises(ValueError, match="activation must be one of .*got 'relu'"):
        TransformerLM(**ARGS, activation="relu")


def test_saved_model_keeps_the_activation(tmp_path):
    model = _model("gelu")
    ids = tf.constant([[1, 2, 3, 4]])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.activation == "gelu"
    np.testing.assert_allclose(loaded(ids).numpy(), model(ids).numpy(), atol=1e-6)


def test_exact_gelu_differs_from_tanh_and_matches_numpy():
    exact, tanh = _model("gelu"), _model("gelu_tanh")
    ids = tf.constant([[3, 1, 4, 1, 5, 9, 2, 6]])
    assert np.abs(exact(ids).numpy() - tanh(ids).numpy()).max() > 1e-4  # float32 noise: ~1e-6
    from scipy.special import erf

    x = np.linspace(-4, 4, 101).astype(np.float32)
    block = exact.blocks[0]
    assert block.activation == "gelu"
    np.testing.assert_allclose(keras.activations.gelu(x, approximate=False), 0.5 * x * (1 + erf(x / np.sqrt(2))),
                               atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_cached_decoding_equals_full_forward(impl, activation):
    """One-token steps: the fused decoder-step op only for the tanh GELU, the unfused path for the exact one."""
    model = _model(activation)
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]], np.int32)
    with keraslm.ops.implementation_scope(impl):
        full = model(tf.constant(ids)).numpy()
        x = tf.zeros([1, 1, 16])
        uses_op = model.blocks[0]._runs_decoder_step_op(x)
        assert uses_op == (impl == "custom" and activation == "gelu_tanh")
        cache = model.init_cache(1, 16)
        steps = []
        for t in range(ids.shape[1]):
            logits, cache = model.next(tf.constant(ids[:, t:t + 1]), cache, tf.constant([t]))
            steps.append(logits.numpy()[:, 0])
    np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-4, rtol=0)
