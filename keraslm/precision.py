"""Run-time policy of a training run: compute precision, matrix-product precision, XLA and the
distribution strategy.

The harness (:mod:`keraslm.training`) asks these functions what to do with its
settings; what the hardware and the build can accelerate is answered by
:mod:`keraslm.ops.hardware`.
"""

from __future__ import annotations

import os

import tensorflow as tf

from keraslm import ops
from keraslm.validation import positive_int

_MULTI_WORKER = []   # the process's MultiWorkerMirroredStrategy: TensorFlow allows one, made before any op runs


def make_strategy(name):
    """A tf.distribute strategy from its name (a Strategy object is returned as is).

    ``"multi_worker"`` is TF's ``MultiWorkerMirroredStrategy`` over the cluster ``TF_CONFIG`` describes
    (collective all-reduce over gRPC). TensorFlow configures collectives once, before it runs anything,
    so the strategy is made once per process and must come first: ``keraslm.train`` makes it before
    any other TensorFlow work. A collective that waits for a dead worker fails after
    ``KERASLM_COLLECTIVE_TIMEOUT`` seconds (default 600) instead of hanging.
    """
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not _MULTI_WORKER:
            if not os.environ.get("TF_CONFIG"):
                raise ValueError("strategy='multi_worker' needs TF_CONFIG: the cluster's workers and this "
                                 "process's task (README, Multi-worker training)")
            timeout = float(os.environ.get("KERASLM_COLLECTIVE_TIMEOUT", "600"))
            options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
            try:
                _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy(communication_options=options))
            except RuntimeError as e:
                raise ValueError(f"strategy='multi_worker' must be made before TensorFlow runs anything in the "
                                 f"process ({e}): train first, or create tf.distribute.MultiWorkerMirroredStrategy() "
                                 "at startup and pass it as strategy") from None
        return _MULTI_WORKER[0]
    raise ValueError(f"strategy must be 'default', 'mirrored' or 'multi_worker', got {name!r}")


def loopback_cluster(num_workers):
    """``TF_CONFIG`` values (JSON strings), one per worker in index order (the chief first), of a
    ``num_workers``-worker cluster on this machine's loopback, on ports free now: for trying multi-worker
    training on one machine. Each worker process gets its own string as its ``TF_CONFIG``."""
    import json
    import socket

    socks = [socket.socket() for _ in range(positive_int("num_workers", num_workers))]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        workers = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
            for index in range(len(workers))]


def is_multi_worker(strategy):
    """Whether ``strategy`` spans several processes (workers)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.cluster_resolver.cluster_spec().num_tasks("worker") > 1


def use_xla(jit_compile, model):
    """Whether the train step of ``model`` is compiled with XLA, for ``jit_compile`` "auto" / "on" / "off"."""
    if jit_compile in ("on", "off"):
        return jit_compile == "on"
    if jit_compile != "auto":
        raise ValueError(f"jit_compile must be 'auto', 'on' or 'off', got {jit_compile!r}")
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return False  # XLA-compiled replicas cannot reach variables mirrored on other devices
    custom = ops.implementation() != "reference" and ops.custom_ops_available()
    return model.prefers_xla_training(custom_ops=custom)


def use_mixed_precision(value):
    """Whether ``mixed_precision`` ("on" / "off" / "auto", or a bool) asks for mixed_bfloat16 here.

    "auto" is on where bfloat16 matrix products have hardware support
    (:func:`keraslm.ops.bfloat16_matmul_unavailable_reason`).
    """
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("on", "true", "1"):
        return True
    if text in ("off", "false", "0"):
        return False
    if text == "auto":
        return ops.bfloat16_matmul_unavailable_reason() is None
    raise ValueError(f"mixed_precision must be 'on', 'off' or 'auto', got {value!r}")


def resolve_matmul_precision(value):
    """The dense layers' matmul precision that ``value`` ("float32" / "bfloat16" / "auto") gives here.

    "auto" is "bfloat16" where keraslm's bfloat16 product runs its accelerated
    kernel (:func:`keraslm.ops.bf16_products_unavailable_reason`), else "float32".
    """
    text = str(value).lower()
    if text in ops.matmul.PRECISIONS:
        return text
    if text == "auto":
        return "bfloat16" if ops.bf16_products_unavailable_reason() is None else "float32"
    raise ValueError(f"matmul_precision must be 'float32', 'bfloat16' or 'auto', got {value!r}")


def float32_copy(model):
    """The same model (weights, tokenizer) computing in float32: a mixed_bfloat16 model's weights
    are float32 already, so this is a rebuild from the config plus a copy of the weights."""
    if model.dtype_policy.name == "float32":
        return model
    config = model.get_config()
    config["dtype"] = "float32"
    copy = type(model).from_config(config)
    copy.build_for_inference()
    copy.set_weights(model.get_weights())
    return copy
