"""CUDA attention kernels against the float64 reference and the CPU kernel,
on the CPU tests' shapes plus tensor-core, decode and large-D cases."""

import numpy as np
import pytest

from keraslm import _C
from attention_shapes import SHAPES, _ids, make_inputs
from cuda_backend import DTYPES
from np_reference import assert_close, attention as np_attention, attention_grad as np_attention_grad

pytestmark = pytest.mark.gpu
dl = _C.dlpack

GPU_SHAPES = SHAPES + [
    (2, 300, 300, 8, 2, 64, True, None),         # tensor-core tiles, GQA, ragged T
    (1, 1000, 1000, 4, 4, 128, True, "random"),
    (3, 1, 5000, 8, 8, 64, True, "random"),      # decode: keys split across blocks
    (2, 4, 3001, 6, 2, 128, True, "random"),
    (2, 16, 777, 4, 1, 80, True, "zero_and_full"),
    (1, 50, 77, 2, 1, 256, True, None),           # largest head size
    (1, 9, 9, 1, 1, 1, False, None),              # D = 1
    (1, 2048, 2048, 2, 2, 64, True, None),
]
# Error bound relative to the largest reference value, per element type.
TOL = {"float32": 5e-5, "bfloat16": 2e-2, "float16": 3e-3}


def _inputs(gpu, rng, shape, dtype):
    q, k, v, causal, kl = make_inputs(rng, shape)
    dev = [gpu.to_device(x, dtype) for x in (q, k, v)]
    exact = [gpu.rounded(x, dtype) for x in (q, k, v)]
    return dev, exact, causal, kl


def _close(actual, expected, dtype, what):
    scale = max(1.0, float(np.nanmax(np.abs(np.where(np.isfinite(expected), expected, 0)))))
    assert_close(actual, expected, TOL[dtype] * scale, TOL[dtype], what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=_ids)
def test_forward_matches_float64(gpu, shape, dtype, rng):
    if not gpu.supports(dtype):
        pytest.skip(f"{dtype} needs torch")
    (q, k, v), (qe, ke, ve), causal, kl = _inputs(gpu, rng, shape, dtype)
    out, lse = dl.attention_forward(q, k, v, causal=causal, key_lengths=kl)
    assert out.dtype == dtype and out.device.startswith("cuda") and lse.dtype == "float32"
    exp_out, exp_lse = np_attention(qe, ke, ve, causal, kl)
    _close(gpu.to_numpy(out), exp_out, dtype, "out")
    assert_close(gpu.to_numpy(lse), exp_lse, 1e-4, 1e-4, "lse")  # float32 scores from exact products


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GPU_SHAPES[:12] + GPU_SHAPES[14:17], ids=_ids)
def test_backward_matches_float64(gpu, shape, dtype, rng):
    if not gpu.supports(dtype):
        pytest.skip(f"{dtype} needs torch")
    (q, k, v), (qe, ke, ve), causal, kl = _inputs(gpu, rng, shape, dtype)
    out, lse = dl.attention_forward(q, k, v, causal=causal, key_lengths=kl)
    dout_np = rng.standard_normal(qe.shape)
    dlse_np = rng.standard_normal(gpu.to_numpy(lse).shape).astype(np.float32)
    dout = gpu.to_device(dout_np, dtype)
    grads = dl.attention_backward(q, k, v, out, lse, dout, causal=causal, key_lengths=kl,
                                  dlse=gpu.to_device(dlse_np, "float32"))
    expected = np_attention_grad(qe, ke, ve, gpu.rounded(dout_np, dtype), causal, kl, dlse=dlse_np)
    for name, g, e in zip(("dq", "dk", "dv"), grads, expected):
        _close(gpu.to_numpy(g), e, dtype, name)


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_float32_matches_the_cpu_kernel(gpu, shape, rng):
    q, k, v, causal, kl = make_inputs(rng, shape)
    out, lse = dl.attention_forward(*(gpu.to_device(x) for x in (q, k, v)), causal=causal, key_lengths=kl)
    cpu_out, cpu_lse = _C.attention_forward(q, k, v, causal=causal, key_lengths=kl)
    assert_close(gpu.to_numpy(out), cpu_out, 2e-5, 2e-5, "out")
    assert_close(gpu.to_numpy(lse), cpu_lse, 2e-5, 2e-5, "lse")


def test_rows_without_keys_are_zero_with_zero_gradients(gpu, rng):
    q, k, v, _, _ = make_inputs(rng, (2, 6, 4, 2, 1, 32, True, None))
    kl = np.array([0, 4], np.int32)
    dq_ = [gpu.to_device(x) for x in (q, k, v)]
    out, lse = dl.attention_forward(*dq_, causal=True, key_lengths=kl)
    out_np, lse_np = gpu.to_numpy(out), gpu.to_numpy(lse)
    assert (out_np[0] == 0).all() and np.isneginf(lse_np[0]).all()
    assert (out_np[1, :2] == 0).all() and np.isneginf(lse_np[1, :, :2]).all()  # Tq > Tk: first rows see nothing
    dq, dk, dv = dl.attention_backward(*dq_, out, lse, gpu.to_device(np.ones_like(q)), causal=True, key_lengths=kl)
    assert (gpu.to_numpy(dq)[0] == 0).all() and (gpu.to_numpy(dk)[0] == 0).all() and (gpu.to_numpy(dv)[0] == 0).all()


def test_strided_cache_views_and_a_side_stream(gpu, rng):
    if gpu.torch is None:
        pytest.skip("needs torch streams")
    torch = gpu.torch
    cache = torch.randn(2, 2, 4096, 3, 64, device="cuda")   # [B, K/V, S, Hkv, D] like the model's cache
    live = 1500
    k, v = cache[:, 0, :live], cache[:, 1, :live]           # strided views, no copy
    q = torch.randn(2, 1, 6, 64, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out, lse = dl.attention_forward(q, k, v, causal=True, stream=stream.cuda_stream)
    got = torch.from_dlpack(out).double().cpu().numpy()   # consumer on the default stream waits
    exp, _ = np_attention(q.cpu().numpy(), k.cpu().numpy(), v.cpu().numpy(), True)
    assert_close(got, exp, 5e-5, 5e-5, "out")


def test_bad_inputs_raise(gpu):
    q = gpu.to_device(np.zeros((1, 4, 2, 8), np.float32))
    k = gpu.to_device(np.zeros((1, 3, 1, 8), np.float32))
    with pytest.raises(ValueError, match=r"key_lengths\[0\] must be in \[0, Tk=3\], got 5"):
        dl.attention_forward(q, k, k, key_lengths=[5])
    with pytest.raises(ValueError, match="k must have dtype float32, got float16"):
        dl.attention_forward(q, gpu.to_device(np.zeros((1, 3, 1, 8)), "float16"), k)
    with pytest.raises(ValueError, match="different device"):
        dl.attention_forward(q, np.zeros((1, 3, 1, 8), np.float32), k)
