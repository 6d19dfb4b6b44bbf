"""No silent failure in a run: bad settings, divergence, corrupt or missing checkpoints, debris, provenance."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keraslm
from keraslm import atomic
from keraslm.checkpoint import CheckpointError, load_checkpoint
from keraslm.data import CharTokenizer
from keraslm.models import TransformerLM

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 30


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def _model():
    tok = CharTokenizer()
    tok.adapt([TEXT])
    keras.utils.set_random_seed(0)
    return TransformerLM(vocab_size=tok.vocab_size, max_length=16, num_layers=1, num_heads=2, width=8, tokenizer=tok)


def _train(corpus, out, **overrides):
    settings = dict(preset="gpt-nano", data=[corpus], steps=6, batch_size=4, block_size=16, checkpoint_every=2,
                    eval_steps=1, warmup_steps=1, out=str(out), verbose=0, steps_per_execution=1,
                    model_args={"num_layers": 1, "num_heads": 2, "width": 8, "max_length": 16})
    settings.update(overrides)
    return keraslm.train(**settings)


def _strict_json(path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)


@pytest.mark.parametrize("name, value, words", [
    ("learning_rate", float("nan"), "learning_rate must be a finite number > 0, got nan"),
    ("learning_rate", -1.0, "learning_rate must be a finite number > 0, got -1.0"),
    ("beta2", 1.0, r"beta2 must be in \[0, 1\), got 1.0"),
    ("grad_clip", float("inf"), "grad_clip must be a finite number >= 0, got inf"),
    ("dropout", 1.5, r"dropout must be in \[0, 1\), got 1.5"),
    ("warmup_steps", -3, "warmup_steps must be a non-negative integer, got -3"),
    ("steps", 0, "steps must be a positive integer, got 0"),
    ("validation_fraction", 1.0, r"validation_fraction must be in \[0, 1\), got 1.0"),
    ("windows", "diagonal", "windows must be 'random', 'sequential' or 'stateful', got 'diagonal'"),
])
def test_bad_settings_fail_before_any_work(name, value, words, corpus, tmp_path):
    with pytest.raises(ValueError, match=words):
        _train(corpus, tmp_path / "run", **{name: value})
    assert not os.path.exists(tmp_path / "run")


class _PoisonAt(keras.callbacks.Callback):
    """Makes the run diverge for real: one weight becomes NaN after step ``at``."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.at:
            w = self.model.trainable_weights[0]
            w.assign(np.full(w.shape, np.nan, np.float32))


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(keraslm.training.TrainingDiverged, match=r"loss became nan at step 6"):
        _train(corpus, out, steps=10, model=_model(), callbacks=[_PoisonAt(5)])
    assert not (out / "model.keras").exists() and not (out / "metrics.json").exists()
    model, state = load_checkpoint(str(out / "checkpoints"))
    assert state["step"] == 4 and int(model.optimizer.iterations.numpy()) == 4
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert _strict_json(out / "checkpoints" / "previous_state.json")["step"] == 2


def test_records_are_strict_json(corpus, tmp_path):
    result = _train(corpus, tmp_path / "run", validation_fraction=0.0)
    metrics = _strict_json(tmp_path / "run" / "metrics.json")
    assert metrics["steps"] == 6 and "val_loss" not in metrics and result["steps"] == 6
    _strict_json(tmp_path / "run" / "config.json")
    _strict_json(tmp_path / "run" / "checkpoints" / "state.json")
    assert atomic.json_safe({"a": [float("nan"), 1.0, {"b": float("-inf")}]}) == {"a": [None, 1.0, {"b": None}]}


