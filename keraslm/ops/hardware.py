"""What this machine and this build accelerate: the one answer to "are bfloat16 products fast here".

Two questions, both answered here and nowhere else:

* :func:`bfloat16_matmul_unavailable_reason`: does the machine have bfloat16
  matrix units (a GPU of compute capability 8.0 or newer, or a CPU with
  AMX-BF16)? Mixed-precision training (``mixed_precision="auto"``) asks this.
* :func:`bf16_products_unavailable_reason`: can keraslm's own bfloat16 product
  (:func:`keraslm.ops.matmul_bf16`) run its accelerated kernel in the current
  context? The dense layers' ``matmul_precision`` asks this.

Each returns None when the answer is yes, else the reason in words.
"""

from __future__ import annotations

import tensorflow as tf

from keraslm.ops import _loader


def amx_bf16_available() -> bool:
    """True when the compiled op library loads and can run AMX bfloat16 products on this CPU
    (the library checks CPUID and asks Linux for the tile state)."""
    return _loader.build_info().get("amx_bf16") == "1"


def _cpu_has_flag(flag):
    """Whether /proc/cpuinfo lists ``flag`` (used only when the op library, which asks CPUID, is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and f" {flag}" in line for line in f)
    except OSError:
        return False


def bfloat16_matmul_unavailable_reason():
    """None where bfloat16 matrix products run on dedicated hardware (a GPU of compute capability
    8.0 or newer, or a CPU with AMX-BF16, where TF's oneDNN matmul runs several times faster in bfloat16),
    else why not."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))
        return None if capability >= (8, 0) else f"the GPU has compute capability {capability} (< 8.0)"
    if _loader.op_library() is not None:
        if amx_bf16_available():
            return None
        return f"the CPU cannot run AMX bfloat16 products: {_loader.build_info().get('amx_bf16_reason', 'unknown')}"
    return None if _cpu_has_flag("amx_bf16") else "the CPU has no AMX-BF16 (from /proc/cpuinfo)"


def bf16_products_unavailable_reason():
    """None when :func:`keraslm.ops.matmul_bf16` runs its accelerated kernel in the current context
    (eager, graph or XLA), else why not."""
    if _loader.implementation() == "reference":
        return "keraslm.ops is set to the pure-TF reference implementation"
    if _loader.op_library() is None:
        return f"the compiled TF ops are unavailable ({_loader.load_error()})"
    if tf.config.list_logical_devices("GPU"):
        return "a GPU is visible and the bfloat16 product has a CPU kernel only"
    if not amx_bf16_available():
        return f"the AMX kernel cannot run here: {_loader.build_info().get('amx_bf16_reason', 'unknown reason')}"
    if _loader.in_xla_context() and not _loader.has_xla_lowering("matmul_bf16"):
        return "this build has no XLA lowering of the bfloat16 product"
    return None
