"""Evaluation of a trained language model on held-out text: loss, perplexity, bits per token and per character."""

from __future__ import annotations

import math

import tensorflow as tf

from keraslm.checkpoint import load_model
from keraslm.metrics import BitsPerToken, Perplexity


def check_vocabulary(model, tokenizer):
    """Raises ValueError when the tokenizer's vocabulary does not fit the model's."""
    if tokenizer is not None and tokenizer.vocab_size != model.vocab_size:
        raise ValueError(f"vocabulary mismatch: the tokenizer has {tokenizer.vocab_size} tokens but the model "
                         f"expects vocab_size={model.vocab_size}")


def evaluate(model, data, *, block_size=None, batch_size=16, max_batches=0):
    """Loss, perplexity and bits per token (and per character) of ``model`` on held-out text.

    Args:
        model: a model or a path accepted by :func:`load_model`.
        data: text files or globs (evaluated whole).
        block_size: window length (default: the model's max_length, else 128).
        batch_size: windows per batch.
        max_batches: stop after this many batches (0 = all).

    Returns:
        dict with ``loss`` (nats/token), ``perplexity``, ``bits_per_token``,
        ``bits_per_char``, ``tokens``.
    """
    from keraslm.data import Corpus, text_windows

    if isinstance(model, str):
        model = load_model(model)
    if model.tokenizer is None:
        raise ValueError("evaluate() needs a model with a tokenizer")
    check_vocabulary(model, model.tokenizer)
    block_size = block_size or model.max_length or 128
    corpus = Corpus.from_source(data)
    windows = text_windows(corpus, model.tokenizer, block_size=block_size, split="all")
    ds = windows.map(lambda w: (w[:-1], w[1:])).batch(batch_size)   # keeps the last partial batch
    if max_batches:
        ds = ds.take(max_batches)
    ppl, bits = Perplexity(), BitsPerToken()
    step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for x, y in ds:
        logits = step(x)
        ppl.update_state(y, logits)
        bits.update_state(y, logits)
    tokens = float(ppl.count.numpy())
    if tokens == 0:
        raise ValueError("no evaluation windows: the text is shorter than block_size + 1 tokens")
    loss = float(ppl.total.numpy()) / tokens
    # Bits per character: total bits over the characters those tokens cover.
    chars, n_tok = 0, 0
    for piece in corpus.iter_text():
        chars += len(piece.decode("utf-8"))
        n_tok += int(tf.size(model.tokenizer.tokenize(tf.constant(piece))).numpy())
    chars_per_token = chars / max(n_tok, 1)
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2),
            "bits_per_char": loss / math.log(2) / chars_per_token, "tokens": int(tokens)}
