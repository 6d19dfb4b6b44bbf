"""The one training harness for every keraslm language model.

Python::

    import keraslm
    result = keraslm.train(preset="gpt-nano", data=["input.txt"], steps=2000, out="runs/nano")

CLI::

    keraslm train --preset gpt-nano --data input.txt --steps 2000 --out runs/nano
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings

import keras
import tensorflow as tf

from keraslm import ops
from keraslm.atomic import atomic_write_json, json_safe, remove_stale_temporaries
from keraslm.checkpoint import (
    Checkpointer,
    atomic_save_model,
    has_checkpoint_files,
    load_checkpoint,
    load_model,
)
from keraslm.config import TrainConfig
from keraslm.evaluation import check_vocabulary
from keraslm.metrics import BitsPerToken, Perplexity, TokenCrossEntropy
from keraslm.models.presets import from_preset, get_preset
from keraslm.optimizers import WarmupCosine, make_optimizer
from keraslm.precision import (
    float32_copy,
    is_multi_worker,
    make_strategy,
    resolve_matmul_precision,
    use_mixed_precision,
    use_xla,
)
from keraslm.run_log import StepLog, is_chief
from keraslm.schedules import EpochDecay
from keraslm.validation import positive_int

log = logging.getLogger("keraslm")


# Settings that may differ when a run resumes: they do not change what was trained so far (out is
# where the run is, however it is spelled).
_RESUMABLE_CHANGES = ("out", "steps", "epochs", "verbose", "resume", "overwrite", "log_every")


def compile_model(model, cfg, steps_per_epoch=None):
    """Compiles ``model`` with the harness's loss, metrics, optimizer and schedule.

    ``steps_per_epoch`` is needed by ``schedule="epoch_decay"`` (see :func:`steps_per_epoch`).
    """
    decay = cfg.decay_steps or cfg.steps
    if cfg.schedule == "epoch_decay":
        if not steps_per_epoch:
            raise ValueError("schedule='epoch_decay' needs the steps of one epoch (steps_per_epoch)")
        lr = EpochDecay(cfg.learning_rate, cfg.lr_decay, cfg.decay_after_epochs, steps_per_epoch)
    elif cfg.min_learning_rate == cfg.learning_rate and cfg.warmup_steps == 0:
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
    # Keras runs whole executions: an execution that does not divide a fit call's steps would train extra
    # steps silently, so the auto value divides them (each fit call runs checkpoint_every steps, and the rest).
    epoch_steps = min(cfg.checkpoint_every, cfg.steps)
    calls = math.gcd(epoch_steps, cfg.steps % epoch_steps)                    # gcd(n, 0) = n
    steps_per_execution = cfg.steps_per_execution or max(d for d in range(1, (10 if xla else 1) + 1) if calls % d == 0)
    if calls % steps_per_execution:
        raise ValueError(f"steps_per_execution={steps_per_execution} must divide the steps of every fit call "
                         f"(checkpoint_every={cfg.checkpoint_every} and steps={cfg.steps}: {calls})")
    loss = TokenCrossEntropy(sum_over_time=cfg.loss_reduction == "sum_over_time")
    model.compile(optimizer=opt, loss=loss, metrics=[Perplexity(), BitsPerToken()],
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
    if cfg.init and model is None:
        model = _pretrained(cfg)
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
        kwargs.update(cfg.tokenizer_args)
        if cfg.vocab_size and kind == "word":
            kwargs["max_tokens"] = cfg.vocab_size
        elif cfg.vocab_size and kind == "subword":
            kwargs["target_vocab_size"] = cfg.vocab_size
        elif cfg.vocab_size and kind == "bpe":
            kwargs["vocab_size"] = cfg.vocab_size
        source, _, fraction = _train_split(cfg)
        tokenizer = fit_tokenizer(kind, source, validation_fraction=fraction, **kwargs)
        if tokenizer.adapted_oov_rate is not None:
            log.info("tokenizer: %d ids, out-of-vocabulary rate of the training text %.2f%%", tokenizer.vocab_size,
                     100 * tokenizer.adapted_oov_rate)
    overrides = {}
    if cfg.dropout >= 0:
        overrides["dropout"] = cfg.dropout
    if preset["family"] == "transformer":
        overrides["max_length"] = max(cfg.block_size, preset["model"]["max_length"])
    overrides.update(cfg.model_args)
    model = from_preset(cfg.preset, vocab_size=tokenizer.vocab_size, tokenizer=tokenizer, **overrides)
    return model, tokenizer


def _pretrained(cfg):
    """The model of ``cfg.init``, float32, with the run's dropout when one is set."""
    model = load_model(cfg.init)
    config = model.get_config()
    config["dtype"] = keras.mixed_precision.dtype_policy().name  # the run's policy (mixed_bfloat16 or float32)
    if cfg.dropout >= 0 and "dropout" in config:
        config["dropout"] = cfg.dropout
    fresh = type(model).from_config(config)
    fresh.build_for_inference()
    fresh.set_weights(model.get_weights())
    if model.max_length is not None and cfg.block_size > model.max_length:
        raise ValueError(f"block_size={cfg.block_size} is longer than the context of {cfg.init} "
                         f"({model.max_length} tokens)")
    return fresh


