"""Attention test shapes shared by the CPU, DLPack and CUDA tests (no TensorFlow)."""

import numpy as np

# (B, Tq, Tk, H, Hkv, D, causal, lengths): Tq != Tk, T not a multiple of any
# tile size (16/32/64), T = 1, D in {8, 64, 80, 128}, GQA/MQA, lengths incl. 0.
SHAPES = [
    (1, 1, 1, 1, 1, 8, True, None),
    (2, 1, 77, 4, 2, 64, True, "random"),       # one-token decode against a cache
    (1, 3, 300, 2, 1, 80, True, "zero_and_full"),  # short decode, keys split across threads
    (2, 17, 17, 3, 3, 8, True, None),
    (2, 67, 67, 4, 1, 64, True, "random"),      # multi-query, crosses a 64 tile
    (1, 33, 95, 2, 2, 80, True, None),          # Tq < Tk (chunked prefill)
    (1, 40, 12, 2, 1, 16, True, None),          # Tq > Tk: early rows see no key
    (2, 50, 70, 4, 2, 128, False, "zero_and_full"),
    (1, 129, 129, 2, 2, 64, True, None),
    (3, 9, 23, 6, 2, 33, False, "random"),
    (1, 70, 130, 1, 1, 128, True, "random"),
]


def _ids(shape):
    B, Tq, Tk, H, Hkv, D, causal, lengths = shape
    return f"B{B}-Tq{Tq}-Tk{Tk}-H{H}-Hkv{Hkv}-D{D}-{'causal' if causal else 'full'}-{lengths}"


def make_inputs(rng, shape):
    B, Tq, Tk, H, Hkv, D, causal, lengths = shape
    q = rng.standard_normal((B, Tq, H, D)).astype(np.float32)
    k = rng.standard_normal((B, Tk, Hkv, D)).astype(np.float32)
    v = rng.standard_normal((B, Tk, Hkv, D)).astype(np.float32)
    if lengths is None:
        kl = None
    elif lengths == "zero_and_full":
        kl = np.array([0, Tk] * B, np.int32)[:B] if B > 1 else np.array([0], np.int32)
    else:
        kl = rng.integers(0, Tk + 1, size=B).astype(np.int32)
        kl[0] = Tk
    return q, k, v, causal, kl
