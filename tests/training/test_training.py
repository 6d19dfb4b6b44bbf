"""The training harness: metrics, schedule, optimizer, checkpoints and resume, strategies, CLI."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.data import CharTokenizer
from keraslm.metrics import BitsPerToken, Perplexity
from keraslm.models import TransformerLM
from keraslm.optimizers import WarmupCosine, make_optimizer

CORPUS = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return str(path)


def tiny_model(tokenizer):
    keras.utils.set_random_seed(0)
    return TransformerLM(vocab_size=tokenizer.vocab_size, max_length=32, num_layers=1, num_heads=2, width=16,
                         tokenizer=tokenizer)


def char_tokenizer():
    tok = CharTokenizer()
    tok.adapt([CORPUS])
    return tok


def test_metrics_match_hand_computation(rng):
    logits = rng.standard_normal((3, 5, 7)).astype(np.float32)
    labels = rng.integers(0, 7, (3, 5))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    ppl, bits = Perplexity(), BitsPerToken()
    ppl.update_state(labels[:2], logits[:2])   # accumulates over updates
    ppl.update_state(labels[2:], logits[2:])
    bits.update_state(labels, logits)
    assert np.isclose(float(ppl.result()), math.exp(nll.mean()), rtol=1e-5)
    assert np.isclose(float(bits.result()), nll.mean() / math.log(2), rtol=1e-5)
    masked = Perplexity(ignore_id=labels[0, 0])
    masked.update_state(labels, logits)
    keep = labels != labels[0, 0]
    assert np.isclose(float(masked.result()), math.exp(nll[keep].mean()), rtol=1e-5)


def test_warmup_cosine_schedule():
    s = WarmupCosine(1e-3, 1e-4, warmup_steps=100, decay_steps=2000)
    assert np.isclose(float(s(0)), 1e-3 / 101)
    assert np.isclose(float(s(99)), 1e-3 * 100 / 101)
    assert np.isclose(float(s(100)), 1e-3)
    assert np.isclose(float(s(1050)), 1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 0.5)))
    assert np.isclose(float(s(2000)), 1e-4) and np.isclose(float(s(5000)), 1e-4)
    with pytest.raises(ValueError, match="minimum <= peak"):
        WarmupCosine(1e-4, 1e-3, 0, 10)


def test_adamw_skips_norms_biases_and_embeddings():
    tok = char_tokenizer()
    model = tiny_model(tok)
    model.build_for_inference()
    opt = make_optimizer("adamw", 1e-3, weight_decay=0.1)
    opt.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if opt._use_weight_decay(v)}
    assert any(p.endswith("c_attn/kernel") for p in decayed)
    assert not any(p.endswith(("bias", "gamma", "beta", "embeddings")) for p in decayed), decayed
    with pytest.raises(ValueError, match="optimizer must be"):
        make_optimizer("adagrad", 1e-3)


def test_train_writes_a_complete_run(corpus, tmp_path):
    tok = char_tokenizer()
    out = str(tmp_path / "run")
    keraslm.train(preset="gpt-nano", data=[corpus], model=tiny_model(tok), steps=30, batch_size=8,
                  block_size=32, checkpoint_every=10, eval_steps=2, warmup_steps=5, out=out, verbose=0)
    for name in ("model.keras", "metrics.json", "config.json", "checkpoints/last.keras", "checkpoints/state.json",
                 "logs/training.csv"):
        assert os.path.exists(os.path.join(out, name)), name
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["steps"] == 30 and metrics["tokens_per_second"] > 0
    assert np.isclose(metrics["val_perplexity"], math.exp(metrics["val_loss"]), rtol=1e-4)
    assert metrics["train_loss"] < math.log(tok.vocab_size)  # it learned something
    assert len(open(os.path.join(out, "logs/training.csv")).read().strip().splitlines()) == 1 + 3
    assert not [f for f in os.listdir(os.path.join(out, "checkpoints")) if f.startswith(".tmp")]
    ev = keraslm.evaluate(out, [corpus], batch_size=4)
    assert np.isclose(ev["perplexity"], math.exp(ev["loss"]))
    assert np.isclose(ev["bits_per_char"], ev["bits_per_token"], rtol=1e-3)  # char model: 1 token per char
    loaded = keraslm.load_model(out)
    assert loaded.tokenizer.vocabulary == tok.vocabulary


_RUN = """
import os, signal, sys, keras, numpy as np
import keraslm
from keraslm.data import CharTokenizer
from keraslm.models import TransformerLM
corpus, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = CharTokenizer(); tok.adapt([corpus])
keras.utils.set_random_seed(0)
model = TransformerLM(vocab_size=tok.vocab_size, max_length=32, num_layers=1, num_heads=2, width=16, tokenizer=tok)

