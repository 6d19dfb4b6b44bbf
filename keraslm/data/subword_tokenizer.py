"""Subword (WordPiece) tokenizer built on tensorflow-text."""

from __future__ import annotations

import collections

import keras
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import (
    wordpiece_tokenizer_learner_lib as wordpiece_learner,
)

from keraslm.data.spacing import (
    EOS_TOKEN,
    LINE,
    NEWLINE_TOKEN,
    PUNCT,
    SPECIAL,
    LineEndRules,
    Splitter,
    check_line_ends,
    check_special_tokens,
    count_strings,
    join,
    line_token,
)
from keraslm.data.tokenizer_base import RESERVED_TOKENS, UNK_ID, UNK_TOKEN, Tokenizer
from keraslm.data.word_tokenizer import check_normalize

SUFFIX_INDICATOR = "##"


@keras.saving.register_keras_serializable(package="keraslm")
class SubwordTokenizer(LineEndRules, Tokenizer):
    """WordPiece subwords: words are split into the longest vocabulary pieces.

    Text is normalized (optional) and cut into units (``keraslm.data.spacing``): special tokens
    (``"<pad>"``, ``"<unk>"``, ``"<eos>"`` and ``special_tokens``, kept whole), line ends
    (``line_ends``), each punctuation or symbol character, and the words between; then
    lowercased (optional; special tokens keep their case). ``adapt`` counts the words and learns
    a WordPiece vocabulary of at most ``target_vocab_size`` tokens with tensorflow-text's
    ``wordpiece_tokenizer_learner_lib`` (the learner behind ``bert_vocab_from_dataset``);
    word-internal pieces carry the ``"##"`` prefix. Tokenization runs
    ``tensorflow_text.FastWordpieceTokenizer`` on each unit. A unit written right after the
    previous one (``"what's"``, ``"lord,"``) is spelled with ``"##"`` pieces too, so
    ``detokenize``, which glues ``"##"`` pieces to the token before and puts one space between the
    others (and none around line ends), gives the text back up to lowercasing, normalisation and
    runs of spaces (``keraslm.data.spacing.normalized_spacing``). A unit that cannot be spelled
    with the vocabulary (or is longer than ``max_bytes_per_word``) becomes one ``unk_id`` (one
    written right after the previous unit is first tried with ordinary pieces).

    Args:
        vocabulary: tokens in id order, or ``None`` to ``adapt`` (special tokens missing from it
            are appended).
        target_vocab_size: the largest vocabulary ``adapt`` may learn,
            reserved and special tokens included (the learner stops within a few percent
            below it; every character of the corpus is always kept).
        lowercase: lowercase the text (Unicode-aware), special tokens excepted.
        normalize: ``"NFKC"``, ``"NFC"`` (or ``"NFD"``, ``"NFKD"``) or ``None``.
        max_bytes_per_word: longer words map to ``unk_id``.
        sequence_length: see ``Tokenizer``.
        line_ends: ``"newline"``: a line end is the token ``"\\n"`` (learned when the corpus has
            one; otherwise read as a space); ``"eos"``: the token ``"<eos>"``, always in the
            vocabulary; ``"space"``: whitespace like any other.
        special_tokens: tokens kept whole in the text and always in the vocabulary.
        **kwargs: ``keras.layers.Layer`` arguments.

    Example:
        >>> tok = SubwordTokenizer(target_vocab_size=60, lowercase=True)
        >>> tok.adapt(["Playing played plays player!"] * 20)
        >>> ids = tok.tokenize("Players play!")
        >>> [tok.id_to_token(i) for i in ids.numpy()]
        ['player', '##s', 'p', '##l', '##a', '##y', '##!']
        >>> tok.detokenize(ids).numpy()
        b'players play!'
    """

    unit_name = "subword"

    def __init__(self, vocabulary=None, target_vocab_size=8000, lowercase=False, normalize=None,
                 max_bytes_per_word=100, sequence_length=None, line_ends="newline", special_tokens=None, **kwargs):
        for arg, value in (("target_vocab_size", target_vocab_size), ("max_bytes_per_word", max_bytes_per_word)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= len(RESERVED_TOKENS):
                raise ValueError(f"expected {arg} to be an integer > {len(RESERVED_TOKENS)}, got {value!r}")
        self.target_vocab_size = target_vocab_size
        self.lowercase = bool(lowercase)
        self.normalize = check_normalize(normalize)
        self.max_bytes_per_word = max_bytes_per_word
        self.line_ends = check_line_ends(line_ends)
        self.special_tokens = check_special_tokens(special_tokens)
        self._protected = list(dict.fromkeys([*RESERVED_TOKENS, EOS_TOKEN, *self.special_tokens]))
        self._splitter = Splitter(self._protected, self.line_ends, True, self.lowercase, self.normalize)
        self._wordpiece = None
        self._counts = None
        super().__init__(vocabulary=vocabulary, sequence_length=sequence_length, **kwargs)

    def _unit_keys(self, units):
        """``[N]`` one string per unit: its text (``"##"`` first when written right after the previous
        unit), a special token itself, a line end as the line token."""
        flat, kind = units.text.flat_values, units.kind.flat_values
        keys = tf.where(units.glued.flat_values, tf.strings.join([SUFFIX_INDICATOR, flat]), flat)
        if self.line_ends != "space":
            keys = tf.where(tf.equal(kind, LINE), line_token(self.line_ends), keys)
        return keys

    def _learn_vocabulary(self, batches):
        counts = collections.Counter()
        for batch in batches:
            count_strings(self._unit_keys(self._splitter.split(batch)), counts)
        self._counts = counts
        line = line_token(self.line_ends)
        words = collections.Counter()
        for key, n in counts.items():
            if key not in self._protected and key != line:
                words[key[len(SUFFIX_INDICATOR):] if key.startswith(SUFFIX_INDICATOR) else key] += n
        special = self._required_tokens()
        special += [t for t in self._protected[len(RESERVED_TOKENS):] if counts.get(t) and t not in special]
        if line == NEWLINE_TOKEN and counts.get(line):
            special.append(line)
        if not words:
            return special
        budget = self.target_vocab_size - len(RESERVED_TOKENS) - len(special)
        if budget < 1:
            raise ValueError(f"target_vocab_size={self.target_vocab_size} has no room for the reserved and special "
                             f"tokens {[*RESERVED_TOKENS, *special]}")
        vocab = wordpiece_learner.learn(
            list(words.items()), budget + len(RESERVED_TOKENS), list(RESERVED_TOKENS),
            lower_thresh=1,  # let small corpora learn multi-character pieces too
            joiner=SUFFIX_INDICATOR, include_joiner_token=True)
        learned = [t for t in vocab if t not in RESERVED_TOKENS and t not in special]
        if len(learned) > budget:  # the learner can overshoot when counts are flat; keep the alphabet first
            alphabet = {t for t in learned if len(t) == 1 or (len(t) == 3 and t.startswith(SUFFIX_INDICATOR))}
            rest = [t for t in learned if t not in alphabet][: max(budget - len(alphabet), 0)]
            keep = alphabet.union(rest)
            learned = [t for t in learned if t in keep]
        return special + learned

    def _adapted_oov_rate(self):
        """Share of the adapted corpus's tokens that are ``unk_id``, from the counts ``adapt`` made."""
        counts, self._counts = self._counts, None
        keys, line = list(counts), line_token(self.line_ends)
        other = [k in self._protected or k == line for k in keys]
        glued = [not o and k.startswith(SUFFIX_INDICATOR) and len(k) > 2 for k, o in zip(keys, other)]
        text = tf.constant([k[2:] if g else k for k, g in zip(keys, glued)], tf.string)
        kind = tf.constant([SPECIAL if o else PUNCT for o in other], tf.int32)
        n = tf.constant([counts[k] for k in keys], tf.int64)
        pieces = self._pieces(text, kind, tf.constant(glued, tf.bool))  # [K, None]
        unknown = tf.reduce_sum(tf.cast(tf.equal(pieces, UNK_ID), tf.int64), axis=1)
        total = int(tf.reduce_sum(pieces.row_lengths() * n))
        return int(tf.reduce_sum(unknown * n)) / max(total, 1)

    def _build_lookup(self, tokens):
        self._wordpiece = _WordpieceModel(tokens, self.max_bytes_per_word, self._protected,
                                          line_token(self.line_ends))

    def _pieces(self, flat, kind, glued):
        """``[N]`` units -> their ids, ``tf.RaggedTensor`` ``[N, None]`` (a line end the vocabulary lacks: none)."""
        wp = self._wordpiece
        plain = kind <= PUNCT
        starts, follows, others = (tf.where(m)[:, 0] for m in (plain & ~glued, plain & glued, ~plain))
        first = wp.tokenizer.tokenize(tf.gather(flat, starts))  # [N1, P]
        text = tf.gather(flat, follows)
        suffix = wp.suffix_tokenizer.tokenize(text)  # [N2, P]
        suffix = suffix.with_flat_values(tf.gather(wp.suffix_ids, suffix.flat_values))
        # A unit the "##" pieces cannot spell is tried with ordinary pieces (its spacing is then lost).
        failed = tf.cast(tf.reduce_all(tf.equal(suffix, UNK_ID), axis=1), tf.int64)  # [N2]
        both = tf.concat([suffix, wp.tokenizer.tokenize(text)], axis=0)  # [2 * N2, P]
        suffix = tf.gather(both, tf.range(tf.size(follows, out_type=tf.int64)) + failed * tf.size(follows,
                                                                                                 out_type=tf.int64))
        other = tf.gather(flat, others)
        match = tf.equal(other[:, None], wp.protected[None, :])  # [N3, S]
        ids = tf.where(tf.reduce_any(match, 1), tf.gather(wp.protected_ids, tf.argmax(tf.cast(match, tf.int32), 1)),
                       wp.line_id)  # [N3]; -1: a line end the vocabulary lacks
        single = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(ids, ids >= 0), tf.cast(ids >= 0, tf.int64))
        rows = tf.concat([first, suffix, single], axis=0)
        order = tf.concat([starts, follows, others], 0)
        return tf.gather(rows, tf.math.invert_permutation(order))  # [N, None]

    def _tokenize_batch(self, strings):
        units = self._splitter.split(strings)  # [B, W]
        pieces = self._pieces(units.text.flat_values, units.kind.flat_values, units.glued.flat_values)
        return units.text.with_flat_values(pieces).merge_dims(1, 2)  # [B, None]

    def _detokenize_batch(self, ids):
        wp, flat = self._wordpiece, ids.flat_values
        return join(ids, tf.gather(wp.surface, flat), tf.gather(wp.before, flat), tf.zeros_like(flat, tf.bool),
                    tf.gather(wp.line, flat))  # [B]

    def get_config(self):
        config = super().get_config()
        config.update({
            "target_vocab_size": self.target_vocab_size,
            "lowercase": self.lowercase,
            "normalize": self.normalize,
            "max_bytes_per_word": self.max_bytes_per_word,
            "line_ends": self.line_ends,
            "special_tokens": list(self.special_tokens),
        })
        return config


