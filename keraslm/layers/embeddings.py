"""Position embeddings: learned, or the fixed sinusoidal encoding."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keraslm.validation import positive_int


def sinusoidal_encoding(length: int, dim: int) -> np.ndarray:
    """The sinusoidal position encoding of "Attention Is All You Need".

    ``PE[pos, 2i] = sin(pos / 10000^(2i/dim))``, ``PE[pos, 2i+1] = cos(pos / 10000^(2i/dim))``.

    Args:
        length: number of positions.
        dim: encoding width (odd widths drop the last cosine).

    Returns:
        float32 array ``[length, dim]``.

    Example:
        >>> pe = sinusoidal_encoding(4, 6)
        >>> pe.shape, float(pe[0, 0]), float(pe[0, 1])
        ((4, 6), 0.0, 1.0)
    """
    pos = np.arange(length, dtype=np.float64)[:, None]                 # [T, 1]
    two_i = np.arange(0, dim, 2, dtype=np.float64)[None, :]             # [1, ceil(dim/2)]
    angle = pos / np.power(10000.0, two_i / dim)                        # [T, ceil(dim/2)]
    pe = np.zeros((length, dim), np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : dim // 2])
    return pe.astype(np.float32)


@keras.saving.register_keras_serializable(package="keraslm")
class PositionEmbedding(keras.layers.Layer):
    """Adds position information: a learned table or the sinusoidal encoding.

    Args:
        max_length: number of positions (the model's context).
        dim: embedding width.
        kind: ``"learned"`` (a trainable ``[max_length, dim]`` table, GPT-2's
            ``wpe``) or ``"sinusoidal"`` (fixed, no weights).

    Call args:
        positions: int ``[B, T]`` absolute positions.

    Returns:
        ``[B, T, dim]`` position vectors.
    """

    def __init__(self, max_length, dim, kind="learned", **kwargs):
        super().__init__(**kwargs)
        positive_int("max_length", max_length)
        positive_int("dim", dim)
        if kind not in ("learned", "sinusoidal"):
            raise ValueError(f"kind must be 'learned' or 'sinusoidal', got {kind!r}")
        self.max_length, self.dim, self.kind = max_length, dim, kind

    def build(self, input_shape=None):
        if self.kind == "learned":
            self.embeddings = self.add_weight(
                name="embeddings", shape=(self.max_length, self.dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02))
        else:
            self._table = tf.constant(sinusoidal_encoding(self.max_length, self.dim))
        self.built = True

    def call(self, positions):
        table = self.embeddings if self.kind == "learned" else self._table
        return tf.gather(tf.cast(table, self.compute_dtype), positions)

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length, "dim": self.dim, "kind": self.kind}
