"""Word tokenizer: whitespace (and optionally punctuation) splitting, frequency vocabulary, faithful spacing."""

from __future__ import annotations

import collections

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from keraslm.data.spacing import (
    EOS_TOKEN,
    GLUE_AFTER,
    GLUE_BEFORE,
    LINE,
    NEWLINE_TOKEN,
    PUNCT,
    PUNCTUATION,
    WORD,
    LineEndRules,
    Splitter,
    check_line_ends,
    check_special_tokens,
    count_strings,
    join,
    line_token,
)
from keraslm.data.tokenizer_base import RESERVED_TOKENS, UNK_ID, Tokenizer
from keraslm.validation import positive_int

NORMALIZATION_FORMS = ("NFC", "NFKC", "NFD", "NFKD")

WHITESPACE = r"[\s\x{0b}\p{Z}]+"  # ASCII whitespace plus Unicode separators (NBSP, U+2028, ...)


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
class WordTokenizer(LineEndRules, Tokenizer):
    """One id per word, learned by frequency; detokenizing restores the text's spacing and line breaks.

    Text is normalized (optional) and cut into units (``keraslm.data.spacing``): special tokens
    (``"<pad>"``, ``"<unk>"``, ``"<eos>"`` and ``special_tokens``, kept whole under every option),
    line ends (``line_ends``), punctuation and symbol characters (``split_punctuation``) and the
    words between; then lowercased (optional; special tokens keep their case). Punctuation that
    touches its neighbour carries ``"##"`` (no space before) and ``"@@"`` (no space after), so
    ``detokenize(tokenize(x))`` gives ``x`` back up to lowercasing, normalisation and runs of
    spaces (``keraslm.data.spacing.normalized_spacing``). A marked punctuation token missing
    from the vocabulary falls back to a less marked one (``"##,@@"``, ``"##,"``, ``",@@"``,
    ``","``), a line end missing from it is read as a space. Unknown words, and the literal texts
    ``"<unk>"`` and ``"<pad>"``, map to ``unk_id``; ``detokenize`` writes ``"<unk>"`` for it.

    The vocabulary is the reserved tokens, then the special tokens (``special_tokens``, and
    ``"<eos>"`` under ``line_ends="eos"``: always present), then the learned tokens by descending
    count, ties broken by the token string, so it is deterministic. The lookup is a
    ``tf.lookup.StaticHashTable``, a tracked resource that SavedModel export carries along.

    Args:
        vocabulary: tokens in id order, or ``None`` to ``adapt`` (special tokens missing from it
            are appended).
        lowercase: lowercase the text (Unicode-aware), special tokens excepted.
        normalize: ``"NFKC"``, ``"NFC"`` (or ``"NFD"``, ``"NFKD"``) or ``None``.
        split_punctuation: punctuation characters become their own tokens (``None``: unless
            ``pretokenized``).
        max_tokens: vocabulary size cap, reserved and special tokens included (``adapt``).
        min_count: minimum number of occurrences of a learned word (``adapt``).
        sequence_length: see ``Tokenizer``.
        pretokenized: the corpus is tokenized already (Penn Treebank style): split on whitespace
            only and keep the case; its ``"<unk>"`` is the unknown token (as in every mode).
        line_ends: ``"newline"``: a line end is the token ``"\\n"``; ``"eos"``: the token
            ``"<eos>"`` (detokenized as a line end); ``"space"``: whitespace like any other.
        special_tokens: tokens kept whole in the text and always in the vocabulary.
        **kwargs: ``keras.layers.Layer`` arguments.

    Example:
        >>> tok = WordTokenizer(lowercase=True)
        >>> tok.adapt(["The cat sat.", "the dog sat"])
        >>> tok.vocabulary
        ['<pad>', '<unk>', 'sat', 'the', '##.', 'cat', 'dog']
        >>> tok.tokenize(["The bird sat."]).to_list()
        [[3, 1, 2, 4]]
        >>> tok.detokenize([[3, 1, 2, 4, 0]]).numpy().tolist()
        [b'the <unk> sat.']
        >>> ptb = WordTokenizer(pretokenized=True, line_ends="eos")
        >>> ptb.adapt([" the cat <unk> sat \\n the <unk> \\n"])
        >>> [ptb.id_to_token(i) for i in ptb.tokenize("the <unk> zebra\\n").numpy()]
        ['the', '<unk>', '<unk>', '<eos>']
    """

    def __init__(self, vocabulary=None, lowercase=False, normalize=None, split_punctuation=None,
                 max_tokens=None, min_count=1, sequence_length=None, pretokenized=False, line_ends="newline",
                 special_tokens=None, **kwargs):
        self.pretokenized = bool(pretokenized)
        if self.pretokenized and lowercase:
            raise ValueError(f"pretokenized=True keeps the text's case: lowercase must be False, got {lowercase!r}")
        if self.pretokenized and split_punctuation:
            raise ValueError("pretokenized=True splits on whitespace only: split_punctuation must be False or None, "
                             f"got {split_punctuation!r}")
        self.lowercase = bool(lowercase)
        self.normalize = check_normalize(normalize)
        self.split_punctuation = None if split_punctuation is None else bool(split_punctuation)
        self.line_ends = check_line_ends(line_ends)
        self.special_tokens = check_special_tokens(special_tokens)
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens <= len(RESERVED_TOKENS)):
            raise ValueError(f"expected max_tokens to be an integer > {len(RESERVED_TOKENS)} or None, "
                             f"got {max_tokens!r}")
        positive_int("min_count", min_count)
        self.max_tokens = max_tokens
        self.min_count = min_count
        punct = (not self.pretokenized) if self.split_punctuation is None else self.split_punctuation
        self._splitter = Splitter(list(dict.fromkeys([*RESERVED_TOKENS, EOS_TOKEN, *self.special_tokens])),
                                  self.line_ends, punct, self.lowercase, self.normalize)
        self._table = None
        self._tables = None
        self._counts = None
        super().__init__(vocabulary=vocabulary, sequence_length=sequence_length, **kwargs)

    # -- units ------------------------------------------------------------------------

    def _marked_units(self, strings):
        """(units, ``[N]`` unit strings with their spacing marks; line ends as the line token)."""
        units = self._splitter.split(strings)
        flat, kind = units.text.flat_values, units.kind.flat_values
        punct = tf.equal(kind, PUNCT)
        before = units.glued.flat_values & punct
        after = units.glued_after() & punct & tf.equal(units.next_kind(), WORD)
        marked = tf.strings.join([tf.where(before, GLUE_BEFORE, ""), flat, tf.where(after, GLUE_AFTER, "")])
        if self.line_ends != "space":
            marked = tf.where(tf.equal(kind, LINE), line_token(self.line_ends), marked)
        return units, marked, before, after

    def _learn_vocabulary(self, batches):
        counts = collections.Counter()
        for batch in batches:
            count_strings(self._marked_units(batch)[1], counts)
        special = self._required_tokens()
        ranked = sorted(((w, c) for w, c in counts.items()
                         if c >= self.min_count and w not in RESERVED_TOKENS and w not in special),
                        key=lambda wc: (-wc[1], wc[0]))
        if self.max_tokens is not None:
            room = self.max_tokens - len(RESERVED_TOKENS) - len(special)
            if room < 0:
                raise ValueError(f"max_tokens={self.max_tokens} has no room for the reserved and special tokens "
                                 f"{[*RESERVED_TOKENS, *special]}")
            ranked = ranked[:room]
        self._counts = counts
        return special + [w for w, _ in ranked]

    def _adapted_oov_rate(self):
        """Share of the adapted corpus's tokens that are ``unk_id``, from the counts ``adapt`` made."""
        counts, self._counts = self._counts, None
        unknown = total = 0
        for unit, n in counts.items():
            token = self._resolve(unit)
            if token is None:
                continue                                       # a line end read as a space
            total += n
            unknown += n * (token == UNK_ID)
        return unknown / max(total, 1)

    def _resolve(self, unit):
        """The id a marked unit string gets (as ``_tokenize_batch`` looks it up), None for a dropped line end."""
        index = self._vocab.index
        known = index.get(unit, UNK_ID)
        if known >= len(RESERVED_TOKENS):
            return known
        if unit == line_token(self.line_ends):
            return None
        _, char, before, after = _parse_marks(unit) if len(unit) in (3, 5) else (None, None, False, False)
        if char is not None:
            for candidate in (GLUE_BEFORE * before + char, char + GLUE_AFTER * after, char):
                if index.get(candidate, UNK_ID) >= len(RESERVED_TOKENS):
                    return index[candidate]
        return UNK_ID

    # -- lookup -----------------------------------------------------------------------

    def _build_lookup(self, tokens):
        learned = list(tokens[len(RESERVED_TOKENS):])
        keys = tf.constant(learned, tf.string)
        values = tf.range(len(RESERVED_TOKENS), len(tokens), dtype=tf.int32)
        self._table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values),
                                                default_value=UNK_ID)
        punct = self._splitter.split_punctuation
        marks = [_parse_marks(t) if punct and len(t) in (3, 5) else (t, None, False, False) for t in tokens]
        chars = [c for _, c, _, _ in marks if c is not None]
        is_punct = dict(zip(chars, tf.strings.regex_full_match(tf.constant(chars or [""], tf.string),
                                                               PUNCTUATION).numpy().tolist()))
        surface, before, after, line = [], [], [], []
        for token, char, b, a in marks:
            is_line = token == NEWLINE_TOKEN or (token == EOS_TOKEN and self.line_ends == "eos")
            marked = char is not None and is_punct.get(char, False)
            surface.append(NEWLINE_TOKEN if is_line else char if marked else token)
            before.append(marked and b)
            after.append(marked and a)
            line.append(is_line)
        self._tables = _TokenTables(surface, before, after, line)

    def _tokenize_batch(self, strings):
        units, marked, before, after = self._marked_units(strings)
        ids = self._table.lookup(marked)  # [N]
        # Marked punctuation the vocabulary lacks: the less marked spellings, in order.
        retry = tf.where((before | after) & tf.equal(ids, UNK_ID))[:, 0]  # [R]
        flat = tf.gather(units.text.flat_values, retry)
        b, a = tf.gather(before, retry), tf.gather(after, retry)
        sub = tf.gather(ids, retry)
        for pre, post in ((b, tf.zeros_like(a)), (tf.zeros_like(b), a), (tf.zeros_like(b), tf.zeros_like(a))):
            candidate = tf.strings.join([tf.where(pre, GLUE_BEFORE, ""), flat, tf.where(post, GLUE_AFTER, "")])
            sub = tf.where(tf.equal(sub, UNK_ID), self._table.lookup(candidate), sub)
        ids = tf.tensor_scatter_nd_update(ids, retry[:, None], sub)
        rows = units.text.with_flat_values(ids)  # [B, N]
        if self.line_ends == "space":
            return rows
        dropped = tf.equal(units.kind.flat_values, LINE) & tf.equal(ids, UNK_ID)  # a line end the vocabulary lacks
        return tf.ragged.boolean_mask(rows, units.text.with_flat_values(~dropped))  # [B, None]

    def _detokenize_batch(self, ids):
        t, flat = self._tables, ids.flat_values
        return join(ids, tf.gather(t.surface, flat), tf.gather(t.before, flat), tf.gather(t.after, flat),
                    tf.gather(t.line, flat))  # [B]

    def get_config(self):
        config = super().get_config()
        config.update({
            "lowercase": self.lowercase,
            "normalize": self.normalize,
            "split_punctuation": self.split_punctuation,
            "max_tokens": self.max_tokens,
            "min_count": self.min_count,
            "pretokenized": self.pretokenized,
            "line_ends": self.line_ends,
            "special_tokens": list(self.special_tokens),
        })
        return config


def _parse_marks(token):
    """``(token, char, before, after)`` of a marked punctuation spelling (``"##,"``, ``",@@"``, ``"##,@@"``);
    ``char`` is None when ``token`` is not one."""
    if len(token) == 5 and token[:2] == GLUE_BEFORE and token[3:] == GLUE_AFTER:
        return token, token[2], True, True
    if len(token) == 3 and token[:2] == GLUE_BEFORE:
        return token, token[2], True, False
    if len(token) == 3 and token[1:] == GLUE_AFTER:
        return token, token[0], False, True
    return token, None, False, False


class _TokenTables:
    """Per-id constants for detokenizing (kept out of attribute tracking): the text each id writes, whether
    it takes no space before / after, whether it is a line end."""

    def __init__(self, surface, before, after, line):
        self.surface = tf.constant(surface, tf.string)  # [V]
        self.before = tf.constant(before, tf.bool)  # [V]
        self.after = tf.constant(after, tf.bool)  # [V]
        self.line = tf.constant(line, tf.bool)  # [V]
