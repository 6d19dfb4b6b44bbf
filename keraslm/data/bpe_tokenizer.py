"""GPT-2's byte-level BPE tokenizer, in the TF graph (stock TF + tensorflow-text ops).

Text is cut at special tokens, split into words with GPT-2's regex
(``bpe_pretokenize``), each word's UTF-8 bytes become byte symbols and the
merges are applied by rank (``bpe_merges``). Vocabulary, merges and special
tokens are the config, so the layer saves in ``.keras`` files and exports in
SavedModels like the other tokenizers. Files from Hugging Face, OpenAI or
keras-hub load with ``from_directory`` (``bpe_files``), and ``adapt`` learns
merges with the ``tokenizers`` package.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keraslm.data import bpe_files
from keraslm.data.bpe_merges import apply_merges, merge_table
from keraslm.data.bpe_pretokenize import bytes_to_unicode, pretokenize
from keraslm.data.tokenizer_base import Tokenizer, text_batches
from keraslm.validation import is_integer

GPT2_VOCAB_SIZE = 50257
_BYTE_SYMBOLS = bytes_to_unicode()  # [256] byte -> symbol
_SYMBOL_BYTES = {s: b for b, s in enumerate(_BYTE_SYMBOLS)}
_REPLACEMENT = "\ufffd".encode()  # what an out-of-range id detokenizes to


@keras.saving.register_keras_serializable(package="keraslm")
class BytePairTokenizer(Tokenizer):
    """GPT-2's byte-level BPE: same words, same merges, same ids as GPT-2 / Hugging Face.

    Tokenizing splits the text at special tokens (each occurrence becomes its
    id), splits the rest into words with GPT-2's regex, maps each word's
    UTF-8 bytes to byte symbols and merges the lowest-ranked adjacent pair
    (every occurrence, left to right) until none is in the merge table.
    Words that are themselves a token come from a cache instead. Every byte
    has a symbol, so there is no unknown token, and ``detokenize`` writes the
    tokens' bytes back: ``detokenize(tokenize(x)) == x`` for any UTF-8 text.

    Ids are the vocabulary's own: with GPT-2's files "!" is 0 and
    ``<|endoftext|>`` 50256; nothing is reserved at 0 / 1. ``unk_id`` is
    ``None`` (out-of-range ids detokenize to U+FFFD). ``pad_id`` is the id of
    ``<|endoftext|>`` (else of the first special token, else 0), as Hugging
    Face pads GPT-2; ``detokenize`` drops nothing, so literal
    ``<|endoftext|>`` text survives the round trip. To decode padded
    ``[B, T]`` ids, pass a ``tf.RaggedTensor`` built with the lengths.
    Detokenized strings are raw bytes: a slice of ids may end inside a
    character.

    Args:
        vocabulary: tokens in id order, in GPT-2's byte-symbol spelling
            (``"Ġthe"`` is " the"), holding all 256 byte symbols; or ``None``
            to ``adapt`` or load files later.
        merges: ``"left right"`` strings (or pairs), lowest rank first; both
            halves and their concatenation must be tokens.
        special_tokens: tokens matched literally in text (longest first),
            e.g. ``["<|endoftext|>"]``; ``None``: ``<|endoftext|>`` when the
            vocabulary has it.
        vocab_size: the vocabulary size ``adapt`` learns (an integer > 256;
            ``None``: GPT-2's 50257). The ``vocab_size`` property is the size
            of the current vocabulary.
        sequence_length: see ``Tokenizer``.
        **kwargs: ``keras.layers.Layer`` arguments.

    Example:
        >>> tok = BytePairTokenizer(vocab_size=270)
        >>> tok.adapt(["the cat and the hat", "that then"] * 4)
        >>> ids = tok.tokenize("the chat<|endoftext|>")
        >>> [tok.id_to_token(i) for i in ids.numpy()]
        ['the', 'Ġ', 'c', 'hat', '<|endoftext|>']
        >>> tok.detokenize(ids).numpy().decode()
        'the chat<|endoftext|>'
        >>> tok.pad_id == tok.token_to_id("<|endoftext|>") == 0, tok.unk_id
        (True, None)
    """

    reserved_tokens = ()
    unk_id = None
    detokenize_drops_pad = False

    def __init__(self, vocabulary=None, merges=None, special_tokens=None, vocab_size=None, sequence_length=None,
                 **kwargs):
        if vocab_size is not None and (not is_integer(vocab_size) or vocab_size <= 256):
            raise ValueError(f"vocab_size must be an integer > 256 or None, got {vocab_size!r}")
        if (vocabulary is None) != (merges is None):
            raise ValueError("pass vocabulary and merges together (merges=[] for none), got "
                             f"vocabulary={'None' if vocabulary is None else '[...]'}, "
                             f"merges={'None' if merges is None else '[...]'}")
        self._target_vocab_size = None if vocab_size is None else int(vocab_size)
        self._special_arg = None if special_tokens is None else list(special_tokens)
        self._spec = None
        self._pad = 0
        super().__init__(vocabulary=None, sequence_length=sequence_length, **kwargs)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary, merges, special_tokens)

    @property
    def pad_id(self):
        """The id ``call`` pads with: ``<|endoftext|>``'s (else the first special token's, else 0)."""
        return self._pad

    @property
    def merges(self):
        """The merges as ``"left right"`` strings, lowest rank first (a new list)."""
        return list(self._require_spec().merges)

    @property
    def special_tokens(self):
        """The tokens matched literally in text (a new list)."""
        return list(self._require_spec().special)

    # -- vocabulary ------------------------------------------------------------------

    def set_vocabulary(self, vocabulary, merges=(), special_tokens=None):
        """Replaces the vocabulary, merges and special tokens (see the class arguments) and rebuilds the tables."""
        if isinstance(vocabulary, (str, bytes)):
            raise ValueError(f"expected a list of tokens, got a single string {vocabulary!r:.80}")
        tokens = [t.decode("utf-8") if isinstance(t, bytes) else t for t in vocabulary]
        self._staged = _Spec(tokens, merges, special_tokens)
        super().set_vocabulary(tokens)

    def adapt(self, data, batch_size=1024):
        """Learns merges from a corpus with the ``tokenizers`` package (replacing the vocabulary).

        The learned vocabulary has the special tokens first (``<|endoftext|>``
        by default), then the 256 byte symbols, then the merges, up to
        ``vocab_size`` tokens (fewer when the corpus runs out of pairs seen
        twice). Tokenizing stays in the graph.

        Args:
            data: an iterable of strings, a ``tf.data.Dataset`` of strings, or
                file paths / globs (read as UTF-8); see ``text_batches``.
            batch_size: strings per tensor when ``data`` is a Python iterable.
        """
        special = self._special_arg if self._special_arg is not None else [bpe_files.END_OF_TEXT]
        texts = (s.decode("utf-8", "replace") for batch in text_batches(data, batch_size) for s in batch.numpy())
        tokens, merges, special = bpe_files.train(texts, self._target_vocab_size or GPT2_VOCAB_SIZE, special)
        self.set_vocabulary(tokens, merges, special)

    def token_to_id(self, token):
        """The id of a token, spelled as in the vocabulary (``"Ġthe"``) or as the text it stands for (``" the"``).

        Raises:
            ValueError: neither spelling is a token (there is no unknown token).
        """
        index = self._require_vocabulary().index
        if token in index:
            return index[token]
        spelled = "".join(_BYTE_SYMBOLS[b] for b in token.encode("utf-8")) if isinstance(token, str) else None
        if spelled in index:
            return index[spelled]
        raise ValueError(f"{token!r} is not a token of the vocabulary (nor the text of one)")

    def _require_spec(self):
        self._require_vocabulary()
        return self._spec

    def _build_lookup(self, tokens):
        spec = self._staged
        V = len(tokens)
        self._merge_table = merge_table(spec.merge_ids, V)
        byte_ids = tf.constant([spec.index[s] for s in _BYTE_SYMBOLS], tf.int32)  # [256]
        # A word that is a token hits the cache only when BPE itself gives that token (not always so).
        candidates = [i for i, t in enumerate(tokens) if t not in spec.special and t in spec.raw]
        symbols = tf.RaggedTensor.from_row_lengths(
            tf.constant([spec.index[c] for i in candidates for c in tokens[i]], tf.int32),
            tf.constant([len(tokens[i]) for i in candidates], tf.int64))  # [C, None]
        merged = apply_merges(symbols, self._merge_table, V)
        single = (merged.row_lengths() == 1).numpy()
        first = tf.gather(merged.flat_values, merged.row_starts()).numpy()  # valid where single
        cached = [i for i, s, f in zip(candidates, single, first) if s and f == i]
        words = {spec.raw[tokens[i]]: i for i in cached}  # raw bytes -> id
        words.update((t.encode("utf-8"), spec.index[t]) for t in spec.special)  # a special token's text is itself
        self._word_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(words) or [b""], tf.string),
                                                tf.constant(list(words.values()) or [-1], tf.int32)), default_value=-1)
        id_bytes = [t.encode("utf-8") if t in spec.special else spec.raw.get(t, t.encode("utf-8")) for t in tokens]
        self._graph = _Graph(byte_ids, tf.constant(id_bytes + [_REPLACEMENT], tf.string), V,
                             tuple(spec.special), self._encode)
        self._spec, self._staged = spec, None
        end = bpe_files.END_OF_TEXT
        self._pad = spec.index[end] if end in spec.special else spec.index[spec.special[0]] if spec.special else 0

    # -- tokenize / detokenize ------------------------------------------------------

    def _tokenize_batch(self, strings):
        return self._graph.encode(strings)

    def _encode(self, strings):
        """``[B]`` strings -> int32 ``tf.RaggedTensor`` ``[B, None]`` (run as one tf.function)."""
        g = self._graph
        words = pretokenize(strings, g.special)  # [B, W]
        flat = words.flat_values  # [N]
        cached = self._word_table.lookup(flat)  # [N] id or -1
        miss = cached < 0  # [N]
        unique, where = tf.unique(tf.boolean_mask(flat, miss))  # [U], [Nm]
        chars = tf.strings.bytes_split(unique)  # [U, None] one byte each
        byte_values = tf.cast(tf.reshape(tf.io.decode_raw(chars.flat_values, tf.uint8), [-1]), tf.int32)
        symbols = chars.with_flat_values(tf.gather(g.byte_ids, byte_values))  # [U, None]
        merged = tf.gather(apply_merges(symbols, self._merge_table, g.vocab_size), where)  # [Nm, None]
        # Interleave: a cached word is its one id, a missed word its merged ids.
        n = tf.shape(flat, out_type=tf.int64)[0]
        n_missed = tf.shape(where, out_type=tf.int64)[0]
        slot = tf.where(miss, tf.cumsum(tf.cast(miss, tf.int64)) - 1, n_missed)  # [N] row of merged, or n_missed
        lengths = tf.where(miss, tf.gather(tf.concat([merged.row_lengths(), [0]], 0), slot), 1)  # [N]
        pool_start = tf.shape(merged.flat_values, out_type=tf.int64)[0]
        starts = tf.where(miss, tf.gather(tf.concat([merged.row_starts(), [0]], 0), slot), pool_start + tf.range(n))
        take = tf.ragged.range(starts, starts + lengths)  # [N, None] indices into the pool
        ids = tf.gather(tf.concat([merged.flat_values, cached], 0), take.flat_values)
        return words.with_flat_values(take.with_flat_values(ids)).merge_dims(1, 2)  # [B, None]

    def _detokenize_batch(self, ids):
        pieces = tf.gather(self._graph.id_bytes, ids.flat_values)  # [N] bytes of each token
        return tf.strings.reduce_join(ids.with_flat_values(pieces), axis=-1)  # [B]

    def get_config(self):
        config = super().get_config()
        spec = self._spec
        config.update({
            "merges": None if spec is None else list(spec.merges),
            "special_tokens": self._special_arg if spec is None else list(spec.special),
            "vocab_size": self._target_vocab_size,
        })
        return config

    # -- files -----------------------------------------------------------------------

    @classmethod
    def from_files(cls, vocab_json, merges_txt, special_tokens=None, **kwargs):
        """Loads GPT-2's ``vocab.json`` (or keras-hub's ``vocabulary.json``) and ``merges.txt``.

        Args:
            vocab_json: path of the ``{token: id}`` JSON file.
            merges_txt: path of the merges file (a ``#version`` first line is skipped).
            special_tokens: see the class; ``None``: ``<|endoftext|>`` when present.
            **kwargs: other constructor arguments.
        """
        tokens, merges = bpe_files.read_vocab_and_merges(vocab_json, merges_txt)
        return cls(vocabulary=tokens, merges=merges, special_tokens=special_tokens, **kwargs)

    @classmethod
    def from_tokenizer_json(cls, path, **kwargs):
        """Loads a Hugging Face ``tokenizer.json`` of a GPT-2-style ByteLevel BPE; its added tokens are special."""
        tokens, merges, special = bpe_files.read_tokenizer_json(path)
        return cls(vocabulary=tokens, merges=merges, special_tokens=special, **kwargs)

    @classmethod
    def from_directory(cls, path, **kwargs):
        """Loads a folder with ``tokenizer.json``, or ``vocab.json`` / ``vocabulary.json`` with ``merges.txt``.

        Raises:
            FileNotFoundError: the folder or a needed file is missing (named).
        """
        files = bpe_files.find_files(path)
        if "tokenizer.json" in files:
            return cls.from_tokenizer_json(files["tokenizer.json"], **kwargs)
        return cls.from_files(files["vocab"], files["merges"], **kwargs)


class _Spec:
    """The validated vocabulary, merges and special tokens, with the lookups built from them."""

    def __init__(self, tokens, merges, special):
        self.index = {t: i for i, t in enumerate(tokens)}
        missing = [f"{s!r} (byte 0x{b:02x})" for b, s in enumerate(_BYTE_SYMBOLS) if s not in self.index]
        if missing:
            raise ValueError(f"a byte-level BPE vocabulary must hold all 256 byte symbols; missing {missing[0]}"
                             + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        if special is None:
            special = [bpe_files.END_OF_TEXT] if bpe_files.END_OF_TEXT in self.index else []
        if isinstance(special, (str, bytes)):
            raise ValueError(f"expected special_tokens to be a list of tokens, got {special!r}")
        self.special = list(dict.fromkeys(special))
        for t in self.special:
            if t not in self.index:
                raise ValueError(f"special token {t!r} is not in the vocabulary")
        self.raw = {t: bytes(_SYMBOL_BYTES[c] for c in t) for t in tokens if all(c in _SYMBOL_BYTES for c in t)}
        self.merges, self.merge_ids, ranks = [], [], {}
        for rank, merge in enumerate(merges):
            parts = merge.split(" ") if isinstance(merge, str) else list(merge)
            if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
                raise ValueError(f"expected merge {rank} to be 'left right' or a pair of tokens, got {merge!r}")
            left, right = parts
            for part in (left, right, left + right):
                if part not in self.index:
                    raise ValueError(f"merge {rank} {left + ' ' + right!r}: {part!r} is not in the vocabulary")
            if (left, right) in ranks:
                raise ValueError(f"merge {left + ' ' + right!r} appears twice (ranks {ranks[left, right]} and {rank})")
            ranks[left, right] = rank
            self.merges.append(f"{left} {right}")
            self.merge_ids.append((self.index[left], self.index[right], self.index[left + right]))


class _Graph:
    """Constants and the compiled encoder (kept out of attribute tracking; the tables are layer attributes)."""

    def __init__(self, byte_ids, id_bytes, vocab_size, special, encode):
        self.byte_ids, self.id_bytes, self.vocab_size, self.special = byte_ids, id_bytes, vocab_size, special
        self.encode = tf.function(encode, input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
