"""keraslm._C.dlpack on CPU tensors: the DLPack plumbing (borrowing, strides,
dtypes, exporting) is held to the numpy entry points and the float64
reference.  numpy is the producer and consumer; torch is used where installed."""

import subprocess
import sys

import numpy as np
import pytest

from keraslm import _C
from attention_shapes import SHAPES, _ids, make_inputs
from np_reference import assert_close, attention as np_attention, attention_grad as np_attention_grad

dl = _C.dlpack


@pytest.mark.parametrize("shape", SHAPES[:6], ids=_ids)
def test_attention_matches_numpy_module_and_float64(shape, rng):
    q, k, v, causal, kl = make_inputs(rng, shape)
    out, lse = dl.attention_forward(q, k, v, causal=causal, key_lengths=kl)
    assert isinstance(out, dl.Tensor) and out.device == "cpu" and out.dtype == "float32"
    assert out.shape == q.shape and lse.shape == (q.shape[0], q.shape[2], q.shape[1])
    out, lse = np.from_dlpack(out), np.from_dlpack(lse)
    ref_out, ref_lse = _C.attention_forward(q, k, v, causal=causal, key_lengths=kl)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(lse, ref_lse)
    exp_out, exp_lse = np_attention(q, k, v, causal, kl)
    assert_close(out, exp_out, 2e-5, 2e-5, "out")
    assert_close(lse, exp_lse, 2e-5, 2e-5, "lse")

    dout = rng.standard_normal(q.shape).astype(np.float32)
    dlse = rng.standard_normal(lse.shape).astype(np.float32)
    grads = dl.attention_backward(q, k, v, out, lse, dout, causal=causal, key_lengths=kl, dlse=dlse)
    expected = np_attention_grad(q, k, v, dout, causal, kl, dlse=dlse)
    for name, g, e in zip(("dq", "dk", "dv"), grads, expected):
        assert_close(np.from_dlpack(g), e, 5e-5, 5e-5, name)


def test_strided_views_are_read_through_their_strides(rng):
    # k and v as [B, Hkv, T, D] buffers viewed as [B, T, Hkv, D]; q a slice.
    q_full = rng.standard_normal((2, 9, 4, 40)).astype(np.float32)
    q = q_full[:, ::2, :, :]                                 # [2, 5, 4, 40], time stride 2
    k = rng.standard_normal((2, 2, 11, 40)).astype(np.float32).transpose(0, 2, 1, 3)
    v = rng.standard_normal((2, 2, 11, 40)).astype(np.float32).transpose(0, 2, 1, 3)
    out, lse = dl.attention_forward(q, k, v, causal=True)
    exp_out, exp_lse = np_attention(q, k, v, True)
    assert_close(np.from_dlpack(out), exp_out, 2e-5, 2e-5, "out")
    assert_close(np.from_dlpack(lse), exp_lse, 2e-5, 2e-5, "lse")


def test_sample_matches_numpy_module(rng):
    B, V = 5, 1000
    logits = (rng.standard_normal((B, V)) * 3).astype(np.float32)
    coins = rng.random(B)
    prev = rng.integers(-1, V, size=(B, 7)).astype(np.int32)
    kw = dict(temperature=np.array([0.0, 0.7, 1.0, 1.3, 2.0], np.float32), top_k=np.array([0, 5, 50, 0, 999]),
              top_p=0.9, min_p=np.array([0.0, 0.0, 0.05, 0.1, 0.0], np.float32), repetition_penalty=1.2)
    ids, logprobs = dl.sample(logits, coins, previous_ids=prev, **kw)
    ref_ids, ref_logprobs = _C.sample(logits, coins, previous_ids=prev, **kw)
    np.testing.assert_array_equal(np.from_dlpack(ids), ref_ids)
    np.testing.assert_array_equal(np.from_dlpack(logprobs), ref_logprobs)


