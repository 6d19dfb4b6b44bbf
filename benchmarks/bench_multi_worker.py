"""Multi-worker training (tf.distribute.MultiWorkerMirroredStrategy) on one machine over loopback gRPC: what a
2-worker cluster trains per second against one process with the same global batch, and what one all-reduce
costs as the tensor (the model) grows.

Run:  python benchmarks/bench_multi_worker.py [--preset gpt-nano] [--steps 60] [--batch-size N]
          [--model-args JSON] [--data tinyshakespeare] [--log-every N] [--sizes 0.1,1,4,16] [--repeats 10]
          [--skip-train] [--skip-allreduce] [--timeout 900] [--json FILE]

What it does:

1. Trains the preset with ``python -P -m keraslm train`` once in one process (the default strategy), then in a
   2-worker cluster on 127.0.0.1 (free ports, ``TF_CONFIG`` per process, ``--strategy multi_worker``: the README's
   recipe and tests/training/test_multi_worker.py's), with the same flags and the same global ``--batch-size``
   (each worker computes half of it). Only the chief (worker 0) writes the run directory. Training speed is
   read from the run: ``metrics.json``'s ``tokens_per_second`` (the whole run's training time, tracing and
   checkpoints included) and the median of ``logs/training.csv``'s ``tokens_per_second`` rows without the
   first row (which holds the tracing). The ratio 2-worker / 1-process is printed for both.
2. Times the all-reduce alone: two worker processes (this script again, in its hidden ``--allreduce-worker``
   mode) create ``tf.distribute.MultiWorkerMirroredStrategy()`` first (TensorFlow configures collectives once,
   before any op runs), then, for float32 tensors of each ``--sizes`` (millions of elements), time
   ``strategy.run(lambda: get_replica_context().all_reduce("SUM", x))`` inside a ``tf.function``: the median of
   ``--repeats`` calls after 2 warm-ups. Printed: ms per all-reduce, MB, and the effective bandwidth
   (GB/s = tensor bytes / time; with 2 workers, a ring all-reduce's "bus bandwidth" is the same figure). The
   gradients of a model are one all-reduce of about 4 bytes x parameters per step (TF packs them), so the
   size rows place a model: gpt-nano (0.8M parameters) is near the 1M row.

What to expect: on one machine both workers share the cores and the memory bandwidth, so the cluster cannot be
faster than one process; what it shows is the overhead of the collective layer (gRPC over loopback, the
per-step synchronisation) that a real cluster pays on top of its network. Small models are latency bound
(a few ms per step in all-reduce whatever the size); large tensors approach loopback memory-copy bandwidth.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_CHILDREN: list[subprocess.Popen] = []


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt-nano", help="model preset (default: gpt-nano)")
    ap.add_argument("--steps", type=int, default=60, help="training steps of each run (default: 60)")
    ap.add_argument("--batch-size", type=int, default=0,
                    help="global batch, the same for 1 process and the 2-worker cluster (0: the preset's); "
                         "must be even")
    ap.add_argument("--model-args", default="", help="JSON of model settings over the preset's")
    ap.add_argument("--data", default="tinyshakespeare", help="training text (default: the built-in tinyshakespeare)")
    ap.add_argument("--log-every", type=int, default=0, help="steps per training.csv row (0: keraslm's default)")
    ap.add_argument("--sizes", default="0.1,1,4,16",
                    help="all-reduce sizes in millions of float32 elements, comma-separated (default: 0.1,1,4,16; "
                         "add 64 for a big model)")
    ap.add_argument("--repeats", type=int, default=10, help="timed all-reduces per size, after 2 warm-ups")
    ap.add_argument("--skip-train", action="store_true", help="only the all-reduce timings")
    ap.add_argument("--skip-allreduce", action="store_true", help="only the training comparison")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per run / cluster (default: 900)")
    ap.add_argument("--keep", default="", help="keep the run directories and worker logs under this directory")
    ap.add_argument("--json", default="", help="also write the numbers to this JSON file")
    # hidden: one worker of the all-reduce timing cluster
    ap.add_argument("--allreduce-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# -- child processes ------------------------------------------------------------------------------------------


def _kill_children():
    for p in _CHILDREN:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)   # each child leads its own session (start_new_session)
            except (ProcessLookupError, PermissionError):
                pass
    for p in _CHILDREN:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            pass


def _on_signal(signum, frame):
    _kill_children()
    sys.exit(128 + signum)


def _tail(path, chars=3000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except OSError as e:
        return f"(no log: {e})"


class WorkerFailed(RuntimeError):
    pass


def _start(cmd, log_path, env):
    log = open(log_path, "w")
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    _CHILDREN.append(p)
    return p


def _wait_all(procs, logs, what, timeout):
    """Waits for every process; the first failure (or the timeout) kills the others and raises with its log."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        for i, rc in enumerate(codes):
            if rc not in (None, 0):
                _kill_children()
                raise WorkerFailed(f"{what}: process {i} exited with {rc}; the tail of {logs[i]}:\n{_tail(logs[i])}")
        if all(rc == 0 for rc in codes):
            return
        if time.monotonic() > deadline:
            _kill_children()
            tails = "\n".join(f"--- {log}:\n{_tail(log, 1500)}" for log in logs)
            raise WorkerFailed(f"{what}: still running after {timeout:.0f}s, killed\n{tails}")
        time.sleep(0.1)


