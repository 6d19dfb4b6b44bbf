"""Attention benchmark: keraslm's fused op against the pure-TF path (XLA off/on) and torch SDPA.

Run:  python benchmarks/bench_attention.py [--quick]

Prints, for causal attention with B=4, H=8, D=64: the median forward and
forward+backward time per call for every path, the ratio of each baseline to
ours (>1 means ours is faster), the extra peak memory of one forward at
T=8192 (B=1, H=8), and one-token decode latency against KV caches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keraslm  # noqa: E402
from _common import copy_bandwidth, header, median_time  # noqa: E402

B, H, D = 4, 8, 64


def tf_paths(causal=True):
    """name -> (forward fn, forward+backward fn), each a tf.function over (q, k, v)."""

    def make(impl, jit):
        def fwd(q, k, v):
            with keraslm.ops.implementation_scope(impl):
                return keraslm.ops.attention(q, k, v, causal=causal)

        def fwd_bwd(q, k, v):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                with keraslm.ops.implementation_scope(impl):
                    out = keraslm.ops.attention(q, k, v, causal=causal)
                loss = tf.reduce_sum(out)
            return tape.gradient(loss, [q, k, v])

        return tf.function(fwd, jit_compile=jit), tf.function(fwd_bwd, jit_compile=jit)

    return {"keraslm op": make("custom", False), "pure TF": make("reference", False),
            "pure TF + XLA": make("reference", True)}


def torch_paths():
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {}
    torch.set_num_threads(os.cpu_count())

    def fwd(q, k, v):
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def fwd_bwd(q, k, v):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.sum().backward()
        return q.grad

    return {f"torch {torch.__version__} SDPA": (fwd, fwd_bwd)}


def _timed(fn, repeats):
    """Median seconds, or None when the path runs out of memory."""
    try:
        return median_time(fn, repeats)
    except (tf.errors.ResourceExhaustedError, MemoryError):
        return None


def _fmt(t, ours):
    return "   out of memory       " if t is None else f"{t * 1e3:9.2f} ms  x{t / ours:5.2f}"


def bench_speed(Ts, repeats):
    rng = np.random.default_rng(0)
    print(f"\n## causal attention, B={B} H={H} D={D}: median ms per call (ratio = baseline / keraslm)")
    results = {}
    paths = tf_paths()
    tpaths = torch_paths()
    for T in Ts:
        q, k, v = (rng.standard_normal((B, T, H, D)).astype(np.float32) for _ in range(3))
        qt, kt, vt = (tf.constant(x) for x in (q, k, v))
        flops = 4 * B * H * T * T * D / 2  # causal forward
        row = {}
        for name, (fwd, fwd_bwd) in paths.items():
            reps = repeats if T <= 1024 else max(3, repeats // 2)
            row[name] = (_timed(lambda: fwd(qt, kt, vt).numpy(), reps),
                         _timed(lambda: [g.numpy() for g in fwd_bwd(qt, kt, vt)], reps))
        for name, (fwd, fwd_bwd) in tpaths.items():
            import torch
            # torch SDPA layout is [B, H, T, D]
            tq, tk, tv = (torch.from_numpy(x.transpose(0, 2, 1, 3).copy()) for x in (q, k, v))
            t_fwd = median_time(lambda: fwd(tq, tk, tv), repeats)
            gq, gk, gv = (x.clone().requires_grad_(True) for x in (tq, tk, tv))
            t_fb = median_time(lambda: fwd_bwd(gq, gk, gv), repeats)
            row[name] = (t_fwd, t_fb)
        ours = row["keraslm op"]
        print(f"T={T:5d}  (keraslm: fwd {flops / ours[0] / 1e9:6.1f} GFLOP/s, fwd+bwd {3.5 * flops / ours[1] / 1e9:6.1f} GFLOP/s)")
        for name, (tf_, tfb) in row.items():
            print(f"    {name:28s} fwd {_fmt(tf_, ours[0])}   fwd+bwd {_fmt(tfb, ours[1])}", flush=True)
        results[T] = {k: {"fwd_ms": a and a * 1e3, "fwd_bwd_ms": b and b * 1e3} for k, (a, b) in row.items()}
    return results


_MEM_SCRIPT = """
import resource, sys, numpy as np, tensorflow as tf, keraslm
impl, T = sys.argv[1], int(sys.argv[2])
q = tf.constant(np.random.default_rng(0).standard_normal((1, T, 8, 64)).astype(np.float32))
f = tf.function(lambda q: keraslm.ops.attention(q, q, q, causal=True))
with keraslm.ops.implementation_scope(impl):
    small = tf.constant(np.zeros((1, 8, 8, 64), np.float32))
    f(small).numpy()   # trace and warm up on a tiny input
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    f(q).numpy()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024.0)
"""


def bench_memory(T=8192):
    print(f"\n## extra peak memory of one causal forward, B=1 H=8 D=64 T={T} (separate process each)")
    res = {}
    for impl in ("custom", "reference"):
        r = subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(_MEM_SCRIPT), impl, str(T)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"    {impl}: failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}")
            continue
        mb = float(r.stdout.split()[-1])
        res[impl] = mb
        print(f"    {'keraslm op' if impl == 'custom' else 'pure TF':12s} +{mb:9.1f} MB")
    return res


def bench_decode(caches, repeats, steps=50):
    print(f"\n## one-token decode (Tq=1) against a KV cache, B=1 H={H} D={D}: median us per call,"
          f" {steps} calls inside one tf.while_loop (no Python dispatch)")
    rng = np.random.default_rng(1)
    res = {}

    def looped(impl, jit):
        def run(q, k, v):
            def body(i, acc):
                with keraslm.ops.implementation_scope(impl):
                    return i + 1, acc + keraslm.ops.attention(q + acc, k, v, causal=True)
            return tf.while_loop(lambda i, acc: i < steps, body, (0, tf.zeros_like(q)))[1]
        return tf.function(run, jit_compile=jit)

    paths = {"keraslm op": looped("custom", False), "pure TF": looped("reference", False),
             "pure TF + XLA": looped("reference", True)}
    bandwidth = copy_bandwidth()
    print(f"# copy bandwidth {bandwidth / 1e9:.1f} GB/s (numpy copy of 1 GiB, read + write bytes); a call reads "
          "every live key and value once, so 'GB/s' below is those bytes over the op's time")
    for S in caches:
        q = tf.constant(rng.standard_normal((1, 1, H, D)).astype(np.float32))
        k, v = (tf.constant(rng.standard_normal((1, S, H, D)).astype(np.float32)) for _ in range(2))
        row = {name: median_time(lambda: fn(q, k, v).numpy(), repeats) / steps for name, fn in paths.items()}
        ours = row["keraslm op"]
        rate = 2 * S * H * D * 4 / ours
        print(f"cache={S:5d}  keraslm op {rate / 1e9:5.1f} GB/s ({rate / bandwidth:4.0%} of copy)  "
              + "  ".join(f"{n}: {t * 1e6:8.1f} us (x{t / ours:4.2f})" for n, t in row.items()))
        res[S] = {k: t * 1e6 for k, t in row.items()}
        res[S]["keraslm_gb_per_s"] = rate / 1e9
    res["copy_gb_per_s"] = bandwidth / 1e9
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="T in {128, 512} only, fewer repeats")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--seq-lens", type=int, nargs="*", default=None, help="sequence lengths to time")
    ap.add_argument("--skip-speed", action="store_true", help="only the memory and decode sections")
    args = ap.parse_args()
    header("keraslm attention benchmark")
    Ts = args.seq_lens or ([128, 512] if args.quick else [128, 512, 1024, 2048, 4096])
    repeats = 3 if args.quick else 7
    results = {"speed": {} if args.skip_speed else bench_speed(Ts, repeats)}
    results["memory_mb"] = bench_memory(2048 if args.quick else 8192)
    results["decode_us"] = bench_decode([256, 1024, 4096], repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
