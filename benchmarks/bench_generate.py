"""Generation benchmark: keraslm's compiled KV-cache loop vs keras-hub and a no-cache torch loop.

Run:  python benchmarks/bench_generate.py [--quick]

gpt-mini architecture (6 layers, 6 heads, 384 wide, vocab 65, ~10.7M parameters, random weights),
prompt of 16 tokens, 240 new tokens, top-k (k=50) sampling, batch 1 and 8. Baselines measured in
the same run: keras-hub ``GPT2CausalLM.generate`` (same configuration, jit on, TopKSampler) and a
nanoGPT-style torch ``generate`` (no KV cache: the whole cropped context is re-run every token),
when those packages are installed. Then tokens/s against the live context length (256, 1024, 4096)
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

from _common import header, median_time  # noqa: E402
from _torch_gpt import make_gpt  # noqa: E402
from keraslm.models import TransformerLM  # noqa: E402

V, LAYERS, HEADS, WIDTH, PROMPT, NEW, TOPK = 65, 6, 6, 384, 16, 240, 50


def ours(batch, repeats):
    model = TransformerLM(vocab_size=V, max_length=256, num_layers=LAYERS, num_heads=HEADS, width=WIDTH,
                          use_bias=False)
    prompts = np.random.default_rng(0).integers(0, V, (batch, PROMPT)).tolist()
    run = lambda: model.generate(prompts, max_new_tokens=NEW, top_k=TOPK, temperature=1.0, seed=1)  # noqa: E731
    return batch * NEW / median_time(run, repeats, warmup=1)


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
    model = TransformerLM(vocab_size=V, max_length=4096, num_layers=LAYERS, num_heads=HEADS, width=WIDTH,
                          use_bias=False)
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
    for batch in () if args.context_only else (1,) if args.quick else (1, 8):
        ours_tps = ours(batch, repeats)
        line = f"batch {batch}:  keraslm {ours_tps:8.1f} tok/s"
        for name, fn in (("keras-hub GPT2CausalLM", keras_hub_baseline), ("torch no-cache", torch_no_cache_baseline)):
            tps = fn(batch, repeats)
            line += f"  | {name} {tps:8.1f} tok/s (x{ours_tps / tps:4.1f})" if tps else f"  | {name}: not installed"
        print(line, flush=True)
    print("\n## decode tokens/s against the live context length (model context 4096, batch 1, prefill excluded)")
    for live, tps in by_context(repeats).items():
        print(f"live length {live:5d}: {tps:8.1f} tok/s ({1e3 / tps:6.2f} ms/token)", flush=True)


if __name__ == "__main__":
    main()
