"""Presets: plain dicts of model constructor arguments plus recommended training settings.

``model`` holds constructor arguments of ``family``'s class (the vocabulary
size comes from the tokenizer at training time unless given); ``train`` holds
:class:`keraslm.training.TrainConfig` fields.
"""

from __future__ import annotations

import copy

PRESETS = {
    # TensorFlow's text-generation tutorial (Embedding 256, GRU 1024, sequences of 100, batch 64, Adam).
    "char-gru": {
        "family": "recurrent",
        "tokenizer": "char",
        "model": {"embedding_dim": 256, "hidden_units": 1024, "num_layers": 1, "cell": "gru"},
        "train": {"block_size": 100, "batch_size": 64, "optimizer": "adam", "learning_rate": 1e-3,
                  "min_learning_rate": 1e-3, "warmup_steps": 0, "weight_decay": 0.0, "grad_clip": 0.0},
    },
    # Zaremba et al. 2014, PTB "small": 2 x 200 LSTM, 20 unrolled steps, batch 20, SGD lr 1 (halved late),
    # gradient norm 5, uniform init 0.1, no dropout, 10k word vocabulary.
    "word-lstm-small": {
        "family": "recurrent",
        "tokenizer": "word",
        "tokenizer_args": {"max_tokens": 10000, "lowercase": True},
        "model": {"embedding_dim": 200, "hidden_units": 200, "num_layers": 2, "cell": "lstm", "dropout": 0.0},
        "train": {"block_size": 20, "batch_size": 20, "optimizer": "sgd", "learning_rate": 1.0,
                  "min_learning_rate": 0.5 ** 9, "warmup_steps": 0, "weight_decay": 0.0, "grad_clip": 5.0},
    },
    # Zaremba et al. 2014, PTB "medium": 2 x 650 LSTM, 35 steps, dropout 0.5, SGD lr 1 (x0.8 per epoch late).
    "word-lstm-medium": {
        "family": "recurrent",
        "tokenizer": "word",
        "tokenizer_args": {"max_tokens": 10000, "lowercase": True},
        "model": {"embedding_dim": 650, "hidden_units": 650, "num_layers": 2, "cell": "lstm", "dropout": 0.5},
        "train": {"block_size": 35, "batch_size": 20, "optimizer": "sgd", "learning_rate": 1.0,
                  "min_learning_rate": 0.8 ** 33, "warmup_steps": 0, "weight_decay": 0.0, "grad_clip": 5.0},
    },
    # nanoGPT's CPU "baby GPT" on shakespeare_char, with two changes: a separate LM head and biases.
    # With nanoGPT's recipe below, tying the head to the 65-character embedding costs validation loss,
    # and the untied head adds only vocab x 128 weights (about 1% of the model).
    # Training uses bfloat16 products where AMX runs them (matmul_precision "auto"): the same
    # validation loss as float32 products on this recipe. The final weights are an exponential moving
    # average (momentum 0.99) of the trained ones, which lowers the validation loss a little.
    # The measured losses of each variant are in README "Benchmarks".
    "gpt-nano": {
        "family": "transformer",
        "tokenizer": "char",
        "model": {"max_length": 64, "num_layers": 4, "num_heads": 4, "width": 128, "dropout": 0.0,
                  "use_bias": True, "tie_embeddings": False},
        "train": {"block_size": 64, "batch_size": 12, "steps": 2000, "optimizer": "adamw", "learning_rate": 1e-3,
                  "min_learning_rate": 1e-4, "warmup_steps": 100, "beta2": 0.99, "weight_decay": 0.1,
                  "grad_clip": 1.0, "matmul_precision": "auto", "ema_momentum": 0.99},
    },
    # nanoGPT's shakespeare_char model.
    "gpt-mini": {
        "family": "transformer",
        "tokenizer": "char",
        "model": {"max_length": 256, "num_layers": 6, "num_heads": 6, "width": 384, "dropout": 0.2,
                  "use_bias": False},
        "train": {"block_size": 256, "batch_size": 64, "steps": 5000, "optimizer": "adamw", "learning_rate": 1e-3,
                  "min_learning_rate": 1e-4, "warmup_steps": 100, "beta2": 0.99, "weight_decay": 0.1,
                  "grad_clip": 1.0, "mixed_precision": "auto"},
    },
    # GPT-2 124M architecture (GPT-2's vocabulary size; our subword tokenizer fills it when trained).
    "gpt2-small": {
        "family": "transformer",
        "tokenizer": "subword",
        "tokenizer_args": {"target_vocab_size": 50257},
        "model": {"vocab_size": 50257, "max_length": 1024, "num_layers": 12, "num_heads": 12, "width": 768,
                  "dropout": 0.0, "use_bias": True},
        "train": {"block_size": 1024, "batch_size": 12, "optimizer": "adamw", "learning_rate": 6e-4,
                  "min_learning_rate": 6e-5, "warmup_steps": 2000, "beta2": 0.95, "weight_decay": 0.1,
                  "grad_clip": 1.0, "mixed_precision": "auto"},
    },
}


def preset_names():
    """Names of the presets."""
    return sorted(PRESETS)


def get_preset(name):
    """A deep copy of preset ``name``; ValueError naming the choices for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    return copy.deepcopy(PRESETS[name])


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
