"""Tokenizers by name: ``"char"``, ``"word"``, ``"subword"`` and ``"bpe"``.

The classes live one per file (``char_tokenizer``, ``word_tokenizer``,
``subword_tokenizer``, ``bpe_tokenizer``) on the shared contract of
``tokenizer_base``; this module gathers them and builds one from its name.
"""

from __future__ import annotations

from keraslm.data.bpe_tokenizer import BytePairTokenizer
from keraslm.data.char_tokenizer import CharTokenizer
from keraslm.data.subword_tokenizer import SubwordTokenizer
from keraslm.data.tokenizer_base import PAD_ID, PAD_TOKEN, RESERVED_TOKENS, UNK_ID, UNK_TOKEN, Tokenizer
from keraslm.data.word_tokenizer import WordTokenizer

TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer, "subword": SubwordTokenizer, "bpe": BytePairTokenizer}

__all__ = ["PAD_ID", "PAD_TOKEN", "RESERVED_TOKENS", "TOKENIZERS", "UNK_ID", "UNK_TOKEN", "BytePairTokenizer",
           "CharTokenizer", "SubwordTokenizer", "Tokenizer", "WordTokenizer", "tokenizer_from_name"]


def tokenizer_from_name(kind, **kwargs):
    """Builds an (un-adapted, unless ``vocabulary`` is given) tokenizer by name.

    Args:
        kind: ``"char"``, ``"word"``, ``"subword"`` or ``"bpe"``.
        **kwargs: the tokenizer's constructor arguments.

    Returns:
        A ``Tokenizer``.

    Raises:
        ValueError: an unknown ``kind``.

    Example:
        >>> tokenizer_from_name("word", lowercase=True).lowercase
        True
    """
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(map(repr, TOKENIZERS))}")
    return TOKENIZERS[kind](**kwargs)
