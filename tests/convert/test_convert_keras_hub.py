"""keras-hub GPT-2 presets (GPT2CausalLM.save_to_preset) in keraslm, held to keras-hub's own logits and ids."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from convert_helpers import IMPLS, SAMPLE, keraslm_logits, one_line, write_bpe_files

from keraslm.convert import detect_format, load_keras_hub_gpt2, load_pretrained
from keraslm.data import BytePairTokenizer

keras_hub = pytest.importorskip("keras_hub")


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """(preset dir, keras-hub GPT2CausalLM) with random weights of a size that tells a wrong mapping apart."""
    files = tmp_path_factory.mktemp("kh_bpe")
    V = write_bpe_files(files)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=str(files / "vocab.json"), merges=str(files / "merges.txt"))
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=V, num_layers=3, num_heads=3, hidden_dim=24,
                                             intermediate_dim=48, max_sequence_length=40)
    rng = np.random.default_rng(0)
    for w in backbone.weights:  # biases and LayerNorm betas are zeros at init: make every weight count
        base = 1.0 if w.path.endswith("gamma") else 0.0
        w.assign(base + rng.normal(0, 0.2, w.shape).astype(np.float32))
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=40)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    path = tmp_path_factory.mktemp("kh") / "preset"
    lm.save_to_preset(str(path))
    return path, lm


def _keras_hub_logits(lm, ids):
    ids = np.asarray(ids, np.int32)
    return np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))


def test_preset_layout_is_what_keraslm_reads(preset):
    path, _ = preset
    names = set(os.listdir(path))
    assert {"config.json", "model.weights.h5", "tokenizer.json"} <= names
    assert sorted(os.listdir(path / "assets" / "tokenizer")) == ["merges.txt", "vocabulary.json"]
    assert json.loads((path / "config.json").read_text())["class_name"] == "GPT2Backbone"
    assert detect_format(path) == "keras-hub-gpt2"


def test_logits_equal_keras_hub(preset):
    path, lm = preset
    model = load_pretrained(path)
    ids = np.random.default_rng(1).integers(0, model.vocab_size, (2, 40))
    ref = _keras_hub_logits(lm, ids)
    assert np.abs(ref).max() > 1.0  # a mapping error would show far above the tolerance
    for impl in IMPLS:
        np.testing.assert_allclose(keraslm_logits(model, ids, impl), ref, atol=1e-4, rtol=0, err_msg=impl)
    assert model.mlp_ratio == 2 and model.num_heads == 3 and model.max_length == 40


def test_tokenizer_ids_equal_keras_hub(preset):
    """Same ids as keras-hub's tokenizer, on text without runs of spaces: there keras-hub's split departs from
    GPT-2's regex ("a  b" is a / "  " / b for keras-hub, a / " " / " b" for GPT-2, Hugging Face and keraslm)."""
    path, lm = preset
    model = load_keras_hub_gpt2(path)
    assert isinstance(model.tokenizer, BytePairTokenizer)
    text = SAMPLE.replace("  ", " ")
    ours = model.tokenizer.tokenize(text).numpy().tolist()
    assert ours == np.asarray(lm.preprocessor.tokenizer(text)).tolist() and len(ours) > 10


def test_private_attention_names_of_older_keras(preset, tmp_path):
    """Keras versions without MultiHeadAttention's public properties save ``_query_dense`` etc."""
    path, lm = preset
    copy = tmp_path / "old"
    shutil.copytree(path, copy)
    with h5py.File(copy / "model.weights.h5", "r+") as f:
        for block in ("transformer_decoder", "transformer_decoder_1", "transformer_decoder_2"):
            group = f[f"layers/{block}/_self_attention_layer"]
            for name in ("query_dense", "key_dense", "value_dense", "output_dense"):
                group.move(name, "_" + name)
    model = load_keras_hub_gpt2(copy, tokenizer=False)
    ids = np.random.default_rng(2).integers(0, model.vocab_size, (1, 17))
    np.testing.assert_allclose(keraslm_logits(model, ids, "reference"), _keras_hub_logits(lm, ids), atol=1e-4,
                               rtol=0)


def test_missing_and_foreign_files_are_named(preset, tmp_path):
    path, _ = preset
    no_weights = tmp_path / "no_weights"
    shutil.copytree(path, no_weights)
    os.remove(no_weights / "model.weights.h5")
    for call in (detect_format, load_keras_hub_gpt2):
        with pytest.raises(FileNotFoundError) as e:
            call(no_weights)
        assert "has a keras-hub config.json but no model.weights.h5" in one_line(e)

    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(path, no_tokenizer)
    shutil.rmtree(no_tokenizer / "assets")
    with pytest.raises(FileNotFoundError) as e:
        load_pretrained(no_tokenizer)
    assert "vocab.json and merges.txt" in one_line(e) and "assets/tokenizer" in str(e.value)

    other = tmp_path / "other"
    shutil.copytree(path, other)
    config = json.loads((other / "config.json").read_text())
    config["class_name"] = "LlamaBackbone"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as e:
        detect_format(other)
    assert "LlamaBackbone" in one_line(e)
