"""A run's logs and pictures: training.csv rows and TensorBoard scalars by optimizer step (also with several
steps per execution and across a resume), loss.png, `keraslm plot`, only the chief writes; and the weight
average that no longer hurts a short run."""

import json
import math
import os
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm import run_log
from keraslm.curves import COLUMNS, read_curves
from keraslm.optimizers import WarmAverage, WarmupCosine

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 30

SETTINGS = dict(preset="gpt-nano", steps=12, batch_size=4, block_size=16, checkpoint_every=6, eval_steps=1,
                warmup_steps=2, verbose=0, jit_compile="off", matmul_precision="float32", deterministic=True,
                model_args={"num_layers": 1, "num_heads": 2, "width": 8, "max_length": 16})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def _train(corpus, out, **overrides):
    return keraslm.train(**{**SETTINGS, "data": [corpus], "out": str(out), **overrides})


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """The same 12 steps logged every step (one step per execution) and every 4 steps (3 per execution)."""
    root = tmp_path_factory.mktemp("runs")
    _train(corpus, root / "every-step", steps_per_execution=1)      # log_every 0: max(1, 12 // 100) = 1
    _train(corpus, root / "three-per-call", steps_per_execution=3, log_every=4)
    return root


def _csv(run):
    with open(os.path.join(run, "logs", "training.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    return [dict(zip(COLUMNS, line.split(","))) for line in lines[1:]]


def _scalars(directory):
    """{tag: [(step, value), ...]} of every event file in a TensorBoard run directory."""
    found = {}
    for name in sorted(os.listdir(directory)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for v in event.summary.value:
                found.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
    return found


def _is_png(path):
    with open(path, "rb") as f:
        head = f.read(24)
    width, height = struct.unpack(">II", head[16:24])
    return head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and width > 100 and height > 100


def test_rows_every_n_steps_keyed_by_the_optimizer_step(runs):
    rows = _csv(runs / "every-step")
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert [int(r["step"]) for r in rows if r["val_loss"]] == [6, 12]           # the evaluations
    schedule = WarmupCosine(1e-3, 1e-4, 2, 12)
    for r in rows:
        assert math.isclose(float(r["learning_rate"]), float(schedule(int(r["step"]) - 1)), rel_tol=1e-6)
        assert float(r["tokens_per_second"]) > 0 and math.isfinite(float(r["loss"]))
    # 3 steps per execution, a row every 4 steps: one row per execution past a multiple of 4, keyed by
    # the true step, holding the mean loss of the steps since the previous row.
    grouped = _csv(runs / "three-per-call")
    assert [int(r["step"]) for r in grouped] == [6, 9, 12]
    assert [int(r["step"]) for r in grouped if r["val_loss"]] == [6, 12]
    losses = [float(r["loss"]) for r in rows]
    for r, (a, b) in zip(grouped, [(0, 6), (6, 9), (9, 12)]):
        assert math.isclose(float(r["loss"]), np.mean(losses[a:b]), rel_tol=1e-4), (r, losses[a:b])
    assert math.isclose(float(grouped[-1]["val_loss"]), float(rows[-1]["val_loss"]), rel_tol=1e-4)
    assert run_log.default_log_every(2000) == 20 and run_log.default_log_every(40) == 1


def test_tensorboard_scalars_by_step(runs):
    rows = _csv(runs / "every-step")
    train = _scalars(runs / "every-step" / "logs" / "train")
    for tag in ("loss", "learning_rate", "tokens_per_second"):
        assert [s for s, _ in train[tag]] == list(range(1, 13)), tag
        np.testing.assert_allclose([v for _, v in train[tag]], [float(r[tag]) for r in rows], rtol=1e-6)
    validation = _scalars(runs / "every-step" / "logs" / "validation")
    assert validation["loss"] == [(int(r["step"]), pytest.approx(float(r["val_loss"]), rel=1e-6))
                                  for r in rows if r["val_loss"]]


def test_a_run_ends_with_its_picture(runs):
    for name in ("every-step", "three-per-call"):
        assert _is_png(runs / name / "loss.png")
    assert not [f for f in os.listdir(runs / "every-step") if f.startswith(".tmp")]


class _Crash(Exception):
    pass


class _CrashAt(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.at:
            raise _Crash(f"crash at step {self.at}")


def test_resume_appends_without_duplicate_steps(corpus, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(_Crash):                       # dies at step 9: the last checkpoint is step 6's
        _train(corpus, out, steps_per_execution=1, callbacks=[_CrashAt(9)])
    assert [int(r["step"]) for r in _csv(out)] == list(range(1, 9))
    with open(out / "logs" / "training.csv", "a") as f:
        f.write("9,2.5,0.0")                           # and a line torn by the crash
    _train(corpus, out, steps_per_execution=1)
    rows = _csv(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert [int(r["step"]) for r in rows if r["val_loss"]] == [6, 12]
    train = _scalars(out / "logs" / "train")
    assert sorted(s for s, _ in train["loss"]) == list(range(1, 13))              # each step once
    assert sorted(s for s, _ in _scalars(out / "logs" / "validation")["loss"]) == [6, 12]
    curves = read_curves(str(out))
    assert curves["step"] == list(range(1, 13)) and len(curves["val_loss"]) == 12


def test_keraslm_plot_overlays_runs_and_fails_in_one_line(runs, tmp_path):
    picture = tmp_path / "both.png"
    code = ("import sys; from keraslm.cli import main; code = main(sys.argv[1:]); "
            "print(code, 'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-P", "-c", code, "plot", str(runs / "every-step"),
                        str(runs / "three-per-call" / "logs" / "training.csv"), "--out", str(picture)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [str(picture), "0", "False"]                       # no TensorFlow needed
    assert _is_png(picture)
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-P", "-m", "keraslm", "plot", str(runs / "every-step"), str(empty)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"keraslm plot: error: no training log in {empty} (expected "
                                             f"{empty}/logs/training.csv)"]


def test_only_the_chief_writes_logs(corpus, tmp_path, monkeypatch):
    class Extended:
        should_checkpoint = False

    class Worker:
        extended = Extended()

    assert run_log.is_chief(tf.distribute.get_strategy()) and not run_log.is_chief(Worker())
    monkeypatch.setattr(run_log, "is_chief", lambda strategy: False)
    out = tmp_path / "worker"
    _train(corpus, out, steps=4, checkpoint_every=2)
    assert os.listdir(out / "logs") == [] and not (out / "loss.png").exists()
    assert json.load(open(out / "metrics.json"))["steps"] == 4


def test_weight_average_does_not_hurt_a_short_run(corpus, tmp_path, monkeypatch):
    """gpt-nano's average (0.99) over 40 steps. Keras' fixed momentum keeps two thirds of the first step's
    weights in it (0.99 ** 39) and loses to the plain model by far. keraslm's average follows the weights
    while the learning rate warms up (here: the whole run, as in the preset), so the final model is the
    plain one; with a short warm-up it averages about the last tenth of the steps after it."""
    def run(name, ema, warmup):
        result = _train(corpus, tmp_path / name, steps=40, checkpoint_every=40, warmup_steps=warmup, batch_size=8,
                        ema_momentum=ema)
        return result["val_loss"], result["model"].get_weights()

    plain, plain_weights = run("plain", 0.0, 100)
    averaged, averaged_weights = run("averaged", 0.99, 100)
    plain_after_warmup = run("plain-10", 0.0, 10)[0]
    averaged_after_warmup = run("averaged-10", 0.99, 10)[0]
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    monkeypatch.setattr(WarmAverage, "_update_model_variables_moving_average",
                        BaseOptimizer._update_model_variables_moving_average)
    keras_rule = run("keras-rule", 0.99, 100)[0]
    keras_rule_after_warmup = run("keras-rule-10", 0.99, 10)[0]
    assert averaged <= plain, (averaged, plain)
    for a, b in zip(averaged_weights, plain_weights):
        np.testing.assert_array_equal(a, b)
    assert keras_rule > plain + 0.2 and keras_rule_after_warmup > plain_after_warmup + 0.2
    # After a 10-step warm-up the average's lag costs 0.007 nats here (the tiny model still improves at
    # every step); Keras' rule costs 0.36.
    assert averaged_after_warmup < plain_after_warmup + 0.02, (averaged_after_warmup, plain_after_warmup)
