"""SequenceClassifier: a pooling + Dense head over a keraslm language model."""

from __future__ import annotations

import keras
import tensorflow as tf

from keraslm.validation import positive_int

_POOLING = ("mean", "max", "last")


@keras.saving.register_keras_serializable(package="keraslm")
class SequenceClassifier(keras.Model):
    """Classifies token sequences (e.g. sentiment) with a language-model backbone.

    Padding positions (``pad_id``) are excluded from the pooling.

    Args:
        backbone: a :class:`~keraslm.models.RecurrentLM` or
            :class:`~keraslm.models.TransformerLM` (its hidden states are pooled).
        num_classes: number of classes (logits out, use ``from_logits=True``).
        pooling: ``"mean"``, ``"max"`` or ``"last"`` (last non-pad token; the
            natural choice for a causal backbone).
        dropout: dropout before the classification layer.
        pad_id: token id of padding.

    Example:
        >>> import tensorflow as tf
        >>> from keraslm.models import RecurrentLM
        >>> clf = SequenceClassifier(RecurrentLM(20, 8, 8), num_classes=3)
        >>> clf(tf.constant([[5, 6, 0], [7, 0, 0]])).shape
        TensorShape([2, 3])
    """

    def __init__(self, backbone, num_classes, pooling="last", dropout=0.0, pad_id=0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        positive_int("num_classes", num_classes)
        if pooling not in _POOLING:
            raise ValueError(f"pooling must be one of {_POOLING}, got {pooling!r}")
        self.backbone, self.num_classes, self.pooling = backbone, num_classes, pooling
        self.dropout, self.pad_id = dropout, pad_id
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(num_classes, name="classifier", dtype=self.dtype_policy)

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        self.classifier.build((None, self.backbone.hidden_size))
        self.built = True

    def call(self, token_ids, training=None):
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

    def get_config(self):
        return {"backbone": keras.saving.serialize_keras_object(self.backbone), "num_classes": self.num_classes,
                "pooling": self.pooling, "dropout": self.dropout, "pad_id": self.pad_id, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
