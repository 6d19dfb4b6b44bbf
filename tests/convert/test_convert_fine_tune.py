"""A pretrained GPT-2 through the whole product: load_model and every CLI --model take its directory,
train(init=...) fine-tunes it with the one harness (loss falls, a resumed fine-tune equals an
uninterrupted one), and export-hf writes it back for transformers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keraslm
from convert_helpers import CORPUS, hf_logits, hf_model, write_bpe_files


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    vocab = write_bpe_files(str(folder), vocab_size=300)
    hf_model(seed=3, vocab_size=vocab, n_positions=48, n_embd=32, n_layer=2, n_head=2).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "mine.txt"
    path.write_text(CORPUS * 4)
    return str(path)


def _fine_tune(gpt2_dir, text_file, out, steps, **overrides):
    settings = dict(init=gpt2_dir, data=[text_file], steps=steps, batch_size=4, block_size=32, checkpoint_every=4,
                    eval_steps=2, warmup_steps=2, learning_rate=1e-2, out=str(out), verbose=0, deterministic=True,
                    steps_per_execution=1, seed=7, decay_steps=24)
    settings.update(overrides)
    return keraslm.train(**settings)


def test_load_model_takes_a_hugging_face_directory(gpt2_dir):
    model = keraslm.load_model(gpt2_dir)
    assert type(model).__name__ == "TransformerLM" and model.max_length == 48
    assert isinstance(model.generate("It was the", max_new_tokens=5, seed=1), str)


def test_fine_tuning_lowers_the_loss_and_resumes_exactly(gpt2_dir, text_file, tmp_path):
    before = keraslm.evaluate(gpt2_dir, [text_file], block_size=32)["loss"]
    result = _fine_tune(gpt2_dir, text_file, tmp_path / "ft", steps=24)
    after = keraslm.evaluate(str(tmp_path / "ft"), [text_file], block_size=32)["loss"]
    assert after < before - 0.3, (before, after)
    tuned = result["model"]
    assert tuned.tokenizer.vocabulary == keraslm.load_model(gpt2_dir).tokenizer.vocabulary
    # the same fine-tune (one 24-step schedule) in two calls, 16 steps then 24, ends with the same weights
    _fine_tune(gpt2_dir, text_file, tmp_path / "split", steps=16)
    resumed = _fine_tune(gpt2_dir, text_file, tmp_path / "split", steps=24)["model"]
    for a, b in zip(tuned.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="block_size=64 is longer than the context"):
        _fine_tune(gpt2_dir, text_file, tmp_path / "long", steps=2, block_size=64)


def _cli(*args):
    return subprocess.run([sys.executable, "-P", "-m", "keraslm", *args], capture_output=True, text=True, timeout=600)


def test_cli_takes_foreign_models_and_writes_them_back(gpt2_dir, text_file, tmp_path):
    import transformers

    r = _cli("generate", "--model", gpt2_dir, "--prompt", "It was", "--max-new-tokens", "6", "--seed", "2")
    assert r.returncode == 0 and r.stdout.startswith("It was"), r.stderr[-2000:]
    assert r.stderr == ""                                     # no log lines around the text
    r = _cli("evaluate", "--model", gpt2_dir, "--data", text_file, "--block-size", "32")
    assert r.returncode == 0 and json.loads(r.stdout)["perplexity"] > 1, r.stderr[-2000:]
    r = _cli("export-hf", gpt2_dir, str(tmp_path / "back"))
    assert r.returncode == 0, r.stderr[-2000:]
    ids = np.random.default_rng(0).integers(0, 300, (1, 20))
    want = hf_logits(transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval(), ids)
    got = hf_logits(transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "back")).eval(), ids)
    np.testing.assert_allclose(got, want, atol=1e-5)
    r = _cli("export", "--model", gpt2_dir, "--out", str(tmp_path / "serving"))
    assert r.returncode == 0 and os.path.isdir(r.stdout.strip()), r.stderr[-2000:]
    r = _cli("generate", "--model", str(tmp_path / "nothing-here"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nothing-here" in r.stderr