def _train_split(cfg):
    """``(source, split, validation_fraction)`` of the training text: all of ``data`` when
    ``validation_data`` is given, else its first ``1 - validation_fraction``."""
    return (cfg.data, "all", 0.0) if cfg.validation_data else (cfg.data, "train", cfg.validation_fraction)


def _validation_split(cfg):
    """``(source, split, validation_fraction)`` of the validation text, or None when there is none."""
    if cfg.validation_data:
        return cfg.validation_data, "all", 0.0
    return (cfg.data, "validation", cfg.validation_fraction) if cfg.validation_fraction > 0 else None


def steps_per_epoch(n_tokens, batch_size, block_size):
    """Optimizer steps in one pass over ``n_tokens`` training tokens: ``(n_tokens // batch_size - 1) // block_size``
    (every window of every one of ``batch_size`` contiguous streams once; the stateful streams' count).

    Example:
        >>> steps_per_epoch(929589, 20, 35)            # Penn Treebank's training text, Zaremba's "medium"
        1327
    """
    from keraslm.data import stream_steps_per_epoch

    return stream_steps_per_epoch(n_tokens, batch_size, block_size)


def _training_tokens(cfg, tokenizer):
    """``(tokens or None, steps per epoch or None)`` of the training split. The tokens are held in memory
    for random and stateful windows (None past 2^28 tokens); the epoch is counted when epochs or the
    epoch-decay schedule need it."""
    from keraslm.data import Corpus, split_tokens

    source, split, fraction = _train_split(cfg)
    tokens = split_tokens(source, tokenizer, split, fraction) if cfg.windows in ("random", "stateful") else None
    if tokens is None and cfg.windows == "stateful":
        raise ValueError("windows='stateful' holds the training text in memory, and it has more than 2^28 tokens")
    if not (cfg.epochs or cfg.schedule == "epoch_decay" or cfg.windows == "stateful"):
        return tokens, None
    if tokens is not None:
        n = tokens.size
    else:
        corpus = Corpus.from_source(source)
        n = sum(int(tf.size(tokenizer.tokenize(tf.constant(t)))) for t in corpus.iter_text(*corpus.split_range(
            split, fraction)))
    epoch = steps_per_epoch(n, cfg.batch_size, cfg.block_size)
    if epoch < 1:
        raise ValueError(f"the training text ({n} tokens) is too small for one epoch of batch_size={cfg.batch_size} "
                         f"windows of block_size={cfg.block_size}: it needs {cfg.batch_size * (cfg.block_size + 1)}")
    return tokens, epoch


def _plan_steps(cfg, epoch):
    """``cfg`` with ``steps = epochs x epoch`` when epochs are asked for, and the ``KERASLM_MAX_STEPS`` cap."""
    if cfg.epochs:
        cfg = dataclasses.replace(cfg, steps=cfg.epochs * epoch)
        log.info("%d epoch(s) of %d steps: %d steps", cfg.epochs, epoch, cfg.steps)
    cap = os.environ.get("KERASLM_MAX_STEPS")
    if cap:  # documented for quick trials (the README test runs every command with it)
        cap = positive_int("KERASLM_MAX_STEPS", int(cap) if cap.strip().isdigit() else cap)
        cfg = dataclasses.replace(cfg, steps=min(cfg.steps, cap))        # (checkpoints every min(that, steps))
        log.info("KERASLM_MAX_STEPS=%s: training for at most %d steps", cap, cfg.steps)
    return cfg