# -- 1. training throughput -----------------------------------------------------------------------------------


def _train_flags(args, out):
    flags = ["--preset", args.preset, "--data", args.data, "--out", out, "--steps", str(args.steps),
             "--checkpoint-every", str(args.steps), "--eval-steps", "1", "--jit-compile", "off",
             "--steps-per-execution", "1", "--verbose", "0"]
    if args.batch_size:
        flags += ["--batch-size", str(args.batch_size)]
    if args.model_args:
        flags += ["--model-args", args.model_args]
    if args.log_every:
        flags += ["--log-every", str(args.log_every)]
    return flags


def _read_run(out):
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    rates = []
    with open(os.path.join(out, "logs", "training.csv")) as f:
        head, *rows = [line.strip().split(",") for line in f if line.strip()]
    col = head.index("tokens_per_second")
    for r in rows[1:]:                               # the first row holds the tracing
        if col < len(r) and r[col]:
            rates.append(float(r[col]))
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    return {"tokens_per_second_run": metrics.get("tokens_per_second"),
            "tokens_per_second_median_rows": statistics.median(rates) if rates else None, "rows": len(rates),
            "wall_seconds": metrics.get("wall_seconds"), "train_seconds": metrics.get("train_seconds"),
            "parameters": metrics.get("parameters"), "config": config}


def train_single(args, work):
    out, log = os.path.join(work, "one"), os.path.join(work, "one.log")
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    t0 = time.perf_counter()
    p = _start([sys.executable, "-P", "-m", "keraslm", "train", *_train_flags(args, out)], log, env)
    _wait_all([p], [log], "1-process training", args.timeout)
    result = _read_run(out)
    result["process_seconds"] = time.perf_counter() - t0
    return result


def train_cluster(args, work, workers=2):
    out = os.path.join(work, "two")
    from keraslm.precision import loopback_cluster

    procs, logs = [], []
    t0 = time.perf_counter()
    for index, tf_config in enumerate(loopback_cluster(workers)):
        env = dict(os.environ, TF_CONFIG=tf_config,
                   KERASLM_COLLECTIVE_TIMEOUT=os.environ.get("KERASLM_COLLECTIVE_TIMEOUT", "120"))
        log = os.path.join(work, f"two-worker{index}.log")
        logs.append(log)
        procs.append(_start([sys.executable, "-P", "-m", "keraslm", "train", *_train_flags(args, out),
                             "--strategy", "multi_worker"], log, env))
    _wait_all(procs, logs, f"{workers}-worker training", args.timeout)
    result = _read_run(out)
    result["process_seconds"] = time.perf_counter() - t0
    return result


# -- 2. all-reduce timing -------------------------------------------------------------------------------------


