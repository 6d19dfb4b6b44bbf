"""Generation: one contract, every path agrees, settings never retrace, clear edge cases."""

import itertools
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm import _C
from keraslm.data import CharTokenizer
from keraslm.generation import generate, sampling_loop, step_coins, stream
from keraslm.generation.api import _loop_for
from keraslm.generation.settings import prepare
from keraslm.models import RecurrentLM, TransformerLM

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def make(family, context=48):
    tok = CharTokenizer()
    tok.adapt([TEXT])
    keras.utils.set_random_seed(4)
    if family == "gpt":
        model = TransformerLM(vocab_size=tok.vocab_size, max_length=context, num_layers=2, num_heads=2, width=16,
                              tokenizer=tok)
    else:
        model = RecurrentLM(vocab_size=tok.vocab_size, embedding_dim=12, hidden_units=16, num_layers=2,
                            cell="lstm", tokenizer=tok)
    model.build_for_inference()
    # Sharpen the random model a little so that sampling is not uniform.
    for w in model.trainable_weights:
        w.assign(w * 3.0)
    return model


@pytest.fixture(params=["gpt", "lstm"])
def model(request):
    return make(request.param)


SETTINGS = dict(temperature=[0.9, 1.3, 0.0], top_k=[0, 5, 0], top_p=[1.0, 1.0, 0.8], min_p=[0.0, 0.05, 0.0],
                repetition_penalty=[1.0, 1.3, 1.0])
PROMPTS = ["To be", "Whether 'tis", ""]


def test_greedy_equals_argmax_of_full_pass(model):
    ids = model.tokenizer.tokenize(tf.constant("To be")).numpy().tolist()
    new = generate(model, ids, max_new_tokens=12, temperature=0)
    seq = list(ids)
    for _ in range(12):
        seq.append(int(np.argmax(model(np.array([seq]))[0, -1])))
    assert new == seq[len(ids):]


def test_batch_of_different_lengths_equals_one_by_one(model):
    batch = generate(model, PROMPTS, max_new_tokens=10, seed=7, **SETTINGS)
    for i, p in enumerate(PROMPTS):
        alone = generate(model, [p], max_new_tokens=10, seed=7, **{k: [v[i]] for k, v in SETTINGS.items()})
        # coins are per row: row i of a batch uses the coin stream of its row index
        if i == 0:
            assert alone == [batch[0]]
    assert len(batch) == 3 and all(isinstance(t, str) for t in batch)


def _c_driven(model, batch):
    """A Python loop over the compiled model step, sampling with keraslm._C."""
    ids = tf.constant(batch.ids)
    lengths = batch.lengths
    B, P = batch.ids.shape
    N = int(batch.max_new.max())
    cache = model.init_cache(B, P + N)
    step = tf.function(lambda i, c, idx, v=None: model.next(i, c, idx, valid=v), reduce_retracing=True)
    logits, cache = step(ids, cache, tf.zeros([B], tf.int32), tf.constant(lengths))
    last = tf.gather(logits, lengths - 1, batch_dims=1).numpy()
    seq = np.where(np.arange(P)[None] < lengths[:, None], batch.ids, -1)
    seq = np.concatenate([seq, -np.ones((B, N), np.int32)], 1)
    out = [[] for _ in range(B)]
    for t in range(N):
        coins = step_coins(tf.constant(batch.seed), t, B).numpy()
        tok, _ = _C.sample(last, coins, temperature=batch.temperature, top_k=batch.top_k, top_p=batch.top_p,
                           min_p=batch.min_p, repetition_penalty=batch.repetition_penalty, previous_ids=seq,
                           pad_id=-1)
        for b in range(B):
            out[b].append(int(tok[b]))
            seq[b, lengths[b] + t] = tok[b]
        logits, cache = step(tf.constant(tok[:, None]), cache, tf.constant(lengths + t))
        last = logits[:, 0].numpy()
    return out


def test_same_seed_same_tokens_on_every_path(model):
    batch = prepare(model, PROMPTS, 14, seed=123, stop=None, **SETTINGS)
    args = [tf.constant(x) for x in (batch.ids, batch.lengths, batch.max_new, batch.temperature, batch.top_k,
                                     batch.top_p, batch.min_p, batch.repetition_penalty, batch.seed,
                                     batch.stop_ids)]
    compiled = generate(model, PROMPTS, max_new_tokens=14, seed=123, return_details=True, **SETTINGS)["ids"]
    eager, num, _ = sampling_loop(model, *args)
    eager = [list(map(int, eager.numpy()[b, : num[b]])) for b in range(3)]
    assert eager == compiled
    assert _c_driven(model, batch) == compiled
    for i, p in enumerate(PROMPTS):
        if i == 0:   # stream() runs row 0's coin stream
            streamed = "".join(stream(model, p, 14, seed=123, **{k: v[0] for k, v in SETTINGS.items()}))
            assert streamed == generate(model, p, 14, seed=123, **{k: v[0] for k, v in SETTINGS.items()})
    with keraslm.ops.implementation_scope("reference"):
        ref = generate(make(model.__class__ is TransformerLM and "gpt" or "lstm"), PROMPTS, max_new_tokens=14,
                       seed=123, return_details=True, **SETTINGS)["ids"]
    assert ref == compiled


def test_stream_takes_a_batch(model):
    """stream() over a batch yields one piece per row at every step; each row's pieces join into exactly what
    generate() returns for the same batch and seed (rows of different lengths, settings and stop strings)."""
    settings = dict(SETTINGS, max_new_tokens=[14, 5, 9], stop=[None, None, ["e"]])
    steps = list(stream(model, PROMPTS, seed=7, **settings))
    assert all(isinstance(s, list) and len(s) == 3 for s in steps) and len(steps) >= 14
    joined = ["".join(s[i] for s in steps) for i in range(3)]
    assert joined == generate(model, PROMPTS, seed=7, **settings)
    with pytest.raises(ValueError, match="stream\\(\\) takes a string or a non-empty list of strings"):
        next(stream(model, [], 3))


