"""The one training harness for every keraslm language model.

Python::

    import keraslm
    result = keraslm.train(preset="gpt-nano", data=["input.txt"], steps=2000, out="runs/nano")

CLI::

    keraslm train --preset gpt-nano --data input.txt --steps 2000 --out runs/nano
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import keras
import tensorflow as tf

from keraslm import ops
from keraslm.atomic import atomic_write_text
from keraslm.checkpoint import Checkpointer, atomic_save_model, read_state
from keraslm.evaluation import check_vocabulary
from keraslm.metrics import BitsPerToken, Perplexity, TokenCrossEntropy
from keraslm.models.presets import from_preset, get_preset
from keraslm.optimizers import WarmupCosine, make_optimizer
from keraslm.precision import float32_copy, make_strategy, resolve_matmul_precision, use_mixed_precision, use_xla
from keraslm.validation import positive_int

log = logging.getLogger("keraslm")


@dataclasses.dataclass
class TrainConfig:
    """Training settings. Preset values override these defaults; explicit values override presets."""

    preset: str = "gpt-nano"            # model preset (keraslm.models.preset_names())
    data: list = dataclasses.field(default_factory=list)  # training text files or globs
    out: str = "runs/keraslm"           # run directory: checkpoints/, logs/, model.keras, metrics.json
    steps: int = 2000                   # optimizer steps in total
    batch_size: int = 12                # windows per step (global batch under a distribution strategy)
    block_size: int = 64                # tokens per window
    tokenizer: str = ""                 # "char" | "word" | "subword" ("" = the preset's)
    vocab_size: int = 0                 # word/subword vocabulary size (0 = the preset's default)
    optimizer: str = "adamw"            # "adamw" | "adam" | "sgd"
    learning_rate: float = 1e-3         # peak learning rate
    min_learning_rate: float = 1e-4     # cosine floor
    warmup_steps: int = 100             # linear warmup
    decay_steps: int = 0                # end of the cosine (0 = steps)
    weight_decay: float = 0.1           # AdamW decoupled decay (not on norms, biases, embeddings)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0              # global-norm clipping (0 = off)
    ema_momentum: float = 0.0           # exponential moving average of the weights (Keras use_ema; 0 = off): the
                                        # final model (saved, evaluated, returned) holds the average
    dropout: float = -1.0               # model dropout (-1 = the preset's)
    model_args: dict = dataclasses.field(default_factory=dict)  # preset constructor overrides (CLI: JSON)
    validation_fraction: float = 0.1    # last fraction of the corpus held out
    windows: str = "random"             # "random": random offsets each step (nanoGPT; corpus held in memory,
                                        # falls back to "sequential" past 2^28 tokens); "sequential": streamed
                                        # windows at fixed offsets, shuffled, each token once per epoch
    eval_steps: int = 20                # validation batches per periodic evaluation (0 = the whole split);
                                        # metrics.json's val_loss always covers the whole split
    checkpoint_every: int = 250         # steps between checkpoints and validation runs
    seed: int = 1337
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
    resume: bool = True                 # continue from <out>/checkpoints when present
    verbose: int = 1                    # Keras progress bar: 0 silent, 1 bar, 2 one line per epoch

    @classmethod
    def from_preset(cls, preset="gpt-nano", **overrides):
        """The preset's recommended settings with ``overrides`` on top."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        values = {"preset": preset, **get_preset(preset)["train"], **overrides}
        return cls(**values)


