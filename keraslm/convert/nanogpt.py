"""nanoGPT checkpoints (``ckpt.pt`` of Karpathy's ``train.py``): ``model_args`` + a PyTorch state dict.

nanoGPT's ``nn.Linear`` weights are ``[out, in]`` and are transposed into
Keras kernels; the head ``lm_head.weight`` is the token embedding (tied). Its
MLP uses ``nn.GELU()``, the exact erf GELU (``activation="gelu"``), and
``bias=False`` runs have no biases in the linear layers nor in the
LayerNorms (``use_bias=False``). Runs compiled with ``torch.compile`` prefix
every name with ``_orig_mod.``.

Tokenizers, and what they do to the embedding rows:

* GPT-2's BPE (``vocab_size`` 50257, or 50304 = 50257 rounded up to a
  multiple of 64 for speed): the tokenizer files must be beside ``ckpt.pt``
  or given as ``tokenizer=DIR``. The padding rows 50257..50303 are no
  token's, so they are dropped: the keraslm model has 50257 rows and its
  logits equal nanoGPT's first 50257 (softmax then runs over real tokens only).
* Characters (``data/<dataset>/meta.pkl`` with ``stoi`` / ``itos``): keraslm's
  :class:`~keraslm.data.CharTokenizer` reserves ids 0 and 1 for ``<pad>`` and
  ``<unk>``, so nanoGPT's id ``n`` becomes ``n + 2`` (the vocabulary is
  ``itos`` in nanoGPT's order after the two reserved tokens), and the
  embedding gets two rows in front. Those rows are the mean of the real
  rows: with the tied head, a reserved id's logit is then the mean of the
  real logits, so by Jensen's inequality its probability is at most
  ``1 / (V + 2)`` (a uniform guess) and negligible wherever the model is
  confident; no row can do better, as the head has no bias. As an input,
  ``<unk>`` (a character nanoGPT never saw) reads as the average character.
  Logits of real characters are nanoGPT's exactly.
"""

from __future__ import annotations

import logging
import os
import pickle

import numpy as np

from keraslm.convert import layout, tokenizer_files
from keraslm.convert.layout import Rule, transpose
from keraslm.data import CharTokenizer, Tokenizer
from keraslm.data.tokenizer_base import RESERVED_TOKENS
from keraslm.models import TransformerLM

log = logging.getLogger("keraslm")

CHECKPOINT = "ckpt.pt"
META = "meta.pkl"
GPT2_VOCAB_SIZES = (50257, 50304)  # GPT-2's tokens, and nanoGPT's padding of them to a multiple of 64

# keraslm name               nanoGPT name ({p}: "_orig_mod." after torch.compile)     to keraslm (read only)
TABLE = layout.Table([
    Rule("wte",                      "{p}transformer.wte.weight"),
    Rule("wpe",                      "{p}transformer.wpe.weight"),
    Rule("h.{i}.ln_1.gamma",         "{p}transformer.h.{i}.ln_1.weight"),
    Rule("h.{i}.ln_1.beta",          "{p}transformer.h.{i}.ln_1.bias"),
    Rule("h.{i}.attn.c_attn.kernel", "{p}transformer.h.{i}.attn.c_attn.weight",  transpose),  # [3C, C] -> [C, 3C]
    Rule("h.{i}.attn.c_attn.bias",   "{p}transformer.h.{i}.attn.c_attn.bias"),
    Rule("h.{i}.attn.c_proj.kernel", "{p}transformer.h.{i}.attn.c_proj.weight",  transpose),  # [C, C]
    Rule("h.{i}.attn.c_proj.bias",   "{p}transformer.h.{i}.attn.c_proj.bias"),
    Rule("h.{i}.ln_2.gamma",         "{p}transformer.h.{i}.ln_2.weight"),
    Rule("h.{i}.ln_2.beta",          "{p}transformer.h.{i}.ln_2.bias"),
    Rule("h.{i}.mlp.c_fc.kernel",    "{p}transformer.h.{i}.mlp.c_fc.weight",     transpose),  # [4C, C] -> [C, 4C]
    Rule("h.{i}.mlp.c_fc.bias",      "{p}transformer.h.{i}.mlp.c_fc.bias"),
    Rule("h.{i}.mlp.c_proj.kernel",  "{p}transformer.h.{i}.mlp.c_proj.weight",   transpose),  # [C, 4C] -> [4C, C]
    Rule("h.{i}.mlp.c_proj.bias",    "{p}transformer.h.{i}.mlp.c_proj.bias"),
    Rule("ln_f.gamma",               "{p}transformer.ln_f.weight"),
    Rule("ln_f.beta",                "{p}transformer.ln_f.bias"),
], ignored=["{p}transformer.h.{i}.attn.bias"])  # the causal-mask buffer of runs without flash attention


