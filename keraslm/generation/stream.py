"""Streaming generation: yields text as tokens are produced."""

from __future__ import annotations

import tensorflow as tf

from keraslm.generation.compiled import compiled
from keraslm.generation.decode import decode_step, prefill
from keraslm.generation.settings import continuation_text, prepare, truncate_at_stop

def _build(get_model):
    pre = tf.function(lambda ids, lengths, max_new: prefill(get_model(), ids, lengths, max_new),
                      reduce_retracing=True)
    step = tf.function(lambda *args: decode_step(get_model(), *args), reduce_retracing=True)
    return pre, step


def _functions(model):
    return compiled(model, "stream", _build)


def stream(model, prompt, max_new_tokens=100, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
           repetition_penalty=1.0, seed=None, stop=None, callback=None):
    """Generates for one prompt, yielding each new piece of text as soon as it is decoded.

    Runs the same prefill and decoding step as :func:`~keraslm.generation.generate`
    (one compiled call per token), so the same seed gives the same text.

    Args:
        model: a keraslm language model with a tokenizer.
        prompt: one string.
        callback: optional ``callback(piece)`` called with every piece too.
        Other arguments: as :func:`~keraslm.generation.generate`.

    Yields:
        Text pieces whose concatenation is the generated continuation.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"stream() takes one string prompt, got {type(prompt).__name__}")
    batch = prepare(model, prompt, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed,
                    stop)
    pre, step = _functions(model)
    lengths, max_new = tf.constant(batch.lengths), tf.constant(batch.max_new)
    settings = [tf.constant(x) for x in (batch.temperature, batch.top_k, batch.top_p, batch.min_p,
                                         batch.repetition_penalty, batch.seed, batch.stop_ids)]
    last, cache, seq = pre(tf.constant(batch.ids), lengths, max_new)
    offset = tf.zeros_like(lengths)
    done = max_new <= 0
    ids, emitted = [], ""
    stops = batch.stop_strings[0]
    prompt_ids = batch.ids[0, :batch.lengths[0]]
    for t in range(int(batch.max_new[0])):
        tok, _, done, last, cache, seq, offset = step(tf.constant(t), done, last, cache, seq, offset, lengths,
                                                      max_new, *settings)
        tok = int(tok[0])
        if tok < 0:
            break
        ids.append(tok)
        text = truncate_at_stop(continuation_text(model.tokenizer, prompt_ids, ids), stops)
        # Hold back a trailing replacement char (an incomplete multi-byte piece).
        stable = text[:-1] if text.endswith("\ufffd") else text
        if stable.startswith(emitted) and len(stable) > len(emitted):
            piece, emitted = stable[len(emitted):], stable
            if callback is not None:
                callback(piece)
            yield piece
        if bool(done[0]):
            break
    if text_tail := _final_tail(model, prompt_ids, ids, stops, emitted):
        if callback is not None:
            callback(text_tail)
        yield text_tail


def _final_tail(model, prompt_ids, ids, stops, emitted):
    text = truncate_at_stop(continuation_text(model.tokenizer, prompt_ids, ids), stops)
    return text[len(emitted):] if text.startswith(emitted) else ""
