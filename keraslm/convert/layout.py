"""keraslm's side of every conversion table: a TransformerLM's weights by GPT-2-style names, and the tables.

Each foreign format (``hf_gpt2``, ``keras_hub_gpt2``, ``nanogpt``) writes a
:class:`Table` of :class:`Rule` rows ``(ours, theirs, to_ours, to_theirs)``:
our weight name, the foreign tensor name(s), and the array conversions
(transposes, reshapes and concatenations are spelled out in the row). A
reader hands the table every foreign tensor; the table fills exactly the
weights the model has and refuses, in one line, anything missing, unknown
or of the wrong shape.

Our names (``{i}`` is the block index)::

    wte                         [V, C]      token embedding (the LM head when tied)
    wpe                         [P, C]      learned positions
    h.{i}.ln_1.gamma / .beta    [C]
    h.{i}.attn.c_attn.kernel    [C, 3C]     columns [q | k | v], heads inside each
    h.{i}.attn.c_attn.bias      [3C]
    h.{i}.attn.c_proj.kernel    [C, C]      rows are heads x head_dim
    h.{i}.attn.c_proj.bias      [C]
    h.{i}.ln_2.gamma / .beta    [C]
    h.{i}.mlp.c_fc.kernel       [C, F]
    h.{i}.mlp.c_fc.bias         [F]
    h.{i}.mlp.c_proj.kernel     [F, C]
    h.{i}.mlp.c_proj.bias       [C]
    ln_f.gamma / .beta          [C]
    lm_head.kernel              [C, V]      only when the head is untied

Biases and LayerNorm betas exist only with ``use_bias=True``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


def same(a):
    """The array itself (a row whose layouts agree)."""
    return a


def transpose(a):
    """``[out, in]`` (PyTorch ``nn.Linear``) <-> ``[in, out]`` (Keras ``Dense``)."""
    return np.ascontiguousarray(a.T)


def our_weights(model):
    """``{our name: keras Variable}`` of a built :class:`~keraslm.models.TransformerLM`.

    Example:
        >>> from keraslm.models import TransformerLM
        >>> model = TransformerLM(vocab_size=7, max_length=4, num_layers=1, num_heads=2, width=4, use_bias=False)
        >>> model.build((None, None))
        >>> {name: tuple(v.shape) for name, v in our_weights(model).items() if not name.startswith("h.0.ln")}
        ... # doctest: +NORMALIZE_WHITESPACE
        {'wte': (7, 4), 'wpe': (4, 4), 'h.0.attn.c_attn.kernel': (4, 12), 'h.0.attn.c_proj.kernel': (4, 4),
         'h.0.mlp.c_fc.kernel': (4, 16), 'h.0.mlp.c_proj.kernel': (16, 4), 'ln_f.gamma': (4,)}
    """
    names = {"wte": model.wte.embeddings}
    if model.position_embedding == "learned":
        names["wpe"] = model.wpe.embeddings

    def norm(prefix, layer):
        names[f"{prefix}.gamma"] = layer.gamma
        if layer.center:
            names[f"{prefix}.beta"] = layer.beta

    def dense(prefix, layer):
        names[f"{prefix}.kernel"] = layer.kernel
        if layer.use_bias:
            names[f"{prefix}.bias"] = layer.bias

    for i, block in enumerate(model.blocks):
        norm(f"h.{i}.ln_1", block.ln_1)
        dense(f"h.{i}.attn.c_attn", block.attn.c_attn)
        dense(f"h.{i}.attn.c_proj", block.attn.c_proj)
        norm(f"h.{i}.ln_2", block.ln_2)
        dense(f"h.{i}.mlp.c_fc", block.c_fc)
        dense(f"h.{i}.mlp.c_proj", block.c_proj)
    norm("ln_f", model.ln_f)
    if model.lm_head is not None:
        names["lm_head.kernel"] = model.lm_head.kernel
    return names


@dataclasses.dataclass(frozen=True)
class Rule:
    """One row of a table.

    Attributes:
        ours: our weight name (``{i}`` for the block index).
        theirs: the foreign tensor name, or a tuple of names that together
            make our weight; ``{i}`` stands for the block index and other
            ``{fields}`` for what the reader passes (a string, or a function of
            the block index), e.g. ``{p}`` for a prefix like ``"transformer."``.
        to_ours: foreign array(s) -> our array.
        to_theirs: our array -> the foreign array (or a tuple, one per name);
            ``None`` where keraslm does not write the format.
    """

    ours: str
    theirs: str | tuple
    to_ours: Callable = same
    to_theirs: Callable | None = same

    def names(self, i, fields):
        theirs = (self.theirs,) if isinstance(self.theirs, str) else self.theirs
        return self.ours.format(i=i), tuple(_fill(t, i, fields) for t in theirs)


def _fill(name, i, fields):
    return name.format(i=i, **{k: v(i) if callable(v) else v for k, v in fields.items()})


def _listing(names, limit=4):
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class Table:
    """The name table of one foreign format.

    Args:
        rules: the :class:`Rule` rows; rows with ``{i}`` in ``ours`` repeat per block.
        ignored: foreign names that carry no weight (placeholders as in rules),
            e.g. the causal-mask buffers of old Hugging Face checkpoints.
    """

    def __init__(self, rules, ignored=()):
        self.rules, self.ignored = tuple(rules), tuple(ignored)

    def _expand(self, num_layers, fields):
        for rule in self.rules:
            for i in range(num_layers) if "{i}" in rule.ours else [None]:
                ours, theirs = rule.names(i, fields)
                yield rule, ours, theirs

    def _ignored(self, num_layers, fields):
        return {_fill(name, i, fields) for name in self.ignored
                for i in (range(num_layers) if "{i}" in name else [None])}

    def to_ours(self, foreign, model, source, **fields):
        """Converts a foreign ``{name: array}`` into ``{our name: float32 array}`` for ``model``'s weights.

        Args:
            foreign: every tensor of the checkpoint (name -> numpy array).
            model: the built TransformerLM the arrays are for (its weights decide
                what is needed: biases only with ``use_bias``, ``lm_head`` only untied).
            source: the file named in error messages.
            **fields: what the placeholders of the foreign names stand for.

        Raises:
            ValueError: in one line, naming missing, unknown or misshapen tensors.
        """
        wanted = our_weights(model)
        arrays, missing, used = {}, [], set()
        for rule, ours, theirs in self._expand(len(model.blocks), fields):
            if ours not in wanted:
                continue
            absent = [t for t in theirs if t not in foreign]
            if absent:
                missing += absent
                continue
            value = np.asarray(rule.to_ours(*(foreign[t] for t in theirs)), np.float32)
            expected = tuple(wanted[ours].shape)
            if value.shape != expected:
                got = " + ".join(f"{t} {tuple(np.shape(foreign[t]))}" for t in theirs)
                raise ValueError(f"{source}: {got} does not fit keraslm's {ours} of shape {expected} "
                                 "(the config and the weights disagree)")
            arrays[ours] = value
            used.update(theirs)
        if missing:
            raise ValueError(f"{source} lacks weights: {_listing(missing)}")
        unplaced = set(wanted) - set(arrays)
        if unplaced:  # a table bug, not a user error
            raise AssertionError(f"no rule fills keraslm's {_listing(unplaced)}")
        unknown = set(foreign) - used - self._ignored(len(model.blocks), fields)
        if unknown:
            raise ValueError(f"{source} has weights that this model has no place for: {_listing(unknown)}")
        return arrays

    def to_theirs(self, model, **fields):
        """``{foreign name: array}`` of ``model``'s weights (for writers)."""
        ours = {name: v.numpy() for name, v in our_weights(model).items()}
        out = {}
        for rule, name, theirs in self._expand(len(model.blocks), fields):
            if name not in ours or rule.to_theirs is None:
                continue
            values = rule.to_theirs(ours[name])
            values = values if isinstance(values, tuple) else (values,)
            out.update({t: np.ascontiguousarray(v) for t, v in zip(theirs, values)})
        return out


def assign(model, arrays):
    """Writes ``{our name: array}`` (from :meth:`Table.to_ours`) into ``model``'s variables."""
    for name, variable in our_weights(model).items():
        variable.assign(arrays[name])


def tied_head_check(foreign, head, embedding, source):
    """Drops a tied head's duplicate ``head`` from ``foreign``; refuses one that differs from ``embedding``."""
    if head in foreign:
        if embedding in foreign and not np.array_equal(foreign[head], foreign[embedding]):
            raise ValueError(f"{source}: {head} differs from {embedding}, but the config ties them")
        foreign = {k: v for k, v in foreign.items() if k != head}
    return foreign