def _datasets(cfg, tokenizer, tokens):
    """(train dataset starting after N batches: a function of N, validation dataset, full validation dataset)."""
    from keraslm.data import lm_dataset, random_windows, split_tokens, stream_batches

    source, split, fraction = _train_split(cfg)
    if cfg.windows == "random" and tokens is None:
        log.info("training split too large to hold in memory: streaming sequential windows")
    if cfg.windows == "stateful":
        def train_from(skip):
            return stream_batches(tokens, batch_size=cfg.batch_size, block_size=cfg.block_size, start_step=skip)
    elif tokens is not None and cfg.windows == "random":
        def train_from(skip):
            return random_windows(tokens, block_size=cfg.block_size, batch_size=cfg.batch_size, seed=cfg.seed,
                                  start_step=skip)
    else:
        train_ds = lm_dataset(source, tokenizer, block_size=cfg.block_size, batch_size=cfg.batch_size,
                              split=split, validation_fraction=fraction, shuffle=True, seed=cfg.seed, repeat=True)

        # The order of batches is a deterministic function of the seed, so a
        # resumed run continues exactly where the checkpoint left off.
        def train_from(skip):
            return train_ds.skip(skip)
    val_ds = full_val = None
    if _validation_split(cfg) is not None:
        source, split, fraction = _validation_split(cfg)
        full_val = lm_dataset(source, tokenizer, block_size=cfg.block_size, batch_size=cfg.batch_size,
                              split=split, validation_fraction=fraction, shuffle=False)
        val_ds = full_val
        if cfg.eval_steps > 0:
            # The same eval_steps batches of random windows from the whole split at every evaluation.
            val_tokens = split_tokens(source, tokenizer, split, fraction)
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
    and ``training.csv`` every ``log_every`` steps), the final ``model.keras``, ``metrics.json`` and
    ``loss.png``.
    With mixed precision, the final model (returned and saved) computes in float32. If
    ``checkpoints/`` exists and ``resume`` is true, training continues from it
    with the same data order and learning-rate schedule.
    """
    if config is None:
        config = TrainConfig.from_preset(overrides.pop("preset", "gpt-nano"), **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    cfg = config
    cfg.validate()
    if cfg.strategy == "multi_worker":
        make_strategy("multi_worker")      # before any other TensorFlow work (collectives are set up once)
    keras.utils.set_random_seed(cfg.seed)
    resolve_matmul_precision(cfg.matmul_precision)  # bad values fail before any work
    bf16 = use_mixed_precision(cfg.mixed_precision)
    # The run's settings apply to the run only: the ops switch, op determinism and the dtype policy (for
    # the models built or resumed here) are restored afterwards.
    with ops.implementation_scope(cfg.ops), _op_determinism(cfg.deterministic), \
            _dtype_policy("mixed_bfloat16" if bf16 else None):
        return _run(cfg, model, tokenizer, callbacks, bf16)


@contextlib.contextmanager
def _op_determinism(enabled):
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    if enabled and not before:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not before:
            tf_config.disable_op_determinism()


@contextlib.contextmanager
def _dtype_policy(name):
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name or previous)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class _StopOnNonFinite(keras.callbacks.Callback):
    """Stops ``fit`` at the first step whose loss is not finite and remembers the step and the loss."""

    def __init__(self):
        super().__init__()
        self.step = self.loss = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.step is None:
            self.step, self.loss = int(self.model.optimizer.iterations.numpy()), float(loss)
            self.model.stop_training = True


# The files a run writes in its directory (what overwrite=True deletes; nothing else is touched).
_RUN_FILES = ("checkpoints", "logs", "model.keras", "metrics.json", "config.json", "loss.png")


def _shard_by_data(dataset):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _local_nll(model, dataset):
    """``(summed NLL, tokens)`` of ``model`` over ``dataset``'s ``(x, y)`` batches, outside any strategy."""
    ppl = Perplexity()
    step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for x, y in dataset:
        ppl.update_state(y, step(x))
    return float(ppl.total.numpy()), float(ppl.count.numpy())