def compile_model(model, cfg):
    """Compiles ``model`` with the harness's loss, metrics, optimizer and schedule."""
    decay = cfg.decay_steps or cfg.steps
    if cfg.min_learning_rate == cfg.learning_rate and cfg.warmup_steps == 0:
        lr = cfg.learning_rate
    else:
        lr = WarmupCosine(cfg.learning_rate, min(cfg.min_learning_rate, cfg.learning_rate),
                          min(cfg.warmup_steps, decay), decay)
    opt = make_optimizer(cfg.optimizer, lr, weight_decay=cfg.weight_decay, beta1=cfg.beta1, beta2=cfg.beta2,
                         grad_clip=cfg.grad_clip, ema_momentum=cfg.ema_momentum)
    xla = use_xla(cfg.jit_compile, model)
    if cfg.steps_per_execution < 0:
        raise ValueError(f"steps_per_execution must be >= 0 (0 = auto), got {cfg.steps_per_execution!r}")
    # Several steps per call save the per-call overhead of an XLA step; without XLA, Keras' multi-step
    # loop around recurrent layers (a while loop inside a while loop) is much slower (README, Training).
    steps_per_execution = cfg.steps_per_execution or (10 if xla else 1)
    model.compile(optimizer=opt, loss=TokenCrossEntropy(), metrics=[Perplexity(), BitsPerToken()],
                  jit_compile=xla, steps_per_execution=steps_per_execution)
    return model


class _Throughput(keras.callbacks.Callback):
    """Training wall time and tokens/s, excluding validation."""

    def __init__(self, tokens_per_step, steps_per_epoch):
        super().__init__()
        self.tokens_per_step, self.steps_per_epoch = tokens_per_step, steps_per_epoch
        self.train_seconds, self.steps, self._t0 = 0.0, 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()
        self.steps += self.steps_per_epoch

    def _stop(self):
        if self._t0 is not None:
            self.train_seconds += time.perf_counter() - self._t0
            self._t0 = None

    @property
    def tokens_per_second(self):
        return self.steps * self.tokens_per_step / max(self.train_seconds, 1e-9)


def _build_model_and_tokenizer(cfg, model, tokenizer):
    from keraslm.data import fit_tokenizer

    preset = get_preset(cfg.preset)
    if model is not None:
        tokenizer = tokenizer or model.tokenizer
        if tokenizer is None:
            raise ValueError("a model passed to train() needs a tokenizer (argument or model.tokenizer)")
        check_vocabulary(model, tokenizer)
        if model.tokenizer is None:
            model.tokenizer = tokenizer
        return model, tokenizer
    if tokenizer is None:
        kind = cfg.tokenizer or preset["tokenizer"]
        kwargs = dict(preset.get("tokenizer_args", {})) if kind == preset["tokenizer"] else {}
        if cfg.vocab_size and kind == "word":
            kwargs["max_tokens"] = cfg.vocab_size
        elif cfg.vocab_size and kind == "subword":
            kwargs["target_vocab_size"] = cfg.vocab_size
        tokenizer = fit_tokenizer(kind, cfg.data, validation_fraction=cfg.validation_fraction, **kwargs)
    overrides = {}
    if cfg.dropout >= 0:
        overrides["dropout"] = cfg.dropout
    if preset["family"] == "transformer":
        overrides["max_length"] = max(cfg.block_size, preset["model"]["max_length"])
    overrides.update(cfg.model_args)
    model = from_preset(cfg.preset, vocab_size=tokenizer.vocab_size, tokenizer=tokenizer, **overrides)
    return model, tokenizer


