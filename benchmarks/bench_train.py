"""Training throughput: keraslm's harness against the same models trained by other stacks.

Run:  python benchmarks/bench_train.py [--presets gpt-nano,char-gru,...] [--steps N] [--precision float32|bfloat16|both]

For each preset, tokens/s of training steps with the preset's batch, block and optimizer, on
random token windows held in memory (the data pipeline is not what is measured). Median over
epochs after a warm-up epoch (which includes tracing and compilation). Baselines measured in the
same run, in the same precision (``--precision``: float32, or bfloat16 compute with float32
weights: Keras ``mixed_bfloat16`` and torch CPU autocast). keraslm's dense-layer products follow
the preset's ``matmul_precision`` unless ``--matmul-precision`` says otherwise (gpt-nano: bfloat16
inputs with float32 sums where AMX runs them; each line says which):
- gpt-*: keras-hub ``GPT2CausalLM`` trained with ``fit`` (jit on, AdamW), and a nanoGPT-style torch
  training loop (AdamW, torch's fused SDPA), when those packages are installed;
- recurrent presets: the same Embedding -> LSTM/GRU -> Dense model written directly in Keras and
  trained with ``fit`` (Keras defaults).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _common import header  # noqa: E402
from _torch_gpt import make_gpt  # noqa: E402
from keraslm.data import random_windows  # noqa: E402
from keraslm.models import from_preset  # noqa: E402
from keraslm.models.presets import get_preset  # noqa: E402
from keraslm import ops  # noqa: E402
from keraslm.precision import resolve_matmul_precision  # noqa: E402
from keraslm.training import TrainConfig, compile_model  # noqa: E402

VOCAB = {"char": 65, "word": 10000}
# Steps per timed epoch (gpt-mini's steps hold 16k tokens each).
STEPS = {"gpt-nano": 100, "gpt-mini": 3, "char-gru": 10, "word-lstm-small": 100, "word-lstm-medium": 20}


class _EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t0)


def keras_fit_rate(model, data, steps, epochs, tokens_per_step):
    timer = _EpochTimes()
    model.fit(data, epochs=epochs + 1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return tokens_per_step * steps / statistics.median(timer.times[1:])


def data_for(vocab, block, batch, seed=0):
    tokens = np.random.default_rng(seed).integers(0, vocab, 1_000_000).astype(np.int32)
    return random_windows(tokens, block_size=block, batch_size=batch, seed=seed)


@contextlib.contextmanager
def keras_policy(bf16):
    """Keras layers built inside compute in bfloat16 (float32 weights) when ``bf16``."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if bf16 else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def ours(name, steps, epochs, bf16=False, matmul_precision="preset"):
    """keraslm's rate and the matmul precision it trained with (the preset's unless given)."""
    preset = get_preset(name)
    overrides = {} if matmul_precision == "preset" else {"matmul_precision": matmul_precision}
    cfg = TrainConfig.from_preset(name, mixed_precision=bf16, **overrides)
    keras.utils.set_random_seed(0)
    with keras_policy(bf16):
        model = from_preset(name, vocab_size=VOCAB[preset["tokenizer"]])
        model.build_for_inference()
        compile_model(model, cfg)
    precision = resolve_matmul_precision(cfg.matmul_precision)
    with ops.matmul_precision_scope(precision):
        rate = keras_fit_rate(model, data_for(model.vocab_size, cfg.block_size, cfg.batch_size), steps, epochs,
                              cfg.block_size * cfg.batch_size)
    return rate, precision


def keras_hub_gpt(name, steps, epochs, bf16=False):
    try:
        import keras_hub
    except ImportError:
        return None
    m, cfg = get_preset(name)["model"], TrainConfig.from_preset(name)
    keras.utils.set_random_seed(0)
    with keras_policy(bf16):
        backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB["char"], num_layers=m["num_layers"],
                                                 num_heads=m["num_heads"], hidden_dim=m["width"],
                                                 intermediate_dim=4 * m["width"], dropout=m["dropout"],
                                                 max_sequence_length=m["max_length"])
        lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(optimizer=keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay,
                                                beta_2=cfg.beta2, global_clipnorm=cfg.grad_clip),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    windows = data_for(VOCAB["char"], cfg.block_size, cfg.batch_size)
    data = windows.map(lambda x, y: ({"token_ids": x, "padding_mask": tf.ones_like(x, tf.bool)}, y))
    return keras_fit_rate(lm, data, steps, epochs, cfg.block_size * cfg.batch_size)


