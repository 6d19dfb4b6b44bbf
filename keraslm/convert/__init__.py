"""Foreign checkpoints in and out: one module per format, each a name table, a reader and (where we export) a writer.

* :mod:`~keraslm.convert.hf_gpt2`: Hugging Face ``GPT2LMHeadModel`` directories
  (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``); also written back
  by :func:`save_hf_gpt2`.
* :mod:`~keraslm.convert.keras_hub_gpt2`: keras-hub GPT-2 presets (``save_to_preset``).
* :mod:`~keraslm.convert.nanogpt`: nanoGPT ``ckpt.pt`` files.

Nothing else in keraslm knows these layouts; :mod:`~keraslm.convert.layout` is
keraslm's own side of every table. Every reader returns a built float32
:class:`~keraslm.models.TransformerLM` with its tokenizer attached.
"""

from __future__ import annotations

import json
import os

from keraslm.convert import hf_gpt2, keras_hub_gpt2, nanogpt
from keraslm.convert.hf_gpt2 import load_hf_gpt2, save_hf_gpt2
from keraslm.convert.keras_hub_gpt2 import load_keras_hub_gpt2
from keraslm.convert.nanogpt import load_nanogpt

FORMATS = ("keras", "run", "hf-gpt2", "keras-hub-gpt2", "nanogpt")
_READERS = {"hf-gpt2": load_hf_gpt2, "keras-hub-gpt2": load_keras_hub_gpt2, "nanogpt": load_nanogpt}
_RUN_FILES = ("model.keras", os.path.join("checkpoints", "last.keras"))


def detect_format(path):
    """What ``path`` holds: ``"keras"`` (a ``.keras`` file), ``"run"`` (a keraslm run directory),
    ``"hf-gpt2"``, ``"keras-hub-gpt2"`` or ``"nanogpt"``.

    Raises:
        FileNotFoundError: ``path`` does not exist, or lacks a file its format needs (named, in one line).
        ValueError: ``path`` is something else (a model keraslm cannot load).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if os.path.isfile(path):
        if path.endswith(".keras"):
            return "keras"
        if path.endswith((".pt", ".pth")):
            return "nanogpt"
        raise ValueError(f"{path}: expected a .keras file, a nanoGPT .pt checkpoint, or a model directory")
    if any(os.path.isfile(os.path.join(path, f)) for f in _RUN_FILES):
        return "run"
    if os.path.isfile(os.path.join(path, nanogpt.CHECKPOINT)):
        return "nanogpt"
    config_path = os.path.join(path, hf_gpt2.CONFIG)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path} holds no model: expected model.keras or checkpoints/last.keras (keraslm), "
                                f"{hf_gpt2.CONFIG} (Hugging Face or keras-hub) or {nanogpt.CHECKPOINT} (nanoGPT)")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{config_path} is not readable JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object")
    if "class_name" in config:  # a serialized Keras object: a keras-hub preset
        if config["class_name"] != keras_hub_gpt2.BACKBONE:
            raise ValueError(f"{config_path}: a keras-hub {config['class_name']} preset; keraslm loads "
                             f"{keras_hub_gpt2.BACKBONE} presets only")
        if not os.path.isfile(os.path.join(path, keras_hub_gpt2.WEIGHTS)):
            raise FileNotFoundError(f"{path} has a keras-hub {hf_gpt2.CONFIG} but no {keras_hub_gpt2.WEIGHTS}")
        return "keras-hub-gpt2"
    if config.get("model_type") != "gpt2":
        raise ValueError(f"{config_path}: model_type {config.get('model_type')!r} is not supported (keraslm loads "
                         "Hugging Face GPT-2, model_type 'gpt2')")
    hf_gpt2.weight_files(path)  # raises naming the missing weights
    return "hf-gpt2"


def load_pretrained(path, **options):
    """Loads a Hugging Face GPT-2 directory, a keras-hub GPT-2 preset or a nanoGPT checkpoint.

    Args:
        path: the directory (or nanoGPT ``ckpt.pt``).
        **options: passed to the reader (``tokenizer=``, ``dropout=``; nanoGPT
            also ``weights_only=``), see :func:`load_hf_gpt2`,
            :func:`load_keras_hub_gpt2`, :func:`load_nanogpt`.

    Returns:
        A built :class:`~keraslm.models.TransformerLM` with ``model.tokenizer``.
    """
    fmt = detect_format(path)
    if fmt not in _READERS:
        raise ValueError(f"{path} is a keraslm {'model file' if fmt == 'keras' else 'run'}; load it with "
                         "keraslm.load_model")
    return _READERS[fmt](path, **options)


__all__ = ["FORMATS", "detect_format", "load_hf_gpt2", "load_keras_hub_gpt2", "load_nanogpt", "load_pretrained",
           "save_hf_gpt2"]