def allreduce_worker(args):
    """One worker of the timing cluster (TF_CONFIG set by the parent). The strategy comes before any TF op."""
    import tensorflow as tf

    timeout = float(os.environ.get("KERASLM_COLLECTIVE_TIMEOUT", "120"))
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout))
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    rows = []
    for millions in sizes:
        n = max(1, int(round(millions * 1e6)))
        with strategy.scope():
            x = tf.ones([n], tf.float32)

        device = strategy.extended.worker_devices[0]

        def replica_fn(v):
            with tf.device(device):   # (an input placeholder has no device: the collective needs one)
                v = tf.identity(v)
            return tf.distribute.get_replica_context().all_reduce("SUM", v)

        @tf.function
        def step(x):
            out = strategy.run(replica_fn, args=(x,))
            return strategy.experimental_local_results(out)[0][:1]   # a 1-element fetch: the sync point

        def once():
            t0 = time.perf_counter()
            y = step(x).numpy()
            return time.perf_counter() - t0, float(y[0])

        for _ in range(2):
            once()
        times = []
        for _ in range(args.repeats):
            dt, value = once()
            times.append(dt)
        assert value == strategy.num_replicas_in_sync, value      # a SUM of ones over the replicas
        ms = statistics.median(times) * 1e3
        mb = n * 4 / 1e6
        rows.append({"elements": n, "mb": mb, "ms": ms, "min_ms": min(times) * 1e3, "gb_per_s": mb / ms,
                     "replicas": strategy.num_replicas_in_sync})
        if args.allreduce_worker == 0:
            print(f"worker 0: {n} elements {ms:.2f} ms", flush=True)
    if args.allreduce_worker == 0 and args.result:
        with open(args.result + ".tmp", "w") as f:
            json.dump(rows, f)
        os.replace(args.result + ".tmp", args.result)


def allreduce_cluster(args, work, workers=2):
    from keraslm.precision import loopback_cluster

    result = os.path.join(work, "allreduce.json")
    procs, logs = [], []
    for index, tf_config in enumerate(loopback_cluster(workers)):
        env = dict(os.environ, TF_CONFIG=tf_config,
                   KERASLM_COLLECTIVE_TIMEOUT=os.environ.get("KERASLM_COLLECTIVE_TIMEOUT", "120"))
        log = os.path.join(work, f"allreduce-worker{index}.log")
        logs.append(log)
        procs.append(_start([sys.executable, os.path.abspath(__file__), "--allreduce-worker", str(index),
                             "--sizes", args.sizes,
                             "--repeats", str(args.repeats), "--result", result], log, env))
    _wait_all(procs, logs, f"{workers}-worker all-reduce", args.timeout)
    with open(result) as f:
        return json.load(f)


# -- main -----------------------------------------------------------------------------------------------------


def _fmt(v, spec=".0f"):
    return "n/a" if v is None else format(v, spec)


def _ratio(a, b):
    return a / b if a and b else None


