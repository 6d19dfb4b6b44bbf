"""SequenceClassifier: a pooling + Dense head over a keraslm language model."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keraslm.validation import positive_int

_POOLING = ("mean", "max", "last")
_PREDICT_BATCH = 32  # Keras' default predict batch size


@keras.saving.register_keras_serializable(package="keraslm")
class SequenceClassifier(keras.Model):
    """Classifies text or token sequences (e.g. sentiment) with a language-model backbone.

    ``call`` maps token ids ``[B, T]`` (padded with ``pad_id``, which the pooling
    excludes) to logits ``[B, num_classes]``. With a tokenizer (the classifier's
    own or the backbone's) it also takes raw text: ``clf("a fine film")``,
    ``clf.predict(["great", "awful"])`` and ``clf(tf.constant([...]))`` accept a
    Python string, a list of strings, a numpy array of str / bytes or a
    ``tf.string`` tensor ``[N]`` (or ``[N, 1]``), tokenize it in the graph
    (:meth:`tokenize`) and return logits ``[N, num_classes]``; ``fit`` takes a
    ``tf.data`` dataset of ``(strings, labels)`` too. Texts longer than the
    backbone's ``max_length`` keep their first tokens (as
    :func:`keraslm.data.classification_dataset` does).

    Training updates only the variables the classifier uses: the backbone's LM
    head (:meth:`~keraslm.models.CausalLM.head_layers`), which ``features`` does
    not reach, is in ``non_trainable_weights``, so ``fit`` warns about no missing
    gradients. Layers frozen with ``layer.trainable = False`` (the whole backbone,
    ``clf.backbone.embedding``, ...) are recorded by :meth:`get_config` and stay
    frozen after a ``.keras`` save and load. The tokenizer is saved with the model;
    :func:`keraslm.export.export_classifier` writes a SavedModel that takes text.

    Args:
        backbone: a :class:`~keraslm.models.RecurrentLM` or
            :class:`~keraslm.models.TransformerLM` (its hidden states are pooled).
        num_classes: number of classes (logits out, use ``from_logits=True``).
        pooling: ``"mean"``, ``"max"`` or ``"last"`` (last non-pad token; the
            natural choice for a causal backbone).
        dropout: dropout before the classification layer.
        pad_id: token id of padding; default the tokenizer's ``pad_id``, else 0.
        tokenizer: the tokenizer layer that text goes through; default the
            backbone's (``backbone.tokenizer``).
        frozen: attribute paths below the classifier of layers to freeze, e.g.
            ``["backbone.embedding", "backbone.rnns.0"]``; :meth:`get_config`
            writes the layers frozen at the time (see :meth:`frozen_layers`).

    Example:
        >>> import tensorflow as tf
        >>> from keraslm.data import WordTokenizer
        >>> from keraslm.models import RecurrentLM
        >>> clf = SequenceClassifier(RecurrentLM(20, 8, 8), num_classes=3)
        >>> clf(tf.constant([[5, 6, 0], [7, 0, 0]])).shape
        TensorShape([2, 3])
        >>> tok = WordTokenizer(vocabulary=["good", "bad", "film"])
        >>> clf = SequenceClassifier(RecurrentLM(tok.vocab_size, 8, 8, tokenizer=tok), num_classes=2)
        >>> clf.predict(["good film", "bad"], verbose=0).shape
        (2, 2)
    """

    def __init__(self, backbone, num_classes, pooling="last", dropout=0.0, pad_id=None, tokenizer=None, frozen=(),
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        positive_int("num_classes", num_classes)
        if pooling not in _POOLING:
            raise ValueError(f"pooling must be one of {_POOLING}, got {pooling!r}")
        self.backbone, self.num_classes, self.pooling = backbone, num_classes, pooling
        self.tokenizer = tokenizer
        if pad_id is None:
            text_tokenizer = self.text_tokenizer
            pad_id = 0 if text_tokenizer is None else int(text_tokenizer.pad_id)
        self.dropout, self.pad_id = dropout, int(pad_id)
        self.drop = keras.layers.Dropout(dropout, name="dropout", dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(num_classes, name="classifier", dtype=self.dtype_policy)
        # Variables that a frozen layer creates later (in build, on loading) are created frozen.
        self._freeze([frozen] if isinstance(frozen, str) else frozen)

    # -- text ---------------------------------------------------------------------------

    @property
    def text_tokenizer(self):
        """The tokenizer text goes through: the classifier's own, else the backbone's (None: ids only)."""
        if self.tokenizer is not None:
            return self.tokenizer
        return getattr(self.backbone, "tokenizer", None)

    def _require_tokenizer(self):
        tokenizer = self.text_tokenizer
        if tokenizer is None:
            raise ValueError("this SequenceClassifier got text but has no tokenizer (neither its own tokenizer= nor "
                             "the backbone's): pass integer token ids, or build it with a tokenizer")
        return tokenizer

    def tokenize(self, texts):
        """Text -> the token ids :meth:`call` takes.

        Args:
            texts: a string, a list / numpy array of strings, or a ``tf.string``
                tensor ``[N]`` (or ``[N, 1]``).

        Returns:
            int32 ``[N, T]``: the tokenizer's ids, truncated to the backbone's
            ``max_length`` (the first tokens kept) and right-padded with
            ``pad_id`` to the longest text (``T >= 1``).
        """
        tokenizer = self._require_tokenizer()
        strings = as_text(texts)
        if strings is None:
            raise ValueError(f"expected text (a string, strings or a string tensor), got {type(texts).__name__}")
        rows = tf.cast(tokenizer.tokenize(strings), tf.int32)                   # [N, None] ragged
        limit = getattr(self.backbone, "max_length", None)
        if limit is not None:
            rows = rows[:, :limit]
        n = tf.shape(strings)[0]
        ids = tf.concat([rows.to_tensor(self.pad_id), tf.fill([n, 1], self.pad_id)], 1)   # [N, W + 1]
        width = tf.reduce_max(tf.concat([tf.cast(rows.row_lengths(), tf.int32), [1]], 0))
        return ids[:, :width]                                                    # [N, T]

    def __call__(self, *args, **kwargs):
        if args:
            strings = as_text(args[0])
            if strings is not None:
                self._require_tokenizer()
                args = (strings, *args[1:])
        return super().__call__(*args, **kwargs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Keras' ``predict``; ``x`` may also be text (see the class docstring), tokenized batch by batch.

        Returns:
            numpy logits ``[N, num_classes]`` (``keras.ops.softmax`` gives probabilities).
        """
        strings = as_text(x)
        if strings is not None:
            self._require_tokenizer()
            x = tf.data.Dataset.from_tensor_slices(strings).batch(batch_size or _PREDICT_BATCH)
            batch_size = None
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    # -- the model ----------------------------------------------------------------------

    def build(self, input_shape=None):
        shape = tuple(input_shape) if input_shape is not None and len(input_shape) == 2 else (None, None)
        if not self.backbone.built:                    # (a [B] shape: text, tokenized in call)
            self.backbone.build(shape)
        self.classifier.build((None, self.backbone.hidden_size))
        self.built = True

    def call(self, token_ids, training=None):
        if token_ids.dtype == tf.string:
            token_ids = self.tokenize(token_ids)                                  # [B, T]
        x = self.backbone.features(token_ids, training=training)                  # [B, T, C]
        mask = tf.cast(tf.not_equal(token_ids, self.pad_id), x.dtype)[..., None]   # [B, T, 1]
        if self.pooling == "mean":
            pooled = tf.reduce_sum(x * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0)
        elif self.pooling == "max":
            pooled = tf.reduce_max(x + (mask - 1.0) * 1e9, 1)
        else:
            last = tf.maximum(tf.reduce_sum(tf.cast(mask[..., 0], tf.int32), 1) - 1, 0)   # [B]
            pooled = tf.gather(x, last, axis=1, batch_dims=1)                     # [B, C]
        return self.classifier(self.drop(pooled, training=training))             # [B, num_classes]

    # -- what training updates ----------------------------------------------------------

    def _unused_ids(self):
        """ids of the backbone's LM-head variables (``features`` does not use them)."""
        head_layers = getattr(self.backbone, "head_layers", None)
        layers = head_layers() if head_layers is not None else []
        return {id(v) for layer in layers for v in layer.variables}

    @property
    def trainable_weights(self):
        unused = self._unused_ids()
        return [v for v in super().trainable_weights if id(v) not in unused]

    @property
    def trainable_variables(self):
        unused = self._unused_ids()
        return [v for v in super().trainable_variables if id(v) not in unused]

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return super().non_trainable_weights
        unused = self._unused_ids()
        return [v for v in self.weights if not v.trainable or id(v) in unused]

    @property
    def non_trainable_variables(self):
        if not self.trainable:
            return super().non_trainable_variables
        unused = self._unused_ids()
        return [v for v in self.variables if not v.trainable or id(v) in unused]

    # -- frozen layers ------------------------------------------------------------------

    def frozen_layers(self):
        """Attribute paths of the frozen layers (``trainable == False``) below the classifier, outermost only
        (the layers inside a frozen layer are frozen with it), e.g. ``["backbone.embedding"]``."""
        found = []

        def visit(layer, path, seen):
            for name, child in _sublayers(layer):
                if id(child) in seen:
                    continue
                seen.add(id(child))
                child_path = f"{path}.{name}" if path else name
                if not child.trainable:
                    found.append(child_path)
                else:
                    visit(child, child_path, seen)

        visit(self, "", {id(self)})
        return found

    def _freeze(self, paths):
        for path in paths:
            layer, rest = self, path
            while rest:   # a child's name may hold a dot itself ("rnns.0"): match names, longest first
                found = sorted(((name, child) for name, child in _sublayers(layer)
                                if rest == name or rest.startswith(name + ".")), key=lambda c: -len(c[0]))
                if not found:
                    raise ValueError(f"frozen: {path!r} names no layer of this SequenceClassifier (paths are "
                                     "attribute names below it, e.g. 'backbone.embedding')")
                name, layer = found[0]
                rest = rest[len(name) + 1:]
            layer.trainable = False

    # -- serialization ------------------------------------------------------------------

    def get_config(self):
        own = self.tokenizer if self.tokenizer is not getattr(self.backbone, "tokenizer", None) else None
        return {"backbone": keras.saving.serialize_keras_object(self.backbone), "num_classes": self.num_classes,
                "pooling": self.pooling, "dropout": self.dropout, "pad_id": self.pad_id,
                "tokenizer": None if own is None else keras.saving.serialize_keras_object(own),
                "frozen": self.frozen_layers(), "trainable": self.trainable, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _sublayers(layer):
    """``(attribute name, layer)`` of the layers held in ``layer``'s public attributes (list items as ``name.i``
    parts: ``rnns.0``)."""
    for name, value in vars(layer).items():
        if name.startswith("_"):
            continue
        if isinstance(value, keras.layers.Layer):
            yield name, value
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, keras.layers.Layer):
                    yield f"{name}.{i}", item


def as_text(x):
    """``x`` as a ``tf.string`` tensor ``[N]`` when it is text (a string, a list / tuple of strings, a numpy
    array of str / bytes, a string tensor), else None."""
    if isinstance(x, (str, bytes)):
        return tf.constant([x], tf.string)
    if isinstance(x, (list, tuple)):
        if not x or not all(isinstance(t, (str, bytes)) for t in x):
            return None
        x = tf.constant(list(x), tf.string)
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "USO" or (x.dtype.kind == "O" and not all(isinstance(t, (str, bytes)) for t in x.flat)):
            return None
        x = tf.constant(x.astype(object) if x.dtype.kind == "U" else x, tf.string)
    elif not (tf.is_tensor(x) and not isinstance(x, tf.RaggedTensor) and x.dtype == tf.string):
        return None
    rank = x.shape.rank
    if rank == 0 or (rank == 2 and x.shape[1] == 1):
        return tf.reshape(x, [-1])
    if rank is None:
        return tf.reshape(x, [-1])
    if rank != 1:
        raise ValueError(f"expected text of shape [N] (or [N, 1]), got a string tensor of shape {x.shape}")
    return x
