"""Penn Treebank: the word-LSTM presets (Zaremba et al. 2014) trained end to end, against the published
perplexities, and their training speed against the same model written in plain Keras.

Run:  python benchmarks/bench_ptb.py --train ptb.train.txt --valid ptb.valid.txt --test ptb.test.txt
          [--preset word-lstm-small|word-lstm-medium] [--epochs N] [--out DIR] [--keras-steps N]
          [--chunk N] [--model-args JSON] [--json FILE] [--verbose 0|1|2]

Nothing is downloaded: pass the three files of Penn Treebank as Mikolov distributes them (``ptb.train.txt``,
``ptb.valid.txt``, ``ptb.test.txt`` of ``simple-examples/data``, the files of TensorFlow's PTB tutorial):
pretokenized, lowercased, rare words already ``<unk>``, one sentence per line.

What it does, in one run:

1. Trains the preset with ``keraslm.train`` (``validation_data`` = the validation file) with the preset's
   recipe: stateful truncated BPTT over 20 contiguous streams, plain SGD at learning rate 1 on the loss
   summed over the window, global-norm clipping 5, the learning rate decayed per epoch. ``--epochs``
   shortens (or lengthens) the run; ``--model-args`` overrides model settings (the published numbers are
   for the presets as they are).
2. Evaluates the validation and test files with ``keraslm.evaluate`` with the state carried across the
   whole text (batch 1, the preset's window), as the published numbers are measured, and prints the
   perplexity per word (``<eos>`` counted: the preset's tokenizer splits on whitespace and makes every line
   end an ``<eos>`` token, so per word is per token) and the out-of-vocabulary (``<unk>``) rate beside
   Zaremba et al.'s Table 1.
3. Trains the same architecture written directly in Keras (Embedding -> 2 x ``keras.layers.LSTM(stateful=True)``
   -> Dense, the same initialisation, dropout, batch, window, SGD with ``global_clipnorm``, loss summed over
   time, the state reset at each pass over the text) with ``model.fit`` and Keras' defaults (its
   ``jit_compile="auto"``), on the very token ids keraslm trained on, in the same contiguous streams
   (``keraslm.data.stream_batches``), for ``--keras-steps`` steps.

Training speed is tokens/s of training steps (batch x window tokens per step), measured the same way for
both: step times between consecutive batch ends inside one Keras epoch (validation runs, checkpoints and
epoch boundaries excluded), summed over chunks of ``--chunk`` steps; the first chunk (tracing) is a
warm-up; the median over the other chunks is reported, with the ratio keraslm / plain Keras. keraslm's
whole-run average (its ``tokens_per_second``: tracing and checkpoints included) is printed too.

What to expect: Zaremba et al. publish per-word perplexities of 120.7 (validation) / 114.5 (test) for
the small model and 86.2 / 82.7 for the medium one; a full run of the preset should land near them
(initialisation and data order are random, so a point or two either way). A full ``word-lstm-small``
run is 13 epochs of 2,323 steps (30,199 steps of 20 x 20 tokens) over PTB's 929,589 training tokens
(``<eos>`` included; vocabulary 10,000 words plus keraslm's ``<pad>``); ``word-lstm-medium`` is 39 epochs
of 1,327 steps of 20 x 35 tokens, with dropout 0.5. The run's time is about the training tokens
(12.1M for small, 36.3M for medium) over the keraslm tokens/s printed. Shorter runs (``--epochs``)
give higher perplexities than the published ones; the script says when the run is not the published
recipe.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PRESET_CHOICES = ("word-lstm-small", "word-lstm-medium")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="ptb.train.txt")
    ap.add_argument("--valid", required=True, help="ptb.valid.txt")
    ap.add_argument("--test", required=True, help="ptb.test.txt")
    ap.add_argument("--preset", default="word-lstm-small", choices=PRESET_CHOICES)
    ap.add_argument("--epochs", type=int, default=0, help="passes over the training text (0: the preset's)")
    ap.add_argument("--out", default="", help="keraslm run directory, kept (default: a temporary one, removed)")
    ap.add_argument("--keras-steps", type=int, default=200, help="training steps of the plain Keras baseline")
    ap.add_argument("--chunk", type=int, default=0,
                    help="steps per timed chunk (0: keras-steps // 10, at most 50); the first chunk is a warm-up")
    ap.add_argument("--model-args", default="",
                    help='JSON of model settings over the preset\'s, for keraslm and the baseline alike, e.g. '
                         '\'{"embedding_dim": 32, "hidden_units": 32}\' (the published numbers are for the preset)')
    ap.add_argument("--json", default="", help="also write the numbers to this JSON file")
    ap.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                    help="keraslm training progress (Keras verbose: 2 = one line per checkpoint interval)")
    return ap.parse_args(argv)


def fail(message):
    print(f"bench_ptb.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args):
    """The parsed ``--model-args``; exits with a one-line error (status 2) on missing files or bad values."""
    missing = [f"--{name} {path}" for name, path in (("train", args.train), ("valid", args.valid),
                                                      ("test", args.test)) if not os.path.isfile(path)]
    if missing:
        fail(f"no such file: {', '.join(missing)} (this benchmark downloads nothing: pass Penn Treebank's "
             "ptb.train.txt, ptb.valid.txt and ptb.test.txt)")
    for name in ("epochs", "chunk"):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.keras_steps < 2:
        fail(f"--keras-steps must be >= 2, got {args.keras_steps}")
    try:
        model_args = json.loads(args.model_args) if args.model_args else {}
    except ValueError as e:
        fail(f"--model-args is not JSON: {e}")
    if not isinstance(model_args, dict):
        fail(f"--model-args must be a JSON object, got {args.model_args}")
    return model_args


# --- timing ------------------------------------------------------------------------------------------------


def _step_timer():
    import keras

    class StepTimes(keras.callbacks.Callback):
        """Seconds of every training step, as the time between consecutive batch ends inside one Keras
        epoch (the first step of each epoch, and anything around epochs (validation, checkpoints), are not
        measured). ``runs``: one list of consecutive step times per Keras epoch."""

        def __init__(self):
            super().__init__()
            self.runs, self._last = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self.runs.append([])
            self._last = None

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if self._last is not None:
                self.runs[-1].append(now - self._last)
            self._last = now

        def on_test_begin(self, logs=None):
            self._last = None

    return StepTimes()


def chunk_rates(runs, chunk, tokens_per_step):
    """Tokens/s of every full chunk of ``chunk`` consecutive measured steps, the first chunk (warm-up) left out."""
    rates, first = [], True
    for run in runs:
        for i in range(0, len(run) - chunk + 1, chunk):
            if first:
                first = False
                continue
            rates.append(chunk * tokens_per_step / sum(run[i:i + chunk]))
    return rates


# --- keraslm -----------------------------------------------------------------------------------------------


def keraslm_paths(model):
    """Which recurrent loop keraslm ran and whether its train step was XLA-compiled (one line)."""
    import tensorflow as tf

    from keraslm.layers.recurrence import fast_path_applies

    gpu = bool(tf.config.list_physical_devices("GPU"))
    use = model.fast is True or (model.fast == "auto" and not gpu)
    loops = sorted({"keraslm's own LSTM loop (keraslm.layers.recurrence.fast_sequence)" if use and fast_path_applies(r)
                    else "the Keras LSTM layer" for r in model.rnns})
    return f"{' + '.join(loops)}; train step XLA {'on' if model.jit_compile else 'off'}, " \
           f"steps_per_execution {model.steps_per_execution}"


# --- plain Keras baseline ----------------------------------------------------------------------------------


def plain_keras_rate(tokens, vocab, model_settings, cfg, steps, chunk, epoch_steps):
    """Tokens/s (median over chunks) of the same model written in plain Keras, trained with ``fit`` on the
    contiguous streams of ``tokens``, and a description of how it ran."""
    import keras

    from keraslm.data import stream_batches

    m = model_settings
    B, T = cfg.batch_size, cfg.block_size
    L = m.get("num_layers", 1)
    units = m["hidden_units"] if isinstance(m["hidden_units"], list) else [m["hidden_units"]] * L
    scale, dropout = m.get("init_scale"), float(m.get("dropout", 0.0) or 0.0)

    def init(*names):
        return {n: keras.initializers.RandomUniform(-scale, scale) for n in names} if scale else {}

    keras.utils.set_random_seed(0)
    layers = [keras.Input(batch_shape=(B, T), dtype="int32"),
              keras.layers.Embedding(vocab, m["embedding_dim"], **init("embeddings_initializer"))]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    lstms = []
    for u in units:
        lstms.append(keras.layers.LSTM(u, return_sequences=True, stateful=True,
                                       unit_forget_bias=not scale,
                                       **init("kernel_initializer", "recurrent_initializer", "bias_initializer")))
        layers.append(lstms[-1])
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(vocab, **init("kernel_initializer", "bias_initializer")))
    model = keras.Sequential(layers)

    def loss_summed_over_time(y_true, logits):          # [B]: summed over the window; Keras averages the batch
        nll = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)    # [B, T]
        return keras.ops.sum(nll, axis=-1)

    model.compile(optimizer=keras.optimizers.SGD(cfg.learning_rate, global_clipnorm=cfg.grad_clip or None),
                  loss=loss_summed_over_time)

    class ResetEachPass(keras.callbacks.Callback):      # the state starts from zeros at every pass over the text
        def __init__(self):
            super().__init__()
            self.step = 0

        def on_train_batch_begin(self, batch, logs=None):
            if self.step % epoch_steps == 0:
                for layer in lstms:
                    layer.reset_state()
            self.step += 1

    timer = _step_timer()
    data = stream_batches(tokens, batch_size=B, block_size=T)
    model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[ResetEachPass(), timer], verbose=0,
              shuffle=False)
    rates = chunk_rates(timer.runs, chunk, B * T)
    how = (f"plain Keras: Sequential(Embedding, {L} x LSTM(stateful=True), Dense), SGD(global_clipnorm="
           f"{cfg.grad_clip:g}), model.fit (jit_compile {'on' if model.jit_compile else 'off'}, "
           f"steps_per_execution {model.steps_per_execution})")
    return (statistics.median(rates) if rates else None), len(rates), how


# --- main --------------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    model_args = check_args(args)

    import keras

    import keraslm
    from _common import cpu_model, header
    from keraslm import _C
    from keraslm.config import TrainConfig
    from keraslm.data import split_tokens, stream_steps_per_epoch
    from keraslm.presets import PUBLISHED_PERPLEXITY, get_preset

    preset = get_preset(args.preset)
    overrides = {"epochs": args.epochs} if args.epochs else {}
    cfg = TrainConfig.from_preset(args.preset, **overrides)
    settings = {**preset["model"], **model_args}
    chunk = args.chunk or max(1, min(50, args.keras_steps // 10))
    out = args.out
    if not out:
        out = tempfile.mkdtemp(prefix="bench_ptb_")
        atexit.register(shutil.rmtree, out, ignore_errors=True)

    header(f"Penn Treebank: {args.preset} (Zaremba et al. 2014) against the published perplexities and plain Keras")
    print(f"# CPU: {cpu_model()}", flush=True)
    print(f"# data: train {args.train}, valid {args.valid}, test {args.test}; run directory {out}"
          f"{'' if args.out else ' (temporary)'}", flush=True)

    # 1. keraslm: the preset's recipe.
    timer = _step_timer()
    t0 = time.perf_counter()
    result = keraslm.train(preset=args.preset, data=[args.train], validation_data=[args.valid], out=out,
                           overwrite=True, verbose=args.verbose, model_args=model_args, callbacks=[timer],
                           **overrides)
    wall = time.perf_counter() - t0
    model = result.pop("model")
    tokens = split_tokens([args.train], model.tokenizer, "all", 0.0)
    epoch_steps = stream_steps_per_epoch(tokens.size, cfg.batch_size, cfg.block_size)
    full_steps = preset["train"]["epochs"] * epoch_steps
    tokens_per_step = cfg.batch_size * cfg.block_size
    paths = keraslm_paths(model)
    print(f"\n## keraslm run: {result['steps']} steps ({result['steps'] / epoch_steps:.2f} epochs of {epoch_steps}) of "
          f"{cfg.batch_size} x {cfg.block_size} tokens over {tokens.size:,} training tokens; vocabulary "
          f"{model.vocab_size:,} ids; {result['parameters']:,} parameters; {wall:.0f} s in all", flush=True)
    print(f"# keraslm kernels: {paths}", flush=True)
    if tokens.size != 929_589 or model.vocab_size != 10_001:
        print("# note: Penn Treebank's training text is 929,589 tokens over 10,001 ids: these files are not "
              "PTB's as distributed (the published numbers are for those)", flush=True)

    # 2. perplexity per word, the state carried across each whole text (evaluate's default for these models).
    val = keraslm.evaluate(model, [args.valid], batch_size=1, block_size=cfg.block_size)
    test = keraslm.evaluate(model, [args.test], batch_size=1, block_size=cfg.block_size)
    published = PUBLISHED_PERPLEXITY[args.preset]
    as_published = result["steps"] == full_steps and not model_args
    print(f"\n## perplexity per word (<eos> counted; state carried across the whole text, batch 1, window "
          f"{cfg.block_size}); published: Zaremba et al. 2014, Table 1")
    print(f"{'':12s} {'keraslm':>9s} {'published':>10s} {'OOV (<unk>) rate':>17s} {'words':>9s}")
    for name, ev, key in (("validation", val, "validation"), ("test", test, "test")):
        print(f"{name:12s} {ev['perplexity_per_word']:9.1f} {published[key]:10.1f} {100 * ev['oov_rate']:16.2f}% "
              f"{ev['words']:9,d}")
    print(f"(training's own validation perplexity, per token: {result['val_perplexity']:.1f}; stateful "
          f"evaluation: {val['stateful']})")
    if not as_published:
        why = []
        if result["steps"] != full_steps:
            why.append(f"{result['steps']} steps, the recipe's is {full_steps} "
                       f"({preset['train']['epochs']} epochs)")
        if model_args:
            why.append(f"model args {json.dumps(model_args)}")
        print(f"# note: not the published recipe ({'; '.join(why)}): its perplexities are not comparable "
              "with the published ones")

    # 3. training speed against plain Keras.
    ours = chunk_rates(timer.runs, chunk, tokens_per_step)
    ours_median = statistics.median(ours) if ours else None
    rate, n_chunks, how = plain_keras_rate(tokens, model.vocab_size, settings, cfg, args.keras_steps, chunk,
                                           epoch_steps)
    ratio = ours_median / rate if ours_median and rate else None

    def tps(x):
        return f"{x:9.0f} tok/s" if x else "      n/a"

    print(f"\n## training tokens/s (median of chunks of {chunk} steps after a warm-up chunk; "
          f"{tokens_per_step} tokens per step)")
    print(f"keraslm ({len(ours)} chunks)      {tps(ours_median)}   [whole-run average, tracing and checkpoints "
          f"included: {tps(result['tokens_per_second']).strip()}]")
    print(f"plain Keras ({n_chunks} chunks)  {tps(rate)}   ratio keraslm / plain Keras: "
          f"{'x%.2f' % ratio if ratio else 'n/a (too few steps for a timed chunk)'}")
    print(f"# keraslm: keraslm.train (model.fit of RecurrentLM), {paths}")
    print(f"# baseline: {how}, {args.keras_steps} steps on the same token ids and streams")

    numbers = {
        "preset": args.preset, "cpu": cpu_model(), "kernel_isa": _C.cpu_isa(), "keras": keras.__version__,
        "steps": result["steps"], "epoch_steps": epoch_steps, "recipe_steps": full_steps,
        "published_recipe": as_published, "model_args": model_args, "training_tokens": int(tokens.size),
        "vocab_size": int(model.vocab_size), "parameters": result["parameters"],
        "valid_perplexity_per_word": val["perplexity_per_word"], "test_perplexity_per_word": test["perplexity_per_word"],
        "valid_oov_rate": val["oov_rate"], "test_oov_rate": test["oov_rate"],
        "train_val_perplexity": result["val_perplexity"], "published": published,
        "keraslm_tokens_per_second": ours_median, "keraslm_tokens_per_second_whole_run": result["tokens_per_second"],
        "keras_tokens_per_second": rate, "ratio_keraslm_over_keras": ratio, "chunk_steps": chunk,
        "keras_steps": args.keras_steps, "keraslm_kernels": paths, "baseline": how, "wall_seconds": wall,
    }
    print("\n## result")
    print(f"{args.preset}: perplexity per word valid {val['perplexity_per_word']:.1f} (published "
          f"{published['validation']}), test {test['perplexity_per_word']:.1f} (published {published['test']})"
          f"{'' if as_published else ' [not the published recipe]'}")
    print(f"training: keraslm {tps(ours_median).strip()}, plain Keras {tps(rate).strip()}"
          f"{', ratio x%.2f' % ratio if ratio else ''}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in numbers.items()},
                      f, indent=2)
        print(f"numbers written to {args.json}")


if __name__ == "__main__":
    main()
