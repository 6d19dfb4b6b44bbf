"""The CUDA build switch: with KERASLM_CUDA=AUTO, an install on a machine with
nvcc and a visible NVIDIA GPU builds the CUDA kernels, KERASLM_CUDA=ON always
does (CI sets it, so a CUDA compile break fails CI), and the TF op library
registers GPU kernels for the same ops while still loading on a machine without
a GPU (every CPU test loads it)."""

import os
import shutil

import pytest

from keraslm import _C


def test_auto_builds_cuda_when_nvcc_is_present():
    info = _C.build_info
    assert info["cuda_option"] in ("AUTO", "ON", "OFF")
    gpu = os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")
    if info["cuda_option"] == "AUTO" and shutil.which("nvcc") and gpu:
        assert info["cuda"], "nvcc is on PATH and a GPU is visible, but the package was built without CUDA"
    if info["cuda_option"] == "AUTO" and not gpu:
        assert not info["cuda"], "no GPU is visible, but an AUTO build compiled the CUDA kernels"
    if info["cuda_option"] == "ON":
        assert info["cuda"]
    assert info["cuda"] == _C.dlpack.cuda_built
    if info["cuda"]:
        assert info["cuda_architectures"]


def test_tf_ops_register_gpu_kernels_in_a_cuda_build():
    if not _C.build_info["cuda"]:
        pytest.skip("built without CUDA")
    from tensorflow.python.framework import kernels

    from keraslm.ops import _loader

    assert _loader.op_library() is not None
    for op in ("Keraslm>FlashAttention", "Keraslm>FlashAttentionGrad", "Keraslm>Sample"):
        devices = {k.device_type for k in kernels.get_registered_kernels_for_op(op).kernel}
        # XLA_CPU_JIT: the XLA lowering (custom call) of the attention ops, where the build has it.
        assert devices - {"XLA_CPU_JIT"} == {"CPU", "GPU"}, (op, devices)
