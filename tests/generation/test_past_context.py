"""Generation past the context: a row that fills its context slides its window (re-encodes its last
window_size(C) tokens from position 0) and goes on, the same way on every path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keraslm
from keraslm.data import CharTokenizer
from keraslm.generation.decode import window_size
from keraslm.models import RecurrentLM, TransformerLM

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
IMPLS = ["reference"] + (["custom"] if keraslm.ops.custom_ops_available() else [])


@pytest.fixture(scope="module")
def model():
    tok = CharTokenizer()
    tok.adapt([TEXT])
    keras.utils.set_random_seed(11)
    m = TransformerLM(vocab_size=tok.vocab_size, max_length=12, num_layers=2, num_heads=2, width=16, tokenizer=tok)
    m.build_for_inference()
    for w in m.weights:                     # sharper logits than the default init: no near-ties in argmax
        w.assign(w * 4.0)
    return m


def _reference_greedy(model, prompt, n):
    """The sliding rule written out: the model sees seq[offset:], recomputed from scratch every step."""
    C, W = model.max_length, window_size(model.max_length)
    seq, offset = list(prompt[-C:]), 0
    for _ in range(n):
        logits = model(np.array([seq[offset:]], np.int32))[0, -1].numpy()
        seq.append(int(np.argmax(logits)))
        if len(seq) - 1 - offset >= C:      # the new token falls outside the context: slide
            offset = len(seq) - W
    return seq[len(prompt[-C:]):]


def test_window_size():
    assert [window_size(c) for c in (1, 2, 4, 12, 64, 1024)] == [1, 1, 3, 9, 48, 768]


@pytest.mark.parametrize("impl", IMPLS)
def test_greedy_past_the_context_follows_the_sliding_rule(model, impl):
    prompt = model.tokenizer.tokenize(tf.constant("To be, or")).numpy().tolist()
    with keraslm.ops.implementation_scope(impl):
        got = model.generate(prompt, max_new_tokens=40, temperature=0)
    assert got == _reference_greedy(model, prompt, 40)


def test_rows_slide_independently(model):
    prompts = ["To be, or", "Wh", "that is the question:"]
    together = model.generate(prompts, max_new_tokens=30, temperature=0)
    alone = [model.generate(p, max_new_tokens=30, temperature=0) for p in prompts]
    assert together == alone


def test_same_seed_same_text_on_every_path(model):
    settings = dict(max_new_tokens=50, temperature=0.9, top_k=5, seed=21)
    text = model.generate("To be", **settings)
    assert len(model.generate("To be", return_details=True, **settings)["ids"]) == 50
    assert "".join(model.stream("To be", **settings)) == text


def test_recurrent_models_have_no_window():
    tok = CharTokenizer()
    tok.adapt([TEXT])
    rnn = RecurrentLM(vocab_size=tok.vocab_size, embedding_dim=8, hidden_units=8, tokenizer=tok)
    assert len(rnn.generate("To", max_new_tokens=100, seed=1, return_details=True)["ids"]) == 100


def test_beam_search_stays_inside_the_context(model):
    with pytest.raises(ValueError, match="beam search stays within the model's context"):
        model.generate("To be", max_new_tokens=20, num_beams=2)