class _WordpieceModel:
    """The FastWordpieceTokenizers (their models are eager constants) and the per-id tables.

    Kept out of Keras / TF attribute tracking: all are plain constants that a
    traced function captures and a SavedModel stores in its graph. ``suffix_tokenizer``
    spells a unit with ``"##"`` pieces only (a unit written right after the previous one);
    ``suffix_ids`` maps its ids to the vocabulary's.
    """

    def __init__(self, tokens, max_bytes_per_word, protected, line):
        index = {t: i for i, t in enumerate(tokens)}
        self.tokenizer = tf_text.FastWordpieceTokenizer(
            vocab=list(tokens), suffix_indicator=SUFFIX_INDICATOR, max_bytes_per_word=max_bytes_per_word,
            token_out_type=tf.int32, unknown_token=UNK_TOKEN, no_pretokenization=True)
        suffixes = {t: i for i, t in enumerate(tokens) if t.startswith(SUFFIX_INDICATOR) and len(t) > 2}
        spelled = {UNK_TOKEN: UNK_ID, **{t[2:]: i for t, i in suffixes.items()}, **suffixes}
        self.suffix_tokenizer = tf_text.FastWordpieceTokenizer(
            vocab=list(spelled), suffix_indicator=SUFFIX_INDICATOR, max_bytes_per_word=max_bytes_per_word,
            token_out_type=tf.int32, unknown_token=UNK_TOKEN, no_pretokenization=True)
        self.suffix_ids = tf.constant(list(spelled.values()), tf.int32)  # [V2]
        self.protected = tf.constant(protected, tf.string)  # [S]
        self.protected_ids = tf.constant([max(index.get(t, UNK_ID), UNK_ID) for t in protected], tf.int32)  # [S]
        self.line_id = tf.constant(index.get(line, -1) if line else -1, tf.int32)
        is_line = [t == NEWLINE_TOKEN or (t == EOS_TOKEN and line == EOS_TOKEN) for t in tokens]
        glued = [t in suffixes for t in tokens]
        self.surface = tf.constant([NEWLINE_TOKEN if n else t[2:] if g else t for t, n, g in zip(tokens, is_line, glued)],
                                   tf.string)  # [V]
        self.before = tf.constant(glued, tf.bool)  # [V]
        self.line = tf.constant(is_line, tf.bool)  # [V]