def test_corrupt_or_missing_checkpoints_fall_back_or_fail_naming_the_file(corpus, tmp_path, caplog):
    out = tmp_path / "run"
    _train(corpus, out, steps=4)
    ckpt = out / "checkpoints"
    data = bytearray((ckpt / "last.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF                                              # one flipped bit... byte
    (ckpt / "last.keras").write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="keraslm"):
        model, state = load_checkpoint(str(ckpt))
    assert state["step"] == 2 and "last.keras does not match the checksum" in caplog.text
    result = _train(corpus, out, steps=6)                                     # resumes from step 2, ends at 6
    assert result["steps"] == 6 and int(result["model"].optimizer.iterations.numpy()) == 6

    os.unlink(ckpt / "state.json")                                            # a last checkpoint without state
    assert load_checkpoint(str(ckpt))[1]["step"] == 4
    os.unlink(ckpt / "previous_state.json")
    with pytest.raises(CheckpointError, match="state.json is missing"):
        load_checkpoint(str(ckpt))
    with pytest.raises(CheckpointError, match="cannot resume from .*checkpoints"):
        _train(corpus, out, steps=8)                                          # never starts over silently
    assert _train(corpus, out, steps=2, overwrite=True)["steps"] == 2


def test_unloadable_checkpoint_falls_back_to_the_previous(corpus, tmp_path):
    out = tmp_path / "run"
    _train(corpus, out, steps=4)
    ckpt = out / "checkpoints"
    (ckpt / "last.keras").write_bytes(b"not a zip file")
    state = json.loads((ckpt / "state.json").read_text())
    state.pop("sha256")                                                       # as written by an older keraslm
    (ckpt / "state.json").write_text(json.dumps(state))
    model, state = load_checkpoint(str(ckpt))
    assert state["step"] == 2
    (ckpt / "previous.keras").write_bytes(b"also broken")
    with pytest.raises(CheckpointError, match=r"last.keras cannot be loaded .*previous.keras does not match"):
        load_checkpoint(str(ckpt))


def test_resume_only_with_the_same_settings(corpus, tmp_path):
    out = tmp_path / "run"
    _train(corpus, out, steps=4)
    with pytest.raises(ValueError, match=r"other settings: learning_rate=0.01 \(the run has 0.001\)"):
        _train(corpus, out, steps=6, learning_rate=0.01)
    with pytest.raises(ValueError, match="already trained for 4 steps, more than steps=2"):
        _train(corpus, out, steps=2)
    with pytest.raises(ValueError, match="pass resume=True"):
        _train(corpus, out, steps=6, resume=False)
    _train(corpus, out, steps=6)                                              # more steps: resumes
    config = _strict_json(out / "config.json")
    assert config["steps"] == 6 and config["decay_steps"] == 4                # the schedule applied: 4 steps
    assert config["learning_rate"] == 0.001
    fresh = _train(corpus, out, steps=3, learning_rate=0.01, overwrite=True)
    assert fresh["steps"] == 3 and _strict_json(out / "config.json")["learning_rate"] == 0.01
    assert int(load_checkpoint(str(out / "checkpoints"))[0].optimizer.iterations.numpy()) == 3


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = atomic._HOST
    names = {f".tmp-{host}-{dead}-abc.keras": "file", f".tmp-{host}-{dead}-export-3-x": "dir",
             f".tmp-{host}-{os.getpid()}-mine.keras": "file", f".tmp-otherhost-{dead}-x.keras": "file",
             ".tmp-export-9-abc": "dir", "notes.txt": "file"}
    for name, kind in names.items():
        (tmp_path / name).mkdir() if kind == "dir" else (tmp_path / name).write_text("x")
    removed = atomic.remove_stale_temporaries(str(tmp_path))
    assert sorted(removed) == sorted([f".tmp-{host}-{dead}-abc.keras", f".tmp-{host}-{dead}-export-3-x"])
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in names if n not in removed)


def test_cli_reports_divergence_and_bad_settings_in_one_line(corpus, tmp_path):
    r = subprocess.run([sys.executable, "-P", "-m", "keraslm", "train", "--data", corpus, "--learning-rate", "nan",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("keraslm train: error: learning_rate must be a finite number > 0, "
                                                 "got nan")
    assert "Traceback" not in r.stderr


def test_resume_with_dropout_is_bit_identical(corpus, tmp_path):
    """Keras saves no seed-generator state; the checkpoint does, so dropout masks continue where they were."""
    settings = dict(dropout=0.3, deterministic=True, decay_steps=6)
    straight = _train(corpus, tmp_path / "straight", steps=6, **settings)["model"]
    _train(corpus, tmp_path / "split", steps=4, **settings)
    resumed = _train(corpus, tmp_path / "split", steps=6, **settings)["model"]
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_multi_step_calls_never_train_extra_steps(corpus, tmp_path):
    """Keras runs whole executions of steps_per_execution steps: the harness picks one that divides every
    fit call, so 14 steps are 14 steps (10 per execution would have run 20)."""
    result = _train(corpus, tmp_path / "run", steps=14, checkpoint_every=7, jit_compile="on",
                    steps_per_execution=0)
    assert int(result["model"].optimizer.iterations.numpy()) == 14 and result["model"].steps_per_execution == 7
    with pytest.raises(ValueError, match="steps_per_execution=4 must divide the steps of every fit call"):
        _train(corpus, tmp_path / "bad", steps=14, checkpoint_every=7, steps_per_execution=4)
