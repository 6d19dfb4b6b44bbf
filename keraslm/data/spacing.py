"""How the word and subword tokenizers cut text into units, and how detokenizing puts the spacing back.

Text is cut into **units**, in this order of precedence: special tokens (matched literally: never
split, lowercased or looked up piece by piece), line ends (``\\n`` or ``\\r\\n``, unless the
line-end policy is ``"space"``), punctuation and symbol characters (one unit each, with
``split_punctuation``) and words (the runs in between). Whitespace separates units and is not
a unit itself.

**Line-end policy** (``line_ends``): ``"newline"``: every line end is a ``"\\n"`` token (verse, code);
``"eos"``: every line end is an ``"<eos>"`` token (the Penn Treebank convention; detokenized as
``"\\n"``); ``"space"``: line ends are whitespace like any other (the text comes back on one line).

**Spacing.** Between two units the text has either whitespace or nothing. Detokenizing writes one
space between tokens, except next to a line end and where the text had nothing, which the
tokens mark:

* ``"##"`` before a token: no space before it (WordPiece's own continuation marker);
* ``"@@"`` after a token: no space after it. The word tokenizer marks punctuation only, on the side
  where it touches its neighbour, so that a word keeps one id whatever punctuation touches it:
  ``"KING RICHARD:\\nMy lord, what's this?"`` is ``KING RICHARD ##: \\n My lord ##, what ##'@@ s
  this ##?``, and comes back exactly.

So ``detokenize(tokenize(x))`` is ``x`` up to what was asked for (lowercasing, Unicode
normalisation) and what the tokens cannot hold: runs of spaces and tabs become one space, spaces
at the start and end of a line go, ``\\r\\n`` becomes ``\\n`` (see :func:`normalized_spacing`),
special tokens get a space on both sides, and an unknown word is ``<unk>``.
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_text as tf_text

from keraslm.data.bpe_pretokenize import special_pattern

LINE_END_POLICIES = ("newline", "eos", "space")
NEWLINE_TOKEN, EOS_TOKEN = "\n", "<eos>"
GLUE_BEFORE, GLUE_AFTER = "##", "@@"

SPACES = r"[\t\x{0b}\f\r \p{Z}]+"        # whitespace that is not a line end (a lone \r included)
WHITESPACE = r"[\s\x{0b}\p{Z}]+"         # all whitespace (the "space" policy)
LINE_END = r"\r?\n"
PUNCTUATION = r"[\p{P}\p{S}]"           # one punctuation or symbol character

WORD, PUNCT, SPECIAL, LINE = 0, 1, 2, 3  # unit kinds


def check_line_ends(line_ends):
    """Validates a line-end policy (one of ``LINE_END_POLICIES``)."""
    if line_ends not in LINE_END_POLICIES:
        raise ValueError(f"line_ends must be one of {', '.join(map(repr, LINE_END_POLICIES))}, got {line_ends!r}")
    return line_ends


def check_special_tokens(special_tokens):
    """Validates user special tokens: a list of distinct non-empty strings without whitespace."""
    if special_tokens is None:
        return []
    if isinstance(special_tokens, (str, bytes)):
        raise ValueError(f"special_tokens must be a list of strings, got {special_tokens!r}")
    tokens = list(special_tokens)
    for t in tokens:
        if not isinstance(t, str) or not t or any(c.isspace() for c in t):
            raise ValueError(f"special_tokens must be non-empty strings without whitespace, got {t!r}")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"special_tokens must be distinct, got {tokens!r}")
    return tokens


def line_token(line_ends):
    """The token a line end becomes under ``line_ends`` (None for ``"space"``)."""
    return {"newline": NEWLINE_TOKEN, "eos": EOS_TOKEN, "space": None}[line_ends]


class Units:
    """Units of a batch of strings: ``text``, ``kind`` and ``glued`` are ``tf.RaggedTensor`` ``[B, N]``.

    ``glued[b, i]``: unit ``i`` followed unit ``i - 1`` with no whitespace between, both words or
    punctuation (next to special tokens and line ends spacing is not recorded).
    """

    def __init__(self, text, kind, glued):
        self.text, self.kind, self.glued = text, kind, glued

    def glued_after(self):
        """``[N]`` flat: unit ``i + 1`` is glued to unit ``i``."""
        glued = self.glued.flat_values
        nxt = tf.concat([glued[1:], [False]], 0)
        last = _is_row_end(self.glued)
        return nxt & ~last

    def next_kind(self):
        """``[N]`` flat kind of the next unit of the row (``LINE`` past the row's end)."""
        kind = self.kind.flat_values
        return tf.where(_is_row_end(self.kind), LINE, tf.concat([kind[1:], [LINE]], 0))


class Splitter:
    """Cuts ``[B]`` strings into :class:`Units` (see the module docstring).

    Args:
        special_tokens: literal tokens kept whole (longest first where they overlap).
        line_ends: the line-end policy.
        split_punctuation: every punctuation or symbol character is a unit.
        lowercase: lowercase every unit but the special tokens.
        normalize: ``None`` or a Unicode normalization form applied before splitting.
    """

    def __init__(self, special_tokens, line_ends, split_punctuation, lowercase=False, normalize=None):
        self.lowercase, self.normalize = lowercase, normalize
        self.special = special_pattern(special_tokens) if special_tokens else ""
        self.line_ends = check_line_ends(line_ends)
        self.split_punctuation = split_punctuation
        keep = [self.special, LINE_END if line_ends != "space" else "", PUNCTUATION if split_punctuation else ""]
        spaces = WHITESPACE if line_ends == "space" else SPACES
        self.delimiters = "|".join(p for p in (keep[0], keep[1], spaces, keep[2]) if p)
        self.keep = "|".join(p for p in keep if p)

    def split(self, strings):
        """``[B]`` strings -> :class:`Units`."""
        if self.normalize is not None:
            strings = tf_text.normalize_utf8(strings, self.normalize)
        text, begin, end = tf_text.regex_split_with_offsets(strings, self.delimiters, self.keep)  # [B, N]
        flat = text.flat_values
        kind = tf.zeros_like(flat, tf.int32)
        if self.split_punctuation:
            kind = tf.where(tf.strings.regex_full_match(flat, PUNCTUATION), PUNCT, kind)
        if self.line_ends != "space":
            kind = tf.where(tf.strings.regex_full_match(flat, LINE_END), LINE, kind)
        if self.special:
            kind = tf.where(tf.strings.regex_full_match(flat, self.special), SPECIAL, kind)
        first = _is_row_start(text)
        b, e = begin.flat_values, end.flat_values
        touching = ~first & tf.equal(b, tf.concat([tf.constant([-1], e.dtype), e[:-1]], 0)[: tf.size(b)])
        plain = kind <= PUNCT
        glued = touching & plain & tf.concat([[False], plain[:-1]], 0)[: tf.size(plain)]
        if self.lowercase:
            flat = tf.where(plain, tf.strings.lower(flat, encoding="utf-8"), flat)
        return Units(text.with_flat_values(flat), text.with_flat_values(kind), text.with_flat_values(glued))


def join(rows, surface, before, after, line):
    """Detokenized text: per-token ``surface`` strings joined by one space, or none where marked.

    Args:
        rows: the ids ``tf.RaggedTensor`` ``[B, None]`` (its row partition is used).
        surface: ``[N]`` text of each token.
        before: ``[N]`` bool, no space before the token.
        after: ``[N]`` bool, no space after the token.
        line: ``[N]`` bool, the token is a line end (no space on either side).

    Returns:
        ``[B]`` strings.
    """
    first = _is_row_start(rows)
    prev_after = tf.concat([[True], after[:-1] | line[:-1]], 0)[: tf.size(after)]
    tight = first | before | line | prev_after
    pieces = tf.where(tight, surface, tf.strings.join([" ", surface]))
    return tf.strings.reduce_join(rows.with_flat_values(pieces), axis=-1)  # [B]


def count_strings(strings, counts=None):
    """Adds the occurrences of each string of a flat string tensor to a ``collections.Counter``."""
    counts = collections.Counter() if counts is None else counts
    unique, _, n = tf.unique_with_counts(strings, out_idx=tf.int64)
    for word, count in zip(unique.numpy().tolist(), n.numpy().tolist()):
        counts[word.decode("utf-8", "replace")] += count
    return counts


def normalized_spacing(text, line_ends="newline"):
    """What detokenizing the tokens of ``text`` gives back, spacing-wise (a reference for tests and users).

    Runs of spaces and tabs become one space, spaces at the start and end of each line go,
    ``\\r\\n`` becomes ``\\n``; with ``line_ends="space"`` the whole text becomes one line.

    Example:
        >>> normalized_spacing("  two   words \\r\\n next\\tline")
        'two words\\nnext line'
    """
    text = text.replace("\r\n", "\n")
    if line_ends == "space":
        return " ".join(text.split())
    return "\n".join(" ".join(line.split()) for line in text.split("\n"))


def whitespace_words(strings, count_line_ends=True):
    """``(words, line ends)`` in ``[B]`` strings: whitespace-separated words, and ``\\n`` line ends.

    The published word-level perplexities count one token per word and one ``<eos>`` per line end.
    """
    words = tf.size(tf_text.regex_split(strings, WHITESPACE).flat_values, out_type=tf.int64)
    lines = tf.reduce_sum(tf.strings.length(tf.strings.regex_replace(strings, r"[^\n]", ""))) \
        if count_line_ends else tf.constant(0)
    return int(words), int(lines)


def _is_row_start(rt):
    """``[N]`` bool over a ragged tensor's flat values: the value starts its row."""
    n = tf.shape(rt.flat_values, out_type=tf.int64)[0]
    return tf.equal(tf.range(n), tf.gather(rt.row_starts(), rt.value_rowids()))


def _is_row_end(rt):
    """``[N]`` bool over a ragged tensor's flat values: the value ends its row."""
    n = tf.shape(rt.flat_values, out_type=tf.int64)[0]
    return tf.equal(tf.range(n) + 1, tf.gather(rt.row_limits(), rt.value_rowids()))


class LineEndRules:
    """What the word and subword tokenizers share about line ends and special tokens (a mixin: the class
    sets ``line_ends`` and ``special_tokens``, and names its units in ``unit_name``)."""

    unit_name = "word"

    @property
    def keeps_line_ends(self):
        return self.line_ends != "space"

    def _required_tokens(self):
        eos = [EOS_TOKEN] if self.line_ends == "eos" else []
        return list(dict.fromkeys([*self.special_tokens, *eos]))

    def _check_token(self, token):
        if token != NEWLINE_TOKEN and any(c.isspace() for c in token):
            raise ValueError(f"expected {self.unit_name} tokens without whitespace, got {token!r}")