def main(argv=None):
    args = parse_args(argv)
    if args.allreduce_worker is not None:
        allreduce_worker(args)
        return 0
    if args.batch_size and args.batch_size % 2:
        sys.exit("--batch-size must be even (the global batch is split over 2 workers)")
    if args.model_args:
        json.loads(args.model_args)                     # fail early on bad JSON

    atexit.register(_kill_children)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        work = tempfile.mkdtemp(prefix="bench_multi_worker-", dir=args.keep)
    else:
        work = tempfile.mkdtemp(prefix="bench_multi_worker-")
        atexit.register(shutil.rmtree, work, ignore_errors=True)

    from _common import cpu_model, header

    header("multi-worker training (MultiWorkerMirroredStrategy, 2 workers over loopback) vs one process")
    print(f"# CPU: {cpu_model()}; {os.cpu_count()} cores shared by every process of a run", flush=True)
    numbers = {"cpu": cpu_model(), "cores": os.cpu_count(), "preset": args.preset, "steps": args.steps,
               "batch_size": args.batch_size or None, "model_args": args.model_args or None}
    try:
        if not args.skip_train:
            print(f"\n## training: {args.preset}, {args.steps} steps, global batch "
                  f"{args.batch_size or 'the preset' + chr(39) + 's'}"
                  + (f", model args {args.model_args}" if args.model_args else "")
                  + "; --jit-compile off --steps-per-execution 1", flush=True)
            one = train_single(args, work)
            cfg = one.pop("config")
            print(f"1 process : {_fmt(one['tokens_per_second_median_rows'])} tok/s (median of {one['rows']} "
                  f"training.csv rows after the first) | {_fmt(one['tokens_per_second_run'])} tok/s "
                  f"(metrics.json, whole run) | {one['process_seconds']:.1f} s process wall time", flush=True)
            two = train_cluster(args, work)
            two.pop("config")
            print(f"2 workers : {_fmt(two['tokens_per_second_median_rows'])} tok/s (median of {two['rows']} "
                  f"training.csv rows after the first) | {_fmt(two['tokens_per_second_run'])} tok/s "
                  f"(metrics.json, whole run) | {two['process_seconds']:.1f} s cluster wall time", flush=True)
            numbers["train"] = {
                "parameters": one["parameters"], "batch_size": cfg.get("batch_size"),
                "block_size": cfg.get("block_size"), "one_process": one, "two_workers": two,
                "ratio_median_rows": _ratio(two["tokens_per_second_median_rows"],
                                            one["tokens_per_second_median_rows"]),
                "ratio_run": _ratio(two["tokens_per_second_run"], one["tokens_per_second_run"])}
            print(f"({one['parameters']:,} parameters, global batch {cfg.get('batch_size')} x {cfg.get('block_size')} "
                  f"tokens: {cfg.get('batch_size', 0) // 2} windows per worker)", flush=True)
        if not args.skip_allreduce:
            print(f"\n## all-reduce (SUM, float32, 2 workers over loopback gRPC): median of {args.repeats} after "
                  "2 warm-ups", flush=True)
            rows = allreduce_cluster(args, work)
            print(f"{'elements':>12} {'MB':>9} {'ms':>10} {'min ms':>10} {'GB/s':>8}")
            for r in rows:
                print(f"{r['elements']:>12,} {r['mb']:>9.1f} {r['ms']:>10.2f} {r['min_ms']:>10.2f} "
                      f"{r['gb_per_s']:>8.3f}", flush=True)
            numbers["allreduce"] = rows
    except WorkerFailed as e:
        print(f"\nFAILED: {e}", file=sys.stderr, flush=True)
        if not args.keep:
            print("(rerun with --keep DIR to keep the worker logs)", file=sys.stderr)
        return 1

    print("\n## summary")
    print(f"CPU: {numbers['cpu']} ({numbers['cores']} cores)")
    if "train" in numbers:
        t = numbers["train"]
        print(f"training {args.preset} ({t['parameters']:,} parameters), global batch {t['batch_size']}, "
              f"{args.steps} steps:")
        print(f"  tokens/s, median of rows : 1 process {_fmt(t['one_process']['tokens_per_second_median_rows'])}"
              f"  2 workers {_fmt(t['two_workers']['tokens_per_second_median_rows'])}"
              f"  ratio 2-worker / 1-process {_fmt(t['ratio_median_rows'], '.2f')}")
        print(f"  tokens/s, whole run      : 1 process {_fmt(t['one_process']['tokens_per_second_run'])}"
              f"  2 workers {_fmt(t['two_workers']['tokens_per_second_run'])}"
              f"  ratio 2-worker / 1-process {_fmt(t['ratio_run'], '.2f')}")
    if "allreduce" in numbers:
        print("all-reduce: " + "; ".join(f"{r['mb']:.1f} MB {r['ms']:.2f} ms ({r['gb_per_s']:.2f} GB/s)"
                                         for r in numbers["allreduce"]))
        if len(numbers["allreduce"]) > 1:
            a, b = numbers["allreduce"][0], numbers["allreduce"][-1]
            print(f"  {b['mb'] / a['mb']:.0f}x the bytes -> {b['ms'] / a['ms']:.1f}x the time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(numbers, f, indent=2)
        print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
