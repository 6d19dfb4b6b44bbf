"""Word tokenizer: whitespace (and optionally punctuation) splitting, frequency vocabulary."""

from __future__ import annotations

import collections

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from keraslm.data.tokenizer_base import RESERVED_TOKENS, UNK_ID, Tokenizer
from keraslm.validation import positive_int

NORMALIZATION_FORMS = ("NFC", "NFKC", "NFD", "NFKD")

WHITESPACE = r"[\s\x{0b}\p{Z}]+"  # ASCII whitespace plus Unicode separators (NBSP, U+2028, ...)
PUNCTUATION = r"[\p{P}\p{S}]"  # one punctuation or symbol character


def check_normalize(normalize):
    """Validates a Unicode normalization form (``None`` or one of ``NORMALIZATION_FORMS``)."""
    if normalize is not None and normalize not in NORMALIZATION_FORMS:
        raise ValueError(f"expected normalize to be one of {NORMALIZATION_FORMS} or None, got {normalize!r}")
    return normalize


def preprocess(strings, lowercase=False, normalize=None):
    """Unicode normalization then lowercasing of a string tensor (any shape).

    Args:
        strings: string tensor.
        lowercase: lowercase with Unicode case mapping.
        normalize: ``None`` or a form accepted by ``tensorflow_text.normalize_utf8``.

    Returns:
        A string tensor of the same shape.
    """
    if normalize is not None:
        strings = tf_text.normalize_utf8(strings, normalize)
    if lowercase:
        strings = tf.strings.lower(strings, encoding="utf-8")
    return strings


def split_words(strings, split_punctuation=True):
    """Splits ``[B]`` strings into words on whitespace.

    Args:
        strings: string tensor ``[B]``.
        split_punctuation: every punctuation or symbol character (Unicode
            categories P and S) becomes a word of its own.

    Returns:
        string ``tf.RaggedTensor`` ``[B, None]``.

    Example:
        >>> split_words(tf.constant(["Hi, there!"])).to_list()
        [[b'Hi', b',', b'there', b'!']]
    """
    if split_punctuation:
        return tf_text.regex_split(strings, f"{WHITESPACE}|{PUNCTUATION}", PUNCTUATION)
    return tf_text.regex_split(strings, WHITESPACE)


def count_words(batches, lowercase=False, normalize=None, split_punctuation=True):
    """Counts words over an iterator of ``[n]`` string tensors.

    Returns:
        ``collections.Counter`` of ``str`` words.
    """
    counts = collections.Counter()
    for batch in batches:
        words = split_words(preprocess(batch, lowercase, normalize), split_punctuation).flat_values
        unique, _, n = tf.unique_with_counts(words, out_idx=tf.int64)
        for word, count in zip(unique.numpy().tolist(), n.numpy().tolist()):
            counts[word.decode("utf-8", "replace")] += count
    return counts


@keras.saving.register_keras_serializable(package="keraslm")
class WordTokenizer(Tokenizer):
    """One id per word, learned by frequency.

    Text is normalized (optional), lowercased (optional) and split on
    whitespace; with ``split_punctuation`` each punctuation or symbol
    character is a word of its own. The vocabulary is sorted by descending
    count, ties broken by the token string, so it is deterministic. Unknown
    words (and the literal texts ``"<pad>"`` / ``"<unk>"``) map to ``unk_id``.
    ``detokenize`` joins words with single spaces and writes ``"<unk>"`` for
    ``unk_id``.

    The lookup is a ``tf.lookup.StaticHashTable`` built from the vocabulary, a
    tracked resource that SavedModel export carries along.

    Args:
        vocabulary: tokens in id order, or ``None`` to ``adapt``.
        lowercase: lowercase the text (Unicode-aware) before splitting.
        normalize: ``"NFKC"``, ``"NFC"`` (or ``"NFD"``, ``"NFKD"``) or ``None``.
        split_punctuation: punctuation characters become their own tokens.
        max_tokens: vocabulary size cap, reserved tokens included (``adapt``).
        min_count: minimum number of occurrences of a learned word (``adapt``).
        sequence_length: see ``Tokenizer``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Example:
        >>> tok = WordTokenizer(lowercase=True)
        >>> tok.adapt(["The cat sat.", "the dog sat"])
        >>> tok.vocabulary
        ['<pad>', '<unk>', 'sat', 'the', '.', 'cat', 'dog']
        >>> tok.tokenize(["The bird sat."]).to_list()
        [[3, 1, 2, 4]]
        >>> tok.detokenize([[3, 1, 2, 4, 0]]).numpy().tolist()
        [b'the <unk> sat .']
    """

    def __init__(self, vocabulary=None, lowercase=False, normalize=None, split_punctuation=True,
                 max_tokens=None, min_count=1, sequence_length=None, **kwargs):
        self.lowercase = bool(lowercase)
        self.normalize = check_normalize(normalize)
        self.split_punctuation = bool(split_punctuation)
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens <= len(RESERVED_TOKENS)):
            raise ValueError(f"expected max_tokens to be an integer > {len(RESERVED_TOKENS)} or None, "
                             f"got {max_tokens!r}")
        positive_int("min_count", min_count)
        self.max_tokens = max_tokens
        self.min_count = min_count
        self._table = None
        self._tokens = None
        super().__init__(vocabulary=vocabulary, sequence_length=sequence_length, **kwargs)

    def _check_token(self, token):
        if any(c.isspace() for c in token):
            raise ValueError(f"expected word tokens without whitespace, got {token!r}")

    def _learn_vocabulary(self, batches):
        counts = count_words(batches, self.lowercase, self.normalize, self.split_punctuation)
        ranked = sorted(((w, c) for w, c in counts.items() if c >= self.min_count and w not in RESERVED_TOKENS),
                        key=lambda wc: (-wc[1], wc[0]))
        if self.max_tokens is not None:
            ranked = ranked[: self.max_tokens - len(RESERVED_TOKENS)]
        return [w for w, _ in ranked]

    def _build_lookup(self, tokens):
        learned = list(tokens[len(RESERVED_TOKENS):])
        keys = tf.constant(learned, tf.string)
        values = tf.range(len(RESERVED_TOKENS), len(tokens), dtype=tf.int32)
        self._table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values),
                                                default_value=UNK_ID)
        self._tokens = _TokenTensor(tokens)

    def _split(self, strings):
        return split_words(preprocess(strings, self.lowercase, self.normalize), self.split_punctuation)

    def _tokenize_batch(self, strings):
        words = self._split(strings)  # [B, None]
        return words.with_flat_values(self._table.lookup(words.flat_values))

    def _detokenize_batch(self, ids):
        words = ids.with_flat_values(tf.gather(self._tokens.value, ids.flat_values))  # [B, None]
        return tf.strings.reduce_join(words, axis=-1, separator=" ")  # [B]

    def get_config(self):
        config = super().get_config()
        config.update({
            "lowercase": self.lowercase,
            "normalize": self.normalize,
            "split_punctuation": self.split_punctuation,
            "max_tokens": self.max_tokens,
            "min_count": self.min_count,
        })
        return config


class _TokenTensor:
    """The vocabulary as an eager string constant, kept out of attribute tracking."""

    def __init__(self, tokens):
        self.value = tf.constant(list(tokens), tf.string)  # [V]
