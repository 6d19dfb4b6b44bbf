"""Model zoo: contracts shared by RecurrentLM and TransformerLM."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.layers import PositionEmbedding, sinusoidal_encoding
from keraslm.models import PRESETS, RecurrentLM, SequenceClassifier, TransformerLM, from_preset, preset_names


def tiny_models():
    return {
        "gpt": TransformerLM(vocab_size=13, max_length=24, num_layers=2, num_heads=4, width=16),
        "gpt-gqa-sinusoidal": TransformerLM(vocab_size=13, max_length=24, num_layers=2, num_heads=4, width=16,
                                            num_kv_heads=2, position_embedding="sinusoidal", use_bias=False),
        "gpt-untied": TransformerLM(vocab_size=13, max_length=24, num_layers=2, num_heads=2, width=16,
                                    tie_embeddings=False),
        "lstm": RecurrentLM(vocab_size=13, embedding_dim=8, hidden_units=[16, 12], num_layers=2, cell="lstm"),
        "gru-tied": RecurrentLM(vocab_size=13, embedding_dim=8, hidden_units=8, num_layers=1, cell="gru",
                                tie_embeddings=True),
        "rnn": RecurrentLM(vocab_size=13, embedding_dim=8, hidden_units=8, num_layers=1, cell="rnn"),
    }


@pytest.fixture(params=list(tiny_models()))
def model(request):
    keras.utils.set_random_seed(0)
    return tiny_models()[request.param]


def test_logits_shape(model, rng):
    ids = rng.integers(0, 13, (3, 10)).astype(np.int32)
    assert model(ids).shape == (3, 10, 13)


def test_cached_decoding_equals_full_pass(model, rng):
    """next() over a prefix then one token at a time gives the logits of one full pass."""
    ids = rng.integers(0, 13, (2, 11)).astype(np.int32)
    full = model(ids).numpy()
    cache = model.init_cache(2, 16)
    logits, cache = model.next(ids[:, :6], cache, tf.zeros([2], tf.int32))
    steps = [logits.numpy()]
    for t in range(6, 11):
        logits, cache = model.next(ids[:, t:t + 1], cache, tf.fill([2], t))
        steps.append(logits.numpy())
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=2e-5, rtol=1e-4)


def test_prefill_with_per_row_lengths(model, rng):
    """Prompts of different lengths in one batch: each row's last real logits match its own pass."""
    a = rng.integers(1, 13, 7).astype(np.int32)
    b = rng.integers(1, 13, 4).astype(np.int32)
    ids = np.zeros((2, 7), np.int32)
    ids[0], ids[1, :4] = a, b
    cache = model.init_cache(2, 12)
    logits, cache = model.next(ids, cache, tf.zeros([2], tf.int32), valid=tf.constant([7, 4]))
    np.testing.assert_allclose(logits[0, 6], model(a[None])[0, -1], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(logits[1, 3], model(b[None])[0, -1], atol=2e-5, rtol=1e-4)
    # then one decode step per row at its own position
    nxt = np.array([[3], [5]], np.int32)
    step, _ = model.next(nxt, cache, tf.constant([7, 4]))
    np.testing.assert_allclose(step[0, 0], model(np.append(a, 3)[None])[0, -1], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(step[1, 0], model(np.append(b, 5)[None])[0, -1], atol=2e-5, rtol=1e-4)


def test_save_load_round_trip_is_exact(model, rng, tmp_path):
    ids = rng.integers(0, 13, (2, 9)).astype(np.int32)
    before = model(ids).numpy()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded(ids).numpy(), before)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)


def test_config_round_trip(model):
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    # The config is the constructor arguments (plus Keras' name/dtype).
    import inspect
    params = set(inspect.signature(type(model).__init__).parameters) - {"self", "kwargs"}
    assert set(model.get_config()) - {"name", "dtype"} == params


def test_transformer_custom_op_and_reference_agree(rng):
    keras.utils.set_random_seed(1)
    model = TransformerLM(vocab_size=17, max_length=40, num_layers=2, num_heads=2, width=16, num_kv_heads=1)
    ids = tf.constant(rng.integers(0, 17, (2, 37)).astype(np.int32))
    results = {}
    for impl in ("custom", "reference"):
        with keraslm.ops.implementation_scope(impl):
            with tf.GradientTape() as tape:
                logits = model(ids)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(ids[:, 1:], logits[:, :-1],
                                                                                   from_logits=True))
            grads = tape.gradient(loss, model.trainable_variables)
        results[impl] = (logits.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads])
    np.testing.assert_allclose(results["custom"][0], results["reference"][0], atol=1e-5, rtol=1e-4)
    for a, b in zip(results["custom"][1], results["reference"][1]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-3)


