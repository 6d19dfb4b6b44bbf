"""The tokenizer contract shared by the character, word and subword tokenizers.

A tokenizer is a Keras layer that maps strings to int32 ids entirely inside the
TF graph (stock TF and tensorflow-text ops), so it can sit in a Keras model,
survive a ``.keras`` round trip and be exported in a SavedModel for TF Serving.

By default ids 0 and 1 are reserved: ``<pad>`` (``pad_id``) and ``<unk>``
(``unk_id``); learned tokens follow. A subclass with other conventions (the
byte-level BPE tokenizer keeps GPT-2's ids and has no unknown token) sets the
class attributes ``reserved_tokens``, ``pad_id``, ``unk_id`` and
``detokenize_drops_pad``, which the base class uses everywhere. The vocabulary
is part of the config, so ``from_config(get_config())`` rebuilds an identical
tokenizer.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from keraslm.data import sources
from keraslm.validation import positive_int

PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN)
PAD_ID, UNK_ID = 0, 1

_ADAPT_BATCH = 1024  # strings per tensor when adapting on Python strings


def text_batches(data, batch_size=_ADAPT_BATCH):
    """Yields 1-D string tensors from anything ``Tokenizer.adapt`` accepts.

    Args:
        data: an iterable of Python strings (or bytes); a string tensor; a
            ``tf.data.Dataset`` of scalar or 1-D strings (scalars are batched
            ``batch_size`` at a time); one or several file paths / globs
            (``os.PathLike`` or strings that look like paths, see
            ``sources.looks_like_paths``) or a ``sources.Corpus``, streamed
            as UTF-8 in pieces of about ``sources.CHUNK_BYTES``.
        batch_size: strings per yielded tensor for Python iterables.

    Yields:
        ``tf.string`` tensors ``[n]``.
    """
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tf.TensorSpec) or spec.dtype != tf.string or spec.shape.rank not in (0, 1):
            raise ValueError(f"expected a dataset of scalar or 1-D strings, got element_spec {spec}")
        if spec.shape.rank == 0:
            data = data.batch(batch_size)
        yield from data
        return
    if isinstance(data, tf.RaggedTensor):
        data = data.flat_values
    if tf.is_tensor(data):
        if data.dtype != tf.string:
            raise ValueError(f"expected a string tensor to adapt on, got dtype {data.dtype.name}")
        yield tf.reshape(data, [-1])
        return
    if isinstance(data, (str, bytes, os.PathLike)):
        data = [data]
    if isinstance(data, (list, tuple)) and sources.looks_like_paths(data):
        data = sources.Corpus([("file", f) for f in sources.resolve_files(data)])
    if isinstance(data, sources.Corpus):
        for piece in data.iter_text():  # about CHUNK_BYTES at a time
            yield tf.constant([piece])
        return
    batch = []
    for item in data:
        if not isinstance(item, (str, bytes)):
            raise ValueError(f"expected strings to adapt on, got {type(item).__name__}: {item!r:.80}")
        batch.append(item)
        if len(batch) == batch_size:
            yield tf.constant(batch, tf.string)
            batch = []
    if batch:
        yield tf.constant(batch, tf.string)


class _Vocabulary:
    """Plain holder (kept out of Keras / TF attribute tracking) for the token list and its index."""

    def __init__(self, tokens):
        self.tokens = tuple(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}


class Tokenizer(keras.layers.Layer):
    """Base class: strings -> int32 ids, ids -> strings, in the TF graph.

    Subclasses implement ``_learn_vocabulary``, ``_build_lookup``,
    ``_tokenize_batch`` and ``_detokenize_batch``, and may validate tokens in
    ``_check_token``. They may change the reserved-token conventions with the
    class attributes below (or properties of the same names).

    Attributes:
        reserved_tokens: tokens that start every vocabulary (prepended when
            absent); default ``("<pad>", "<unk>")``, ``()`` for none.
        pad_id: the id ``call`` pads dense output with; default 0.
        unk_id: the id of unknown text, which out-of-range ids also read as in
            ``detokenize``; default 1, ``None`` when the tokenizer has no
            unknown token (``_detokenize_batch`` then sees ``vocab_size`` for
            an out-of-range id).
        detokenize_drops_pad: whether ``detokenize`` drops ``pad_id``;
            default ``True``.

    Args:
        vocabulary: list of tokens in id order, or ``None`` to ``adapt`` later.
            The ``reserved_tokens`` are prepended when absent and must
            otherwise be the first tokens.
        sequence_length: when set, calling the layer returns dense
            ``[B, sequence_length]`` ids (truncated, right-padded with
            ``pad_id``) instead of a ragged tensor. ``tokenize`` is unaffected.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ...).
    """

    reserved_tokens = RESERVED_TOKENS
    pad_id = PAD_ID
    unk_id = UNK_ID
    detokenize_drops_pad = True

    def __init__(self, vocabulary=None, sequence_length=None, **kwargs):
        kwargs.setdefault("dtype", "int32")
        super().__init__(**kwargs)
        self.sequence_length = positive_int("sequence_length", sequence_length, allow_none=True)
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self._vocab = None
        self.built = True
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    # -- vocabulary -----------------------------------------------------------------

    def set_vocabulary(self, vocabulary):
        """Replaces the vocabulary (a list of tokens in id order) and rebuilds the lookup."""
        if isinstance(vocabulary, (str, bytes)):
            raise ValueError(f"expected a list of tokens, got a single string {vocabulary!r:.80}")
        tokens = [t.decode("utf-8") if isinstance(t, bytes) else t for t in vocabulary]
        reserved = list(self.reserved_tokens)
        if tokens[: len(reserved)] != reserved:
            if any(t in tokens for t in reserved):
                names = " and ".join(map(repr, reserved))
                count = {1: "", 2: " two"}.get(len(reserved), f" {len(reserved)}")
                raise ValueError(f"{names} must be the first{count} tokens, got {tokens[:len(reserved) + 2]!r}...")
            tokens = reserved + tokens
        tokens += [t for t in self._required_tokens() if t not in tokens]
        if len(tokens) <= len(reserved):
            raise ValueError(f"expected a vocabulary with at least one token besides {reserved}, "
                             f"got {list(vocabulary)!r}")
        seen = set()
        for t in tokens[len(reserved):]:
            if not isinstance(t, str) or not t:
                raise ValueError(f"expected tokens to be non-empty strings, got {t!r}")
            if t in seen:
                raise ValueError(f"duplicate token {t!r} in the vocabulary")
            seen.add(t)
            self._check_token(t)
        self._vocab = _Vocabulary(tokens)
        self._build_lookup(self._vocab.tokens)

    def adapt(self, data, batch_size=_ADAPT_BATCH):
        """Learns the vocabulary from a corpus (replacing any previous one).

        Args:
            data: an iterable of strings, a ``tf.data.Dataset`` of strings, or
                file paths / globs (read as UTF-8); see ``text_batches``.
            batch_size: strings per tensor when ``data`` is a Python iterable.
        """
        tokens = self._learn_vocabulary(text_batches(data, batch_size))
        if not tokens:
            raise ValueError(f"{type(self).__name__}.adapt found no tokens in the data")
        self.set_vocabulary(list(self.reserved_tokens) + list(tokens))
        self.adapted_oov_rate = self._adapted_oov_rate()

    def oov_rate(self, data, batch_size=_ADAPT_BATCH):
        """The out-of-vocabulary rate of ``data``: the share of its tokens that are ``unk_id``.

        Args:
            data: what ``adapt`` accepts (strings, a dataset of strings, files).
            batch_size: strings per tensor when ``data`` is a Python iterable.

        Returns:
            A float in [0, 1] (0.0 for a tokenizer without an unknown token, or no tokens).

        Example:
            >>> from keraslm.data import WordTokenizer
            >>> tok = WordTokenizer(vocabulary=["the", "cat"])
            >>> tok.oov_rate(["the cat <unk> zebra"])
            0.5
        """
        unknown, total = self.count_unknown(text_batches(data, batch_size))
        return unknown / max(total, 1)

    def count_unknown(self, batches):
        """``(unknown tokens, tokens)`` over an iterable of ``[n]`` string tensors."""
        unknown = total = 0
        for batch in batches:
            ids = self.tokenize(batch).flat_values
            total += int(tf.size(ids))
            if self.unk_id is not None:
                unknown += int(tf.reduce_sum(tf.cast(tf.equal(ids, self.unk_id), tf.int64)))
        return unknown, total

    adapted_oov_rate = None  # the out-of-vocabulary rate of the corpus ``adapt`` learned from (None before)

    @property
    def keeps_line_ends(self):
        """Whether line ends are tokens (or inside tokens), so a model sees where lines end."""
        return True

    @property
    def vocabulary(self):
        """The tokens in id order (a new list)."""
        return list(self._require_vocabulary().tokens)

    @property
    def vocab_size(self):
        """Number of ids, reserved tokens included."""
        return len(self._require_vocabulary().tokens)

    def id_to_token(self, id):  # noqa: A002 - the natural name
        """The token string of an id (``ValueError`` when out of range)."""
        tokens = self._require_vocabulary().tokens
        if isinstance(id, bool) or not hasattr(id, "__index__"):
            raise ValueError(f"expected an integer id, got {id!r}")
        if not 0 <= int(id) < len(tokens):
            raise ValueError(f"expected an id in [0, {len(tokens)}), got {id!r}")
        return tokens[int(id)]

    def token_to_id(self, token):
        """The id of a token string (``unk_id`` when it is not in the vocabulary)."""
        return self._require_vocabulary().index.get(token, self.unk_id)

    def _require_vocabulary(self):
        if self._vocab is None:
            raise ValueError(f"{type(self).__name__} {self.name!r} has no vocabulary: call adapt(data) "
                             "or pass vocabulary=[...] first")
        return self._vocab

    # -- tokenize / detokenize ------------------------------------------------------

    def call(self, inputs):
        ids = self.tokenize(inputs)
        if self.sequence_length is None:
            return ids
        if isinstance(ids, tf.RaggedTensor):
            return ids.to_tensor(default_value=self.pad_id, shape=[None, self.sequence_length])  # [B, T]
        ids = ids[: self.sequence_length]
        return tf.pad(ids, [[0, self.sequence_length - tf.shape(ids)[0]]], constant_values=self.pad_id)  # [T]

    def tokenize(self, strings):
        """Strings to ids.

        Args:
            strings: string tensor (or Python strings) ``[B]`` (or ``[B, 1]``),
                or a scalar.

        Returns:
            int32 ``tf.RaggedTensor`` ``[B, None]``; for a scalar input a 1-D
            int32 ``tf.Tensor``.
        """
        self._require_vocabulary()
        strings = _as_string_tensor(strings)
        rank = strings.shape.rank
        if rank == 0:
            return self._tokenize_batch(strings[tf.newaxis])[0]
        if rank == 2 and strings.shape[1] == 1:
            strings = tf.squeeze(strings, axis=1)  # [B]
        elif rank != 1:
            raise ValueError(f"expected a scalar or a [B] string tensor, got shape {strings.shape}")
        return self._tokenize_batch(strings)

    def detokenize(self, ids):
        """Ids to strings; ``pad_id`` is dropped (see ``detokenize_drops_pad``) and out-of-range ids read as ``unk_id``.

        Args:
            ids: integer ids: ``tf.RaggedTensor`` ``[B, None]``, dense ``[B, T]``,
                or 1-D ``[T]``.

        Returns:
            string tensor ``[B]`` (a scalar for 1-D ids).
        """
        vocab_size = len(self._require_vocabulary().tokens)
        scalar = False
        if isinstance(ids, tf.RaggedTensor):
            if ids.shape.rank != 2:
                raise ValueError(f"expected ragged ids of shape [B, None], got shape {ids.shape}")
            rows = ids
        else:
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank == 1:
                scalar, ids = True, ids[tf.newaxis]
            elif ids.shape.rank != 2:
                raise ValueError(f"expected ids of shape [T] or [B, T], got shape {ids.shape}")
            rows = tf.RaggedTensor.from_tensor(ids)
        if not rows.dtype.is_integer:
            raise ValueError(f"expected integer ids, got dtype {rows.dtype.name}")
        rows = tf.cast(rows, tf.int32)
        if self.detokenize_drops_pad:
            rows = tf.ragged.boolean_mask(rows, tf.not_equal(rows, self.pad_id))  # [B, None]
        flat = rows.flat_values
        invalid = vocab_size if self.unk_id is None else self.unk_id
        flat = tf.where((flat < 0) | (flat >= vocab_size), invalid, flat)
        text = self._detokenize_batch(rows.with_flat_values(flat))  # [B]
        return text[0] if scalar else text

    def compute_output_spec(self, inputs):
        rank = len(inputs.shape)
        if rank == 0:
            shape = (self.sequence_length,)
        else:
            shape = (inputs.shape[0], self.sequence_length)
        ragged = rank > 0 and self.sequence_length is None
        return keras.KerasTensor(shape, dtype="int32", ragged=ragged)

    def get_config(self):
        config = super().get_config()
        config.update({
            "vocabulary": None if self._vocab is None else list(self._vocab.tokens),
            "sequence_length": self.sequence_length,
        })
        return config

    # -- subclass hooks ---------------------------------------------------------------

    def _check_token(self, token):
        """Raises ``ValueError`` for a token this tokenizer cannot hold."""

    def _required_tokens(self):
        """Tokens every vocabulary holds (appended to a given vocabulary when missing)."""
        return []

    def _adapted_oov_rate(self):
        """The out-of-vocabulary rate of the corpus just adapted on (default: every token was learned)."""
        return 0.0

    def _learn_vocabulary(self, batches):
        """Learned tokens (without the reserved ones) from an iterator of ``[n]`` string tensors."""
        raise NotImplementedError

    def _build_lookup(self, tokens):
        """Builds the in-graph lookup structures (eagerly) for ``tokens``."""
        raise NotImplementedError

    def _tokenize_batch(self, strings):
        """``[B]`` strings -> int32 ``tf.RaggedTensor`` ``[B, None]``."""
        raise NotImplementedError

    def _detokenize_batch(self, ids):
        """int32 ``tf.RaggedTensor`` ``[B, None]`` of ids -> ``[B]`` strings.

        The ids are in ``[0, vocab_size)`` (without ``pad_id`` when
        ``detokenize_drops_pad``), or ``vocab_size`` for an out-of-range id
        when ``unk_id`` is ``None``.
        """
        raise NotImplementedError


def _as_string_tensor(strings):
    if isinstance(strings, tf.RaggedTensor):
        raise ValueError(f"expected a dense string tensor, got a RaggedTensor of shape {strings.shape}")
    if tf.is_tensor(strings):
        if strings.dtype != tf.string:
            raise ValueError(f"expected a string tensor, got dtype {strings.dtype.name}")
        if strings.shape.rank is None:
            raise ValueError("expected a string tensor of known rank (scalar or [B]), got unknown rank")
        return strings
    return tf.convert_to_tensor(strings, dtype=tf.string)
