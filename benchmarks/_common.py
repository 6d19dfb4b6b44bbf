"""Helpers shared by the benchmarks: timing with medians and the run header."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time


def median_time(fn, repeats=7, warmup=2, min_time=0.0):
    """Median wall time of fn() in seconds over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start) < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times)


def copy_bandwidth(gib=1.0, repeats=5):
    """Bytes moved per second (read + write) by a numpy copy of a ``gib``-GiB float32 array: the memory
    bandwidth a kernel that streams its operands once can hope for."""
    import numpy as np

    src = np.ones(int(gib * 2**30) // 4, np.float32)
    dst = np.empty_like(src)
    seconds = median_time(lambda: np.copyto(dst, src), repeats, warmup=1)
    return 2 * src.nbytes / seconds


def cpu_model():
    """The CPU's model name (lscpu, else /proc/cpuinfo, else platform)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(title):
    import tensorflow as tf

    import keraslm
    from keraslm import _C

    lines = [
        f"# {title}",
        f"# machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()}",
        f"# tensorflow {tf.__version__}, keraslm {keraslm.__version__}, kernel ISA {_C.cpu_isa()}, "
        f"_C threads {_C.num_threads()}, TF intra-op threads "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}",
        f"# custom ops: {'loaded' if keraslm.ops.custom_ops_available() else 'NOT loaded: ' + str(keraslm.ops.load_error())}; "
        f"switch={keraslm.ops.implementation()}",
    ]
    print("\n".join(lines), flush=True)
