"""Prompt and sampler-setting preparation shared by every decoding path."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from keraslm.ops.sampling import SETTING_RULES
from keraslm.validation import INT32_MAX, is_integer

log = logging.getLogger("keraslm")


@dataclasses.dataclass
class Batch:
    """Prompts as a right-padded id matrix plus per-row settings (numpy, ready for tensors)."""

    ids: np.ndarray          # [B, P] int32, right padded with pad_id
    lengths: np.ndarray      # [B] int32, >= 1
    max_new: np.ndarray      # [B] int32
    temperature: np.ndarray  # [B] float32
    top_k: np.ndarray        # [B] int32
    top_p: np.ndarray        # [B] float32
    min_p: np.ndarray        # [B] float32
    repetition_penalty: np.ndarray  # [B] float32
    stop_ids: np.ndarray     # [B, NS, LS] int32, left padded with -1 (NS may be 0)
    stop_strings: list       # per row: list of stop strings
    seed: np.ndarray         # [2] int32
    single: bool             # the caller passed one prompt (return one result)
    as_text: bool            # prompts were strings
    prompt_texts: list = None  # the prompt strings as given (None for token-id prompts)


def _setting_per_row(value, B, name, dtype, valid, rule, integer=False, cap=None):
    """A setting given as a scalar or one value per prompt -> a checked numpy ``[B]`` array of ``dtype``.

    The values are checked before the narrowing cast: integers above ``cap`` become ``cap`` (settings
    where large means "off"), and otherwise must fit in int32.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or one number per prompt, got {value!r}") from None
    if arr.ndim == 0:
        arr = np.full([B], arr)
    if arr.shape != (B,):
        raise ValueError(f"{name} must be a scalar or have one value per prompt ({B}), got shape {arr.shape}")
    bad = ~(valid(arr) & (arr == np.round(arr) if integer else True))
    if bad.any():
        raise ValueError(f"{name} {rule}, got {arr[bad][0].item()!r}")
    if integer and cap is not None:
        arr = np.minimum(arr, cap)
    elif integer and (arr > INT32_MAX).any():
        raise ValueError(f"{name} must be at most {INT32_MAX}, got {int(arr[arr > INT32_MAX][0])}")
    return arr.astype(dtype)


def _sampler_setting(value, B, name):
    integer, valid, rule = SETTING_RULES[name]
    return _setting_per_row(value, B, name, np.int32 if integer else np.float32, valid, rule, integer,
                            cap=INT32_MAX if integer else None)   # top_k: any k >= V keeps every token


def start_token(tokenizer):
    """The token an empty prompt starts from: newline when the vocabulary has it, else ``<unk>``."""
    if tokenizer is not None:
        try:
            return int(tokenizer.token_to_id("\n"))
        except (KeyError, ValueError):
            pass
        return int(getattr(tokenizer, "unk_id", 1))
    return 0


