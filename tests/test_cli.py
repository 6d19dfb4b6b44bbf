"""The command line explains itself: fast help without TensorFlow, every flag documented with its real
default, presets and version, quiet output, and one-line errors with exit status 2."""

import os
import subprocess
import sys

import numpy as np
import pytest

from keraslm.cli import build_parser


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-P", "-m", "keraslm", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def test_help_needs_no_tensorflow():
    code = ("import sys; from keraslm.cli import build_parser; build_parser().format_help(); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    r = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "False"]


def test_every_flag_has_help_and_its_real_default():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    for name, sub in subcommands.items():
        for action in sub._actions:
            if action.dest in ("help",):
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            assert "dataclasses" not in action.help and "object at 0x" not in action.help, action.help
    train = subcommands["train"].format_help()
    assert "peak learning rate (default: the preset's, else 0.001)" in " ".join(train.split())
    assert "(default: the preset's, else {})" in " ".join(train.split())                 # --model-args
    args = parser.parse_args(["train", "--data", "x.txt", "--overwrite", "--deterministic", "false"])
    assert args.overwrite is True and args.deterministic is False


def test_version_and_presets():
    from keraslm import __version__
    from keraslm.presets import PRESETS

    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"keraslm {__version__}"
    r = _cli("presets")
    assert r.returncode == 0, r.stderr
    for name in PRESETS:
        assert name in r.stdout
    assert "0.82M parameters" in r.stdout and "124.44M parameters" in r.stdout


def test_model_defaults_to_the_shipped_model():
    from keraslm.checkpoint import DEFAULT_MODEL, default_model_path
    from keraslm.cli import DEFAULT_MODEL_HELP

    assert f"the shipped {DEFAULT_MODEL} model" in DEFAULT_MODEL_HELP
    assert os.path.isfile(default_model_path()) and DEFAULT_MODEL in default_model_path()
    parser = build_parser()
    for command in (["generate"], ["evaluate", "--data", "x.txt"], ["export", "--out", "exports"]):
        assert parser.parse_args(command).model is None, command   # resolved to default_model_path()


def test_generate_prints_text_only(tmp_path):
    r = _cli("generate", "--prompt", "ROMEO:", "--max-new-tokens", "12", "--seed", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ROMEO:") and r.stderr == ""
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("JULIET:\n")
    r = _cli("generate", "--prompt-file", str(prompt_file), "--num-samples", "2", "--max-new-tokens", "8",
             "--seed", "1", "--temperature", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    samples = r.stdout.split("\n" + "-" * 40 + "\n")
    assert len(samples) == 2 and samples[0] == samples[1] and samples[0].startswith("JULIET:\n")


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    from keraslm.data import CharTokenizer
    from keraslm.models import TransformerLM

    tok = CharTokenizer()
    tok.adapt(["hello world"])
    model = TransformerLM(vocab_size=tok.vocab_size, max_length=16, num_layers=1, num_heads=2, width=8, tokenizer=tok)
    model.build_for_inference()
    model.wte.embeddings.assign(np.full(model.wte.embeddings.shape, np.nan, np.float32))
    path = str(tmp_path_factory.mktemp("nan") / "nan.keras")
    model.save(path)
    return path


def test_user_errors_are_one_line(tmp_path, nan_model):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world " * 200)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        (["train", "--data", str(corpus), "--out", str(blocker / "run"), "--steps", "1"], str(blocker)),
        (["train", "--data", str(corpus), "--batch-size", "0", "--out", str(tmp_path / "o")],
         "batch_size must be a positive integer, got 0"),
        (["generate", "--model", str(corrupt), "--prompt", "a"], "corrupt.keras"),
        (["generate", "--top-p", "1.5", "--prompt", "a"], "top_p must be in (0, 1]"),
        (["generate", "--num-samples", "0"], "num_samples must be a positive integer, got 0"),
        (["generate", "--model", nan_model, "--prompt", "hel", "--max-new-tokens", "3"], "logits must not contain NaN"),
        (["generate", "--prompt-file", str(tmp_path / "none.txt")], "none.txt"),
    ]
    for args, words in cases:
        r = _cli(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (args, r.stderr[-2000:])
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, (args, r.stderr[-2000:])
    assert not os.path.exists(tmp_path / "o")
