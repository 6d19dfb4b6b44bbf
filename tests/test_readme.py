"""The README's shell and Python blocks run as written, in order, from one working directory.

Training commands run with ``KERASLM_MAX_STEPS`` (a documented cap on ``steps``) so that the suite stays
short; nothing in the text users read is changed. The files a user would bring (a Hugging Face GPT-2
directory, a keras-hub preset, a nanoGPT checkpoint, their own text) are made here with random weights
by the real libraries. A block is skipped only when the README marks it with
``<!-- readme-test: skip (reason) -->``: it installs keraslm (CI does that), needs a docker daemon, a
GPU, a network, or is the test suite itself. Penn Treebank-format files are written here with random words.
"""

import importlib.util
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TEXT = README.read_text() if README.exists() else ""
BLOCK = re.compile(r"(?:<!-- readme-test: skip \((?P<skip>[^)]*)\) -->\n)?```(?P<lang>bash|python|py)\n(?P<code>.*?)```",
                   re.S)
BLOCKS = [(TEXT[:m.start()].count("\n") + 1, m["lang"], m["code"], m["skip"]) for m in BLOCK.finditer(TEXT)]
ALLOWED_SKIPS = ("installs keraslm", "docker", "GPU", "network", "test suite itself", "runs this build")
STEPS = "12"


def _helpers():
    spec = importlib.util.spec_from_file_location("readme_convert_helpers",
                                                  REPO / "tests" / "convert" / "convert_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The directory the blocks run in, with the files the README's examples name."""
    root = tmp_path_factory.mktemp("readme")
    h = _helpers()
    (root / "my_text.txt").write_text(h.CORPUS * 3)
    (root / "heldout.txt").write_text(h.CORPUS)
    (root / "input.txt").write_text(h.CORPUS * 3)
    (root / "benchmarks").symlink_to(REPO / "benchmarks")   # commands run as from the clone's root
    rng = random.Random(0)                # Penn Treebank's format: tokenized, <unk>, a sentence per line
    words = [f"w{i}" for i in range(150)] + ["<unk>"] * 8
    for name, lines in (("train", 600), ("valid", 60), ("test", 60)):
        (root / f"ptb.{name}.txt").write_text("".join(" " + " ".join(rng.choices(words, k=rng.randint(4, 14))) +
                                                      " \n" for _ in range(lines)))
    gpt2 = root / "path" / "to" / "gpt2"
    vocab = h.write_bpe_files(str(gpt2), vocab_size=300)
    h.hf_model(seed=1, vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2).save_pretrained(str(gpt2))
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=vocab, num_layers=2, num_heads=2, hidden_dim=32,
                                             intermediate_dim=128, max_sequence_length=64)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=str(gpt2 / "vocab.json"), merges=str(gpt2 / "merges.txt"))
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=16)
    keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor).save_to_preset(
        str(root / "path" / "to" / "preset"))
    (root / "out").mkdir()                # nanoGPT's GPT-2 run: vocabulary padded to 50304, GPT-2's files beside
    h.write_bpe_files(str(root / "out"), vocab_size=300, pad_to=50257)
    h.save_nanogpt(str(root / "out" / "ckpt.pt"), h.hf_model(seed=2, vocab_size=50304, n_positions=64, n_embd=16,
                                                             n_layer=1, n_head=2, activation_function="gelu"))
    return root


def test_blocks_are_found_and_skips_are_justified():
    assert len(BLOCKS) >= 10
    for line, _, _, skip in BLOCKS:
        assert skip is None or any(word in skip for word in ALLOWED_SKIPS), (line, skip)


@pytest.mark.skipif(not README.exists(), reason="needs the source tree's README.md")
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"line-{b[0]}" for b in BLOCKS])
def test_readme_block_runs(index, workspace, monkeypatch):
    line, lang, code, skip = BLOCKS[index]
    if skip:
        pytest.skip(f"README line {line}: {skip}")
    env = dict(os.environ, KERASLM_MAX_STEPS=STEPS)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")   # the keraslm command
    if lang == "bash":
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=workspace, env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, f"README line {line}:\n{code}\n--- stdout\n{r.stdout[-2000:]}\n--- stderr\n" \
                                  f"{r.stderr[-3000:]}"
        return
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("KERASLM_MAX_STEPS", STEPS)
    exec(compile(code, f"README.md line {line}", "exec"), {"__name__": "__readme__"})


def test_readme_opens_with_the_two_commands():
    first = re.search(r"```bash\n(.*?)```", TEXT, re.S).group(1)
    commands = [line for line in first.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci, "the README's test command must be exactly what .ci/run runs"
