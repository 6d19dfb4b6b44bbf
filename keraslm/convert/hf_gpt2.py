"""Hugging Face ``GPT2LMHeadModel`` directories: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``).

GPT-2's ``Conv1D`` keeps its weight as ``[in, out]``, which is a Keras
``Dense`` kernel already, so every row of the table is a copy except the
untied head (``lm_head.weight`` is an ``nn.Linear`` ``[V, C]``). The head is
normally tied to ``wte`` and then not stored (or stored as a duplicate,
which is checked and dropped). Older checkpoints (the Hub's ``gpt2``) have
no ``transformer.`` prefix and carry the causal-mask buffers ``attn.bias``
/ ``attn.masked_bias``, which hold no weights.

Reading needs numpy and the ``safetensors`` package, not torch;
``pytorch_model.bin`` needs torch. :func:`save_hf_gpt2` writes the model
back in this layout (for ``GPT2LMHeadModel.from_pretrained``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np

from keraslm.atomic import publish_directory, temporary_directory
from keraslm.convert import layout, tokenizer_files
from keraslm.convert.layout import Rule, transpose
from keraslm.data import BytePairTokenizer
from keraslm.models import TransformerLM

log = logging.getLogger("keraslm")

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"

# keraslm name               Hugging Face name ({p}: "transformer." or "")   to keraslm, to HF
TABLE = layout.Table([
    Rule("wte",                      "{p}wte.weight"),
    Rule("wpe",                      "{p}wpe.weight"),
    Rule("h.{i}.ln_1.gamma",         "{p}h.{i}.ln_1.weight"),
    Rule("h.{i}.ln_1.beta",          "{p}h.{i}.ln_1.bias"),
    Rule("h.{i}.attn.c_attn.kernel", "{p}h.{i}.attn.c_attn.weight"),   # Conv1D [C, 3C] = Dense kernel
    Rule("h.{i}.attn.c_attn.bias",   "{p}h.{i}.attn.c_attn.bias"),
    Rule("h.{i}.attn.c_proj.kernel", "{p}h.{i}.attn.c_proj.weight"),   # [C, C]
    Rule("h.{i}.attn.c_proj.bias",   "{p}h.{i}.attn.c_proj.bias"),
    Rule("h.{i}.ln_2.gamma",         "{p}h.{i}.ln_2.weight"),
    Rule("h.{i}.ln_2.beta",          "{p}h.{i}.ln_2.bias"),
    Rule("h.{i}.mlp.c_fc.kernel",    "{p}h.{i}.mlp.c_fc.weight"),      # [C, F]
    Rule("h.{i}.mlp.c_fc.bias",      "{p}h.{i}.mlp.c_fc.bias"),
    Rule("h.{i}.mlp.c_proj.kernel",  "{p}h.{i}.mlp.c_proj.weight"),    # [F, C]
    Rule("h.{i}.mlp.c_proj.bias",    "{p}h.{i}.mlp.c_proj.bias"),
    Rule("ln_f.gamma",               "{p}ln_f.weight"),
    Rule("ln_f.beta",                "{p}ln_f.bias"),
    Rule("lm_head.kernel",           "lm_head.weight", transpose, transpose),  # untied: nn.Linear [V, C]
], ignored=["{p}h.{i}.attn.bias", "{p}h.{i}.attn.masked_bias"])  # causal-mask buffers of old checkpoints

# activation_function -> TransformerLM's activation (GELUs only; the rest are refused)
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
               "gelu_python_tanh": "gelu_tanh", "gelu": "gelu", "gelu_python": "gelu"}
EXPORTED_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu"}


def model_config(config, source=CONFIG):
    """``TransformerLM`` arguments from a Hugging Face GPT-2 ``config.json`` dict.

    ``dropout`` is ``resid_pdrop`` (keraslm drops the embeddings, the attention
    output and the MLP output at one rate; ``attn_pdrop`` has no counterpart).
    ``reorder_and_upcast_attn`` only changes the arithmetic under mixed
    precision (in float32 it is the same function), so it is accepted.

    Raises:
        ValueError: in one line, naming the flag keraslm cannot reproduce.
    """
    if config.get("model_type") != "gpt2":
        raise ValueError(f"{source}: model_type {config.get('model_type')!r} is not GPT-2 ('gpt2')")
    width, heads = config.get("n_embd", 768), config.get("n_head", 12)
    act = config.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise ValueError(f"{source}: activation_function={act!r} is not supported (one of {sorted(ACTIVATIONS)})")
    inner = config.get("n_inner")
    if inner is not None and (inner % width or inner <= 0):
        raise ValueError(f"{source}: n_inner={inner} must be a positive multiple of n_embd={width}")
    for flag, needed in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                         ("add_cross_attention", False)):
        if bool(config.get(flag, needed)) != needed:
            raise ValueError(f"{source}: {flag}={config[flag]!r} is not supported (keraslm needs {needed})")
    if width % heads:
        raise ValueError(f"{source}: n_embd={width} must be divisible by n_head={heads}")
    return dict(vocab_size=config.get("vocab_size", 50257), max_length=config.get("n_positions", 1024),
                num_layers=config.get("n_layer", 12), num_heads=heads, width=width,
                mlp_ratio=4 if inner is None else inner // width, dropout=float(config.get("resid_pdrop", 0.1)),
                use_bias=True, position_embedding="learned",
                tie_embeddings=bool(config.get("tie_word_embeddings", True)),
                layer_norm_epsilon=float(config.get("layer_norm_epsilon", 1e-5)), activation=ACTIVATIONS[act])


def read_config(directory):
    path = os.path.join(directory, CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory} has no {CONFIG}")
    with open(path, encoding="utf-8") as f:
        return json.load(f), path


def weight_files(directory):
    """``(kind, [paths])`` of the weights in ``directory``: safetensors (one file or shards) or torch.

    Raises:
        FileNotFoundError: neither is there (one line, naming both).
    """
    single, index, binary = (os.path.join(directory, n) for n in (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN))
    if os.path.isfile(single):
        return "safetensors", [single]
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        paths = [os.path.join(directory, s) for s in shards]
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            raise FileNotFoundError(f"{index} names shard {absent[0]}, which is missing")
        return "safetensors", paths
    if os.path.isfile(binary):
        return "torch", [binary]
    raise FileNotFoundError(f"{directory} has {CONFIG} but neither {SAFETENSORS} nor {TORCH_BIN}")


def read_safetensors(paths):
    """``{name: float32 numpy array}`` of one or more ``.safetensors`` files (no torch needed)."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise ImportError(f"{paths[0]} needs the safetensors package (pip install safetensors)") from None
    out = {}
    for path in paths:
        with safe_open(path, framework="numpy") as f:
            names = list(f.keys())
            try:
                out.update({n: np.asarray(f.get_tensor(n), np.float32) for n in names})
                continue
            except TypeError:  # bfloat16, which numpy lacks: TensorFlow (loaded already) reads it
                pass
        import tensorflow as tf

        with safe_open(path, framework="tf") as f:
            out.update({n: tf.cast(f.get_tensor(n), tf.float32).numpy() for n in names})
    return out