def read_checkpoint(path, weights_only=True):
    """``(model_args, {name: float32 array}, config)`` of a nanoGPT ``ckpt.pt`` (needs torch)."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: nanoGPT checkpoints need torch (pip install torch)") from None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: torch.load(weights_only=True) refused it ({str(e).splitlines()[0]}); pass "
                         "weights_only=False if you trust the file") from None
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: expected nanoGPT's dict with 'model_args' and 'model', got "
                         f"{sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__}")
    state = {k: v.float().numpy() for k, v in ckpt["model"].items() if v.is_floating_point()}
    state.update({k: v.numpy() for k, v in ckpt["model"].items() if not v.is_floating_point()})
    return dict(ckpt["model_args"]), state, dict(ckpt.get("config") or {})


def model_config(args, source):
    """``TransformerLM`` arguments from nanoGPT's ``model_args`` (before any vocabulary change)."""
    missing = [k for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size") if k not in args]
    if missing:
        raise ValueError(f"{source}: model_args lacks {', '.join(missing)}")
    return dict(vocab_size=args["vocab_size"], max_length=args["block_size"], num_layers=args["n_layer"],
                num_heads=args["n_head"], width=args["n_embd"], mlp_ratio=4, dropout=float(args.get("dropout", 0.0)),
                use_bias=bool(args.get("bias", True)), position_embedding="learned", tie_embeddings=True,
                layer_norm_epsilon=1e-5, activation="gelu")


def _meta_candidates(ckpt_dir, config):
    """Where nanoGPT's sample.py finds ``meta.pkl``: ``data/<dataset>/`` of the repository, or beside the ckpt."""
    places = [os.path.join(ckpt_dir, META)]
    dataset = config.get("dataset")
    if dataset:
        places += [os.path.join(ckpt_dir, os.pardir, "data", dataset, META), os.path.join("data", dataset, META)]
    return [os.path.normpath(p) for p in places]


def char_tokenizer(meta_path):
    """``(CharTokenizer, n)``: the tokenizer of a nanoGPT ``meta.pkl`` (ids shifted by 2) and its size n."""
    with open(meta_path, "rb") as f:
        meta = pickle.load(f)
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict) or sorted(itos) != list(range(len(itos))):
        raise ValueError(f"{meta_path}: expected 'itos' mapping ids 0..n-1 to characters")
    chars = [itos[i] for i in range(len(itos))]
    bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
    if bad:
        raise ValueError(f"{meta_path}: expected single characters in 'itos', got {bad[0]!r}")
    return CharTokenizer(vocabulary=list(RESERVED_TOKENS) + chars), len(chars)


