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
    """Generates, yielding each new piece of text as soon as it is decoded.

    Runs the same prefill and decoding step as :func:`~keraslm.generation.generate`
    (one compiled call per token), so the same seed gives the same text.

    Args:
        model: a keraslm language model with a tokenizer.
        prompt: one string, or a list of strings generated side by side in one batch.
        callback: optional ``callback(piece)`` called with everything that is yielded too.
        Other arguments: as :func:`~keraslm.generation.generate` (per-prompt lists included).

    Yields:
        For one string: text pieces whose concatenation is the continuation. For a list: after
        each decoding step, a list with one piece per prompt (``""`` where a row has nothing new
        or is finished); row ``i``'s pieces concatenate to its continuation, which equals
        ``generate(prompt, ...)[i]``.
    """
    single = isinstance(prompt, str)
    if not single and not (isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt)):
        raise ValueError(f"stream() takes a string or a non-empty list of strings, got {prompt!r:.80}")
    prompts = [prompt] if single else list(prompt)
    batch = prepare(model, prompts, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed,
                    stop)
    pre, step = _functions(model)
    lengths, max_new = tf.constant(batch.lengths), tf.constant(batch.max_new)
    settings = [tf.constant(x) for x in (batch.temperature, batch.top_k, batch.top_p, batch.min_p,
                                         batch.repetition_penalty, batch.seed, batch.stop_ids)]
    last, cache, seq = pre(tf.constant(batch.ids), lengths, max_new)
    offset = tf.zeros_like(lengths)
    done = max_new <= 0
    rows = [_Row(model, batch.ids[i, :batch.lengths[i]], batch.stop_strings[i]) for i in range(len(prompts))]
    for t in range(int(max(batch.max_new))):
        tok, _, done, last, cache, seq, offset = step(tf.constant(t), done, last, cache, seq, offset, lengths,
                                                      max_new, *settings)
        pieces = [row.add(int(x)) for row, x in zip(rows, tok.numpy())]
        if any(pieces) or not single:                # (a batch reports every step)
            out = pieces[0] if single else pieces
            if callback is not None:
                callback(out)
            yield out
        if bool(tf.reduce_all(done)):
            break
    tails = [row.tail() for row in rows]
    if any(tails):
        out = tails[0] if single else tails
        if callback is not None:
            callback(out)
        yield out


class _Row:
    """One prompt's continuation: what has been yielded, and the stable text that is not yet."""

    def __init__(self, model, prompt_ids, stops):
        self.model, self.prompt_ids, self.stops = model, prompt_ids, stops
        self.ids, self.emitted, self.finished = [], "", False

    def _text(self):
        return truncate_at_stop(continuation_text(self.model.tokenizer, self.prompt_ids, self.ids), self.stops)

    def add(self, tok):
        """The new piece after token ``tok`` (a negative id: the row has finished)."""
        if self.finished or tok < 0:
            self.finished = True
            return ""
        self.ids.append(tok)
        text = self._text()
        stable = text[:-1] if text.endswith("\ufffd") else text   # (an incomplete multi-byte piece waits)
        if stable.startswith(self.emitted) and len(stable) > len(self.emitted):
            piece, self.emitted = stable[len(self.emitted):], stable
            return piece
        return ""

    def tail(self):
        text = self._text()
        return text[len(self.emitted):] if text.startswith(self.emitted) else ""
