"""Stateful truncated BPTT, epochs and the epoch-decay schedule (Zaremba et al. 2014's recipe), checked against a
plain Keras loop written from the paper: contiguous streams, the LSTM state carried from window to window and reset
each epoch, SGD on the loss summed over time, global-norm clipping, the learning rate decayed per epoch."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.data import CharTokenizer, stream_layout
from keraslm.evaluation import stream_nll
from keraslm.models import RecurrentLM
from keraslm.schedules import EpochDecay

RNG = np.random.default_rng(7)
TEXT = "".join(RNG.choice(list("abcdefg hij\n"), size=611))       # 611 tokens: not a multiple of anything used
B, T = 3, 7


def _model(tok, seed=0):
    keras.utils.set_random_seed(seed)
    model = RecurrentLM(vocab_size=tok.vocab_size, embedding_dim=6, hidden_units=5, num_layers=2, cell="lstm",
                        init_scale=0.1, tokenizer=tok)
    model.build_for_inference()
    return model


def _reference(model, tokens, steps, *, lr, decay, after, clip):
    """The weights after ``steps`` steps of Zaremba's loop, in plain Keras layers fed ``model``'s initial weights."""
    emb = keras.layers.Embedding(model.vocab_size, 6)
    rnns = [keras.layers.LSTM(5, return_sequences=True, return_state=True) for _ in range(2)]
    head = keras.layers.Dense(model.vocab_size)
    emb.build((None, None))
    rnns[0].build((None, None, 6))
    rnns[1].build((None, None, 5))
    head.build((None, None, 5))
    for mine, ref in zip([model.embedding, *model.rnns, model.head], [emb, *rnns, head]):
        ref.set_weights(mine.get_weights())
    variables = emb.trainable_variables + rnns[0].trainable_variables + rnns[1].trainable_variables + \
        head.trainable_variables
    streams = stream_layout(tokens, B)
    per_epoch = (streams.shape[1] - 1) // T
    zeros = [[tf.zeros([B, 5]), tf.zeros([B, 5])] for _ in range(2)]
    state = zeros
    for step in range(steps):
        k = step % per_epoch
        if k == 0:
            state = zeros
        x, y = streams[:, k * T:(k + 1) * T], streams[:, k * T + 1:(k + 1) * T + 1]
        with tf.GradientTape() as tape:
            h = emb(x)
            new = []
            for rnn, s in zip(rnns, state):
                h, hs, cs = rnn(h, initial_state=s)
                new.append([hs, cs])
            logits = head(h)
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            loss = tf.reduce_mean(tf.reduce_sum(nll, axis=1))                 # summed over time, mean over batch
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), clip)
        rate = lr * decay ** max(step // per_epoch + 1 - after, 0)
        for v, g in zip(variables, grads):
            v.assign_sub(rate * tf.convert_to_tensor(g))
        state = [[tf.stop_gradient(a) for a in s] for s in new]
    return [v.numpy() for v in variables], per_epoch


def _settings(train_file, valid_file, out, **overrides):
    settings = dict(preset="word-lstm-small", data=[train_file], validation_data=[valid_file], windows="stateful",
                    batch_size=B, block_size=T, epochs=0, steps=60, checkpoint_every=60, optimizer="sgd",
                    learning_rate=1.0, schedule="epoch_decay", lr_decay=0.5, decay_after_epochs=1, warmup_steps=0,
                    weight_decay=0.0, grad_clip=5.0, loss_reduction="sum_over_time", eval_steps=1, out=str(out),
                    verbose=0, steps_per_execution=1, jit_compile="off", seed=3)
    settings.update(overrides)
    return settings


@pytest.fixture
def files(tmp_path):
    train_file, valid_file = tmp_path / "train.txt", tmp_path / "valid.txt"
    train_file.write_text(TEXT)
    valid_file.write_text(TEXT[::-1][:200])
    return str(train_file), str(valid_file)


def test_stateful_training_is_zarembas_loop(files, tmp_path):
    """3 streams of 203 tokens: 28 windows per epoch; 60 steps cross two epoch boundaries (state reset, rate halved
    twice). The harness's weights match the plain-Keras loop's."""
    tok = CharTokenizer()
    tok.adapt([TEXT])
    model = _model(tok)
    expected, per_epoch = _reference(_model(tok), np.asarray(tok.tokenize(TEXT)), 60, lr=1.0, decay=0.5, after=1,
                                     clip=5.0)
    assert per_epoch == 28
    keraslm.train(**_settings(*files, tmp_path / "run"), model=model, tokenizer=tok)
    got = [w.numpy() for w in model.trainable_variables]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    assert float(model.optimizer.learning_rate.numpy()) == 0.25           # epoch 3 of a decay after epoch 1


def test_carrying_the_state_matters(files, tmp_path):
    """The same loop without the carried state ends elsewhere (so the test above can fail)."""
    tok = CharTokenizer()
    tok.adapt([TEXT])
    model = _model(tok)
    expected, _ = _reference(_model(tok), np.asarray(tok.tokenize(TEXT)), 60, lr=1.0, decay=0.5, after=1, clip=5.0)
    keraslm.train(**_settings(*files, tmp_path / "run", windows="sequential"), model=model, tokenizer=tok)
    got = [w.numpy() for w in model.trainable_variables]
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, expected)) > 1e-3


def test_stateful_resume_is_bit_identical(files, tmp_path):
    """The carried state is saved with each checkpoint, so a run stopped mid-epoch continues exactly."""
    tok = CharTokenizer()
    tok.adapt([TEXT])
    straight = keraslm.train(**_settings(*files, tmp_path / "straight", steps=40, checkpoint_every=10),
                             model=_model(tok), tokenizer=tok)["model"]
    keraslm.train(**_settings(*files, tmp_path / "split", steps=30, checkpoint_every=10), model=_model(tok),
                  tokenizer=tok)
    with open(tmp_path / "split" / "checkpoints" / "state.json") as f:
        assert json.load(f)["carried_state"]["position"] == 30
    resumed = keraslm.train(**_settings(*files, tmp_path / "split", steps=40, checkpoint_every=10))["model"]
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_epochs_set_the_steps_and_the_final_validation_carries_the_state(files, tmp_path):
    tok = CharTokenizer()
    tok.adapt([TEXT])
    result = keraslm.train(**_settings(*files, tmp_path / "run", epochs=2, steps=2000), model=_model(tok),
                           tokenizer=tok)
    assert result["steps"] == 56 and int(result["model"].optimizer.iterations.numpy()) == 56
    valid = np.asarray(tok.tokenize(TEXT[::-1][:200]))
    logits = result["model"](valid[None, :-1]).numpy().astype(np.float64)[0]  # one call over the whole text
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    expected = -logp[np.arange(valid.size - 1), valid[1:]].mean()
    assert result["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_stream_nll_equals_one_call_over_the_text():
    tok = CharTokenizer()
    tok.adapt([TEXT])
    model = _model(tok, seed=5)
    ids = np.asarray(tok.tokenize(TEXT[:301]))
    total, count = stream_nll(model, ids, batch_size=1, block_size=13)
    logits = tf.cast(model(ids[None, :-1]), tf.float64)
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids[None, 1:], logits=logits)
    assert count == 300 and total == pytest.approx(float(tf.reduce_sum(nll)), rel=1e-5)


def test_epoch_decay_schedule():
    sched = EpochDecay(1.0, decay=0.8, decay_after_epochs=6, steps_per_epoch=7)
    rates = [float(sched(s)) for s in range(0, 70)]
    expected = [0.8 ** max(s // 7 + 1 - 6, 0) for s in range(70)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))(30) == sched(30)


def test_stateful_needs_a_recurrent_model(files, tmp_path):
    with pytest.raises(ValueError, match="windows='stateful' carries a recurrent state .* TransformerLM has none"):
        keraslm.train(**_settings(*files, tmp_path / "run", preset="gpt-nano", steps=2,
                                  model_args={"num_layers": 1, "num_heads": 2, "width": 8, "max_length": 16}))


def test_word_lstm_preset_on_ptb_format_text_from_the_cli(tmp_path):
    """PTB-format text (pretokenized, <unk> kept, a sentence per line): the preset keeps <unk> as the unknown id,
    an <eos> per line, reports the OOV rates, and evaluates per word with the state carried."""
    words = [f"w{i}" for i in range(40)]
    lines = [" ".join(RNG.choice(words, size=RNG.integers(3, 9))) + (" <unk>" if i % 3 == 0 else "")
             for i in range(300)]
    train, valid = tmp_path / "ptb.train.txt", tmp_path / "ptb.valid.txt"
    train.write_text("\n".join(lines[:250]) + "\n")
    valid.write_text("\n".join(lines[250:]).replace("w39", "zebra") + "\n")
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "keraslm", "train", "--preset", "word-lstm-small", "--data",
                          str(train), "--validation-data", str(valid), "--epochs", "1", "--batch-size", "4",
                          "--out", str(out), "--model-args", '{"hidden_units": 16, "embedding_dim": 16}',
                          "--seed", "1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout[run.stdout.rindex("{\n"):])              # (after Keras' progress bar)
    assert metrics["steps"] == (sum(len(line.split()) + 1 for line in lines[:250]) // 4 - 1) // 20
    model = keraslm.load_model(str(out))
    tok = model.tokenizer
    ids = tok.tokenize("w1 <unk> w2\nw3").numpy().tolist()
    assert ids[1] == tok.unk_id and tok.detokenize(ids) == "w1 <unk> w2\nw3"
    ev = subprocess.run([sys.executable, "-m", "keraslm", "evaluate", "--model", str(out), "--data", str(valid)],
                        capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr
    report = json.loads(ev.stdout)
    n_words = sum(len(line.split()) + 1 for line in lines[250:])
    assert report["stateful"] and report["words"] == n_words
    zebras = sum(line.split().count("w39") for line in lines[250:])
    unks = sum(line.split().count("<unk>") for line in lines[250:])
    assert report["oov_rate"] == pytest.approx((zebras + unks) / n_words)
    assert os.path.exists(out / "loss.png")