def _tokenizer(option, path, vocab_size, config):
    """``(tokenizer, kind)`` with kind ``"char"`` / ``"bpe"`` / None, from the option or the files near ``path``."""
    if option is False:
        return None, None
    if isinstance(option, Tokenizer):
        return option, None
    ckpt_dir = os.path.dirname(os.path.abspath(path))
    if option is not None:
        option = os.fspath(option)
        meta = option if option.endswith(".pkl") else os.path.join(option, META)
        if os.path.isfile(meta):
            return char_tokenizer(meta)[0], "char"
        return tokenizer_files.bpe_tokenizer(option, option, f"the nanoGPT checkpoint {path}"), "bpe"
    if vocab_size in GPT2_VOCAB_SIZES:
        return tokenizer_files.bpe_tokenizer(None, ckpt_dir, f"the nanoGPT checkpoint {path} (GPT-2 vocabulary)"), \
            "bpe"
    places = _meta_candidates(ckpt_dir, config)
    for meta in places:
        if os.path.isfile(meta):
            return char_tokenizer(meta)[0], "char"
    raise FileNotFoundError(f"the nanoGPT checkpoint {path} (vocab_size {vocab_size}) needs its character "
                            f"vocabulary: put {META} at {' or '.join(places)} (or pass tokenizer=PATH, or "
                            "tokenizer=False to load the weights alone)")


def _fit_embedding(wte, tokenizer, kind, source):
    """nanoGPT's ``[V, C]`` token embedding rearranged for the tokenizer's ids (see the module docstring)."""
    V = wte.shape[0]
    if kind == "char":
        n = tokenizer.vocab_size - len(RESERVED_TOKENS)
        if n > V:
            raise ValueError(f"{source}: the character vocabulary has {n} characters but the model {V} rows")
        mean = wte[:n].mean(axis=0, keepdims=True)                          # [1, C]
        return np.concatenate([mean, mean, wte[:n]], axis=0)                # [n + 2, C]: <pad>, <unk>, chars
    if kind == "bpe":
        if tokenizer.vocab_size > V:
            raise ValueError(f"{source}: the tokenizer has {tokenizer.vocab_size} tokens but the model {V} rows")
        if tokenizer.vocab_size < V:
            log.info("%s: dropping embedding rows %d..%d, which no token has (nanoGPT pads the vocabulary)",
                     source, tokenizer.vocab_size, V - 1)
        return wte[:tokenizer.vocab_size]
    return wte


def load_nanogpt(path, tokenizer=None, dropout=None, weights_only=True):
    """Builds a :class:`~keraslm.models.TransformerLM` from a nanoGPT ``ckpt.pt``.

    Args:
        path: the ``ckpt.pt`` file, or its directory.
        tokenizer: ``None`` (GPT-2 files beside the checkpoint for vocab_size
            50257 / 50304, else the run's ``meta.pkl``), a directory of GPT-2
            tokenizer files, a ``meta.pkl`` (or its directory), a keraslm
            tokenizer (used as is: its ids must be the checkpoint's rows), or
            ``False`` for none.
        dropout: the model's dropout rate (default: the run's).
        weights_only: passed to ``torch.load``.

    Returns:
        The built model, float32, with ``model.tokenizer`` attached.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"nanoGPT checkpoint {path} does not exist")
    args, state, run_config = read_checkpoint(path, weights_only)
    kwargs = model_config(args, path)
    if dropout is not None:
        kwargs["dropout"] = dropout
    tok, kind = _tokenizer(tokenizer, path, kwargs["vocab_size"], run_config)
    prefix = "_orig_mod." if all(k.startswith("_orig_mod.") for k in state) else ""
    wte = f"{prefix}transformer.wte.weight"
    state = layout.tied_head_check(state, f"{prefix}lm_head.weight", wte, path)
    if wte in state and kind is not None:
        state[wte] = _fit_embedding(state[wte], tok, kind, path)
        kwargs["vocab_size"] = state[wte].shape[0]
    tokenizer_files.check_vocabulary(tok, kwargs["vocab_size"], path)
    model = TransformerLM(**kwargs, tokenizer=tok)
    model.build((None, None))
    layout.assign(model, TABLE.to_ours(state, model, path, p=prefix))
    return model