def test_gpt2_parameter_layout():
    """Block structure and names line up with GPT-2 checkpoints (h.N.attn.c_attn ...)."""
    model = TransformerLM(vocab_size=50, max_length=16, num_layers=2, num_heads=2, width=8)
    model.build_for_inference()
    paths = sorted(w.path for w in model.weights)
    for expected in ("wte/embeddings", "wpe/embeddings", "h_0/ln_1/gamma", "h_0/attn/c_attn/kernel",
                     "h_0/attn/c_proj/kernel", "h_0/ln_2/gamma", "h_0/mlp_c_fc/kernel", "h_1/mlp_c_proj/bias",
                     "ln_f/gamma"):
        assert any(p.endswith(expected) for p in paths), (expected, paths)
    assert model.blocks[0].attn.c_attn.kernel.shape == (8, 24)  # [C, 3C], GPT-2's c_attn


def test_sinusoidal_encoding_formula():
    pe = sinusoidal_encoding(50, 16)
    pos, i = 7, 3
    assert np.isclose(pe[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 16)))
    assert np.isclose(pe[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 16)))
    layer = PositionEmbedding(50, 16, kind="sinusoidal")
    np.testing.assert_allclose(layer(tf.constant([[pos]]))[0, 0], pe[pos])
    assert not layer.trainable_weights


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_overfits_a_tiny_corpus(family):
    """Each family memorises a short repeated sequence: loss falls below 0.2 nats/token."""
    keras.utils.set_random_seed(2)
    text = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4] * 6, np.int32)
    T = 16
    windows = np.stack([text[i:i + T + 1] for i in range(len(text) - T - 1)])
    model = tiny_models()[family]
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(windows[:, :-1], windows[:, 1:], batch_size=16, epochs=60, verbose=0)
    assert hist.history["loss"][-1] < 0.2, hist.history["loss"][-5:]


def test_classifier_learns_and_round_trips(rng, tmp_path):
    keras.utils.set_random_seed(3)
    # label = whether token 7 occurs; variable lengths padded with 0
    x = np.zeros((128, 12), np.int32)
    y = np.zeros(128, np.int32)
    for i in range(128):
        n = rng.integers(3, 12)
        x[i, :n] = rng.integers(1, 7, n)
        if i % 2:
            x[i, rng.integers(0, n)] = 7
            y[i] = 1
    clf = SequenceClassifier(RecurrentLM(13, 16, 16, cell="gru"), num_classes=2, pooling="last")
    clf.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    hist = clf.fit(x, y, epochs=25, batch_size=32, verbose=0)
    assert hist.history["accuracy"][-1] > 0.95
    path = str(tmp_path / "clf.keras")
    clf.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path)(x).numpy(), clf(x).numpy())


def test_presets_and_bad_arguments():
    assert {"char-gru", "word-lstm-small", "word-lstm-medium", "gpt-nano", "gpt-mini", "gpt2-small"} <= set(PRESETS)
    nano = from_preset("gpt-nano", vocab_size=65)
    assert (nano.num_layers, nano.num_heads, nano.width, nano.max_length) == (4, 4, 128, 64)
    assert (nano.tie_embeddings, nano.use_bias) == (False, True)
    nano.build_for_inference()
    assert nano.lm_head.kernel.shape == (128, 65)
    mini = from_preset("gpt-mini", vocab_size=65)
    mini.build_for_inference()
    assert 10.6e6 < mini.count_params() < 10.9e6  # nanoGPT's ~10.7M
    gru = from_preset("char-gru", vocab_size=65)
    assert (gru.embedding_dim, gru.hidden_units, gru.cell) == (256, 1024, "gru")
    with pytest.raises(ValueError, match="unknown preset 'gpt-huge'"):
        from_preset("gpt-huge", vocab_size=10)
    with pytest.raises(ValueError, match="width=10 must be divisible by num_heads=4"):
        TransformerLM(vocab_size=5, max_length=4, num_layers=1, num_heads=4, width=10)
    with pytest.raises(ValueError, match="cell must be one of"):
        RecurrentLM(5, 4, 4, cell="transformer")
    with pytest.raises(ValueError, match="vocab_size must be a positive integer, got 0"):
        RecurrentLM(0, 4, 4)
    assert preset_names() == sorted(PRESETS)


def test_too_long_input_is_an_error():
    model = TransformerLM(vocab_size=5, max_length=4, num_layers=1, num_heads=1, width=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_length=4"):
        model(np.zeros((1, 5), np.int32))
