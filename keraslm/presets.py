"""Presets: named models and their training recipes, as plain data (no TensorFlow needed to read them).

Each preset has a ``family`` (``"transformer"`` or ``"recurrent"``), a ``tokenizer`` kind (with
``tokenizer_args``), ``model`` (constructor arguments of the family's class; the vocabulary size comes
from the tokenizer at training time unless given), ``train`` (:class:`keraslm.config.TrainConfig` fields)
and ``about`` (what it is for, one line). :func:`keraslm.models.from_preset` builds the model.
"""

from __future__ import annotations

import copy

PRESETS = {
    # TensorFlow's text-generation tutorial (Embedding 256, GRU 1024, sequences of 100, batch 64, Adam).
    "char-gru": {
        "about": "character GRU of TensorFlow's text-generation tutorial",
        "family": "recurrent",
        "tokenizer": "char",
        "model": {"embedding_dim": 256, "hidden_units": 1024, "num_layers": 1, "cell": "gru"},
        "train": {"block_size": 100, "batch_size": 64, "optimizer": "adam", "learning_rate": 1e-3,
                  "min_learning_rate": 1e-3, "warmup_steps": 0, "weight_decay": 0.0, "grad_clip": 0.0},
    },
    # Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization" (arXiv:1409.2329), the
    # "small" Penn Treebank model, as their code (and TensorFlow's PTB tutorial) trains it:
    # - data: PTB as distributed (pretokenized, lowercased, rare words as <unk>, one sentence per line): split
    #   on whitespace only, case kept, <unk> is the unknown token, every line end is an <eos> token; the
    #   vocabulary is PTB's 10,000 words (<unk> and <eos> among them) plus keraslm's <pad>: 10,001 ids;
    # - model: embedding 200, 2 LSTM layers of 200, untied softmax, no dropout; every weight and bias drawn
    #   uniformly from [-0.1, 0.1] (no forget-gate bias of 1);
    # - training: stateful truncated BPTT: the text cut into 20 contiguous streams (batch 20), unrolled 20
    #   steps, the LSTM state carried from window to window and reset at each epoch; plain SGD (no momentum,
    #   no weight decay, no warmup) at learning rate 1 on the loss summed over the 20 steps and averaged over
    #   the batch, gradients clipped to global norm 5; 13 epochs, the learning rate halved (x 0.5) at the
    #   start of every epoch after the 4th (epochs 1-4: 1, epoch 5: 0.5, ..., epoch 13: 0.5^9).
    # Published perplexity: 120.7 validation, 114.5 test.
    "word-lstm-small": {
        "about": "word-level 2 x 200 LSTM, Zaremba et al. 2014 PTB small (stateful, 13 epochs; test ppl 114.5)",
        "family": "recurrent",
        "tokenizer": "word",
        "tokenizer_args": {"pretokenized": True, "line_ends": "eos", "max_tokens": 10001},
        "model": {"embedding_dim": 200, "hidden_units": 200, "num_layers": 2, "cell": "lstm", "dropout": 0.0,
                  "init_scale": 0.1},
        "train": {"windows": "stateful", "block_size": 20, "batch_size": 20, "epochs": 13, "optimizer": "sgd",
                  "learning_rate": 1.0, "schedule": "epoch_decay", "lr_decay": 0.5, "decay_after_epochs": 4,
                  "warmup_steps": 0, "weight_decay": 0.0, "grad_clip": 5.0, "loss_reduction": "sum_over_time"},
    },
    # Zaremba et al. 2014 (arXiv:1409.2329), the "medium" Penn Treebank model:
    # - data: as word-lstm-small (pretokenized PTB, <unk> kept, <eos> per line, 10,001 ids);
    # - model: embedding 650, 2 LSTM layers of 650, untied softmax; dropout 0.5 on the non-recurrent
    #   connections (embedding -> layer 1, layer 1 -> layer 2, layer 2 -> softmax); every weight and bias
    #   drawn uniformly from [-0.05, 0.05];
    # - training: stateful truncated BPTT over 20 contiguous streams (batch 20) unrolled 35 steps, state
    #   carried and reset at each epoch; plain SGD at learning rate 1 on the loss summed over the 35 steps,
    #   clipped to global norm 5; 39 epochs, the learning rate x 0.8 at the start of every epoch after the 6th.
    # Published perplexity: 86.2 validation, 82.7 test.
    "word-lstm-medium": {
        "about": "word-level 2 x 650 LSTM, dropout 0.5, Zaremba et al. 2014 PTB medium (39 epochs; test ppl 82.7)",
        "family": "recurrent",
        "tokenizer": "word",
        "tokenizer_args": {"pretokenized": True, "line_ends": "eos", "max_tokens": 10001},
        "model": {"embedding_dim": 650, "hidden_units": 650, "num_layers": 2, "cell": "lstm", "dropout": 0.5,
                  "init_scale": 0.05},
        "train": {"windows": "stateful", "block_size": 35, "batch_size": 20, "epochs": 39, "optimizer": "sgd",
                  "learning_rate": 1.0, "schedule": "epoch_decay", "lr_decay": 0.8, "decay_after_epochs": 6,
                  "warmup_steps": 0, "weight_decay": 0.0, "grad_clip": 5.0, "loss_reduction": "sum_over_time"},
    },
    # nanoGPT's CPU "baby GPT" on shakespeare_char, with two changes: a separate LM head and biases.
    # With nanoGPT's recipe below, tying the head to the 65-character embedding costs validation loss,
    # and the untied head adds only vocab x 128 weights (about 1% of the model).
    # Training uses bfloat16 products where AMX runs them (matmul_precision "auto"): the same
    # validation loss as float32 products on this recipe. The final weights are an exponential moving
    # average (momentum 0.99) of the trained ones, which lowers the validation loss a little.
    # The measured losses of each variant are in README "Benchmarks".
    "gpt-nano": {
        "about": "nanoGPT's CPU baby GPT: a character model that trains in about a minute",
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
        "about": "nanoGPT's shakespeare-char GPT (6 x 384, context 256)",
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
        "about": "the GPT-2 124M architecture (train from scratch, or fine-tune with --init)",
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


# Perplexities the papers behind presets publish (Zaremba et al. 2014, Table 1: per word, <eos> counted, the
# state carried across the whole text), for benchmarks/bench_ptb.py to print beside its own.
PUBLISHED_PERPLEXITY = {
    "word-lstm-small": {"validation": 120.7, "test": 114.5},
    "word-lstm-medium": {"validation": 86.2, "test": 82.7},
}


def preset_names():
    """Names of the presets."""
    return sorted(PRESETS)


def get_preset(name):
    """A deep copy of preset ``name``; ValueError naming the choices for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    return copy.deepcopy(PRESETS[name])


# Typical vocabulary sizes, for sizes quoted without a tokenizer: Tiny Shakespeare's characters (65) plus the
# reserved <pad>, <unk>; word and subword vocabularies at the preset's own size.
_TYPICAL_VOCAB = {"char": 67}


def approximate_parameters(name):
    """``(parameters, vocabulary size)`` of preset ``name`` at a typical vocabulary size for its tokenizer
    (the exact count depends on the vocabulary the tokenizer learns)."""
    preset = get_preset(name)
    model, args = preset["model"], preset.get("tokenizer_args", {})
    V = model.get("vocab_size") or args.get("max_tokens") or args.get("target_vocab_size") \
        or _TYPICAL_VOCAB.get(preset["tokenizer"], 50257)
    if preset["family"] == "transformer":
        C, L, T, r = model["width"], model["num_layers"], model["max_length"], model.get("mlp_ratio", 4)
        bias = model.get("use_bias", True)
        block = 3 * C * C + C * C + 2 * r * C * C + (3 * C + C + r * C + C) * bias + 2 * C * (1 + bias)
        head = 0 if model.get("tie_embeddings", True) else V * C
        return V * C + T * C + L * block + C * (1 + bias) + head, V
    E, L, cell = model["embedding_dim"], model.get("num_layers", 1), model.get("cell", "lstm")
    units = model["hidden_units"] if isinstance(model["hidden_units"], list) else [model["hidden_units"]] * L
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    total, width = V * E, E
    for u in units:
        total += gates * (width * u + u * u + u * (2 if cell == "gru" else 1))
        width = u
    return total + (0 if model.get("tie_embeddings") else width * V + V), V
