"""GPT-2's pre-tokenization (text -> words) and byte-to-unicode table, on stock TF / tensorflow-text ops.

GPT-2 splits text into words with the regex

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

after cutting out special tokens such as ``<|endoftext|>`` (the text between
them is split on its own). RE2, the engine of TF's regex ops, has no
lookahead, so ``pretokenize`` gets the same words in three passes:

1. cut before and after every special token;
2. cut before the last character of every whitespace run of two or more
   characters that a non-space follows. That is where GPT-2's ``\\s+(?!\\S)``
   stops (one character short), and no GPT-2 word crosses such a point:
   words end before whitespace, and the run's last character starts the next
   word (``" x"``) or is one;
3. split every part between cuts with the pattern without ``\\s+(?!\\S)``
   (special tokens first). Inside a part every whitespace run that a
   non-space follows is one character, where ``\\s+(?!\\S)`` and ``\\s+``
   agree, so the words are GPT-2's.

A cut is the byte 0xFF, which valid UTF-8 never holds and RE2 never matches:
``regex_replace`` writes the cuts and ``tf.strings.split`` splits there, several
times faster than ``tensorflow_text.regex_split``. (A batch whose text holds
0xFF bytes, so is not UTF-8, is split by ``regex_split`` with the lookahead-free
pattern instead: its bytes still round-trip.)

The character classes are explicit so that they match the ``tokenizers``
package (Oniguruma, Unicode 16.0), not RE2's defaults: ``\\s`` is Unicode
White_Space (RE2's ``\\s`` is ASCII only), and ``\\p{L}`` / ``\\p{N}`` get the
Unicode 16.0 additions that RE2's tables (Unicode 15.1) lack.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_text as tf_text

# Unicode White_Space: what Python's `regex` and Oniguruma mean by \s (not U+001C..U+001F, unlike str.isspace).
WHITESPACE = r"\t\n\x{0b}\f\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
# Letters and numbers added in Unicode 16.0 (RE2 here knows Unicode 15.1; `tokenizers` 0.2x knows 16.0).
_LETTERS_16 = (r"\x{1c89}-\x{1c8a}\x{a7cb}-\x{a7cd}\x{a7da}-\x{a7dc}\x{105c0}-\x{105f3}\x{10d4a}-\x{10d65}"
               r"\x{10d6f}-\x{10d85}\x{10ec2}-\x{10ec4}\x{11380}-\x{11389}\x{1138b}\x{1138e}\x{11390}-\x{113b5}"
               r"\x{113b7}\x{113d1}\x{113d3}\x{11bc0}-\x{11be0}\x{13460}-\x{143fa}\x{16100}-\x{1611d}"
               r"\x{16d40}-\x{16d6c}\x{18cff}\x{1e5d0}-\x{1e5ed}\x{1e5f0}\x{2ebf0}-\x{2ee5d}")
_NUMBERS_16 = (r"\x{10d40}-\x{10d49}\x{116d0}-\x{116e3}\x{11bf0}-\x{11bf9}\x{16130}-\x{16139}\x{16d70}-\x{16d79}"
               r"\x{1ccf0}-\x{1ccf9}\x{1e5f1}-\x{1e5fa}")
LETTERS = r"\p{L}" + _LETTERS_16
NUMBERS = r"\p{N}" + _NUMBERS_16

# GPT-2's pattern without the `\s+(?!\S)` alternative (RE2 syntax, same alternation order).
SPLIT_PATTERN = (rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{LETTERS}]+| ?[{NUMBERS}]+| ?[^{WHITESPACE}{LETTERS}{NUMBERS}]+"
                 rf"|[{WHITESPACE}]+")
# The last two characters of a whitespace run and the non-space after it; the cut goes between the two.
_RUN_END = rf"([{WHITESPACE}])([{WHITESPACE}][^{WHITESPACE}])"
_CUT = b"\xff"  # never in valid UTF-8; RE2 matches no class on it


def bytes_to_unicode():
    """GPT-2's byte -> symbol table: printable Latin-1 bytes stand for themselves, the rest for U+0100 onwards.

    Returns:
        list of 256 one-character strings, indexed by byte value.

    Example:
        >>> table = bytes_to_unicode()
        >>> table[ord("a")], table[ord(" ")], table[ord("\\n")], table[0xFF]
        ('a', 'Ġ', 'Ċ', 'ÿ')
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = [None] * 256, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def special_pattern(special_tokens):
    """An RE2 alternation of the literal special tokens, longest first (so overlapping ones match longest)."""
    escaped = [_escape(t) for t in sorted(set(special_tokens), key=lambda t: (-len(t), t))]
    return "|".join(escaped)


def _escape(text):
    return "".join(c if c.isalnum() or c == "_" else f"\\x{{{ord(c):x}}}" for c in text)


@tf.autograph.experimental.do_not_convert
def pretokenize(strings, special_tokens=()):
    """Splits ``[B]`` strings into GPT-2's words; special tokens come out as single words.

    Args:
        strings: string tensor ``[B]``.
        special_tokens: literal strings cut out first (each occurrence is one
            word); the text between them is split on its own.

    Returns:
        string ``tf.RaggedTensor`` ``[B, W]``; joining a row gives the input back.

    Example:
        >>> pretokenize(tf.constant(["Hi  there!\\n"]), ["<|endoftext|>"]).to_list()
        [[b'Hi', b' ', b' there', b'!', b'\\n']]
        >>> pretokenize(tf.constant(["a<|endoftext|>I'm"]), ["<|endoftext|>"]).to_list()
        [[b'a', b'<|endoftext|>', b'I', b"'m"]]
    """
    marked, run_end, word = strings, (_RUN_END, b"\\1" + _CUT + b"\\2"), SPLIT_PATTERN
    if special_tokens:
        special = special_pattern(special_tokens)
        marked = tf.strings.regex_replace(marked, special, _CUT + b"\\0" + _CUT)  # 1. around special tokens
        run_end = (f"({special})|{_RUN_END}", b"\\1\\2" + _CUT + b"\\3")  # skip a special token whole
        word = f"{special}|{SPLIT_PATTERN}"
    marked = tf.strings.regex_replace(marked, *run_end)  # 2. before the last character of a run of 2+
    marked = tf.strings.regex_replace(marked, word, b"\\0" + _CUT)  # 3. after every word
    pieces = tf.strings.split(marked, _CUT)  # [B, None]
    lengths = tf.strings.length(pieces.flat_values)
    words = tf.ragged.boolean_mask(pieces, pieces.with_flat_values(lengths > 0))  # [B, W]
    intact = tf.equal(tf.reduce_sum(tf.cast(lengths, tf.int64)),
                      tf.reduce_sum(tf.cast(tf.strings.length(strings), tf.int64)))
    return tf.cond(intact, lambda: words, lambda: tf_text.regex_split(strings, SPLIT_PATTERN, SPLIT_PATTERN))
