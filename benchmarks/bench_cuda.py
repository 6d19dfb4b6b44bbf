"""CUDA kernels vs torch on an NVIDIA GPU (no TensorFlow needed).

Attention (bf16 by default): forward, forward+backward and one-token decode
against torch.nn.functional.scaled_dot_product_attention (flash backend where
torch has it), causal, at the given sequence lengths and head sizes; sampling
(top-k / top-p at V=50257) against a torch sort-based sampler.  Both sides run
in the same process on the same inputs; times are medians of CUDA-event timings.

    python3 benchmarks/bench_cuda.py                    # T=4096, D=64 and 128
    python3 benchmarks/bench_cuda.py --seq-lens 1024 4096 --head-dims 64 --dtype float16
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np


def cuda_time(torch, fn, repeats=20, warmup=3):
    """Median milliseconds of fn() measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def attention_rows(torch, dl, T, D, dtype, batch, heads):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    dt = getattr(torch, dtype)
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (batch, T, heads, D)                        # ours: [B, T, H, D]
    q, k, v, dout = (torch.randn(shape, device="cuda", dtype=dt, generator=gen) for _ in range(4))
    tq, tk, tv, tdout = (x.transpose(1, 2).contiguous() for x in (q, k, v, dout))   # torch: [B, H, T, D]
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    flops_fwd = 2 * 2 * batch * heads * T * T * D / 2   # two matmuls, causal half

    def ours_fwd():
        return dl.attention_forward(q, k, v, causal=True)

    def ours_fwd_bwd():
        out, lse = dl.attention_forward(q, k, v, causal=True)
        return dl.attention_backward(q, k, v, out, lse, dout, causal=True)

    tqg, tkg, tvg = (x.detach().requires_grad_() for x in (tq, tk, tv))

    def torch_fwd():
        with sdpa_kernel(backends):
            return sdpa(tq, tk, tv, is_causal=True)

    def torch_fwd_bwd():
        with sdpa_kernel(backends):
            out = sdpa(tqg, tkg, tvg, is_causal=True)
        out.backward(tdout)

    # Decode: one query against T cached keys.
    q1 = q[:, -1:].contiguous()
    tq1 = q1.transpose(1, 2).contiguous()

    def ours_decode():
        return dl.attention_forward(q1, k, v, causal=True)

    def torch_decode():
        with sdpa_kernel(backends):
            return sdpa(tq1, tk, tv)

    rows = []
    for what, ours, theirs, flops in [("fwd", ours_fwd, torch_fwd, flops_fwd),
                                      ("fwd+bwd", ours_fwd_bwd, torch_fwd_bwd, 3.5 * flops_fwd),
                                      ("decode", ours_decode, torch_decode, 4 * batch * heads * T * D)]:
        t_ours, t_torch = cuda_time(torch, ours), cuda_time(torch, theirs)
        rows.append((what, T, D, t_ours, t_torch, flops / t_ours / 1e9, flops / t_torch / 1e9))
    return rows


def sampling_rows(torch, dl, V, batch, top_k, top_p):
    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn((batch, V), device="cuda", generator=gen) * 3
    coins = np.random.default_rng(0).random(batch)

    def ours():
        return dl.sample(logits, coins, temperature=0.8, top_k=top_k, top_p=top_p)

    def theirs():  # the usual torch recipe: sort, cumulative mass, mask, multinomial
        z = logits / 0.8
        if top_k:
            kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
            z = z.masked_fill(z < kth, float("-inf"))
        sorted_z, order = torch.sort(z, descending=True, dim=-1)
        probs = torch.softmax(sorted_z, dim=-1)
        before = probs.cumsum(-1) - probs
        sorted_z = sorted_z.masked_fill(before >= top_p, float("-inf"))
        choice = torch.multinomial(torch.softmax(sorted_z, -1), 1)
        return order.gather(-1, choice)

    return [("sample", V, batch, top_k, top_p, cuda_time(torch, ours), cuda_time(torch, theirs))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[4096])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tokens", type=int, default=16384, help="batch * T per attention call (batch = tokens // T)")
    parser.add_argument("--model-dim", type=int, default=2048, help="H * D (heads = model_dim // D)")
    args = parser.parse_args(argv)

    import torch

    from keraslm import _C

    dl = _C.dlpack
    if not (dl.cuda_built and dl.cuda_device_count() > 0 and torch.cuda.is_available()):
        sys.exit("needs a CUDA build of keraslm, a GPU and torch with CUDA")
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, keraslm CUDA build "
          f"{_C.build_info['cuda_architectures']}, dtype {args.dtype}; medians of CUDA-event timings")
    print(f"{'op':8} {'T':>6} {'D':>4} {'ours ms':>9} {'torch ms':>9} {'ours TF/s':>10} {'torch TF/s':>10} "
          f"{'ratio':>6}")
    for T in args.seq_lens:
        for D in args.head_dims:
            batch, heads = max(1, args.tokens // T), max(1, args.model_dim // D)
            for what, T_, D_, t_o, t_t, f_o, f_t in attention_rows(torch, dl, T, D, args.dtype, batch, heads):
                print(f"{what:8} {T_:6d} {D_:4d} {t_o:9.3f} {t_t:9.3f} {f_o / 1e3:10.1f} {f_t / 1e3:10.1f} "
                      f"{t_t / t_o:5.2f}x", flush=True)
    print(f"\n{'op':8} {'V':>6} {'B':>4} {'top_k':>6} {'top_p':>6} {'ours ms':>9} {'torch ms':>9} {'ratio':>6}")
    for batch in (1, 32):
        for top_k, top_p in ((50, 1.0), (0, 0.9)):
            for row in sampling_rows(torch, dl, 50257, batch, top_k, top_p):
                what, V, B, k, p, t_o, t_t = row
                print(f"{what:8} {V:6d} {B:4d} {k:6d} {p:6.2f} {t_o:9.3f} {t_t:9.3f} {t_t / t_o:5.2f}x",
                      flush=True)


if __name__ == "__main__":
    main()