def _datasets(cfg, tokenizer):
    """(train dataset starting after N batches: a function of N, validation dataset)."""
    from keraslm.data import lm_dataset, random_windows, split_tokens

    if cfg.windows not in ("random", "sequential"):
        raise ValueError(f"windows must be 'random' or 'sequential', got {cfg.windows!r}")
    tokens = None
    if cfg.windows == "random":
        tokens = split_tokens(cfg.data, tokenizer, "train", cfg.validation_fraction)
        if tokens is None:
            log.info("training split too large to hold in memory: streaming sequential windows")
    if tokens is not None:
        def train_from(skip):
            return random_windows(tokens, block_size=cfg.block_size, batch_size=cfg.batch_size, seed=cfg.seed,
                                  start_step=skip)
    else:
        train_ds = lm_dataset(cfg.data, tokenizer, block_size=cfg.block_size, batch_size=cfg.batch_size,
                              split="train", validation_fraction=cfg.validation_fraction, shuffle=True,
                              seed=cfg.seed, repeat=True)

        # The order of batches is a deterministic function of the seed, so a
        # resumed run continues exactly where the checkpoint left off.
        def train_from(skip):
            return train_ds.skip(skip)
    val_ds = full_val = None
    if cfg.validation_fraction > 0:
        full_val = lm_dataset(cfg.data, tokenizer, block_size=cfg.block_size, batch_size=cfg.batch_size,
                              split="validation", validation_fraction=cfg.validation_fraction, shuffle=False)
        val_ds = full_val
        if cfg.eval_steps > 0:
            # The same eval_steps batches of random windows from the whole split at every evaluation.
            val_tokens = split_tokens(cfg.data, tokenizer, "validation", cfg.validation_fraction)
            if val_tokens is not None and val_tokens.size > cfg.block_size:
                val_ds = random_windows(val_tokens, block_size=cfg.block_size, batch_size=cfg.batch_size,
                                        seed=cfg.seed + 1).take(cfg.eval_steps)
            else:
                val_ds = full_val.take(cfg.eval_steps)
    return train_from, val_ds, full_val