def _carry_state(model, cfg, strategy, epoch, state, done):
    """Makes ``model`` carry its recurrent state across training windows (restored from a checkpoint's
    ``state`` when resuming)."""
    if not hasattr(model, "start_carrying_state"):
        raise ValueError(f"windows='stateful' carries a recurrent state from window to window; "
                         f"{type(model).__name__} has none (use windows='random' or 'sequential')")
    if strategy.num_replicas_in_sync > 1:
        raise ValueError(f"windows='stateful' runs on one device; the strategy has {strategy.num_replicas_in_sync} "
                         "replicas")
    carry = model.start_carrying_state(cfg.batch_size, epoch)
    if state.get("carried_state"):
        carry.load_json(state["carried_state"])
    else:
        carry.position.assign(done)    # (a run that checkpointed before any step: zeros at this position)


def _start_or_resume(cfg, writer=True):
    """Prepares ``cfg.out`` and returns the checkpoint to resume from, ``(model, state)``, or None.

    Raises ValueError when the directory holds checkpoints that this call may not use: settings that
    differ from the run's ``config.json``, ``resume=False``, or more steps done than asked for.
    ``writer=False`` (a multi-worker run's other workers) only reads what the chief wrote.
    """
    ckpt_dir = os.path.join(cfg.out, "checkpoints")
    if not writer:
        return None if cfg.overwrite or not has_checkpoint_files(ckpt_dir) else _resumable(cfg, ckpt_dir)
    os.makedirs(cfg.out, exist_ok=True)      # an unusable out fails here, before any work
    if cfg.overwrite:
        for name in _RUN_FILES:
            path = os.path.join(cfg.out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
    remove_stale_temporaries(cfg.out)
    remove_stale_temporaries(ckpt_dir)
    if not has_checkpoint_files(ckpt_dir):
        return None
    return _resumable(cfg, ckpt_dir)


def _resumable(cfg, ckpt_dir):
    """The checkpoint in ``ckpt_dir`` and the run's settings, when this call may resume it."""
    if not cfg.resume:
        raise ValueError(f"{cfg.out} holds checkpoints of an earlier run; pass resume=True (--resume true) to "
                         "continue it or overwrite=True (--overwrite) to start over")
    config_path = os.path.join(cfg.out, "config.json")
    try:
        with open(config_path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot check the settings of the run in {cfg.out}: {config_path} is unreadable ({e}); "
                         "pass overwrite=True (--overwrite) to start over") from None
    current = json.loads(json.dumps(json_safe(cfg.record())))
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    saved = {**defaults, **saved}  # settings added to keraslm after the run was started had their defaults
    if not saved.get("decay_steps"):  # the schedule in the checkpoint decays over the original steps
        saved["decay_steps"] = saved.get("steps")
    if not current.get("decay_steps"):
        current["decay_steps"] = saved["decay_steps"]
    changed = [f"{k}={current.get(k)!r} (the run has {saved.get(k)!r})" for k in sorted(set(saved) | set(current))
               if k not in _RESUMABLE_CHANGES and saved.get(k) != current.get(k)]
    if changed:
        raise ValueError(f"{cfg.out} holds a run with other settings: {'; '.join(changed)}. Rerun with the run's "
                         "settings to resume it (steps may grow), or pass overwrite=True (--overwrite) to start over")
    return load_checkpoint(ckpt_dir), saved


def _run(cfg, model, tokenizer, callbacks, bf16):
    strategy = make_strategy(cfg.strategy)
    chief = is_chief(strategy)
    # Under a multi-worker strategy every worker trains and saves (saving may take part in collectives), but
    # only the chief writes into out; the others resume from the chief's checkpoints (out must be a path all
    # workers share) and write into a temporary directory, deleted at the end.
    scratch = None if chief else tempfile.mkdtemp(prefix=".keraslm-worker-")
    try:
        return _run_here(cfg, model, tokenizer, callbacks, bf16, strategy, scratch)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run_here(cfg, model, tokenizer, callbacks, bf16, strategy, scratch):
    out = cfg.out if scratch is None else scratch
    ckpt_dir = os.path.join(out, "checkpoints")
    resumed = _start_or_resume(cfg, writer=scratch is None)
    state = {}
    with strategy.scope():
        if resumed is not None:
            (model, state), record = resumed
            tokenizer = model.tokenizer
        else:
            model, tokenizer = _build_model_and_tokenizer(cfg, model, tokenizer)
            model.build_for_inference()
        tokens, epoch = _training_tokens(cfg, tokenizer)
        cfg = _plan_steps(cfg, epoch)
        if resumed is None:
            compile_model(model, cfg, epoch)
            done, record = 0, cfg.record()
        else:
            done, record = int(model.optimizer.iterations.numpy()), {**record, "steps": cfg.steps}
            if done > cfg.steps:
                raise ValueError(f"{cfg.out} is already trained for {done} steps, more than steps={cfg.steps}; ask "
                                 f"for steps >= {done}, or pass overwrite=True (--overwrite) to start over")
            log.info("resuming %s from step %d", cfg.out, done)
        if cfg.windows == "stateful":
            _carry_state(model, cfg, strategy, epoch, state, done)
    if done >= cfg.steps:
        log.info("%s already trained for %d steps", cfg.out, done)
    train_from, val_ds, full_val = _datasets(cfg, tokenizer, tokens)
    workers = is_multi_worker(strategy)
    if workers:  # each worker's pipeline keeps its own part of every global batch (tf.data autosharding by data)
        train_from = (lambda from_step, make=train_from: _shard_by_data(make(from_step)))
        val_ds = _shard_by_data(val_ds.take(max(cfg.eval_steps, 1))) if val_ds is not None else None
    epoch_steps = min(cfg.checkpoint_every, cfg.steps)  # one Keras epoch per checkpoint interval
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    atomic_write_json(os.path.join(out, "config.json"), record)   # only settings that apply to the run
    throughput = _Throughput(cfg.batch_size * cfg.block_size, epoch_steps)
    diverged = _StopOnNonFinite()
    callbacks = [
        diverged,
        Checkpointer(ckpt_dir, epoch_steps, {"preset": cfg.preset}),
        run_log := StepLog.for_run(cfg, strategy, done),   # logs/training.csv and TensorBoard, by step
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
    # (the datasets are shuffled by their seed already: Keras' own shuffle flag does not apply to them)
    fit_args = dict(validation_data=val_ds, callbacks=callbacks, verbose=cfg.verbose, shuffle=False)
    with ops.matmul_precision_scope(resolve_matmul_precision(cfg.matmul_precision)):
        if done < full_epochs * epoch_steps:
            history = model.fit(train_from(done), epochs=full_epochs, initial_epoch=done // epoch_steps,
                                steps_per_epoch=epoch_steps, **fit_args)
        if rest and done < cfg.steps:
            history = model.fit(train_from(max(done, full_epochs * epoch_steps)), epochs=1, steps_per_epoch=rest,
                                **fit_args)
    if diverged.step is not None:
        raise TrainingDiverged(f"training diverged: the loss became {diverged.loss} at step {diverged.step}; the "
                               f"last good checkpoint stays in {ckpt_dir} and no model was written (lower "
                               f"learning_rate={cfg.learning_rate:g}, or clip gradients with grad_clip)")
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
    if full_val is not None and cfg.windows == "stateful":
        # As published perplexities are measured: the state carried across the whole validation text.
        from keraslm.data import split_tokens
        from keraslm.evaluation import stream_nll

        model.stop_carrying_state()
        source, split, fraction = _validation_split(cfg)
        total, count = stream_nll(model, split_tokens(source, tokenizer, split, fraction), batch_size=1,
                                  block_size=cfg.block_size)
        loss = total / count
        metrics.update(val_loss=loss, val_perplexity=math.exp(loss), val_bits_per_token=loss / math.log(2))
    elif full_val is not None and workers:
        # (a plain loop on this worker's copy of the weights: Keras' evaluate would all-reduce uneven batches)
        total, count = _local_nll(model, full_val)
        metrics.update(val_loss=total / count, val_perplexity=math.exp(total / count),
                       val_bits_per_token=total / count / math.log(2))
    elif full_val is not None:
        with warnings.catch_warnings():  # the split ends inside a multi-step call: expected, not a problem
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            ev = model.evaluate(full_val, verbose=0, return_dict=True)
        metrics.update(val_loss=ev["loss"], val_perplexity=ev["perplexity"],
                       val_bits_per_token=ev["bits_per_token"])
    if bf16:
        # Mixed precision is a training setting: the final model computes in float32 (its weights are
        # float32 already), so generation gets the fused float32 decoding step. checkpoints/last.keras
        # keeps the mixed model and its optimizer for resuming.
        model = float32_copy(model)
    atomic_save_model(model, os.path.join(out, "model.keras"))
    atomic_write_json(os.path.join(out, "metrics.json"), metrics)
    run_log.plot(os.path.join(out, "loss.png"))
    return {**metrics, "model": model}
