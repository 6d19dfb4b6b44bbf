"""Text and data: in-graph tokenizers, text cleaning, corpus -> tf.data pipelines, word vectors.

Tokenizers (``CharTokenizer``, ``WordTokenizer``, ``SubwordTokenizer`` and
GPT-2's byte-level ``BytePairTokenizer``) are Keras layers that run on stock
TF / tensorflow-text ops, so they save with a model and export to a
SavedModel. ``lm_dataset`` streams a corpus into
``(x, y)`` next-token batches, ``stream_batches`` the contiguous streams of
stateful training; ``classification_dataset`` builds padded ``(ids, labels)`` batches.
Word and subword tokenizers keep special tokens, line ends and spacing (``spacing``).
"""

from keraslm.data.cleaning import ENGLISH_STOPWORDS, CleaningOptions, clean_text
from keraslm.data.corpus import classification_dataset, fit_tokenizer, lm_dataset, text_windows
from keraslm.data.random_windows import random_windows, split_tokens
from keraslm.data.sources import Corpus, resolve_files
from keraslm.data.spacing import LINE_END_POLICIES, normalized_spacing
from keraslm.data.streams import stream_batches, stream_layout, stream_steps_per_epoch
from keraslm.data.tokenizers import (
    PAD_ID,
    PAD_TOKEN,
    RESERVED_TOKENS,
    UNK_ID,
    UNK_TOKEN,
    BytePairTokenizer,
    CharTokenizer,
    SubwordTokenizer,
    Tokenizer,
    WordTokenizer,
    tokenizer_from_name,
)
from keraslm.data.vectors import load_word_vectors

__all__ = [
    "ENGLISH_STOPWORDS",
    "LINE_END_POLICIES",
    "PAD_ID",
    "PAD_TOKEN",
    "RESERVED_TOKENS",
    "UNK_ID",
    "UNK_TOKEN",
    "BytePairTokenizer",
    "CharTokenizer",
    "CleaningOptions",
    "Corpus",
    "SubwordTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "classification_dataset",
    "clean_text",
    "fit_tokenizer",
    "load_word_vectors",
    "lm_dataset",
    "normalized_spacing",
    "random_windows",
    "resolve_files",
    "split_tokens",
    "stream_batches",
    "stream_layout",
    "stream_steps_per_epoch",
    "text_windows",
    "tokenizer_from_name",
]
