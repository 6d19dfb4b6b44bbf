"""``generate``: the one generation entry point of every keraslm model."""

from __future__ import annotations

import tensorflow as tf

from keraslm.generation.compiled import compiled
from keraslm.generation.decode import build_sampling_loop
from keraslm.generation.settings import continuation_text, prepare, truncate_at_stop
from keraslm.validation import positive_int

PRECISIONS = ("float32", "bfloat16")


def _loop_for(model, precision):
    return compiled(model, f"sampling_loop/{precision}", lambda get: build_sampling_loop(get, precision))


def generate(model, prompts, max_new_tokens=100, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
             repetition_penalty=1.0, seed=None, stop=None, num_beams=1, length_penalty=1.0,
             return_details=False, include_prompt=False, precision="float32"):
    """Continues each prompt with up to ``max_new_tokens`` tokens.

    Args:
        model: a keraslm language model (its tokenizer is used for strings).
        prompts: a string, a list of strings, or token ids (a list of ints or a
            list of lists / arrays). An empty prompt starts from the newline
            token when the vocabulary has one, else ``<unk>``; characters
            outside the vocabulary become ``<unk>``. Prompts longer than the
            model's context keep their last tokens (with a warning).
        max_new_tokens: scalar or one value per prompt; 0 returns the prompt's
            continuation empty. Past the model's context, generation slides
            its window (see :mod:`keraslm.generation.decode`), so any length
            may be asked for (beam search excepted).
        temperature: scalar or per-prompt; 0 is greedy.
        top_k, top_p, min_p, repetition_penalty: sampler filters (scalars or
            per prompt), see :func:`keraslm.ops.sample`. Settings are tensors:
            changing them never retraces the compiled loop.
        seed: integer; the same seed gives the same tokens on every path.
        stop: a stop string / token id, a list of them for every prompt, or
            one list per prompt. Generation of a row ends when it produces
            one; the returned text is cut before it.
        num_beams: > 1 runs beam search (deterministic; sampler settings other
            than ``repetition_penalty`` are ignored).
        length_penalty: beam scores are ``sum logprob / length ** length_penalty``.
        return_details: return a dict with ``texts``, ``ids`` (new token ids),
            ``num_tokens`` and ``logprobs`` (one entry per prompt, or the
            values themselves for a single prompt) instead of just the texts.
        include_prompt: return the prompt followed by its continuation (the
            prompt string as given, or the prompt's ids; the token ids the
            model saw, when the prompt was truncated) instead of the
            continuation alone.
        precision: ``"float32"`` (default) or ``"bfloat16"``: the one-token
            decoding steps read bfloat16 copies of the transformer blocks'
            weight matrices, made once per call (an opt-in: each weight is
            rounded to 8 significant bits, while the products still accumulate
            in float32). Decoding reads every weight once per token, so this
            halves the bytes a step reads; see
            :meth:`~keraslm.models.TransformerLM.decoding_precision`.
            Sampling only (``num_beams=1``).

    Returns:
        The continuation of each prompt (a string per prompt, or token-id lists
        when the prompts were ids), written as it continues the prompt's text:
        ``prompt + continuation`` reads as the model's text (a word model's
        continuation starts with its space); with ``include_prompt`` the prompt
        comes first. A single result for a single prompt.

    Raises:
        ValueError: invalid settings (naming the value), empty prompt list,
            out-of-vocabulary ids, a beam search longer than the context.

    Example:
        >>> import keraslm
        >>> from keraslm.models import TransformerLM
        >>> model = TransformerLM(vocab_size=10, max_length=32, num_layers=1, num_heads=2, width=8)
        >>> ids = generate(model, [1, 2, 3], max_new_tokens=5, temperature=0)
        >>> len(ids)
        5
    """
    batch = prepare(model, prompts, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
                    seed, stop)
    positive_int("num_beams", num_beams)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if num_beams > 1 and precision != "float32":
        raise ValueError(f"precision={precision!r} is for sampling; beam search (num_beams={num_beams}) decodes "
                         "in float32")
    if num_beams > 1:
        from keraslm.generation.beam import beam_search

        new_ids, logprobs = beam_search(model, batch, int(num_beams), float(length_penalty))
    else:
        out, num, lp = _loop_for(model, precision)(
            tf.constant(batch.ids), tf.constant(batch.lengths), tf.constant(batch.max_new),
            tf.constant(batch.temperature), tf.constant(batch.top_k), tf.constant(batch.top_p),
            tf.constant(batch.min_p), tf.constant(batch.repetition_penalty), tf.constant(batch.seed),
            tf.constant(batch.stop_ids))
        out, num, lp = out.numpy(), num.numpy(), lp.numpy()
        new_ids = [list(map(int, out[b, : num[b]])) for b in range(len(num))]
        logprobs = [lp[b, : num[b]].tolist() for b in range(len(num))]
    return finish(model, batch, new_ids, logprobs, return_details, include_prompt)


def finish(model, batch, new_ids, logprobs, return_details, include_prompt=False):
    """Detokenises, applies text-level stop truncation and shapes the result."""
    texts = None
    if batch.as_text or return_details:
        if model.tokenizer is not None:
            texts = [truncate_at_stop(continuation_text(model.tokenizer, batch.ids[b, :batch.lengths[b]], ids), s)
                     for b, (ids, s) in enumerate(zip(new_ids, batch.stop_strings))]
            if include_prompt:
                heads = batch.prompt_texts or [continuation_text(model.tokenizer, [], batch.ids[b, :batch.lengths[b]])
                                               for b in range(len(texts))]
                texts = [p + t for p, t in zip(heads, texts)]
    if include_prompt:
        new_ids = [list(map(int, batch.ids[b, :batch.lengths[b]])) + ids for b, ids in enumerate(new_ids)]
    if return_details:
        result = {"texts": texts, "ids": new_ids, "num_tokens": [len(i) for i in new_ids], "logprobs": logprobs}
        if batch.single:
            result = {k: (v[0] if v is not None else None) for k, v in result.items()}
        return result
    results = texts if batch.as_text else new_ids
    return results[0] if batch.single else results
