"""nanoGPT ckpt.pt in keraslm: logits equal a torch forward of the same weights (HF GPT-2 with exact GELU)."""

import os
import pickle

import numpy as np
import pytest
import torch
import transformers
from convert_helpers import (
    IMPLS,
    SAMPLE,
    hf_logits,
    hf_model,
    keraslm_logits,
    one_line,
    save_nanogpt,
    write_bpe_files,
    zero_biases,
)

from keraslm.convert import detect_format, load_nanogpt, load_pretrained
from keraslm.data import BytePairTokenizer, CharTokenizer

ATOL = 1e-4
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def _exact_gelu_model(V, bias=True, **config):
    """Weights of std 0.3 (GPT-2 initialises with 0.02): large enough activations for the two GELUs to differ."""
    config = {**dict(n_layer=2, n_head=3, n_embd=24, n_positions=33, initializer_range=0.3), **config}
    hf = hf_model(vocab_size=V, activation_function="gelu", **config)
    return hf if bias else zero_biases(hf)


@pytest.mark.parametrize("bias, compiled", [(True, False), (False, False), (False, True)])
def test_logits_equal_torch(tmp_path, bias, compiled):
    hf = _exact_gelu_model(97, bias)
    path = save_nanogpt(str(tmp_path / "out" / "ckpt.pt"), hf, bias=bias, compiled=compiled)
    assert detect_format(path) == detect_format(tmp_path / "out") == "nanogpt"
    model = load_pretrained(tmp_path / "out", tokenizer=False)
    assert model.use_bias == bias and model.activation == "gelu" and model.max_length == 33
    assert not any("bias" in w.path or "beta" in w.path for w in model.weights) or bias
    ids = np.random.default_rng(0).integers(0, 97, (2, 33))
    ref = hf_logits(hf, ids)
    for impl in IMPLS:
        np.testing.assert_allclose(keraslm_logits(model, ids, impl), ref, atol=ATOL, rtol=0, err_msg=impl)
    # The tanh GELU would not do: the test tells the activations apart.
    for block in model.blocks:
        block.activation = "gelu_tanh"
    assert np.abs(keraslm_logits(model, ids, "reference") - ref).max() > 10 * ATOL


def test_gpt2_vocabulary_padded_to_50304(tmp_path):
    """nanoGPT's 50304 rows with GPT-2's 50257 tokens: the padding rows are dropped, the rest are exact."""
    hf = _exact_gelu_model(50304, n_layer=1, n_head=2, n_embd=16, n_positions=24)
    out = tmp_path / "out"
    path = save_nanogpt(str(out / "ckpt.pt"), hf)
    with pytest.raises(FileNotFoundError) as e:
        load_nanogpt(path)
    assert f"put tokenizer.json, or vocab.json and merges.txt in {out}" in one_line(e)

    assert write_bpe_files(out, pad_to=50257) == 50257
    model = load_pretrained(path)
    assert model.vocab_size == 50257 and isinstance(model.tokenizer, BytePairTokenizer)
    fast = transformers.GPT2TokenizerFast(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"))
    ids = model.tokenizer.tokenize(SAMPLE).numpy().tolist()[:24]
    assert ids == fast(SAMPLE)["input_ids"][:24]
    ref = hf_logits(hf, [ids])
    assert ref.shape[-1] == 50304
    np.testing.assert_allclose(keraslm_logits(model, [ids], IMPLS[-1]), ref[..., :50257], atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """A nanoGPT repository layout: data/shakespeare_char/meta.pkl and out-shakespeare-char/ckpt.pt."""
    root = tmp_path_factory.mktemp("nanogpt")
    chars = sorted(set(TEXT))  # as data/shakespeare_char/prepare.py
    stoi, itos = {c: i for i, c in enumerate(chars)}, dict(enumerate(chars))
    os.makedirs(root / "data" / "shakespeare_char")
    with open(root / "data" / "shakespeare_char" / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    hf = _exact_gelu_model(len(chars))
    save_nanogpt(str(root / "out-shakespeare-char" / "ckpt.pt"), hf, dataset="shakespeare_char")
    return root, hf, stoi


def test_char_vocabulary_maps_ids(char_run):
    root, hf, stoi = char_run
    model = load_pretrained(root / "out-shakespeare-char")
    tok, n = model.tokenizer, len(stoi)
    assert isinstance(tok, CharTokenizer) and model.vocab_size == n + 2 == tok.vocab_size
    ids = tok.tokenize(TEXT).numpy()
    np.testing.assert_array_equal(ids - 2, [stoi[c] for c in TEXT])  # nanoGPT's id + 2
    assert tok.detokenize(ids).numpy().decode() == TEXT
    assert tok.tokenize("Z").numpy().tolist() == [tok.unk_id]  # never seen by the run

    window = ids[None, :33]
    ref = hf_logits(hf, window - 2)
    for impl in IMPLS:
        logits = keraslm_logits(model, window, impl)
        np.testing.assert_allclose(logits[..., 2:], ref, atol=ATOL, rtol=0, err_msg=impl)
        # <pad> and <unk> score the mean of the real logits: never above a uniform guess
        np.testing.assert_allclose(logits[..., :2], np.repeat(ref.mean(-1, keepdims=True), 2, -1), atol=ATOL)
    p = torch.softmax(torch.as_tensor(logits), -1).numpy()
    assert p[..., :2].max() <= 1 / (n + 2) + 1e-6


def test_char_meta_given_explicitly(char_run, tmp_path):
    root, hf, stoi = char_run
    lone = tmp_path / "elsewhere"
    save_nanogpt(str(lone / "ckpt.pt"), hf, dataset="not_here")
    with pytest.raises(FileNotFoundError) as e:
        load_nanogpt(lone)
    message = one_line(e)
    assert "meta.pkl" in message and str(lone / "meta.pkl") in message and "tokenizer=" in message
    meta = root / "data" / "shakespeare_char" / "meta.pkl"
    for option in (meta, meta.parent):
        model = load_nanogpt(lone / "ckpt.pt", tokenizer=option)
        assert model.tokenizer.vocabulary[2:] == sorted(stoi, key=stoi.get)


def test_bias_mismatch_is_named(tmp_path):
    hf = _exact_gelu_model(40, bias=False)
    path = save_nanogpt(str(tmp_path / "ckpt.pt"), hf, bias=True)  # biases saved, all zero ...
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_args"]["bias"] = False                                # ... but the run says bias=False
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as e:
        load_nanogpt(path, tokenizer=False)
    assert "no place for: transformer.h.0.attn.c_attn.bias" in one_line(e)
