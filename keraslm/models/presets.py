"""Building the models of the presets (the presets themselves are plain data in :mod:`keraslm.presets`)."""

from __future__ import annotations

from keraslm.presets import PRESETS, get_preset, preset_names

__all__ = ["PRESETS", "from_preset", "get_preset", "preset_names"]


def from_preset(name, vocab_size=None, tokenizer=None, **overrides):
    """Builds the model of preset ``name``.

    Args:
        name: a preset name (see :func:`preset_names`).
        vocab_size: vocabulary size (default: the tokenizer's, else the preset's).
        tokenizer: optional tokenizer layer to attach (saved with the model).
        **overrides: constructor arguments replacing the preset's.

    Returns:
        A :class:`~keraslm.models.RecurrentLM` or :class:`~keraslm.models.TransformerLM`.

    Example:
        >>> model = from_preset("gpt-nano", vocab_size=65)
        >>> model.num_layers, model.width
        (4, 128)
    """
    from keraslm.models.recurrent import RecurrentLM
    from keraslm.models.transformer import TransformerLM

    preset = get_preset(name)
    args = preset["model"]
    if vocab_size is None and tokenizer is not None:
        vocab_size = tokenizer.vocab_size
    if vocab_size is not None:
        args["vocab_size"] = vocab_size
    if "vocab_size" not in args:
        raise ValueError(f"preset {name!r} needs a vocab_size (or a tokenizer)")
    args.update(overrides)
    cls = TransformerLM if preset["family"] == "transformer" else RecurrentLM
    return cls(tokenizer=tokenizer, **args)