def prepare(model, prompts, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed,
            stop):
    """Validates user arguments and tokenises prompts into a :class:`Batch`."""
    tokenizer = model.tokenizer
    single = isinstance(prompts, str) or (isinstance(prompts, (list, tuple, np.ndarray)) and len(prompts) > 0
                                          and np.ndim(prompts[0]) == 0 and not isinstance(prompts[0], str))
    if isinstance(prompts, str) or (single and not isinstance(prompts, str)):
        prompts = [prompts]
    if isinstance(prompts, tf.RaggedTensor):
        prompts = prompts.to_list()
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: pass a string, a list of strings, or token ids")
    as_text = isinstance(prompts[0], str)
    if as_text:
        if tokenizer is None:
            raise ValueError("string prompts need a model with a tokenizer; pass token ids instead")
        rows = [list(map(int, r)) for r in tokenizer(tf.constant(prompts)).to_list()]
    else:
        rows = [list(map(int, np.asarray(r).ravel())) for r in prompts]
        for r in rows:
            bad = [i for i in r if not 0 <= i < model.vocab_size]
            if bad:
                raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {model.vocab_size})")
    B = len(rows)
    max_new = _setting_per_row(max_new_tokens, B, "max_new_tokens", np.int32, lambda a: a >= 0,
                               "must be a non-negative integer", integer=True)
    context = model.max_length
    start = start_token(tokenizer)
    for i, r in enumerate(rows):
        if not r:
            rows[i] = [start]
        if context is not None and len(rows[i]) > context:
            log.warning("prompt %d has %d tokens; keeping its last %d (the model's context)", i, len(rows[i]),
                        context)
            rows[i] = rows[i][-context:]
    lengths = np.array([len(r) for r in rows], np.int32)
    pad = int(getattr(tokenizer, "pad_id", 0)) if tokenizer is not None else 0
    ids = np.full((B, lengths.max()), pad, np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    settings = {name: _sampler_setting(value, B, name) for name, value in (
        ("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("min_p", min_p),
        ("repetition_penalty", repetition_penalty))}
    stop_strings, stop_ids = _stops(stop, B, tokenizer)
    if seed is None:
        seed = np.random.randint(0, 2**31 - 1)
    if not is_integer(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    seed_arr = np.array([int(seed) % (2**31), (int(seed) >> 31) % (2**31)], np.int32)
    return Batch(ids, lengths, max_new, stop_ids=stop_ids, stop_strings=stop_strings, seed=seed_arr,
                 single=single, as_text=as_text, prompt_texts=list(prompts) if as_text else None, **settings)


def _stops(stop, B, tokenizer):
    """Stop strings / token ids -> per-row lists and a [B, NS, LS] id array (left padded with -1)."""
    if stop is None:
        per_row = [[] for _ in range(B)]
    elif isinstance(stop, (str, int)) or (isinstance(stop, (list, tuple)) and stop and
                                          all(isinstance(s, (str, int)) for s in stop)):
        items = [stop] if isinstance(stop, (str, int)) else list(stop)
        per_row = [items for _ in range(B)]
    else:
        per_row = [[] if s is None else ([s] if isinstance(s, (str, int)) else list(s)) for s in stop]
        if len(per_row) != B:
            raise ValueError(f"stop must be one list for all prompts or one list per prompt ({B}), got {len(per_row)}")
    seqs, strings = [], []
    for items in per_row:
        row_seqs, row_strings = [], []
        for s in items:
            if isinstance(s, str):
                if not s:
                    raise ValueError("stop strings must not be empty")
                if tokenizer is None:
                    raise ValueError("stop strings need a model with a tokenizer; pass stop token ids")
                row_strings.append(s)
                row_seqs.append([int(t) for t in tokenizer(tf.constant([s])).to_list()[0]])
            elif is_integer(s):
                row_seqs.append([int(s)])
            else:
                raise ValueError(f"a stop entry must be a string or a token id, got {s!r}")
        seqs.append(row_seqs)
        strings.append(row_strings)
    NS = max((len(r) for r in seqs), default=0)
    LS = max((len(s) for r in seqs for s in r), default=1)
    arr = np.full((B, NS, LS), -1, np.int32)
    for b, r in enumerate(seqs):
        for j, s in enumerate(r):
            arr[b, j, LS - len(s):] = s
    return strings, arr


def continuation_text(tokenizer, prompt_ids, new_ids):
    """The text of ``new_ids`` as it continues the prompt's text.

    Detokenizing the new ids alone loses what joins them to the prompt (a word
    tokenizer puts a space between words, so ``"the king"`` + ``"my"`` must come
    back as ``" my"``): this detokenizes prompt and continuation together and
    returns what follows the prompt's own text.
    """
    if len(new_ids) == 0:
        return ""

    def text(ids):
        return tokenizer.detokenize(tf.constant([list(ids)], tf.int32))[0].numpy().decode("utf-8", "replace")

    head, full = text(prompt_ids), text(list(prompt_ids) + list(new_ids))
    return full[len(head):] if full.startswith(head) else text(new_ids)


def truncate_at_stop(text, stops):
    """Cuts ``text`` before the first occurrence of any stop string."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]
