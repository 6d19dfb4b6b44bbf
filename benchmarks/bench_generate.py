"""Generation benchmark: keraslm's compiled KV-cache loop vs keras-hub and a no-cache torch loop.

Run:  python benchmarks/bench_generate.py [--quick]

gpt-mini architecture (6 layers, 6 heads, 384 wide, vocab 65, ~10.7M parameters, random weights),
prompt of 16 tokens, 240 new tokens, top-k (k=50) sampling, batch 1 and 8. Baselines measured in
the same run: keras-hub ``GPT2CausalLM.generate`` (same configuration, jit on, TopKSampler) and a
nanoGPT-style torch ``generate`` (no KV cache: the whole cropped context is re-run every token),
when those packages are installed. keraslm runs twice: float32, and with ``precision="bfloat16"``
(the opt-in that decodes with bfloat16 copies of the block weights). At batch 1 a step reads every
weight once, so each is printed beside its memory-bandwidth bound: the bytes of weights a step reads
(float32, or bfloat16 for the block matrices; the position table is not read whole) over the copy
bandwidth of a large numpy copy measured in this run (read + write bytes per second). Then tokens/s against the live context length (256, 1024, 4096)
on the same architecture with a 4096-token context. ``--past-context``: the gpt-nano architecture
(context 64) generating 2,000 new tokens, past its context (the window slides), against the rate of
one in-context run (63 new tokens from a 1-token prompt), batch 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _common import copy_bandwidth, header, median_time  # noqa: E402
from _torch_gpt import make_gpt  # noqa: E402
from keraslm.models import TransformerLM  # noqa: E402

V, LAYERS, HEADS, WIDTH, PROMPT, NEW, TOPK = 65, 6, 6, 384, 16, 240, 50


def gpt_mini(max_length=256):
    model = TransformerLM(vocab_size=V, max_length=max_length, num_layers=LAYERS, num_heads=HEADS, width=WIDTH,
                          use_bias=False)
    model.build((None, None))
    return model


def weight_bytes(model, precision):
    """Bytes of weights one decoding step reads: every weight but the position table, the blocks' four
    matrices at 2 bytes each in bfloat16."""
    total = 0
    for w in model.weights:
        if "wpe" in w.path:
            continue
        block_matrix = "/h_" in w.path and len(w.shape) == 2                # h_<i>/.../kernel
        total += int(np.prod(w.shape)) * (2 if precision == "bfloat16" and block_matrix else 4)
    return total


def ours(batch, repeats, precision="float32"):
    model = gpt_mini()
    prompts = np.random.default_rng(0).integers(0, V, (batch, PROMPT)).tolist()
    run = lambda: model.generate(prompts, max_new_tokens=NEW, top_k=TOPK, temperature=1.0, seed=1,  # noqa: E731
                                 precision=precision)
    return batch * NEW / median_time(run, repeats, warmup=1), weight_bytes(model, precision)


def keras_hub_baseline(batch, repeats):
    try:
        import keras_hub
    except ImportError:
        return None
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=V, num_layers=LAYERS, num_heads=HEADS,
                                             hidden_dim=WIDTH, intermediate_dim=4 * WIDTH, dropout=0.0,
                                             max_sequence_length=256)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler=keras_hub.samplers.TopKSampler(k=TOPK))
    ids = np.zeros((batch, PROMPT + NEW), np.int32)
    ids[:, :PROMPT] = np.random.default_rng(0).integers(0, V, (batch, PROMPT))
    mask = np.zeros_like(ids, bool)
    mask[:, :PROMPT] = True
    inputs = {"token_ids": ids, "padding_mask": mask}
    run = lambda: lm.generate(inputs, stop_token_ids=None)  # noqa: E731
    return batch * NEW / median_time(run, repeats, warmup=1)


def torch_no_cache_baseline(batch, repeats):
    model = make_gpt(V, LAYERS, HEADS, WIDTH, 256)
    if model is None:
        return None
    import torch
    import torch.nn.functional as F

    model = model.eval()
    idx0 = torch.randint(0, V, (batch, PROMPT))

    @torch.no_grad()
    def run():
        idx = idx0
        for _ in range(NEW):
            logits = model(idx[:, -256:])[:, -1]
            v, _ = torch.topk(logits, TOPK)
            logits[logits < v[:, [-1]]] = -math.inf
            idx = torch.cat([idx, torch.multinomial(F.softmax(logits, -1), 1)], 1)

    return batch * NEW / median_time(run, repeats, warmup=1)


def by_context(repeats, new=64):
    """Decode-only tokens/s at a live length: (time of new+1 tokens - time of 1 token) / new."""
    model = gpt_mini(4096)
    rows = {}
    for live in (256, 1024, 4096):
        prompt = np.random.default_rng(1).integers(0, V, live - new - 1).tolist()
        full = median_time(lambda: model.generate(prompt, max_new_tokens=new + 1, top_k=TOPK, seed=1), repeats,
                           warmup=1)
        prefill = median_time(lambda: model.generate(prompt, max_new_tokens=1, top_k=TOPK, seed=1), repeats,
                              warmup=1)
        rows[live] = new / max(full - prefill, 1e-9)
    return rows


def past_context(repeats, new=2000):
    """gpt-nano shape: tokens/s over `new` tokens (sliding past the 64-token context) and in context."""
    model = TransformerLM(vocab_size=V, max_length=64, num_layers=4, num_heads=4, width=128, tie_embeddings=False)
    prompt = [1]
    inside = median_time(lambda: model.generate(prompt, max_new_tokens=63, top_k=TOPK, seed=1), repeats, warmup=1)
    past = median_time(lambda: model.generate(prompt, max_new_tokens=new, top_k=TOPK, seed=1), max(repeats // 2, 1),
                       warmup=1)
    return 63 / inside, new / past


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, batch 1 only")
    ap.add_argument("--context-only", action="store_true", help="only the live-context section")
    ap.add_argument("--past-context", action="store_true", help="only the generation-past-the-context section")
    args = ap.parse_args()
    header("keraslm generation benchmark")
    repeats = 2 if args.quick else 5
    if args.past_context:
        inside, past = past_context(repeats)
        print(f"\n## gpt-nano architecture (context 64), batch 1, top-k {TOPK}: in context (63 new tokens) "
              f"{inside:8.1f} tok/s; 2000 new tokens (window slides) {past:8.1f} tok/s; ratio {inside / past:4.2f}")
        return
    print(f"\n## gpt-mini architecture, prompt {PROMPT}, {NEW} new tokens, top-k {TOPK}: tokens/s (median of "
          f"{repeats}); ratio = keraslm / baseline")
    bandwidth = None if args.context_only else copy_bandwidth()
    if bandwidth:
        print(f"# copy bandwidth {bandwidth / 1e9:.1f} GB/s (numpy copy of 1 GiB, read + write)")
    for batch in () if args.context_only else (1,) if args.quick else (1, 8):
        for precision in ("float32", "bfloat16"):
            ours_tps, nbytes = ours(batch, repeats, precision)
            line = f"batch {batch}:  keraslm {precision:8s} {ours_tps:8.1f} tok/s"
            if batch == 1:
                bound = bandwidth / nbytes
                line += (f" (bandwidth bound {nbytes / 1e6:.1f} MB/step -> {bound:7.1f} tok/s; "
                         f"{ours_tps / bound:4.0%} of it)")
            if precision == "float32":
                for name, fn in (("keras-hub GPT2CausalLM", keras_hub_baseline),
                                 ("torch no-cache", torch_no_cache_baseline)):
                    tps = fn(batch, repeats)
                    line += (f"  | {name} {tps:8.1f} tok/s (x{ours_tps / tps:4.1f})" if tps
                             else f"  | {name}: not installed")
            print(line, flush=True)
    print("\n## decode tokens/s against the live context length (model context 4096, batch 1, prefill excluded)")
    for live, tps in by_context(repeats).items():
        print(f"live length {live:5d}: {tps:8.1f} tok/s ({1e3 / tps:6.2f} ms/token)", flush=True)


if __name__ == "__main__":
    main()
