"""A nanoGPT-style GPT in torch (pre-LayerNorm blocks, tied or separate head): the torch baseline of the benchmarks."""

from __future__ import annotations

import os


def make_gpt(vocab, layers, heads, width, context, bias=False, dropout=0.0, tie=True):
    """A torch GPT module, or None when torch is not installed."""
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count())

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(width, bias=bias), nn.LayerNorm(width, bias=bias)
            self.c_attn, self.c_proj = nn.Linear(width, 3 * width, bias=bias), nn.Linear(width, width, bias=bias)
            self.fc, self.proj = nn.Linear(width, 4 * width, bias=bias), nn.Linear(4 * width, width, bias=bias)
            self.drop = nn.Dropout(dropout)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, 2)
            q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout if self.training else 0)
            x = x + self.drop(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))
            return x + self.drop(self.proj(F.gelu(self.fc(self.ln_2(x)))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(width, bias=bias)
            self.lm_head = None if tie else nn.Linear(width, vocab, bias=False)
            self.context = context

        def forward(self, idx):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for b in self.blocks:
                x = b(x)
            x = self.ln_f(x)
            return x @ self.wte.weight.T if self.lm_head is None else self.lm_head(x)

    return GPT()
