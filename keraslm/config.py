"""Training settings: one flat dataclass whose fields are the harness's options and the CLI's flags.

Importing this module needs no TensorFlow (``keraslm --help`` builds its flags from it). Each field's
comment is its documentation: the CLI shows it as the flag's help.
"""

from __future__ import annotations

import dataclasses

from keraslm.presets import get_preset
from keraslm.validation import non_negative_int, number, positive_int


@dataclasses.dataclass
class TrainConfig:
    """Training settings. Preset values override these defaults; explicit values override presets."""

    preset: str = "gpt-nano"            # model preset (keraslm.models.preset_names()): the model and the defaults
    init: str = ""                      # start from this model instead of the preset's (a run, a .keras file, a
                                        # Hugging Face or keras-hub GPT-2 directory, a nanoGPT ckpt.pt): its
                                        # architecture and tokenizer are kept (fine-tuning)
    data: list = dataclasses.field(default_factory=list)  # training text files or globs
    out: str = "runs/keraslm"           # run directory: checkpoints/, logs/, model.keras, metrics.json
    steps: int = 2000                   # optimizer steps in total (when epochs is 0)
    epochs: int = 0                     # passes over the training split (0 = use steps; a steps given explicitly
                                        # turns a preset's epochs off); one epoch is (training tokens //
                                        # batch_size - 1) // block_size steps
    batch_size: int = 12                # windows per step (global batch under a distribution strategy)
    block_size: int = 64                # tokens per window
    tokenizer: str = ""                 # "char" | "word" | "subword" | "bpe" ("" = the preset's)
    tokenizer_args: dict = dataclasses.field(default_factory=dict)  # tokenizer constructor arguments over the
                                        # preset's (CLI: JSON), e.g. {"pretokenized": false, "line_ends": "newline"}
    vocab_size: int = 0                 # word/subword/bpe vocabulary size (0 = the preset's default)
    optimizer: str = "adamw"            # "adamw" | "adam" | "sgd"
    learning_rate: float = 1e-3         # peak learning rate
    min_learning_rate: float = 1e-4     # cosine floor
    warmup_steps: int = 100             # linear warmup
    decay_steps: int = 0                # end of the cosine (0 = steps)
    schedule: str = "cosine"            # "cosine": warmup, then cosine to min_learning_rate (constant when
                                        # min_learning_rate == learning_rate and no warmup); "epoch_decay":
                                        # learning_rate x lr_decay per epoch after decay_after_epochs (Zaremba)
    lr_decay: float = 1.0               # "epoch_decay" factor per epoch
    decay_after_epochs: int = 0         # "epoch_decay": epochs at the initial learning rate
    weight_decay: float = 0.1           # AdamW decoupled decay (not on norms, biases, embeddings)
    beta1: float = 0.9                  # Adam/AdamW first-moment decay
    beta2: float = 0.99                 # Adam/AdamW second-moment decay
    grad_clip: float = 1.0              # global-norm clipping (0 = off)
    loss_reduction: str = "mean"        # "mean": the loss is the mean over every token; "sum_over_time": summed
                                        # over a window's positions, mean over the batch (Zaremba et al.'s, so
                                        # their learning rate and clipping apply as published)
    ema_momentum: float = 0.0           # exponential moving average of the weights (Keras use_ema; 0 = off): the
                                        # final model (saved, evaluated, returned) holds the average; its
                                        # momentum warms up as min(m, (1 + t) / (10 + t)) at step t
    dropout: float = -1.0               # model dropout (-1 = the preset's)
    model_args: dict = dataclasses.field(default_factory=dict)  # preset constructor overrides (CLI: JSON)
    validation_fraction: float = 0.1    # last fraction of the corpus held out
    validation_data: list = dataclasses.field(default_factory=list)  # validation text files (default: the last
                                        # validation_fraction of data; given, all of data trains)
    windows: str = "random"             # "random": random offsets each step (nanoGPT; corpus held in memory,
                                        # falls back to "sequential" past 2^28 tokens); "sequential": streamed
                                        # windows at fixed offsets, shuffled, each token once per epoch;
                                        # "stateful": batch_size contiguous streams read in order, recurrent
                                        # state carried from window to window, zero at each epoch (truncated
                                        # BPTT, Zaremba et al.); its validation carries the state too
    eval_steps: int = 20                # validation batches per periodic evaluation (0 = the whole split);
                                        # metrics.json's val_loss always covers the whole split
    checkpoint_every: int = 250         # steps between checkpoints and validation runs
    log_every: int = 0                  # steps between rows of logs/training.csv and TensorBoard scalars
                                        # (0 = about 100 per run: max(1, steps // 100))
    seed: int = 1337                    # random seed: initial weights, data order, dropout
    mixed_precision: str = "off"        # "on": mixed_bfloat16 (bfloat16 compute, float32 weights); "auto": on
                                        # where bfloat16 matmuls have hardware support (AMX-BF16 CPUs, GPUs of
                                        # compute capability >= 8); "off"; the saved model.keras computes in float32
    matmul_precision: str = "float32"   # dense-layer products in training: "float32"; "bfloat16" (inputs rounded
                                        # to bfloat16, float32 sums and weights: keraslm.ops.set_matmul_precision);
                                        # "auto": bfloat16 where AMX runs it. Evaluation and the saved model: float32
    strategy: str = "default"           # "default" | "mirrored" | "multi_worker" (TF_CONFIG), or a Strategy
    deterministic: bool = False         # enable TF op determinism (bit-reproducible runs)
    jit_compile: str = "auto"           # "auto" | "on" | "off": XLA for the train step
    steps_per_execution: int = 0        # train steps per compiled call (0 = auto: 10 with XLA, else 1)
    ops: str = "auto"                   # keraslm.ops switch: "auto" | "custom" | "reference"
    resume: bool = True                 # continue from <out>/checkpoints when present (the settings must match
                                        # the run's config.json; steps may grow)
    overwrite: bool = False             # start over: delete <out>'s checkpoints, logs, model and records first
    verbose: int = 1                    # Keras progress bar: 0 silent, 1 bar, 2 one line per epoch

    @classmethod
    def from_preset(cls, preset="gpt-nano", **overrides):
        """The preset's recommended settings with ``overrides`` on top."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        values = {"preset": preset, **get_preset(preset)["train"], **overrides}
        if "steps" in overrides and "epochs" not in overrides:
            values["epochs"] = 0             # the steps asked for, not the preset's epochs
        return cls(**values)

    def validate(self):
        """Raises ValueError naming the first setting that is out of range (before any work is done)."""
        if not self.data:
            raise ValueError("no training data: pass data=[file, ...]")
        for name in ("steps", "batch_size", "block_size", "checkpoint_every"):
            positive_int(name, getattr(self, name))
        for name in ("vocab_size", "warmup_steps", "decay_steps", "eval_steps", "steps_per_execution", "seed",
                     "log_every", "epochs", "decay_after_epochs"):
            non_negative_int(name, getattr(self, name))
        number("learning_rate", self.learning_rate, low=0, low_open=True)
        for name in ("min_learning_rate", "weight_decay", "grad_clip"):
            number(name, getattr(self, name), low=0)
        for name in ("beta1", "beta2", "ema_momentum", "validation_fraction"):
            number(name, getattr(self, name), low=0, high=1, high_open=True)
        if self.dropout != -1:
            number("dropout", self.dropout, low=0, high=1, high_open=True)
        for name in ("model_args", "tokenizer_args"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict of constructor arguments, got {getattr(self, name)!r}")
        if not isinstance(self.validation_data, list):
            raise ValueError(f"validation_data must be a list of files, got {self.validation_data!r}")
        number("lr_decay", self.lr_decay, low=0, high=1, low_open=True)
        for name, choices in (("schedule", ("cosine", "epoch_decay")), ("loss_reduction", ("mean", "sum_over_time"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be {' or '.join(map(repr, choices))}, got {getattr(self, name)!r}")
        for name in ("deterministic", "resume", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.windows not in ("random", "sequential", "stateful"):
            raise ValueError(f"windows must be 'random', 'sequential' or 'stateful', got {self.windows!r}")
        get_preset(self.preset)
        return self

    def record(self):
        """The settings as written to ``config.json`` (a strategy object by its class name)."""
        strategy = self.strategy if isinstance(self.strategy, str) else type(self.strategy).__name__
        return {**dataclasses.asdict(self), "strategy": strategy}
