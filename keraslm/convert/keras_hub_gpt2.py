"""keras-hub GPT-2 presets (``GPT2CausalLM.save_to_preset``), read with h5py: keras-hub itself is not needed.

A preset directory holds ``config.json`` (the ``GPT2Backbone`` config),
``model.weights.h5`` (Keras 3's weights file), ``tokenizer.json`` (the Keras
config of keras-hub's tokenizer, not Hugging Face's file) and
``assets/tokenizer/vocabulary.json`` + ``merges.txt``.

Keras names the weights by object path: ``layers/<layer>/vars/<n>``, where a
functional model's layers are named after their classes in order
(``transformer_decoder``, ``transformer_decoder_1``, ...) and ``vars/0`` /
``vars/1`` are kernel / bias, or gamma / beta. keras-hub's attention keeps
separate query, key and value ``EinsumDense`` kernels ``[C, H, D]`` (biases
``[H, D]``) and an output kernel ``[H, D, C]``; the table concatenates the
first three into our fused ``c_attn`` ``[C, 3C]`` and flattens the last into
``c_proj`` ``[C, C]``. The LM head is the token embedding (``reverse=True``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from keraslm.convert import layout, tokenizer_files
from keraslm.convert.layout import Rule
from keraslm.models import TransformerLM

CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
TOKENIZER_ASSETS = os.path.join("assets", "tokenizer")
BACKBONE = "GPT2Backbone"


def _fused_qkv_kernel(q, k, v):
    return np.concatenate([w.reshape(w.shape[0], -1) for w in (q, k, v)], axis=1)   # 3 x [C, H, D] -> [C, 3C]


def _fused_qkv_bias(q, k, v):
    return np.concatenate([b.reshape(-1) for b in (q, k, v)])                         # 3 x [H, D] -> [3C]


def _output_kernel(w):
    return w.reshape(-1, w.shape[-1])                                                 # [H, D, C] -> [C, C]


# {u}: "" where Keras saves the attention's public ``query_dense`` property, "_" where only ``_query_dense`` exists
_ATTN = "layers/{d}/_self_attention_layer/{u}"

# keraslm name                h5 dataset ({d}: the block's layer name)   to keraslm (read only: no writer)
TABLE = layout.Table([
    Rule("wte",                      "layers/reversible_embedding/vars/0"),
    Rule("wpe",                      "layers/position_embedding/vars/0"),
    Rule("h.{i}.ln_1.gamma",         "layers/{d}/_self_attention_layer_norm/vars/0"),
    Rule("h.{i}.ln_1.beta",          "layers/{d}/_self_attention_layer_norm/vars/1"),
    Rule("h.{i}.attn.c_attn.kernel", (_ATTN + "query_dense/vars/0", _ATTN + "key_dense/vars/0",
                                      _ATTN + "value_dense/vars/0"),             _fused_qkv_kernel),
    Rule("h.{i}.attn.c_attn.bias",   (_ATTN + "query_dense/vars/1", _ATTN + "key_dense/vars/1",
                                      _ATTN + "value_dense/vars/1"),             _fused_qkv_bias),
    Rule("h.{i}.attn.c_proj.kernel", _ATTN + "output_dense/vars/0",               _output_kernel),
    Rule("h.{i}.attn.c_proj.bias",   _ATTN + "output_dense/vars/1"),
    Rule("h.{i}.ln_2.gamma",         "layers/{d}/_feedforward_layer_norm/vars/0"),
    Rule("h.{i}.ln_2.beta",          "layers/{d}/_feedforward_layer_norm/vars/1"),
    Rule("h.{i}.mlp.c_fc.kernel",    "layers/{d}/_feedforward_intermediate_dense/vars/0"),
    Rule("h.{i}.mlp.c_fc.bias",      "layers/{d}/_feedforward_intermediate_dense/vars/1"),
    Rule("h.{i}.mlp.c_proj.kernel",  "layers/{d}/_feedforward_output_dense/vars/0"),
    Rule("h.{i}.mlp.c_proj.bias",    "layers/{d}/_feedforward_output_dense/vars/1"),
    Rule("ln_f.gamma",               "layers/layer_normalization/vars/0"),
    Rule("ln_f.beta",                "layers/layer_normalization/vars/1"),
])


def _decoder_name(i):
    """Keras' name for the i-th TransformerDecoder of the functional backbone."""
    return "transformer_decoder" if i == 0 else f"transformer_decoder_{i}"


def model_config(config, source=CONFIG):
    """``TransformerLM`` arguments from a preset's ``config.json`` (a serialized ``GPT2Backbone``)."""
    name = config.get("class_name")
    if name != BACKBONE:
        raise ValueError(f"{source}: expected a keras-hub {BACKBONE} config, got class_name {name!r}")
    c = config.get("config") or {}
    width, inner = c["hidden_dim"], c["intermediate_dim"]
    if inner % width:
        raise ValueError(f"{source}: intermediate_dim={inner} must be a multiple of hidden_dim={width}")
    return dict(vocab_size=c["vocabulary_size"], max_length=c.get("max_sequence_length", 1024),
                num_layers=c["num_layers"], num_heads=c["num_heads"], width=width, mlp_ratio=inner // width,
                dropout=float(c.get("dropout", 0.1)), use_bias=True, position_embedding="learned",
                tie_embeddings=True, layer_norm_epsilon=1e-5, activation="gelu_tanh")


def read_h5(path):
    """``{dataset path: float32 array}`` of a Keras 3 ``.weights.h5`` file."""
    import h5py  # a Keras dependency

    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = np.asarray(obj[()], np.float32)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def load_keras_hub_gpt2(path, tokenizer=None, dropout=None):
    """Builds a :class:`~keraslm.models.TransformerLM` from a keras-hub GPT-2 preset directory.

    Args:
        path: the preset directory.
        tokenizer: ``None`` (the preset's ``assets/tokenizer`` files), a directory
            of GPT-2 tokenizer files, a keraslm tokenizer, or ``False`` for none.
        dropout: the model's dropout rate (default: the backbone's).

    Returns:
        The built model, float32, with ``model.tokenizer`` attached.
    """
    path = os.fspath(path)
    config_path, weights = os.path.join(path, CONFIG), os.path.join(path, WEIGHTS)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path} has no {CONFIG}")
    with open(config_path, encoding="utf-8") as f:
        kwargs = model_config(json.load(f), config_path)
    if dropout is not None:
        kwargs["dropout"] = dropout
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{path} has a keras-hub {CONFIG} but no {WEIGHTS}")
    tok = tokenizer_files.bpe_tokenizer(tokenizer, os.path.join(path, TOKENIZER_ASSETS),
                                        f"the keras-hub preset {path}")
    tokenizer_files.check_vocabulary(tok, kwargs["vocab_size"], path)
    foreign = read_h5(weights)
    private = any("/_query_dense/" in k for k in foreign)  # Keras versions before the public property
    model = TransformerLM(**kwargs, tokenizer=tok)
    model.build((None, None))
    layout.assign(model, TABLE.to_ours(foreign, model, weights, d=_decoder_name, u="_" if private else ""))
    return model
