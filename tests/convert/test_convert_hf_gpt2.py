"""Hugging Face GPT-2 in and out, held to `transformers`' own GPT2LMHeadModel (torch, CPU, float32)."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch
import transformers
from convert_helpers import (
    EOT,
    IMPLS,
    SAMPLE,
    hf_logits,
    hf_model,
    keraslm_logits,
    one_line,
    write_bpe_files,
)

from keraslm.convert import detect_format, load_hf_gpt2, load_pretrained, save_hf_gpt2
from keraslm.data import BytePairTokenizer, CharTokenizer
from keraslm.models import TransformerLM

ATOL = 1e-4

CONFIGS = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=16, n_positions=32),
    "odd_heads_odd_context": dict(n_layer=3, n_head=5, n_embd=40, n_positions=37),
    # weights of std 0.3 (GPT-2 initialises with 0.02): activations large enough that the two GELUs differ
    "n_inner_pytorch_tanh": dict(n_layer=2, n_head=3, n_embd=24, n_positions=48, n_inner=72,
                                 activation_function="gelu_pytorch_tanh", initializer_range=0.3),
    "exact_gelu_untied_head": dict(n_layer=2, n_head=4, n_embd=32, n_positions=20, activation_function="gelu",
                                   tie_word_embeddings=False, initializer_range=0.3),
}


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """(folder of GPT-2 tokenizer files, number of tokens)."""
    folder = tmp_path_factory.mktemp("bpe")
    return folder, write_bpe_files(folder)


@pytest.fixture(scope="module")
def with_tokenizer(tmp_path_factory, bpe):
    """An HF checkpoint whose directory also holds the tokenizer files: (dir, hf model, keraslm model)."""
    folder, V = bpe
    hf = hf_model(seed=1, vocab_size=V, n_layer=2, n_head=2, n_embd=32, n_positions=96, initializer_range=0.2)
    path = tmp_path_factory.mktemp("hf_tok") / "gpt2"
    hf.save_pretrained(path)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(folder / name, path / name)
    return path, hf, load_pretrained(path)


def _random_ids(V, B, T, seed=0):
    return np.random.default_rng(seed).integers(0, V, (B, T))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_equal_transformers(name, tmp_path):
    hf = hf_model(vocab_size=301, **CONFIGS[name])
    hf.save_pretrained(tmp_path)
    model = load_hf_gpt2(tmp_path, tokenizer=False)
    ids = _random_ids(301, 2, hf.config.n_positions)  # the whole context: every position embedding is used
    ref = hf_logits(hf, ids)
    for impl in IMPLS:
        np.testing.assert_allclose(keraslm_logits(model, ids, impl), ref, atol=ATOL, rtol=0, err_msg=impl)
    assert model.tie_embeddings == hf.config.tie_word_embeddings
    assert model.activation == ("gelu" if hf.config.activation_function == "gelu" else "gelu_tanh")


def test_gpt2_124m_shape(tmp_path):
    """The real GPT-2 small shape (12 layers, 12 heads, 768 wide, 1024 positions, 50257 tokens), one short sequence."""
    hf = hf_model(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path, tokenizer=False)
    assert model.count_params() == sum(p.numel() for p in hf.parameters()) == 124_439_808
    ids = _random_ids(50257, 1, 12)
    ref = hf_logits(hf, ids)
    for impl in IMPLS:
        np.testing.assert_allclose(keraslm_logits(model, ids, impl), ref, atol=ATOL, rtol=0, err_msg=impl)


def test_tokenizer_is_attached_and_gives_transformers_ids(with_tokenizer):
    path, hf, model = with_tokenizer
    assert isinstance(model.tokenizer, BytePairTokenizer)
    fast = transformers.GPT2TokenizerFast(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"))
    ids = model.tokenizer.tokenize(SAMPLE).numpy().tolist()
    assert ids == fast(SAMPLE)["input_ids"] and len(ids) > 10
    assert model.tokenizer.detokenize(ids).numpy().decode() == SAMPLE
    np.testing.assert_allclose(keraslm_logits(model, [ids], IMPLS[-1]), hf_logits(hf, [ids]), atol=ATOL, rtol=0)


def test_greedy_generation_equals_transformers_generate(with_tokenizer):
    """50 greedy tokens with keraslm's KV cache (the fused decoder-step op where built) = transformers' generate."""
    _, hf, model = with_tokenizer
    prompts = _random_ids(model.vocab_size, 2, 9, seed=3)
    hf.generation_config.eos_token_id = None  # never stop early: keraslm runs the full 50 tokens
    with torch.no_grad():
        ref = hf.generate(torch.as_tensor(prompts), attention_mask=torch.ones(prompts.shape, dtype=torch.long),
                          do_sample=False, max_new_tokens=50, pad_token_id=0)[:, prompts.shape[1]:].numpy()
    ours = model.generate([list(p) for p in prompts], max_new_tokens=50, temperature=0)
    assert np.asarray(ours).tolist() == ref.tolist()
    assert all(len(set(row)) > 5 for row in ref.tolist())  # not a degenerate repetition


def test_checkpoint_variants(tmp_path):
    """Old Hub layout (no ``transformer.`` prefix, causal-mask buffers), shards, pytorch_model.bin, bfloat16."""
    from safetensors.numpy import save_file

    hf = hf_model(vocab_size=97, n_layer=2, n_head=2, n_embd=16, n_positions=24)
    ids = _random_ids(97, 2, 24)
    ref = hf_logits(hf, ids)
    state = {k: v.numpy() for k, v in hf.state_dict().items()}

    old = tmp_path / "old"
    hf.save_pretrained(old)
    os.remove(old / "model.safetensors")
    old_state = {k.removeprefix("transformer."): v for k, v in state.items() if k != "lm_head.weight"}
    for i in range(2):
        old_state[f"h.{i}.attn.bias"] = np.tril(np.ones((24, 24), np.float32))[None, None]
        old_state[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(old_state, str(old / "model.safetensors"), metadata={"format": "pt"})

    sharded = tmp_path / "sharded"
    hf.save_pretrained(sharded, max_shard_size="10KB")
    assert (sharded / "model.safetensors.index.json").exists() and not (sharded / "model.safetensors").exists()

    binary = tmp_path / "bin"
    hf.save_pretrained(binary)
    os.remove(binary / "model.safetensors")
    torch.save(hf.state_dict(), binary / "pytorch_model.bin")  # with the tied lm_head.weight duplicate

    for path in (old, sharded, binary):
        assert detect_format(path) == "hf-gpt2"
        model = load_pretrained(path, tokenizer=False)
        np.testing.assert_allclose(keraslm_logits(model, ids, "reference"), ref, atol=ATOL, rtol=0, err_msg=path)

    half = tmp_path / "bf16"
    hf_model(vocab_size=97, n_layer=2, n_head=2, n_embd=16, n_positions=24).to(torch.bfloat16).save_pretrained(half)
    rounded = hf_model(vocab_size=97, n_layer=2, n_head=2, n_embd=16, n_positions=24).to(torch.bfloat16).float()
    model = load_pretrained(half, tokenizer=False)
    np.testing.assert_allclose(keraslm_logits(model, ids, "reference"), hf_logits(rounded, ids), atol=ATOL, rtol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_export_round_trip(tmp_path, bpe, tied):
    """HF -> keraslm -> save_hf_gpt2 -> GPT2LMHeadModel.from_pretrained: same logits, same tokenizer ids."""
    folder, V = bpe
    hf = hf_model(seed=2, vocab_size=V, n_layer=2, n_head=4, n_embd=32, n_positions=40, n_inner=64,
                  activation_function="gelu" if tied else "gelu_new", tie_word_embeddings=tied)
    src = tmp_path / "src"
    hf.save_pretrained(src)
    model = load_hf_gpt2(src, tokenizer=folder)
    out = save_hf_gpt2(model, tmp_path / "out")
    names = sorted(os.listdir(out))
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json",
            "generation_config.json"} <= set(names)
    assert not any(n.startswith(".tmp-") for n in os.listdir(tmp_path))
    from safetensors import safe_open

    with safe_open(os.path.join(out, "model.safetensors"), "numpy") as f:
        assert ("lm_head.weight" in f.keys()) == (not tied)
        assert len(list(f.keys())) == 4 + 12 * 2 + (not tied)

    back = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert back.config.n_inner == 64 and back.config.activation_function == hf.config.activation_function
    ids = _random_ids(V, 2, 40)
    np.testing.assert_allclose(hf_logits(back, ids), hf_logits(hf, ids), atol=1e-6, rtol=0)

    original = transformers.GPT2TokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    expected = original(SAMPLE)["input_ids"]
    assert transformers.GPT2TokenizerFast.from_pretrained(out)(SAMPLE)["input_ids"] == expected
    assert transformers.GPT2Tokenizer.from_pretrained(out)(SAMPLE)["input_ids"] == expected
    assert model.tokenizer.tokenize(SAMPLE).numpy().tolist() == expected
    assert back.config.eos_token_id == V - 1 == original.convert_tokens_to_ids(EOT)

    with pytest.raises(FileExistsError) as e:
        save_hf_gpt2(model, out)
    assert "exists" in one_line(e)


def test_export_refuses_what_gpt2_cannot_express(tmp_path):
    base = dict(vocab_size=50, max_length=16, num_layers=1, num_heads=2, width=8)
    cases = [(dict(position_embedding="sinusoidal"), "position_embedding='sinusoidal'"),
             (dict(num_kv_heads=1), "num_kv_heads=1"),
             (dict(use_bias=False), "use_bias=False")]
    for extra, flag in cases:
        with pytest.raises(ValueError) as e:
            save_hf_gpt2(TransformerLM(**base, **extra), tmp_path / "x", tokenizer=False)
        assert flag in one_line(e)
    char = TransformerLM(**base, tokenizer=CharTokenizer(vocabulary=list("abc")))
    with pytest.raises(ValueError) as e:
        save_hf_gpt2(char, tmp_path / "x")
    assert "CharTokenizer" in one_line(e) and "tokenizer=False" in str(e.value)
    assert not os.path.exists(tmp_path / "x")


def _config_only(path, **overrides):
    config = hf_model(vocab_size=50, n_layer=1, n_head=2, n_embd=16, n_positions=8).config.to_dict()
    config.update(overrides)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


@pytest.mark.parametrize("flag, value", [("scale_attn_by_inverse_layer_idx", True), ("scale_attn_weights", False),
                                         ("activation_function", "relu"), ("n_inner", 24),
                                         ("add_cross_attention", True), ("model_type", "llama")])
def test_unsupported_config_flags_are_refused(tmp_path, flag, value):
    path = _config_only(tmp_path, **{flag: value})
    with pytest.raises(ValueError) as e:
        load_hf_gpt2(path)
    message = one_line(e)
    assert flag in message and "config.json" in message


def test_reorder_and_upcast_attn_is_the_same_float32_model(tmp_path):
    hf = hf_model(vocab_size=60, n_layer=2, n_head=2, n_embd=16, n_positions=12, reorder_and_upcast_attn=True)
    hf.config._attn_implementation = "eager"
    hf.save_pretrained(tmp_path)
    ids = _random_ids(60, 1, 12)
    model = load_hf_gpt2(tmp_path, tokenizer=False)
    np.testing.assert_allclose(keraslm_logits(model, ids, "reference"), hf_logits(hf, ids), atol=ATOL, rtol=0)


def test_missing_files_are_named(tmp_path, monkeypatch, bpe):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        detect_format(empty)
    assert "config.json" in one_line(e) and "ckpt.pt" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        load_hf_gpt2(empty)
    assert "has no config.json" in one_line(e)

    path = _config_only(tmp_path / "config_only")
    for call in (detect_format, load_hf_gpt2):
        with pytest.raises(FileNotFoundError) as e:
            call(path)
        assert "has config.json but neither model.safetensors nor pytorch_model.bin" in one_line(e)

    hf = hf_model(vocab_size=50, n_layer=1, n_head=2, n_embd=16, n_positions=8)
    hf.save_pretrained(tmp_path / "no_tok")
    with pytest.raises(FileNotFoundError) as e:
        load_pretrained(tmp_path / "no_tok")
    assert "vocab.json and merges.txt" in one_line(e) and "tokenizer=False" in str(e.value)

    binary = tmp_path / "bin"
    hf.save_pretrained(binary)
    os.remove(binary / "model.safetensors")
    torch.save(hf.state_dict(), binary / "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ImportError) as e:
        load_hf_gpt2(binary, tokenizer=False)
    assert "pytorch_model.bin needs torch (pip install torch), or convert to model.safetensors" in one_line(e)


def test_unknown_missing_and_misshapen_weights_are_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf = hf_model(vocab_size=50, n_layer=2, n_head=2, n_embd=16, n_positions=8)
    hf.save_pretrained(tmp_path / "ok")
    state = load_file(str(tmp_path / "ok" / "model.safetensors"))
    cases = {
        "extra": ({**state, "transformer.h.1.attn.rotary.inv_freq": np.ones(4, np.float32)},
                  ValueError, "no place for: transformer.h.1.attn.rotary.inv_freq"),
        "missing": ({k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.bias"},
                    ValueError, "lacks weights: transformer.h.1.mlp.c_fc.bias"),
        "shape": ({**state, "transformer.wpe.weight": np.zeros((9, 16), np.float32)},
                  ValueError, "transformer.wpe.weight (9, 16) does not fit keraslm's wpe of shape (8, 16)"),
        "untied_head": ({**state, "lm_head.weight": np.zeros((50, 16), np.float32)},
                        ValueError, "lm_head.weight differs from transformer.wte.weight"),
    }
    for name, (tensors, error, expected) in cases.items():
        path = tmp_path / name
        shutil.copytree(tmp_path / "ok", path)
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        with pytest.raises(error) as e:
            load_hf_gpt2(path, tokenizer=False)
        assert expected in one_line(e), name
