"""GPT-2 tokenizer files beside foreign checkpoints: finding and loading them, writing them back.

The files themselves are parsed by :mod:`keraslm.data.bpe_files` (through
``BytePairTokenizer.from_directory``); this module decides where to look,
checks the vocabulary against the model's, and writes Hugging Face's
``vocab.json`` / ``merges.txt`` / ``tokenizer.json`` for exports.
"""

from __future__ import annotations

import json
import os

from keraslm.data import BytePairTokenizer, Tokenizer

END_OF_TEXT = "<|endoftext|>"
BPE_FILES_HINT = "tokenizer.json, or vocab.json and merges.txt"


def bpe_tokenizer(option, directory, what):
    """The tokenizer a reader attaches to its model.

    Args:
        option: ``None`` (GPT-2 files in ``directory``), a directory of GPT-2
            files, a keraslm ``Tokenizer`` (used as is) or ``False`` (none).
        directory: where the checkpoint's own tokenizer files live.
        what: the checkpoint, for the error message.

    Raises:
        FileNotFoundError: in one line, saying which files to put where.
    """
    if option is False:
        return None
    if isinstance(option, Tokenizer):
        return option
    folder = os.fspath(directory if option is None else option)
    try:
        return BytePairTokenizer.from_directory(folder)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{what} needs GPT-2 tokenizer files: put {BPE_FILES_HINT} in {folder} (or pass tokenizer=DIR, or "
            "tokenizer=False to load the weights alone)") from None


def check_vocabulary(tokenizer, vocab_size, what):
    """Refuses a tokenizer with ids the model has no row for."""
    if tokenizer is not None and tokenizer.vocab_size > vocab_size:
        raise ValueError(f"{what}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"{vocab_size} rows of embeddings")


def write_bpe_files(tokenizer, directory, max_length):
    """Writes ``vocab.json``, ``merges.txt``, ``tokenizer.json`` (when ``tokenizers`` is installed) and
    ``tokenizer_config.json`` for Hugging Face's ``GPT2Tokenizer`` / ``GPT2TokenizerFast``.

    Args:
        tokenizer: a :class:`~keraslm.data.BytePairTokenizer`.
        directory: an existing folder.
        max_length: the model's context (``model_max_length``).
    """
    tokens, merges, special = tokenizer.vocabulary, tokenizer.merges, tokenizer.special_tokens
    vocab = {t: i for i, t in enumerate(tokens)}
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    try:
        from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        HFTokenizer = None  # vocab.json + merges.txt are enough for GPT2Tokenizer(Fast)
    if HFTokenizer is not None:
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges]))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        hf.post_processor = processors.ByteLevel(trim_offsets=False)
        hf.add_special_tokens([AddedToken(t, special=True) for t in special])
        hf.save(os.path.join(directory, "tokenizer.json"))
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": max_length, "add_prefix_space": False}
    if END_OF_TEXT in special:
        config.update(bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT)
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