def torch_gpt(name, steps, epochs, bf16=False):
    m, cfg = get_preset(name)["model"], TrainConfig.from_preset(name)
    model = make_gpt(VOCAB["char"], m["num_layers"], m["num_heads"], m["width"], m["max_length"],
                     bias=m["use_bias"], dropout=m["dropout"], tie=m.get("tie_embeddings", True))
    if model is None:
        return None
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay)
    B, T = cfg.batch_size, cfg.block_size
    data = torch.randint(0, VOCAB["char"], (1_000_000,))

    def step():
        ix = torch.randint(len(data) - T - 1, (B,))
        x = torch.stack([data[i:i + T] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + T] for i in ix])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).view(-1, VOCAB["char"]).float(), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()

    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        times.append(time.perf_counter() - t0)
    return B * T * steps / statistics.median(times[1:])


def plain_keras_rnn(name, steps, epochs, bf16=False):
    preset = get_preset(name)
    m, cfg = preset["model"], TrainConfig.from_preset(name)
    V = VOCAB[preset["tokenizer"]]
    keras.utils.set_random_seed(0)
    cell = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[m["cell"]]
    with keras_policy(bf16):
        layers = [keras.Input((None,), dtype="int32"), keras.layers.Embedding(V, m["embedding_dim"])]
        for _ in range(m["num_layers"]):
            layers.append(cell(m["hidden_units"], return_sequences=True, dropout=m.get("dropout", 0.0)))
        model = keras.Sequential(layers + [keras.layers.Dense(V)])
    opt = (keras.optimizers.Adam(cfg.learning_rate) if cfg.optimizer == "adam"
           else keras.optimizers.SGD(cfg.learning_rate, global_clipnorm=cfg.grad_clip or None))
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return keras_fit_rate(model, data_for(V, cfg.block_size, cfg.batch_size), steps, epochs,
                          cfg.block_size * cfg.batch_size)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="gpt-nano,gpt-mini,char-gru,word-lstm-small")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (after one warm-up)")
    ap.add_argument("--steps", type=int, default=0, help="steps per epoch (0: a per-preset default)")
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "both"),
                    help="compute precision of every stack (bfloat16: float32 weights, bfloat16 compute)")
    ap.add_argument("--matmul-precision", default="preset", choices=("preset", "float32", "bfloat16", "auto"),
                    help="keraslm's dense-layer products (preset: the preset's training setting; gpt-nano "
                         "uses bfloat16 products where AMX runs them); the baselines keep theirs")
    args = ap.parse_args()
    header("keraslm training throughput benchmark")
    print(f"\n## tokens/s (median of {args.epochs} epochs after a warm-up epoch); ratio = keraslm / baseline")
    precisions = ("float32", "bfloat16") if args.precision == "both" else (args.precision,)
    for name in args.presets.split(","):
        steps = args.steps or STEPS.get(name, 10)
        for precision in precisions:
            bf16 = precision == "bfloat16"
            mine, products = ours(name, steps, args.epochs, bf16, args.matmul_precision)
            line = f"{name:16s} {precision:8s} keraslm ({products} products) {mine:9.0f} tok/s"
            if get_preset(name)["family"] == "transformer":
                baselines = (("keras-hub GPT2CausalLM fit", keras_hub_gpt), ("torch nanoGPT-style loop", torch_gpt))
            else:
                baselines = (("plain Keras model fit", plain_keras_rnn),)
            for label, fn in baselines:
                rate = fn(name, steps, args.epochs, bf16)
                line += (f"  | {label} {rate:9.0f} tok/s (x{mine / rate:4.2f})" if rate
                         else f"  | {label}: not installed")
            print(line, flush=True)

if __name__ == "__main__":
    main()
