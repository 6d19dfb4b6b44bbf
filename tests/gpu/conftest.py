"""GPU test helpers: device arrays through torch (or CuPy) and DLPack.

These tests need an NVIDIA GPU, a CUDA build of keraslm and torch or CuPy;
TensorFlow is not needed (the kernels are driven through keraslm._C.dlpack).
Without all of that every test here is skipped (see tests/conftest.py)."""

import pytest

from cuda_backend import Backend


@pytest.fixture(scope="session")
def gpu():
    return Backend()