def train(config=None, *, model=None, tokenizer=None, callbacks=(), **overrides):
    """Trains a language model with Keras ``fit`` and writes a complete run directory.

    Args:
        config: a :class:`TrainConfig` (default: the preset's settings).
        model: optional model to train instead of building the preset's.
        tokenizer: optional tokenizer (default: learned from the training split).
        callbacks: extra Keras callbacks for ``fit``.
        **overrides: :class:`TrainConfig` fields (``preset`` picks the defaults).

    Returns:
        A dict of final metrics (also written to ``<out>/metrics.json``) with
        ``model`` the trained Keras model.

    The run directory holds ``checkpoints/last.keras`` (model + optimizer,
    written atomically every ``checkpoint_every`` steps), ``logs/`` (TensorBoard
    and ``training.csv``), the final ``model.keras`` and ``metrics.json``.
    With mixed precision, the final model (returned and saved) computes in float32. If
    ``checkpoints/`` exists and ``resume`` is true, training continues from it
    with the same data order and learning-rate schedule.
    """
    if config is None:
        config = TrainConfig.from_preset(overrides.pop("preset", "gpt-nano"), **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    cfg = config
    if not cfg.data:
        raise ValueError("no training data: pass data=[file, ...]")
    for name in ("steps", "batch_size", "block_size", "checkpoint_every"):
        positive_int(name, getattr(cfg, name))
    if not 0.0 <= cfg.ema_momentum < 1.0:
        raise ValueError(f"ema_momentum must be in [0, 1), got {cfg.ema_momentum!r}")
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    ops.set_implementation(cfg.ops)
    resolve_matmul_precision(cfg.matmul_precision)  # bad values fail before any work
    bf16 = use_mixed_precision(cfg.mixed_precision)
    previous_policy = keras.mixed_precision.dtype_policy()
    # The policy applies to the models built (or resumed) for this run only.
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if bf16 else previous_policy)
    try:
        return _run(cfg, model, tokenizer, callbacks, bf16)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def _run(cfg, model, tokenizer, callbacks, bf16):
    strategy = make_strategy(cfg.strategy)
    ckpt_dir = os.path.join(cfg.out, "checkpoints")
    state = read_state(ckpt_dir) if cfg.resume else None
    with strategy.scope():
        if state is not None:
            model = keras.saving.load_model(os.path.join(ckpt_dir, "last.keras"))
            tokenizer = model.tokenizer
            done = int(model.optimizer.iterations.numpy())
            log.info("resuming %s from step %d", cfg.out, done)
        else:
            model, tokenizer = _build_model_and_tokenizer(cfg, model, tokenizer)
            model.build_for_inference()
            compile_model(model, cfg)
            done = 0
    if done >= cfg.steps:
        log.info("%s already trained for %d steps", cfg.out, done)
    train_from, val_ds, full_val = _datasets(cfg, tokenizer)
    epoch_steps = min(cfg.checkpoint_every, cfg.steps)  # one Keras epoch per checkpoint interval
    os.makedirs(os.path.join(cfg.out, "logs"), exist_ok=True)
    saved = {**dataclasses.asdict(cfg), "strategy": cfg.strategy if isinstance(cfg.strategy, str)
             else type(cfg.strategy).__name__}
    atomic_write_text(os.path.join(cfg.out, "config.json"), json.dumps(saved, indent=1))
    throughput = _Throughput(cfg.batch_size * cfg.block_size, epoch_steps)
    callbacks = [
        Checkpointer(ckpt_dir, epoch_steps, {"preset": cfg.preset}),
        keras.callbacks.CSVLogger(os.path.join(cfg.out, "logs", "training.csv"), append=done > 0),
        keras.callbacks.TensorBoard(os.path.join(cfg.out, "logs"), write_graph=False),
        throughput,
        *callbacks,
    ]
    history, t0 = None, time.perf_counter()
    full_epochs, rest = divmod(cfg.steps, epoch_steps)
    # With a weight average, Keras copies it into the weights at the end of
    # every fit call; a run may take two calls (or none, when resuming a
    # finished run), so the copy is made once, after the last one.
    finalize = getattr(model.optimizer, "finalize_variable_values", None)
    if cfg.ema_momentum > 0:
        model.optimizer.finalize_variable_values = lambda variables: None
    with ops.matmul_precision_scope(resolve_matmul_precision(cfg.matmul_precision)):
        if done < full_epochs * epoch_steps:
            history = model.fit(train_from(done), epochs=full_epochs, initial_epoch=done // epoch_steps,
                                steps_per_epoch=epoch_steps, validation_data=val_ds, callbacks=callbacks,
                                verbose=cfg.verbose)
        if rest and done < cfg.steps:
            history = model.fit(train_from(max(done, full_epochs * epoch_steps)), epochs=1, steps_per_epoch=rest,
                                validation_data=val_ds, callbacks=callbacks, verbose=cfg.verbose)
    if cfg.ema_momentum > 0:
        del model.optimizer.finalize_variable_values
        finalize(model.trainable_variables)
    # Keras keeps the evaluation function traced during fit; the final
    # evaluation below must be traced again, at the default precision.
    model.test_function = None
    wall = time.perf_counter() - t0
    metrics = {"preset": cfg.preset, "steps": cfg.steps, "parameters": int(model.count_params()),
               "wall_seconds": wall, "train_seconds": throughput.train_seconds,
               "tokens_per_second": throughput.tokens_per_second if throughput.steps else None}
    if history is not None and history.history:
        h = {k: v[-1] for k, v in history.history.items()}
        metrics.update(train_loss=h.get("loss"), train_perplexity=h.get("perplexity"))
    if full_val is not None:
        ev = model.evaluate(full_val, verbose=0, return_dict=True)
        metrics.update(val_loss=ev["loss"], val_perplexity=ev["perplexity"],
                       val_bits_per_token=ev["bits_per_token"])
    if bf16:
        # Mixed precision is a training setting: the final model computes in float32 (its weights are
        # float32 already), so generation gets the fused float32 decoding step. checkpoints/last.keras
        # keeps the mixed model and its optimizer for resuming.
        model = float32_copy(model)
    atomic_save_model(model, os.path.join(cfg.out, "model.keras"))
    atomic_write_text(os.path.join(cfg.out, "metrics.json"), json.dumps(metrics, indent=1))
    return {**metrics, "model": model}
