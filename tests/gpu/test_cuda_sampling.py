"""The CUDA sampler against the CPU kernel: the same coins give the same ids
(and log-probabilities to float rounding), for every filter combination, ties,
banned tokens, penalties and vocabulary sizes; bad device inputs raise."""

import numpy as np
import pytest

from keraslm import _C

pytestmark = pytest.mark.gpu
dl = _C.dlpack


def _case(rng, B, V, ties=False):
    logits = rng.standard_normal((B, V)) * rng.choice([0.5, 2.0, 8.0])
    if ties:
        logits = np.round(logits * 2) / 2                      # many exactly equal logits
    logits = logits.astype(np.float32)
    logits[rng.random((B, V)) < 0.05] = -np.inf                # banned tokens
    logits[:, 0] = np.maximum(logits[:, 0], -1)                # every row keeps a finite logit
    params = dict(
        temperature=rng.choice([0.0, 0.3, 1.0, 1.7], B).astype(np.float32),
        top_k=rng.choice([0, 1, 5, 40, V, V + 10], B).astype(np.int32),
        top_p=rng.choice([1.0, 0.95, 0.5, 0.1], B).astype(np.float32),
        min_p=rng.choice([0.0, 0.0, 0.05, 0.3], B).astype(np.float32),
        repetition_penalty=rng.choice([1.0, 1.3, 0.8], B).astype(np.float32),
    )
    prev = rng.integers(-1, V, size=(B, int(rng.integers(0, 20)))).astype(np.int32)
    return logits, rng.random(B), params, prev


@pytest.mark.parametrize("V", [1, 2, 7, 1000, 32000, 50257, 262144])
@pytest.mark.parametrize("ties", [False, True])
def test_same_coins_same_ids_as_cpu(gpu, V, ties, rng):
    for _ in range(3):
        B = int(rng.integers(1, 9))
        logits, coins, params, prev = _case(rng, B, V, ties)
        ids, logprobs = dl.sample(gpu.to_device(logits), coins, previous_ids=gpu.to_device(prev), **params)
        cpu_ids, cpu_logprobs = _C.sample(logits, coins, previous_ids=prev, **params)
        np.testing.assert_array_equal(gpu.to_numpy(ids), cpu_ids)
        np.testing.assert_allclose(gpu.to_numpy(logprobs), cpu_logprobs, rtol=1e-5, atol=1e-5)


def test_scalar_parameters_and_no_previous_ids(gpu, rng):
    logits = rng.standard_normal((16, 5000)).astype(np.float32)
    coins = rng.random(16)
    ids, _ = dl.sample(gpu.to_device(logits), coins, temperature=0.9, top_k=50, top_p=0.9)
    np.testing.assert_array_equal(gpu.to_numpy(ids), _C.sample(logits, coins, temperature=0.9, top_k=50,
                                                               top_p=0.9)[0])


def test_distribution_follows_the_coins(gpu, rng):
    # Inverse CDF in id order: coin u picks the first id whose cumulative probability exceeds u.
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]], np.float32))
    for u, expected in [(0.05, 0), (0.15, 1), (0.45, 2), (0.95, 3)]:
        ids, lp = dl.sample(gpu.to_device(logits), [u])
        assert int(gpu.to_numpy(ids)[0]) == expected
        assert abs(float(gpu.to_numpy(lp)[0]) - float(logits[0, expected])) < 1e-6


@pytest.mark.parametrize("logits, prev, message", [
    ([[0.0, np.nan, 1.0]], None, r"logits\[0, 1\] = nan"),
    ([[0.0, np.inf, 1.0]], None, r"logits\[0, 1\] = inf"),
    ([[-np.inf, -np.inf, -np.inf]], None, r"logits\[0, :\] is all -inf"),
    ([[0.0, 1.0, 2.0]], [[0, 3]], r"previous_ids\[0, 1\] = 3"),
])
def test_bad_device_values_raise(gpu, logits, prev, message):
    logits = gpu.to_device(np.array(logits, np.float32))
    prev = None if prev is None else gpu.to_device(np.array(prev, np.int32))
    with pytest.raises(ValueError, match=message):
        dl.sample(logits, [0.5], previous_ids=prev)


def test_bad_host_parameters_raise(gpu):
    logits = gpu.to_device(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"temperature\[1\] = -1"):
        dl.sample(logits, [0.5, 0.5], temperature=np.array([1.0, -1.0], np.float32))
