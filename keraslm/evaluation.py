"""Evaluation of a trained language model on held-out text: loss, perplexity per token and per word, bits per
token and per character, and the out-of-vocabulary rate.

Recurrent models are evaluated the way published word-level perplexities are (Zaremba et al. 2014 and
every Penn Treebank table since): the state is carried across the whole text, window after window
(:func:`stream_nll`); ``stateful=False`` evaluates independent windows that each start from a zero
state instead (the only way for a transformer). Perplexity per word divides the text's total loss by its
whitespace-separated words, plus one per line end when the tokenizer keeps line ends (the ``<eos>`` of
the published convention); with a pretokenized, ``<eos>``-per-line tokenizer (the word-LSTM presets) it
is the perplexity per token.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keraslm.checkpoint import load_model
from keraslm.metrics import Perplexity
from keraslm.validation import positive_int


def check_vocabulary(model, tokenizer):
    """Raises ValueError when the tokenizer's vocabulary does not fit the model's."""
    if tokenizer is not None and tokenizer.vocab_size != model.vocab_size:
        raise ValueError(f"vocabulary mismatch: the tokenizer has {tokenizer.vocab_size} tokens but the model "
                         f"expects vocab_size={model.vocab_size}")


def stream_nll(model, tokens, *, batch_size=1, block_size=35, max_batches=0):
    """Total negative log-likelihood of ``tokens`` with the recurrent state carried across the text.

    The tokens are cut into ``batch_size`` contiguous streams (``keraslm.data.stream_layout``; the
    last ``N % batch_size`` tokens are left out) and fed ``block_size`` at a time through the
    model's ``next``, each window starting from the state the previous one ended with. Every token
    of a stream but its first is predicted once; ``batch_size=1`` carries the state across the
    whole text.

    Args:
        model: a model with ``init_cache`` / ``next`` whose cache is its recurrent state (``RecurrentLM``).
        tokens: 1-D int array of token ids.
        batch_size: streams evaluated side by side.
        block_size: tokens per call.
        max_batches: stop after this many windows (0 = all).

    Returns:
        ``(nll, predicted)``: the summed NLL in nats (float64) and the number of predicted tokens.
    """
    from keraslm.data import stream_layout

    positive_int("block_size", block_size)
    streams = stream_layout(tokens, batch_size)                              # [B, L]
    B, L = streams.shape
    if L < 2:
        raise ValueError(f"no evaluation windows: {np.size(tokens)} token(s) make {B} streams of {L} token(s); "
                         "need at least 2 tokens per stream")
    cache = model.init_cache(B)
    index = tf.zeros([B], tf.int32)

    @tf.function(reduce_retracing=True)
    def step(x, y, cache):
        logits, cache = model.next(x, cache, index)                          # [B, T, V]
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))
        return tf.reduce_sum(tf.cast(nll, tf.float64)), cache

    total, count = 0.0, 0
    for n, start in enumerate(range(0, L - 1, block_size)):
        if max_batches and n >= max_batches:
            break
        y = streams[:, start + 1:start + 1 + block_size]                     # [B, T] (shorter at the end)
        x = streams[:, start:start + y.shape[1]]
        nll, cache = step(tf.constant(x), tf.constant(y), cache)
        total += float(nll)
        count += y.size
    return total, count


def evaluate(model, data, *, block_size=None, batch_size=None, max_batches=0, stateful=None):
    """Loss, perplexity per token and per word, bits per token and per character, OOV rate of ``model`` on text.

    Args:
        model: a model or a path accepted by :func:`load_model`.
        data: text files or globs (evaluated whole).
        block_size: window length (default: the model's max_length; recurrent models 35, others 128).
        batch_size: windows per batch (default 16); with ``stateful``, the number of contiguous streams
            (default 1: the state crosses the whole text, as published figures are measured; more:
            ``batch_size - 1`` more resets, faster).
        max_batches: stop after this many batches (0 = all).
        stateful: carry the recurrent state from window to window (default: for models that can,
            ``RecurrentLM``); False: independent windows, each from a zero state.

    Returns:
        dict with ``loss`` (nats/token), ``perplexity``, ``perplexity_per_word``, ``bits_per_token``,
        ``bits_per_char``, ``tokens`` (predicted), ``words`` (whitespace words of the text, plus its
        line ends when the tokenizer keeps them), ``oov_rate`` (share of the text's tokens that are
        the unknown token) and ``stateful``.
    """
    from keraslm.data import Corpus, text_windows
    from keraslm.data.spacing import whitespace_words

    if isinstance(model, str):
        model = load_model(model)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError("evaluate() needs a model with a tokenizer")
    check_vocabulary(model, tokenizer)
    can_carry = getattr(model, "carries_state", False)
    stateful = can_carry if stateful is None else bool(stateful)
    if stateful and not can_carry:
        raise ValueError(f"stateful evaluation carries a recurrent state; {type(model).__name__} has none "
                         "(pass stateful=False)")
    block_size = block_size or model.max_length or (35 if can_carry else 128)
    batch_size = positive_int("batch_size", batch_size if batch_size is not None else (1 if stateful else 16))
    corpus = Corpus.from_source(data)
    chars = n_tok = unknown = words = 0
    pieces = []
    for piece in corpus.iter_text():
        text = tf.constant(piece)
        ids = tokenizer.tokenize(text).numpy()
        chars += len(piece.decode("utf-8"))
        n_tok += ids.size
        unknown += int((ids == tokenizer.unk_id).sum()) if tokenizer.unk_id is not None else 0
        w, lines = whitespace_words(text[None], count_line_ends=tokenizer.keeps_line_ends)
        words += w + lines
        if stateful:
            pieces.append(ids.astype(np.int32))
    if stateful:
        total, count = stream_nll(model, np.concatenate(pieces) if pieces else np.zeros([0], np.int32),
                                  batch_size=batch_size, block_size=block_size, max_batches=max_batches)
    else:
        total, count = _window_nll(model, corpus, block_size, batch_size, max_batches, text_windows)
    if count == 0:
        raise ValueError("no evaluation windows: the text is shorter than block_size + 1 tokens")
    loss = total / count
    per_word = total / (count * words / max(n_tok, 1)) if words else float("nan")
    return {"loss": loss, "perplexity": math.exp(loss), "perplexity_per_word": math.exp(per_word),
            "bits_per_token": loss / math.log(2), "bits_per_char": loss / math.log(2) / (chars / max(n_tok, 1)),
            "tokens": int(count), "words": int(words), "oov_rate": unknown / max(n_tok, 1), "stateful": stateful}


def _window_nll(model, corpus, block_size, batch_size, max_batches, text_windows):
    """``(summed NLL, predicted tokens)`` over independent windows of ``block_size + 1`` tokens."""
    windows = text_windows(corpus, model.tokenizer, block_size=block_size, split="all")
    ds = windows.map(lambda w: (w[:-1], w[1:])).batch(batch_size)   # keeps the last partial batch
    if max_batches:
        ds = ds.take(max_batches)
    ppl = Perplexity()
    step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for x, y in ds:
        ppl.update_state(y, step(x))
    return float(ppl.total.numpy()), float(ppl.count.numpy())
