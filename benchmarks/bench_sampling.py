"""Benchmark of token sampling at GPT-2 vocabulary size.

Compares, per call (median over repeats):

* ``custom``    keraslm.ops.sample as the fused TF custom op (inside tf.function);
* ``_C``        keraslm._C.sample on numpy arrays (no TensorFlow);
* ``reference`` keraslm.ops.sample_reference, the pure-TF float64 path;
* ``baseline``  a keras-hub style pure-TF sampler (softmax, full-vocabulary
  sort with tf.math.top_k for top-p, cumsum, mask, tf.random.categorical).

TF variants run ``--calls`` samples inside one tf.function (a tf.while_loop
whose coins change every iteration, and whose results feed the loop state),
so the time per call excludes Python and function-call overhead. ``_C`` is
timed the same way from a Python loop.

Usage:
    python benchmarks/bench_sampling.py [--batch-sizes 1 8 64] [--vocab 50257]
        [--modes greedy top-k top-p] [--calls 100] [--repeats 7] [--scale 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keraslm  # noqa: E402

try:
    from keraslm import _C
except ImportError:  # pragma: no cover - a source tree without the compiled module
    _C = None

MODES = {  # sample() keyword arguments per mode
    "greedy": dict(temperature=0.0),
    "top-k": dict(temperature=1.0, top_k=50),
    "top-p": dict(temperature=1.0, top_p=0.9),
}


# ---------------------------------------------------------------------------
# keras-hub style baseline (probabilities first, then the sampler)
# ---------------------------------------------------------------------------

def baseline_sample(logits, mode, seed):
    probabilities = tf.nn.softmax(logits, axis=-1)
    if mode == "greedy":
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    if mode == "top-k":
        top_probs, top_ids = tf.math.top_k(probabilities, k=50, sorted=False)
        pick = tf.random.stateless_categorical(tf.math.log(top_probs), 1, seed)
        return tf.gather(top_ids, pick, batch_dims=1)[:, 0]
    ranked, order = tf.math.top_k(probabilities, k=tf.shape(probabilities)[1], sorted=True)
    keep = tf.math.cumsum(ranked, axis=-1) <= 0.9
    keep = tf.concat([tf.ones_like(keep[:, :1]), keep[:, :-1]], axis=-1)  # include the token crossing p
    ranked = tf.where(keep, ranked, tf.zeros_like(ranked))
    pick = tf.random.stateless_categorical(tf.math.log(ranked), 1, seed)
    return tf.gather(order, pick, batch_dims=1)[:, 0]


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def loop_function(step):
    """A tf.function running `calls` steps; step(i, coins) -> ids [B]."""

    @tf.function(autograph=False)
    def run(logits, calls):
        B = tf.shape(logits)[0]
        base = tf.random.stateless_uniform([B], seed=[1, 2])

        def body(i, acc):
            coins = tf.math.floormod(base + tf.cast(i, tf.float32) * 0.6180339887, 1.0)
            ids = step(logits, i, coins)
            return i + 1, acc + tf.reduce_sum(ids)

        return tf.while_loop(lambda i, acc: i < calls, body, (tf.constant(0), tf.constant(0)))[1]

    return run


def time_tf(run, logits, calls, repeats):
    run(logits, tf.constant(2)).numpy()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(logits, tf.constant(calls)).numpy()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def time_c(logits, kwargs, calls, repeats):
    B = logits.shape[0]
    base = np.random.default_rng(0).random(B)
    _C.sample(logits, base.astype(np.float32), **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(calls):
            _C.sample(logits, ((base + i * 0.6180339887) % 1.0).astype(np.float32), **kwargs)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def calls_for(run_once, target_s, max_calls):
    """Number of calls per timed loop so that one loop takes about target_s."""
    start = time.perf_counter()
    run_once()
    per_call = max((time.perf_counter() - start) / 2, 1e-6)
    return int(min(max_calls, max(3, target_s / per_call)))


def kept_size(logits, kwargs):
    """Mean number of tokens kept by the filters (0 for greedy), for context."""
    if kwargs.get("temperature", 1.0) == 0:
        return 1.0
    lp = keraslm.ops.filtered_logprobs(logits[:8], **kwargs)
    return float(tf.reduce_mean(tf.reduce_sum(tf.cast(tf.math.is_finite(lp), tf.float32), axis=1)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--calls", type=int, default=100, help="samples per timed loop (fewer for slow variants)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scale", type=float, default=4.0,
                        help="logits ~ N(0, scale^2); 4 gives a next-token entropy of about 3 nats at V=50257")
    parser.add_argument("--target-seconds", type=float, default=0.3, help="time budget of one timed loop")
    args = parser.parse_args()

    custom = keraslm.ops.custom_ops_available()
    print(f"keraslm {keraslm.__version__}, TensorFlow {tf.__version__}")
    print(f"implementation switch: {keraslm.ops.implementation()!r}; custom ops available: {custom}"
          + ("" if custom else f" ({keraslm.ops.load_error()})"))
    intra = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    print(f"TF intra-op threads: {intra}; _C threads: {_C.num_threads() if _C else '-'}; "
          f"ISA: {_C.cpu_isa() if _C else '-'}; CPUs: {os.cpu_count()}")
    print(f"V = {args.vocab}, logits ~ N(0, {args.scale}^2), median of {args.repeats} loops; ms per call\n")

    header = (f"{'mode':7} {'B':>3} {'kept':>7} | {'custom':>8} {'_C':>8} {'reference':>9} {'baseline':>9} | "
              f"{'base/custom':>11} {'ref/custom':>10} {'base/_C':>8}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for mode in args.modes:
        kwargs = MODES[mode]
        for B in args.batch_sizes:
            logits_np = (rng.normal(size=(B, args.vocab)) * args.scale).astype(np.float32)
            logits = tf.constant(logits_np)
            results = {}
            variants = {
                "reference": lambda x, i, u: keraslm.ops.sample_reference(x, u, **kwargs)[0],
                "baseline": lambda x, i, u: baseline_sample(x, mode, tf.stack([i, 7])),
            }
            if custom:
                def custom_step(x, i, u):
                    with keraslm.ops.implementation_scope("custom"):
                        return keraslm.ops.sample(x, u, **kwargs)[0]
                variants = {"custom": custom_step, **variants}
            for name, step in variants.items():
                run = loop_function(step)
                run(logits, tf.constant(2)).numpy()
                n = calls_for(lambda: run(logits, tf.constant(2)).numpy(), args.target_seconds, args.calls)
                results[name] = time_tf(run, logits, n, args.repeats)
            if _C is not None:
                n = calls_for(lambda: [_C.sample(logits_np, np.zeros(B, np.float32), **kwargs) for _ in range(2)],
                              args.target_seconds, args.calls)
                results["_C"] = time_c(logits_np, kwargs, n, args.repeats)

            def ms(name):
                return f"{results[name] * 1e3:.3f}" if name in results else "-"

            def ratio(a, b):
                return f"{results[a] / results[b]:.1f}x" if a in results and b in results else "-"

            print(f"{mode:7} {B:>3} {kept_size(logits, kwargs):>7.1f} | {ms('custom'):>8} {ms('_C'):>8} "
                  f"{ms('reference'):>9} {ms('baseline'):>9} | {ratio('baseline', 'custom'):>11} "
                  f"{ratio('reference', 'custom'):>10} {ratio('baseline', '_C'):>8}", flush=True)


if __name__ == "__main__":
    main()