def read_torch_bin(path):
    """``{name: numpy array}`` of a ``pytorch_model.bin`` (a pickled state dict; needs torch)."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: pytorch_model.bin needs torch (pip install torch), or convert to "
                          f"{SAFETENSORS}") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}


def load_hf_gpt2(path, tokenizer=None, dropout=None):
    """Builds a :class:`~keraslm.models.TransformerLM` from a Hugging Face GPT-2 directory.

    Args:
        path: the directory of ``config.json`` and the weights.
        tokenizer: ``None`` (the GPT-2 tokenizer files in ``path``), a directory
            of them, a keraslm tokenizer, or ``False`` for none.
        dropout: the model's dropout rate (default: ``resid_pdrop``).

    Returns:
        The built model, float32, with ``model.tokenizer`` attached.
    """
    path = os.fspath(path)
    config, config_path = read_config(path)
    kwargs = model_config(config, config_path)
    if dropout is not None:
        kwargs["dropout"] = dropout
    kind, files = weight_files(path)
    tok = tokenizer_files.bpe_tokenizer(tokenizer, path, f"the Hugging Face checkpoint {path}")
    tokenizer_files.check_vocabulary(tok, kwargs["vocab_size"], path)
    foreign = read_safetensors(files) if kind == "safetensors" else read_torch_bin(files[0])
    prefix = "transformer." if any(k.startswith("transformer.") for k in foreign) else ""
    source = files[0] if len(files) == 1 else os.path.join(path, SAFETENSORS_INDEX)
    if kwargs["tie_embeddings"]:
        foreign = layout.tied_head_check(foreign, "lm_head.weight", f"{prefix}wte.weight", source)
    model = TransformerLM(**kwargs, tokenizer=tok)
    model.build((None, None))
    layout.assign(model, TABLE.to_ours(foreign, model, source, p=prefix))
    return model


def hf_config(model):
    """The ``config.json`` dict of a keraslm TransformerLM, or ValueError naming what GPT-2 cannot express."""
    if not isinstance(model, TransformerLM):
        raise ValueError(f"only a TransformerLM has a GPT-2 layout, got {type(model).__name__}")
    problems = [
        (model.position_embedding != "learned",
         f"position_embedding={model.position_embedding!r} (GPT-2 learns its positions)"),
        (model.num_kv_heads != model.num_heads,
         f"num_kv_heads={model.num_kv_heads} != num_heads={model.num_heads} (GPT-2 has no grouped-query attention)"),
        (not model.use_bias, "use_bias=False (GPT-2 has biases in every linear layer and LayerNorm)"),
    ]
    for bad, what in problems:
        if bad:
            raise ValueError(f"GPT-2's format cannot express this model: {what}")
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": model.vocab_size,
        "n_positions": model.max_length, "n_embd": model.width, "n_layer": model.num_layers,
        "n_head": model.num_heads, "n_inner": None if model.mlp_ratio == 4 else model.mlp_ratio * model.width,
        "activation_function": EXPORTED_ACTIVATIONS[model.activation], "resid_pdrop": model.dropout,
        "embd_pdrop": model.dropout, "attn_pdrop": 0.0, "layer_norm_epsilon": model.layer_norm_epsilon,
        "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "tie_word_embeddings": bool(model.tie_embeddings), "use_cache": True,
        "dtype": "float32",
    }
    tok = model.tokenizer
    if isinstance(tok, BytePairTokenizer) and tokenizer_files.END_OF_TEXT in tok.special_tokens:
        config["bos_token_id"] = config["eos_token_id"] = tok.token_to_id(tokenizer_files.END_OF_TEXT)
    return config


def save_hf_gpt2(model, out_dir, tokenizer=True):
    """Writes ``model`` as a Hugging Face GPT-2 directory, atomically.

    ``config.json``, ``model.safetensors`` (names with the ``transformer.``
    prefix; a tied head is not duplicated), ``generation_config.json`` and,
    with a byte-level BPE tokenizer, ``vocab.json``, ``merges.txt``,
    ``tokenizer.json`` and ``tokenizer_config.json``. Everything is written
    into a hidden temporary directory beside ``out_dir`` and renamed into place.

    Args:
        model: a :class:`~keraslm.models.TransformerLM` (learned positions,
            biases, as many key/value heads as heads).
        out_dir: the new directory (it must not exist, or be empty).
        tokenizer: write the model's tokenizer files (it must be a
            ``BytePairTokenizer``); ``False`` writes the weights alone.

    Returns:
        ``out_dir``.
    """
    config = hf_config(model)
    tok = model.tokenizer if tokenizer else None
    if tokenizer and not isinstance(tok, BytePairTokenizer):
        raise ValueError(f"GPT-2's tokenizer files hold a byte-level BPE, but model.tokenizer is "
                         f"{type(tok).__name__ if tok is not None else 'None'}; pass tokenizer=False for the "
                         "weights alone")
    tokenizer_files.check_vocabulary(tok, model.vocab_size, "save_hf_gpt2")
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise ImportError("save_hf_gpt2 needs the safetensors package (pip install safetensors)") from None
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.isdir(out_dir) and not os.listdir(out_dir):
        os.rmdir(out_dir)
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} exists; save_hf_gpt2 writes a new directory")
    model.build_for_inference()
    tensors = TABLE.to_theirs(model, p="transformer.")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = temporary_directory(parent, "hf-gpt2-")
    try:
        save_file({k: v.astype(np.float32) for k, v in tensors.items()}, os.path.join(tmp, SAFETENSORS),
                  metadata={"format": "pt"})
        _write_json(os.path.join(tmp, CONFIG), config)
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id") if k in config}
        _write_json(os.path.join(tmp, "generation_config.json"), generation)
        if tok is not None:
            tokenizer_files.write_bpe_files(tok, tmp, model.max_length)
        publish_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote Hugging Face GPT-2 files to %s", out_dir)
    return out_dir


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