class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if kill_at and int(self.model.optimizer.iterations.numpy()) >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

res = keraslm.train(preset="gpt-nano", data=[corpus], model=model, steps=24, batch_size=8, block_size=32,
                    checkpoint_every=8, eval_steps=1, warmup_steps=4, out=out, verbose=0, deterministic=True,
                    steps_per_execution=1, callbacks=[Kill()])
np.save(os.path.join(out, "weights.npy"), np.concatenate([w.numpy().ravel() for w in res["model"].weights]))
"""


def test_resume_after_kill_matches_uninterrupted_run(corpus, tmp_path):
    def run(out, kill_at):
        return subprocess.run([sys.executable, "-P", "-c", _RUN, corpus, str(out), str(kill_at)], capture_output=True,
                              text=True, timeout=600)

    straight = run(tmp_path / "straight", 0)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run(tmp_path / "resumed", 13)          # dies mid-way between checkpoints at 8 and 16
    assert killed.returncode == -9, killed.stderr[-3000:]
    state = json.load(open(tmp_path / "resumed" / "checkpoints" / "state.json"))
    assert state["step"] == 8
    resumed = run(tmp_path / "resumed", 0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = np.load(tmp_path / "straight" / "weights.npy")
    b = np.load(tmp_path / "resumed" / "weights.npy")
    np.testing.assert_array_equal(a, b)


_MIRRORED = """
import json, sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keraslm
corpus, out = sys.argv[1], sys.argv[2]
losses = {}
for strategy in ("default", "mirrored"):
    res = keraslm.train(preset="gpt-nano", data=[corpus], steps=12, batch_size=8, block_size=32,
                        model_args={"num_layers": 1, "num_heads": 2, "width": 16, "max_length": 32},
                        checkpoint_every=4, eval_steps=2, warmup_steps=2, out=out + "/" + strategy, verbose=0,
                        strategy=strategy, steps_per_execution=1, seed=5, jit_compile="off")
    losses[strategy] = [res["train_loss"], res["val_loss"]]
    losses[strategy + "_replicas"] = res["model"].distribute_strategy.num_replicas_in_sync
