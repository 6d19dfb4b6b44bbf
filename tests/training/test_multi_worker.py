"""Multi-worker training on tf.distribute (MultiWorkerMirroredStrategy over loopback gRPC): two worker processes
train what one process trains with the same global batch, only the chief writes the run, and a cluster killed
mid-run (kill -9) resumes from the chief's last checkpoint to the same final weights as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import keraslm
from keraslm.precision import loopback_cluster

TEXT = "".join(np.random.default_rng(11).choice(list("abcdefghij klmnop\n"), size=20_000))
COMMON = ["--preset", "gpt-nano", "--batch-size", "8", "--block-size", "16", "--eval-steps", "1", "--log-every", "1",
          "--jit-compile", "off", "--steps-per-execution", "1", "--dropout", "0", "--warmup-steps", "2",
          "--model-args", json.dumps({"num_layers": 1, "num_heads": 2, "width": 16, "max_length": 16})]


def _launch(args, log_dir, tag):
    """Starts a 2-worker cluster running ``keraslm train args``; returns the two processes (chief first)."""
    procs = []
    for index, tf_config in enumerate(loopback_cluster(2)):
        env = dict(os.environ, TF_CONFIG=tf_config, KERASLM_COLLECTIVE_TIMEOUT="60")
        log = open(os.path.join(log_dir, f"{tag}-worker{index}.log"), "w")
        procs.append(subprocess.Popen([sys.executable, "-P", "-m", "keraslm", "train", *COMMON, *args, "--strategy",
                                       "multi_worker"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return procs


def _wait(procs, log_dir, tag, timeout=600):
    for i, p in enumerate(procs):
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        with open(os.path.join(log_dir, f"{tag}-worker{i}.log")) as f:
            assert rc == 0, f"worker {i} exited with {rc}:\n{f.read()[-3000:]}"


def _weights(path):
    return keraslm.load_model(str(path)).get_weights()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("mw") / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def _single(corpus, out, steps):
    r = subprocess.run([sys.executable, "-P", "-m", "keraslm", "train", *COMMON, "--data", corpus, "--out", str(out),
                        "--steps", str(steps), "--checkpoint-every", "4", "--verbose", "0"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _csv_losses(run):
    with open(os.path.join(run, "logs", "training.csv")) as f:
        header, *rows = [line.strip().split(",") for line in f if line.strip()]
    return {int(r[header.index("step")]): float(r[header.index("loss")]) for r in rows}


def test_two_workers_train_what_one_process_trains(corpus, tmp_path):
    _single(corpus, tmp_path / "one", steps=8)
    procs = _launch(["--data", corpus, "--out", str(tmp_path / "two"), "--steps", "8", "--checkpoint-every", "4",
                     "--verbose", "0"], tmp_path, "two")
    _wait(procs, tmp_path, "two")
    for a, b in zip(_weights(tmp_path / "one"), _weights(tmp_path / "two")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    one, two = _csv_losses(tmp_path / "one"), _csv_losses(tmp_path / "two")
    assert sorted(two) == list(range(1, 9))                       # one row per step: only the chief logs
    np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-4)
    names = sorted(os.listdir(tmp_path / "two"))
    assert names == ["checkpoints", "config.json", "logs", "loss.png", "metrics.json", "model.keras"], names
    assert not [n for n in os.listdir(tmp_path / "two" / "checkpoints") if n.startswith(".")]


def test_a_killed_cluster_resumes_to_the_same_weights(corpus, tmp_path):
    steps = ["--steps", "120", "--checkpoint-every", "8", "--batch-size", "16", "--verbose", "0"]
    straight = _launch(["--data", corpus, "--out", str(tmp_path / "straight"), *steps], tmp_path, "straight")
    _wait(straight, tmp_path, "straight")
    out = tmp_path / "killed"
    procs = _launch(["--data", corpus, "--out", str(out), *steps], tmp_path, "killed")
    state = out / "checkpoints" / "state.json"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if json.loads(state.read_text())["step"] >= 16:
                break
        except (OSError, ValueError, KeyError):
            pass
        assert all(p.poll() is None for p in procs), "a worker ended before the kill"
        time.sleep(0.02)
    os.killpg(procs[1].pid, signal.SIGKILL)                        # a worker dies, then the cluster is stopped
    os.killpg(procs[0].pid, signal.SIGKILL)
    for p in procs:
        p.wait(60)
    assert not (out / "metrics.json").exists(), "the run finished before the kill: make it longer"
    restarted = _launch(["--data", corpus, "--out", str(out), *steps], tmp_path, "restarted")
    _wait(restarted, tmp_path, "restarted")
    with open(tmp_path / "restarted-worker0.log") as f:
        assert "resuming" in f.read()
    for a, b in zip(_weights(tmp_path / "straight"), _weights(out)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)     # (float rounding: see the README)