def test_changing_settings_and_shapes_never_retraces(model):
    loop = _loop_for(model, "float32")
    generate(model, "To", max_new_tokens=3, seed=1)
    traces = loop.experimental_get_tracing_count()
    generate(model, ["To be", "or"], max_new_tokens=[5, 2], temperature=0.5, top_k=3, top_p=0.9, seed=2)
    generate(model, ["a", "b", "c", "d"], max_new_tokens=7, temperature=[0, 1, 2, 0.1], min_p=0.1,
             repetition_penalty=1.2, stop=["\n"], seed=3)
    assert loop.experimental_get_tracing_count() == traces == 1


def test_stop_strings_and_ids_per_row(model):
    free = generate(model, ["To be", "To be"], max_new_tokens=20, temperature=0)
    stop_char = free[0][3]
    out = generate(model, ["To be", "To be"], max_new_tokens=20, temperature=0, stop=[[stop_char], None])
    assert out[0] == free[0][: free[0].index(stop_char)]
    assert out[1] == free[1]
    tid = model.tokenizer.token_to_id(stop_char)
    details = generate(model, "To be", max_new_tokens=20, temperature=0, stop=tid, return_details=True)
    assert details["ids"][-1] == tid and tid not in details["ids"][:-1]


def test_edge_cases(model, caplog):
    assert generate(model, "To be", max_new_tokens=0) == ""
    # empty prompt starts from the newline token
    start = generate(model, "\n", max_new_tokens=6, temperature=0)
    assert generate(model, "", max_new_tokens=6, temperature=0) == start
    # characters outside the vocabulary become <unk>, no error
    assert len(generate(model, "zzz QQQ", max_new_tokens=4, temperature=0, return_details=True)["ids"]) == 4
    for kwargs, words in [({"temperature": -1.0}, "temperature must be finite and >= 0"),
                          ({"top_p": 0.0}, "top_p must be in (0, 1]"),
                          ({"top_k": 1.5}, "top_k must be a non-negative integer"),
                          ({"repetition_penalty": 0}, "repetition_penalty must be finite and > 0"),
                          ({"temperature": [1.0, 2.0]}, "one value per prompt"),
                          ({"seed": "x"}, "seed must be an integer"),
                          ({"num_beams": 0}, "num_beams must be a positive integer")]:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            generate(model, "To be", max_new_tokens=3, **kwargs)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, [1, 2, 10_000], max_new_tokens=3)
    with pytest.raises(ValueError, match="prompts is empty"):
        generate(model, [], max_new_tokens=3)


def test_long_prompt_is_left_truncated_with_a_warning(caplog):
    model = make("gpt", context=16)
    long = TEXT[:40]
    with caplog.at_level(logging.WARNING, logger="keraslm"):
        out = generate(model, long, max_new_tokens=6, temperature=0)
    assert "keeping its last 16" in caplog.text
    assert out == generate(model, long[-16:], max_new_tokens=6, temperature=0)


def test_beam_search_finds_the_exhaustive_optimum():
    model = make("gpt")
    prompt = model.tokenizer.tokenize(tf.constant("To")).numpy().tolist()
    V, N = model.vocab_size, 3
    # length_penalty 0: the score is the plain sum of log-probabilities.
    conts = np.array(list(itertools.product(range(V), repeat=N)), np.int32)         # [V^N, N]
    seqs = np.concatenate([np.tile(prompt, (len(conts), 1)), conts], 1)               # [V^N, P + N]
    logp = tf.nn.log_softmax(model(seqs)).numpy()                                     # [V^N, P + N, V]
    P = len(prompt)
    scores = sum(logp[np.arange(len(conts)), P - 1 + i, conts[:, i]] for i in range(N))
    best = conts[int(np.argmax(scores))].tolist()
    found = generate(model, prompt, max_new_tokens=N, num_beams=V * V, length_penalty=0.0)
    assert found == best


def test_continuations_join_the_prompt_as_written(tmp_path):
    """A word model's continuation starts with the space that joins it to the prompt; include_prompt
    returns the prompt as given followed by it; stream, generate and the CLI agree."""
    import subprocess
    import sys

    from keraslm.data import WordTokenizer

    tok = WordTokenizer()
    tok.adapt(["the king is dead , long live the king . my lord , what is this ?"] * 3)
    keras.utils.set_random_seed(2)
    model = TransformerLM(vocab_size=tok.vocab_size, max_length=32, num_layers=1, num_heads=2, width=16,
                          tokenizer=tok)
    settings = dict(max_new_tokens=6, temperature=0.9, seed=4)
    cont = generate(model, "the king", **settings)
    assert cont.startswith(" ") and len(cont.split()) == 6
    assert generate(model, "the king", include_prompt=True, **settings) == "the king" + cont
    assert "".join(stream(model, "the king", **settings)) == cont
    ids = model.tokenizer.tokenize(tf.constant("the king")).numpy().tolist()
    with_prompt = generate(model, ids, include_prompt=True, return_details=True, **settings)
    assert with_prompt["ids"][:len(ids)] == ids and with_prompt["texts"] == "the king" + cont
    path = str(tmp_path / "words.keras")
    model.save(path)
    r = subprocess.run([sys.executable, "-P", "-m", "keraslm", "generate", "--model", path, "--prompt", "the king",
                        "--max-new-tokens", "6", "--temperature", "0.9", "--seed", "4"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == "the king" + cont + "\n"