print(json.dumps(losses))
"""


def test_mirrored_strategy_matches_one_device(corpus, tmp_path):
    r = subprocess.run([sys.executable, "-P", "-c", _MIRRORED, corpus, str(tmp_path)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    losses = json.loads(r.stdout.strip().splitlines()[-1])
    assert losses["mirrored_replicas"] == 2 and losses["default_replicas"] == 1
    np.testing.assert_allclose(losses["mirrored"], losses["default"], rtol=1e-3)


def test_train_config_from_preset_and_errors():
    cfg = keraslm.TrainConfig.from_preset("gpt-nano", steps=10)
    assert (cfg.batch_size, cfg.block_size, cfg.learning_rate, cfg.beta2, cfg.steps) == (12, 64, 1e-3, 0.99, 10)
    with pytest.raises(ValueError, match="unknown training setting"):
        keraslm.TrainConfig.from_preset("gpt-nano", stepz=10)
    with pytest.raises(ValueError, match="no training data"):
        keraslm.train(preset="gpt-nano", steps=1)
    with pytest.raises(ValueError, match="unknown preset"):
        keraslm.TrainConfig.from_preset("gpt-giant")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-P", "-m", "keraslm", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def test_cli_errors_are_one_line(tmp_path, corpus):
    r = _cli("train", "--preset", "gpt-nano", "--data", str(tmp_path / "missing.txt"), "--steps", "1",
             "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "missing.txt" in r.stderr.strip().splitlines()[-1]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    r = _cli("train", "--data", str(empty), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "empty" in r.stderr.strip().splitlines()[-1].lower()
    r = _cli("train", "--preset", "nope", "--data", corpus)
    assert r.returncode == 2 and "unknown preset 'nope'" in r.stderr
    r = _cli("train", "--data", corpus, "--no-such-flag", "1")
    assert r.returncode == 2 and "unrecognized arguments: --no-such-flag" in r.stderr
    r = _cli("evaluate", "--model", str(tmp_path / "nothing"), "--data", corpus)
    assert r.returncode == 2 and "nothing" in r.stderr.strip().splitlines()[-1]


def test_cli_train_evaluate_generate(tmp_path, corpus):
    out = tmp_path / "cli-run"
    r = _cli("train", "--preset", "gpt-nano", "--data", corpus, "--steps", "20", "--checkpoint-every", "10",
             "--batch-size", "4", "--eval-steps", "2", "--out", str(out), "--verbose", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["steps"] == 20
    r = _cli("evaluate", "--model", str(out), "--data", corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["perplexity"] > 1
    r = _cli("generate", "--model", str(out), "--prompt", "First", "--max-new-tokens", "20", "--seed", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("First") and len(r.stdout) >= len("First") + 10
    # a vocabulary mismatch: evaluating text with unseen characters still works (they map to <unk>)
    other = tmp_path / "other.txt"
    other.write_text("zzzz qqqq " * 50)
    r = _cli("evaluate", "--model", str(out), "--data", str(other))
    assert r.returncode == 0, r.stderr[-3000:]


def test_generate_uses_the_shipped_default_model():
    r = _cli("generate", "--prompt", "ROMEO:", "--max-new-tokens", "30", "--seed", "3", "--temperature", "0.8")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("ROMEO:") and len(r.stdout.strip()) > len("ROMEO:") + 20
    from keraslm.checkpoint import default_model_path
    model = keraslm.load_model(default_model_path())
    assert model.max_length == 256 and model.tokenizer.vocab_size == model.vocab_size


def test_shipped_default_model_is_what_its_record_says(tmp_path):
    """The shipped default reaches validation loss <= 1.60 nats/char on the last 10% of tinyshakespeare,
    trained in at most an hour: its metrics.json says so, and evaluating it here gives the same loss."""
    from keraslm.checkpoint import default_model_path
    from keraslm.data import Corpus

    directory = os.path.dirname(default_model_path())
    with open(os.path.join(directory, "metrics.json")) as f:
        record = json.load(f)
    assert record["val_loss"] <= 1.60 and record["train_seconds"] <= 3600, record
    corpus = Corpus.from_source("tinyshakespeare")
    lo, hi = corpus.split_range("validation", 0.1)
    heldout = tmp_path / "validation.txt"
    heldout.write_bytes(b"".join(corpus.iter_text(lo, hi)))
    measured = keraslm.evaluate(os.path.join(directory, "model.keras"), [str(heldout)], block_size=256)
    assert measured["loss"] == pytest.approx(record["val_loss"], abs=0.01), (measured, record)
    for name in ("loss.png", "training.csv", "train_config.json"):
        assert os.path.getsize(os.path.join(directory, name)) > 0, name


def test_steps_per_execution_auto_follows_xla():
    from keraslm.models import from_preset
    from keraslm.training import TrainConfig, compile_model

    rnn = compile_model(from_preset("char-gru", vocab_size=7, hidden_units=8, embedding_dim=4),
                        TrainConfig.from_preset("char-gru"))
    assert (rnn.jit_compile, rnn.steps_per_execution) == (False, 1)
    gpt = compile_model(from_preset("gpt-nano", vocab_size=7), TrainConfig.from_preset("gpt-nano", jit_compile="on"))
    assert (gpt.jit_compile, gpt.steps_per_execution) == (True, 10)
    gpt = compile_model(from_preset("gpt-nano", vocab_size=7),
                        TrainConfig.from_preset("gpt-nano", jit_compile="off", steps_per_execution=5))
    assert (gpt.jit_compile, gpt.steps_per_execution) == (False, 5)
    with pytest.raises(ValueError, match="steps_per_execution must be >= 0"):
        compile_model(from_preset("gpt-nano", vocab_size=7), TrainConfig.from_preset("gpt-nano", steps_per_execution=-1))


def test_metrics_match_the_cross_entropy_with_label_shapes():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 5, 11)).astype(np.float32) * 3
    labels = rng.integers(0, 11, (2, 5))
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits).numpy().astype(np.float64)
    for y in (labels, labels[..., None]):                      # [B, T] and [B, T, 1] labels
        m = Perplexity()
        m.update_state(y, logits)
        assert math.isclose(float(m.result()), math.exp(nll.mean()), rel_tol=1e-5)
    m = Perplexity()
    update = tf.function(m.update_state, input_signature=[tf.TensorSpec(None, tf.int64),
                                                          tf.TensorSpec([None, None, 11])])
    update(labels, logits)                                    # labels of unknown rank
    assert math.isclose(float(m.result()), math.exp(nll.mean()), rel_tol=1e-5)


def test_mixed_precision_trains_in_bfloat16_and_saves_a_float32_model(corpus, tmp_path):
    out = str(tmp_path / "mixed")
    before = keras.mixed_precision.dtype_policy().name
    result = keraslm.train(preset="gpt-nano", data=[corpus], steps=6, batch_size=4, block_size=16,
                           checkpoint_every=3, eval_steps=1, warmup_steps=1, out=out, verbose=0,
                           mixed_precision="on", model_args={"num_layers": 1, "num_heads": 2, "width": 16},
                           ema_momentum=0.0)  # the final weights are then the checkpoint's
    assert keras.mixed_precision.dtype_policy().name == before      # the policy was this run's only
    trained = keras.saving.load_model(os.path.join(out, "checkpoints", "last.keras"))
    assert trained.dtype_policy.name == "mixed_bfloat16" and trained.compute_dtype == "bfloat16"
    final = keraslm.load_model(out)
    assert final.dtype_policy.name == "float32" and result["model"].dtype_policy.name == "float32"
    assert len(final.weights) == len(trained.weights)
    for a, b in zip(final.weights, trained.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = tf.constant(np.random.default_rng(0).integers(0, final.vocab_size, (2, 16)), tf.int32)
    low, full = trained(x).numpy().astype(np.float32), final(x).numpy()
    assert low.dtype == np.float32 and full.dtype == np.float32
    assert 0 < np.abs(low - full).max() < 0.1 * np.abs(full).max()  # bfloat16 rounding, nothing more
    assert final.generate("Fir", max_new_tokens=5, seed=0)


def test_metrics_reuse_the_loss_per_token_nll_in_a_step(monkeypatch, rng):
    from keraslm.metrics import TokenCrossEntropy
    from keraslm.models import RecurrentLM

    calls = []
    real = tf.reduce_logsumexp
    monkeypatch.setattr(tf, "reduce_logsumexp", lambda *a, **k: calls.append(1) or real(*a, **k))
    keras.utils.set_random_seed(0)
    model = RecurrentLM(vocab_size=13, embedding_dim=8, hidden_units=8, cell="lstm")
    model.compile(optimizer="sgd", loss=TokenCrossEntropy(), metrics=[Perplexity(), BitsPerToken()])
    x = rng.integers(0, 13, (4, 6)).astype(np.int32)
    y = rng.integers(0, 13, (4, 6)).astype(np.int32)
    logs = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert np.isclose(logs["perplexity"], math.exp(logs["loss"]), rtol=1e-6)
    assert np.isclose(logs["bits_per_token"], logs["loss"] / math.log(2), rtol=1e-6)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isclose(history["perplexity"][0], math.exp(history["loss"][0]), rtol=1e-6)
    assert calls == []                                   # no metric computed its own log-softmax
    ppl = Perplexity()
    ppl.update_state(y, model(x))                        # outside a step: computed by the metric
    assert len(calls) == 1
    labels, logits = y[..., None], rng.standard_normal((4, 6, 13)).astype(np.float32)
    loss = float(TokenCrossEntropy()(labels, logits))    # [..., 1] labels, like Keras' sparse loss
    expected = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits))
    assert np.isclose(loss, expected, rtol=1e-6)


def test_token_cross_entropy_gradient_matches_numpy_and_rejects_bad_labels(rng):
    from keraslm.metrics import TokenCrossEntropy

    logits = tf.constant(rng.standard_normal((3, 7, 11)) * 4, tf.float32)
    labels = tf.constant(rng.integers(0, 11, (3, 7)), tf.int32)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = TokenCrossEntropy()(labels, logits)
    grad = tape.gradient(loss, logits).numpy()
    z = logits.numpy().astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    onehot = np.eye(11)[labels.numpy()]
    nll = -np.log(np.take_along_axis(p, labels.numpy()[..., None], -1))[..., 0]
    assert np.isclose(float(loss), nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(grad, (p - onehot) / nll.size, atol=1e-7)
    with pytest.raises(tf.errors.InvalidArgumentError, match="11"):
        TokenCrossEntropy()(tf.constant([[0, 11]]), tf.zeros([1, 2, 11]))


@pytest.mark.skipif(not keraslm.ops.amx_bf16_available(), reason="no AMX-BF16 here")
def test_bfloat16_products_are_used_in_fit_only(corpus, tmp_path, monkeypatch):
    """matmul_precision applies to the training steps: the dense layers call the bfloat16 op while
    fit traces; afterwards the process setting is float32 again and the trained model evaluates
    with float32 products."""
    from keraslm.ops import matmul as matmul_mod

    calls = []
    original = matmul_mod._custom
    monkeypatch.setattr(matmul_mod, "_custom", lambda *a: calls.append(1) or original(*a))
    with pytest.raises(ValueError, match="matmul_precision must be"):
        keraslm.train(preset="gpt-nano", data=[corpus], out=str(tmp_path / "bad"), matmul_precision="fp8")
    assert not os.path.exists(tmp_path / "bad" / "config.json")
    tok = char_tokenizer()
    result = keraslm.train(preset="gpt-nano", data=[corpus], model=tiny_model(tok), steps=6, batch_size=4,
                           block_size=16, out=str(tmp_path / "run"), verbose=0, matmul_precision="bfloat16")
    assert calls, "the dense layers did not use the bfloat16 product"
    assert keraslm.ops.matmul_precision() == "float32"
    model = result["model"]
    calls.clear()
    again = keraslm.evaluate(model, [corpus], block_size=16, batch_size=4)
    assert not calls
    assert math.isfinite(result["val_loss"]) and math.isfinite(again["loss"])


def test_weight_average_is_applied_once_at_the_end(corpus, tmp_path):
    """With ema_momentum the final model holds the average; a run split into two fit calls (6 steps
    as 4 + 2) ends with the same weights as one call, and differs from the run without averaging.
    (Keras would copy the average into the weights at the end of each call, and the second call
    would continue from it.)"""
    tok = char_tokenizer()

    def run(name, **kw):
        res = keraslm.train(preset="gpt-nano", data=[corpus], model=tiny_model(tok), steps=6, batch_size=4,
                            block_size=16, warmup_steps=1, out=str(tmp_path / name), verbose=0, jit_compile="off",
                            matmul_precision="float32", **kw)
        return [v.numpy() for v in res["model"].trainable_variables]

    one_call = run("one", ema_momentum=0.9, checkpoint_every=6)
    two_calls = run("two", ema_momentum=0.9, checkpoint_every=4)
    plain = run("plain", ema_momentum=0.0, checkpoint_every=6)
    for a, b in zip(one_call, two_calls):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert max(np.abs(a - b).max() for a, b in zip(one_call, plain)) > 1e-4
    assert keraslm.TrainConfig.from_preset("gpt-nano").ema_momentum == 0.99
    with pytest.raises(ValueError, match=r"ema_momentum must be in \[0, 1\), got 1.5"):
        keraslm.train(preset="gpt-nano", data=[corpus], out=str(tmp_path / "bad"), ema_momentum=1.5)
