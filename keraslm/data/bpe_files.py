"""GPT-2-style byte-level BPE files in and out: ``vocab.json`` + ``merges.txt``, ``tokenizer.json``, training.

Translation at the border: these readers turn the Hugging Face / OpenAI
layouts (and keras-hub's ``vocabulary.json``) into the three things
``BytePairTokenizer`` keeps in its config: the tokens in id order, the merges
as ``"left right"`` strings (lowest rank first) and the special tokens.
Nothing here touches the network.
"""

from __future__ import annotations

import json
import os

END_OF_TEXT = "<|endoftext|>"
VOCAB_FILES = ("vocab.json", "vocabulary.json")  # Hugging Face / OpenAI, keras-hub presets
MERGES_FILE = "merges.txt"
TOKENIZER_JSON = "tokenizer.json"


def tokens_from_vocab(vocab, source="the vocabulary"):
    """``{token: id}`` -> tokens in id order; the ids must be exactly ``0 .. len - 1``.

    Example:
        >>> tokens_from_vocab({"b": 1, "a": 0})
        ['a', 'b']
    """
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"expected {source} to be a non-empty {{token: id}} object, got {type(vocab).__name__}")
    by_id = {}
    for token, i in vocab.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(vocab):
            raise ValueError(f"expected the ids of {source} to be 0 .. {len(vocab) - 1}, got {token!r}: {i!r}")
        if i in by_id:
            raise ValueError(f"id {i} appears twice in {source}: {by_id[i]!r} and {token!r}")
        by_id[i] = token
    return [by_id[i] for i in range(len(vocab))]


def read_merges(path):
    """Merge lines ``"left right"`` of a ``merges.txt`` (a leading ``#version`` line and blank lines skipped)."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    merges = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        if len(line.split(" ")) != 2:
            raise ValueError(f"{path}:{number}: expected a merge 'left right', got {line!r}")
        merges.append(line)
    return merges


def read_vocab_and_merges(vocab_json, merges_txt):
    """(tokens in id order, merges) from a ``vocab.json`` and a ``merges.txt``."""
    with open(vocab_json, encoding="utf-8") as f:
        tokens = tokens_from_vocab(json.load(f), str(vocab_json))
    return tokens, read_merges(merges_txt)


def parse_tokenizer_json(config, source="tokenizer.json"):
    """(tokens, merges, special tokens) from a parsed Hugging Face ``tokenizer.json`` of a ByteLevel BPE model.

    Settings the in-graph tokenizer does not reproduce (a normalizer, a
    prefix space, dropout, word suffixes, byte fallback, stripping added
    tokens...) raise ``ValueError`` naming them.
    """
    model = config.get("model") or {}
    if model.get("type", "BPE") != "BPE":
        raise ValueError(f"{source}: expected a BPE model, got model type {model.get('type')!r}")
    if model.get("dropout") not in (None, 0, 0.0):
        raise ValueError(f"{source}: model.dropout={model['dropout']!r} is not supported by BytePairTokenizer")
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "byte_fallback", "ignore_merges"):
        if model.get(key):
            raise ValueError(f"{source}: model.{key}={model[key]!r} is not supported by BytePairTokenizer")
    if config.get("normalizer") is not None:
        raise ValueError(f"{source}: a normalizer is not supported by BytePairTokenizer, got "
                         f"{config['normalizer'].get('type')!r}")
    pre = config.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
        raise ValueError(f"{source}: expected pre_tokenizer ByteLevel(add_prefix_space=False, use_regex=True), "
                         f"got {json.dumps(pre)[:200]}")
    vocab = dict(model.get("vocab") or {})
    special = []
    for added in config.get("added_tokens") or []:
        for flag in ("single_word", "lstrip", "rstrip"):
            if added.get(flag):
                raise ValueError(f"{source}: added token {added['content']!r} has {flag}=true, which is not supported")
        if vocab.setdefault(added["content"], added["id"]) != added["id"]:
            raise ValueError(f"{source}: added token {added['content']!r} has id {added['id']} but the "
                             f"vocabulary says {vocab[added['content']]}")
        special.append(added["content"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return tokens_from_vocab(vocab, f"{source} (model.vocab + added_tokens)"), merges, special


def read_tokenizer_json(path):
    """(tokens, merges, special tokens) from a Hugging Face ``tokenizer.json`` file."""
    with open(path, encoding="utf-8") as f:
        return parse_tokenizer_json(json.load(f), str(path))


def find_files(directory):
    """The files of a tokenizer directory: ``{"tokenizer.json": path}`` or ``{"vocab": path, "merges": path}``.

    A ``tokenizer.json`` wins; otherwise ``vocab.json`` (or keras-hub's
    ``vocabulary.json``) with ``merges.txt``. A keras-hub preset's
    ``assets/tokenizer`` folder is looked into too.

    Raises:
        FileNotFoundError: naming the missing file(s).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"tokenizer directory {directory!r} does not exist")
    nested = os.path.join(directory, "assets", "tokenizer")
    for folder in (directory, nested):
        found = {n for n in (TOKENIZER_JSON, MERGES_FILE, *VOCAB_FILES) if os.path.isfile(os.path.join(folder, n))}
        vocab = [v for v in VOCAB_FILES if v in found]
        if TOKENIZER_JSON in found:
            return {"tokenizer.json": os.path.join(folder, TOKENIZER_JSON)}
        if vocab and MERGES_FILE in found:
            return {"vocab": os.path.join(folder, vocab[0]), "merges": os.path.join(folder, MERGES_FILE)}
        if folder == directory:
            top = (vocab, found)
    vocab, found = top
    missing = (MERGES_FILE if vocab else f"{VOCAB_FILES[0]} (or {VOCAB_FILES[1]})" if MERGES_FILE in found
               else f"{TOKENIZER_JSON}, or {VOCAB_FILES[0]} (or {VOCAB_FILES[1]}) and {MERGES_FILE}")
    raise FileNotFoundError(f"no BPE tokenizer files in {directory!r}: missing {missing}")


def train(texts, vocab_size, special_tokens, min_frequency=2):
    """Learns a GPT-2-style byte-level BPE with the ``tokenizers`` package.

    Args:
        texts: an iterable of Python strings.
        vocab_size: the vocabulary size to learn (special tokens and the 256
            byte symbols included).
        special_tokens: literal tokens, given the first ids.
        min_frequency: pairs seen fewer times are not merged.

    Returns:
        (tokens, merges, special tokens), as ``parse_tokenizer_json``.
    """
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as e:
        raise ImportError("BytePairTokenizer.adapt learns merges with the `tokenizers` package, which is not "
                          "installed: pip install tokenizers") from e
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return parse_tokenizer_json(json.loads(tokenizer.to_str()), "the trained tokenizer")
