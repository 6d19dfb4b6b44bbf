"""Shared pytest configuration: opt-in markers and common fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="run tests marked slow (long training, large benchmarks)")


def _gpu_unavailable():
    """Why the gpu tests cannot run here, or None."""
    try:
        from keraslm import _C
    except ImportError as e:
        return f"keraslm._C is not importable ({e})"
    if not _C.build_info["cuda"]:
        return "keraslm was built without CUDA (no nvcc at install time)"
    if _C.dlpack.cuda_device_count() == 0:
        return "no CUDA device"
    try:
        import torch  # noqa: F401
    except ImportError:
        try:
            import cupy  # noqa: F401
        except ImportError:
            return "needs torch or CuPy to hold device arrays"
    return None


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--run-slow") or os.environ.get("KERASLM_RUN_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: opt in with --run-slow")
    gpu_reason = _gpu_unavailable() if any("gpu" in item.keywords for item in items) else None
    skip_gpu = pytest.mark.skip(reason=f"gpu: {gpu_reason}")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and gpu_reason:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's name (fresh inputs per test, reproducible)."""
    import zlib

    import numpy as np

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
