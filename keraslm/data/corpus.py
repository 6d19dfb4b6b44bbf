"""Corpus -> ``tf.data``: language-model windows, classification batches, tokenizer fitting.

The corpus is streamed (never held whole in Python memory, see
``keraslm.data.sources``), tokenized inside the pipeline with the given
tokenizer, and cut into windows of ``block_size + 1`` tokens; ``x`` is a
window's first ``block_size`` tokens and ``y`` its last ``block_size`` (the
next token at every position). Windows start every ``block_size`` tokens, so
consecutive windows share one token and every token but the first is a target
exactly once per epoch.

The train / validation split is by characters of the concatenated corpus: the
first ``1 - validation_fraction`` is train, the rest validation (like
nanoGPT's 90 / 10 split of tinyshakespeare).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keraslm.data.char_tokenizer import CharTokenizer
from keraslm.data.cleaning import as_cleaner
from keraslm.data.sources import Corpus, resolve_files
from keraslm.data.tokenizer_base import Tokenizer
from keraslm.data.tokenizers import tokenizer_from_name
from keraslm.validation import positive_int

__all__ = ["classification_dataset", "fit_tokenizer", "lm_dataset", "resolve_files", "text_windows"]

AUTOTUNE = tf.data.AUTOTUNE


def text_windows(files_or_texts, tokenizer, *, block_size, split="train", validation_fraction=0.1,
                 cleaning=None):
    """Unbatched, unshuffled token windows of one split.

    Args:
        files_or_texts: paths / globs (``str`` or ``os.PathLike``, or a list),
            in-memory text (a string or a list of strings), or a
            ``sources.Corpus`` (reuse one to scan the files only once); see
            ``sources.Corpus.from_source``.
        tokenizer: an adapted ``Tokenizer``.
        block_size: tokens per model input (windows hold ``block_size + 1``).
        split: ``"train"``, ``"validation"`` or ``"all"``.
        validation_fraction: the last fraction of the characters that is
            validation.
        cleaning: ``None``, a dict of ``clean_text`` options,
            ``CleaningOptions`` or a callable on string tensors; applied to
            the streamed text before tokenizing.

    Returns:
        ``tf.data.Dataset`` of int32 ``[block_size + 1]`` windows.

    Raises:
        ValueError: bad arguments, or a split with fewer than
            ``block_size + 1`` tokens ("corpus too small for block_size=...").
    """
    return _windows(files_or_texts, tokenizer, block_size, split, validation_fraction, cleaning)[0]


def lm_dataset(files_or_texts, tokenizer, *, block_size, batch_size, split="train", validation_fraction=0.1,
               shuffle=True, seed=0, repeat=False, cleaning=None, shuffle_buffer=10_000):
    """Next-token prediction batches ``(x, y)`` from a text corpus.

    Train (and ``"all"``) windows are shuffled (seeded, reshuffled every
    epoch) and batched with ``drop_remainder=True``; validation windows keep
    their corpus order and the last partial batch. When the number of batches
    is known up front (a ``CharTokenizer`` and no cleaning) the dataset's
    cardinality is set, so Keras shows progress against it.

    Args:
        files_or_texts: paths / globs or in-memory text (see ``text_windows``).
        tokenizer: an adapted ``Tokenizer``.
        block_size: sequence length ``T`` of ``x`` and ``y``.
        batch_size: windows per batch ``B``.
        split: ``"train"``, ``"validation"`` or ``"all"``.
        validation_fraction: the last fraction of the characters that is
            validation.
        shuffle: shuffle the windows (ignored for ``"validation"``).
        seed: shuffle seed.
        repeat: repeat forever (``steps_per_epoch`` then drives ``fit``).
        cleaning: see ``text_windows``.
        shuffle_buffer: windows held by the shuffle buffer (capped at the
            number of windows when that is known).

    Returns:
        ``tf.data.Dataset`` of ``(x, y)``, both int32 ``[B, T]``, with
        ``y[:, t] == x[:, t + 1]`` for ``t < T - 1``.

    Raises:
        ValueError: bad arguments or a corpus too small for ``block_size``.

    Example:
        >>> tok = CharTokenizer(); tok.adapt(["abcdefghij" * 10])
        >>> ds = lm_dataset(["abcdefghij" * 10], tok, block_size=4, batch_size=2, shuffle=False)
        >>> x, y = next(iter(ds))
        >>> tok.detokenize(x).numpy().tolist(), tok.detokenize(y).numpy().tolist()
        ([b'abcd', b'efgh'], [b'bcde', b'fghi'])
    """
    positive_int("batch_size", batch_size)
    positive_int("shuffle_buffer", shuffle_buffer)
    windows, n_windows = _windows(files_or_texts, tokenizer, block_size, split, validation_fraction, cleaning)
    training = split != "validation"
    if n_windows is not None and training and n_windows < batch_size:
        raise ValueError(f"corpus too small for block_size={block_size} and batch_size={batch_size}: "
                         f"the {split!r} split gives {n_windows} window(s), fewer than one batch")
    if shuffle and training:
        buffer = shuffle_buffer if n_windows is None else max(min(shuffle_buffer, n_windows), 1)
        windows = windows.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    batches = windows.batch(batch_size, drop_remainder=training)  # [B, T + 1]
    batches = batches.map(_shift, num_parallel_calls=AUTOTUNE)
    if n_windows is not None:
        count = n_windows // batch_size if training else math.ceil(n_windows / batch_size)
        batches = batches.apply(tf.data.experimental.assert_cardinality(count))
    if repeat:
        batches = batches.repeat()
    return batches.prefetch(AUTOTUNE)


def fit_tokenizer(kind, files, *, validation_fraction=0.1, cleaning=None, **kwargs):
    """Builds a tokenizer and adapts it on the train split only.

    Args:
        kind: ``"char"``, ``"word"`` or ``"subword"``.
        files: paths / globs or in-memory text (see ``text_windows``).
        validation_fraction: held-out fraction, as in ``lm_dataset`` (so the
            validation text never shapes the vocabulary).
        cleaning: see ``text_windows``.
        **kwargs: constructor arguments of the tokenizer.

    Returns:
        The adapted tokenizer.

    Example:
        >>> tok = fit_tokenizer("char", ["aaaaaaaaab"], validation_fraction=0.1)
        >>> tok.vocabulary
        ['<pad>', '<unk>', 'a']
    """
    tokenizer = tokenizer_from_name(kind, **kwargs)
    corpus = Corpus.from_source(files)
    lo, hi = corpus.split_range("train", validation_fraction)
    text = _text_dataset(corpus, lo, hi, as_cleaner(cleaning))
    tokenizer.adapt(text.batch(1))
    return tokenizer


def classification_dataset(texts, labels, tokenizer, *, batch_size, max_length=None, shuffle=True, seed=0,
                           cleaning=None):
    """Batches of ``(ids, labels)`` for text classification.

    Args:
        texts: list (or array / 1-D tensor) of strings.
        labels: one label per text (integers become int32, floats float32).
        tokenizer: an adapted ``Tokenizer``.
        batch_size: texts per batch ``B``.
        max_length: texts longer than this many tokens are truncated.
        shuffle: shuffle the examples (seeded, reshuffled every epoch).
        seed: shuffle seed.
        cleaning: see ``text_windows`` (e.g. ``task="classification"``
            stop-word removal).

    Returns:
        ``tf.data.Dataset`` of ``(ids, labels)``: ids int32 ``[B, T]`` padded
        with ``pad_id`` to the longest text of the batch, labels ``[B]``.

    Example:
        >>> from keraslm.data.word_tokenizer import WordTokenizer
        >>> tok = WordTokenizer(); tok.adapt(["a b c", "a b", "a"])
        >>> ds = classification_dataset(["a b c", "a"], [1, 0], tok, batch_size=2, shuffle=False)
        >>> ids, y = next(iter(ds))
        >>> ids.numpy().tolist(), y.numpy().tolist()
        ([[2, 3, 4], [2, 0, 0]], [1, 0])
    """
    positive_int("batch_size", batch_size)
    if max_length is not None:
        positive_int("max_length", max_length)
    _check_tokenizer(tokenizer)
    cleaner = as_cleaner(cleaning)
    texts = tf.reshape(tf.convert_to_tensor(texts, dtype=tf.string), [-1])  # [N]
    labels = np.asarray(labels)
    if labels.ndim == 0 or labels.shape[0] != texts.shape[0]:
        raise ValueError(f"expected one label per text ({texts.shape[0]} texts), got labels of shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        labels = labels.astype(np.int32)
    elif np.issubdtype(labels.dtype, np.floating):
        labels = labels.astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((texts, labels))
    if shuffle:
        ds = ds.shuffle(max(int(texts.shape[0]), 1), seed=seed, reshuffle_each_iteration=True)

    def encode(text, label):  # [B] strings -> [B, T] ids
        if cleaner is not None:
            text = cleaner(text)
        ids = tokenizer.tokenize(text)  # [B, None]
        if max_length is not None:
            ids = ids[:, :max_length]
        return ids.to_tensor(default_value=tokenizer.pad_id), label  # [B, T]

    return ds.batch(batch_size).map(encode, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


# -- internals --------------------------------------------------------------------------


def _windows(source, tokenizer, block_size, split, validation_fraction, cleaning):
    """(windows dataset, number of windows or None when unknown before reading)."""
    positive_int("block_size", block_size)
    block_size = int(block_size)
    _check_tokenizer(tokenizer)
    cleaner = as_cleaner(cleaning)
    corpus = Corpus.from_source(source)
    lo, hi = corpus.split_range(split, validation_fraction)
    tokenize = tf.autograph.experimental.do_not_convert(tokenizer.tokenize)
    tokens = _text_dataset(corpus, lo, hi, cleaner).map(tokenize, num_parallel_calls=AUTOTUNE)  # [n] ids

    exact = isinstance(tokenizer, CharTokenizer) and cleaner is None  # one token per character
    n_tokens = hi - lo if exact else _count_tokens(tokens, limit=block_size + 1)
    if n_tokens < block_size + 1:
        found = f"{n_tokens}" if exact or n_tokens == 0 else f"fewer than {block_size + 1}"
        raise ValueError(f"corpus too small for block_size={block_size}: the {split!r} split has {found} "
                         f"token(s), need at least {block_size + 1}")

    def step(previous, block):  # previous, block: [<= T]
        window = tf.concat([previous, block[:1]], axis=0)  # [T + 1] when previous is a full block
        return block, (window, tf.equal(tf.size(previous), block_size))

    def is_full(window, full):
        return full

    def with_shape(window, full):
        return tf.ensure_shape(window, [block_size + 1])

    blocks = tokens.rebatch(block_size)  # consecutive [T] blocks of the token stream (the last may be short)
    windows = blocks.scan(tf.zeros([0], tf.int32), step).filter(is_full).map(with_shape)
    return windows, ((n_tokens - 1) // block_size if exact else None)


def _text_dataset(corpus, lo, hi, cleaner):
    text = tf.data.Dataset.from_generator(lambda: corpus.iter_text(lo, hi),
                                          output_signature=tf.TensorSpec([], tf.string))
    if cleaner is not None:
        text = text.map(cleaner, num_parallel_calls=AUTOTUNE)
    return text


def _count_tokens(tokens, limit):
    """Tokens in the stream, counting no further than ``limit``."""
    n = 0
    for piece in tokens:
        n += int(tf.size(piece))
        if n >= limit:
            break
    return n


def _shift(windows):  # [B, T + 1] -> x, y: [B, T]
    return windows[:, :-1], windows[:, 1:]


def _check_tokenizer(tokenizer):
    if not isinstance(tokenizer, Tokenizer):
        raise ValueError(f"expected a keraslm Tokenizer, got {tokenizer!r}")
    tokenizer.vocabulary  # noqa: B018 - raises a clear ValueError before adapt