@pytest.mark.parametrize("call, message", [
    (lambda q, k, v: dl.attention_forward(q.astype(np.float64), k, v), "CPU tensors must be float32; q is float64"),
    (lambda q, k, v: dl.attention_forward(q, k[..., :5], v[..., :5]), "k head size 5 does not match q head size 8"),
    (lambda q, k, v: dl.attention_forward(q, k, v[:, :2]), "v must have the shape of k"),
    (lambda q, k, v: dl.attention_forward(q[0], k, v), "q must have rank 4"),
    (lambda q, k, v: dl.attention_forward([1.0], k, v), "q must be a DLPack tensor"),
    (lambda q, k, v: dl.attention_forward(q, k, v, key_lengths=[4]), r"key_lengths\[0\] must be in \[0, Tk=3\], got 4"),
    (lambda q, k, v: dl.attention_forward(q[..., ::2], k[..., ::2], v[..., ::2]), "contiguous in its last dimension"),
    (lambda q, k, v: dl.attention_forward(q, k, v, stream=-3), "stream must be a CUDA stream handle"),
    (lambda q, k, v: dl.attention_backward(q, k, v, q, np.zeros((1, 2, 3), np.float32), q),
     r"lse must be a dense float32 tensor of shape \(1, 2, 4\)"),
])
def test_attention_errors_name_the_bad_value(call, message):
    q = np.zeros((1, 4, 2, 8), np.float32)
    k = np.zeros((1, 3, 1, 8), np.float32)
    with pytest.raises(ValueError, match=message):
        call(q, k, k.copy())


@pytest.mark.parametrize("kwargs, message", [
    (dict(logits=np.full((1, 4), np.nan, np.float32)), r"logits must not contain NaN or \+inf.*logits\[0, 0\] = nan"),
    (dict(coins=[1.5]), r"coins must be in \[0, 1\); got coins\[0\] = 1.5"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(previous_ids=np.array([[9]], np.int32)), r"previous_ids\[0, 0\] = 9"),
    (dict(previous_ids=np.array([[1]], np.int64)), "previous_ids must have dtype int32, got int64"),
    (dict(logits=np.zeros((1, 4), np.float64)), "logits must have dtype float32, got float64"),
])
def test_sample_errors_name_the_bad_value(kwargs, message):
    args = dict(logits=np.zeros((1, 4), np.float32), coins=[0.5])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        dl.sample(**args)


def test_exported_tensor_outlives_its_producer_and_torch_reads_it(rng):
    q, k, v, causal, kl = make_inputs(rng, SHAPES[4])
    out, _ = dl.attention_forward(q, k, v, causal=causal, key_lengths=kl)
    first = np.from_dlpack(out)
    del out  # the numpy view keeps the buffer alive
    expected = _C.attention_forward(q, k, v, causal=causal, key_lengths=kl)[0]
    np.testing.assert_array_equal(first, expected)
    torch = pytest.importorskip("torch")
    out, _ = dl.attention_forward(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), causal=causal,
                                  key_lengths=kl)
    np.testing.assert_array_equal(torch.from_dlpack(out).numpy(), expected)


def test_cuda_tensors_need_a_cuda_build():
    if _C.build_info["cuda"]:
        assert dl.cuda_built
        pytest.skip("this build has CUDA; the GPU tests cover CUDA tensors")
    assert not dl.cuda_built and dl.cuda_device_count() == 0

    class FakeCuda:  # a producer that claims CUDA memory
        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, stream=None):
            return np.zeros((1, 2, 1, 8), np.float32).__dlpack__()

    with pytest.raises(ValueError, match="built without CUDA"):
        dl.attention_forward(FakeCuda(), FakeCuda(), FakeCuda())


def test_kernels_module_imports_without_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import numpy as np, keraslm\n"
            "from keraslm import _C\n"
            "out, lse = _C.dlpack.attention_forward(*(np.ones((1, 2, 1, 4), np.float32),) * 3)\n"
            "assert np.from_dlpack(out).shape == (1, 2, 1, 4)\n"
            "try:\n    keraslm.models\nexcept ImportError as e:\n    print('ImportError:', e)\n")
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "keraslm.models needs TensorFlow" in result.stdout
