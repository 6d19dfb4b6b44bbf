"""RecurrentLM: Embedding -> stacked LSTM / GRU / SimpleRNN -> Dense."""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from keraslm.layers.recurrence import check_fast, run_recurrent_layer
from keraslm.models.base import CausalLM
from keraslm.validation import positive_int

_CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}
log = logging.getLogger("keraslm")


@keras.saving.register_keras_serializable(package="keraslm")
class RecurrentLM(CausalLM):
    """A recurrent language model (Zaremba et al. 2014; TensorFlow's text-generation tutorial).

    Args:
        vocab_size: V.
        embedding_dim: width of the token embedding.
        hidden_units: units of each recurrent layer (an int for every layer, or a list).
        num_layers: number of stacked recurrent layers.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (SimpleRNN).
        dropout: dropout on the embedding output and between layers (Zaremba's
            non-recurrent dropout).
        tie_embeddings: share the embedding with the output layer (needs the
            last layer's units == ``embedding_dim``).
        fast: ``"auto"`` (default), True or False: run LSTM / GRU layers through
            keraslm's own loop on their weights (same variables, same results to
            float rounding) instead of the Keras layers; see
            :func:`keraslm.layers.recurrence.run_recurrent_layer`.
        tokenizer: optional tokenizer layer saved with the model.

    Example:
        >>> import tensorflow as tf
        >>> model = RecurrentLM(vocab_size=11, embedding_dim=8, hidden_units=16, num_layers=2, cell="gru")
        >>> model(tf.zeros([2, 5], tf.int32)).shape
        TensorShape([2, 5, 11])
    """

    def __init__(self, vocab_size, embedding_dim, hidden_units, num_layers=1, cell="lstm", dropout=0.0,
                 tie_embeddings=False, fast="auto", tokenizer=None, **kwargs):
        super().__init__(tokenizer=tokenizer, **kwargs)
        self._vocab_size = positive_int("vocab_size", vocab_size)
        positive_int("embedding_dim", embedding_dim)
        positive_int("num_layers", num_layers)
        units = [hidden_units] * num_layers if isinstance(hidden_units, int) else list(hidden_units)
        if len(units) != num_layers:
            raise ValueError(f"hidden_units has {len(units)} entries but num_layers={num_layers}")
        for u in units:
            positive_int("hidden_units", u)
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if tie_embeddings and units[-1] != embedding_dim:
            raise ValueError(f"tie_embeddings needs the last hidden_units ({units[-1]}) == embedding_dim "
                             f"({embedding_dim})")
        self.embedding_dim, self.hidden_units, self.num_layers = embedding_dim, hidden_units, num_layers
        self.cell, self.dropout, self.tie_embeddings = cell, dropout, tie_embeddings
        self.fast = check_fast(fast)
        self._units = units
        dt = self.dtype_policy
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding", dtype=dt)
        self.rnns = [_CELLS[cell](u, return_sequences=True, return_state=True, name=f"{cell}_{i}", dtype=dt)
                     for i, u in enumerate(units)]
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.head = None if tie_embeddings else keras.layers.Dense(vocab_size, name="head", dtype=dt)

    @property
    def hidden_size(self):
        return self._units[-1]

    def build(self, input_shape):
        if not self.embedding.built:
            self.embedding.build(input_shape)
        width = self.embedding_dim
        for rnn, u in zip(self.rnns, self._units):
            if not rnn.built:
                rnn.build((input_shape[0], input_shape[1], width))
            width = u
        if self.head is not None and not self.head.built:
            self.head.build((input_shape[0], input_shape[1], width))
        self.built = True

    def _run(self, token_ids, states, mask, training):
        x = self.drop(self.embedding(token_ids), training=training)              # [B, T, E]
        new_states = []
        for i, rnn in enumerate(self.rnns):
            initial = None if states is None else list(states[i])
            out = run_recurrent_layer(rnn, x, initial, mask, training, fast=self.fast)
            x, layer_states = out[0], tuple(out[1:])                              # [B, T, U_i]
            new_states.append(layer_states)
            x = self.drop(x, training=training)
        return x, tuple(new_states)

    def features(self, token_ids, training=None):
        return self._run(token_ids, None, None, training)[0]

    def logits_from_features(self, x):
        if self.head is not None:
            return self.head(x)
        return tf.matmul(x, tf.cast(self.embedding.embeddings, x.dtype), transpose_b=True)   # [B, T, V]

    def init_cache(self, batch_size, max_length=None):
        per_layer = 2 if self.cell == "lstm" else 1
        return tuple(tuple(tf.zeros([batch_size, u], self.compute_dtype) for _ in range(per_layer))
                     for u in self._units)

    def next(self, ids, cache, index, valid=None):
        if not self.built:
            self.build((None, None))
        mask = None
        if valid is not None:
            mask = tf.range(tf.shape(ids)[1])[None, :] < tf.cast(valid, tf.int32)[:, None]   # [B, T]
        x, cache = self._run(ids, cache, mask, training=False)
        return self.logits_from_features(x), cache

    def load_pretrained_embeddings(self, path, vocabulary=None, lowercase=False):
        """Initialises the embedding from GloVe / word2vec / fastText ``.vec`` text vectors.

        Args:
            path: the vectors file.
            vocabulary: token list in id order (default: the model tokenizer's).
            lowercase: match lowercased words.

        Returns:
            The number of vocabulary words found in the file (also logged).
        """
        from keraslm.data import load_word_vectors

        if vocabulary is None:
            if self.tokenizer is None:
                raise ValueError("load_pretrained_embeddings needs a vocabulary or a model tokenizer")
            vocabulary = self.tokenizer.vocabulary
        if len(vocabulary) != self._vocab_size:
            raise ValueError(f"vocabulary has {len(vocabulary)} tokens but the model's vocab_size is "
                             f"{self._vocab_size}")
        matrix, found = load_word_vectors(path, vocabulary, dim=self.embedding_dim, lowercase=lowercase)
        self.build_for_inference()
        self.embedding.embeddings.assign(np.asarray(matrix, np.float32))
        log.info("pretrained embeddings: found %d of %d vocabulary words in %s", found, len(vocabulary), path)
        return found

    def get_config(self):
        return {
            "vocab_size": self._vocab_size, "embedding_dim": self.embedding_dim,
            "hidden_units": self.hidden_units, "num_layers": self.num_layers, "cell": self.cell,
            "dropout": self.dropout, "tie_embeddings": self.tie_embeddings, "fast": self.fast,
            **self._base_config(),
            "name": self.name, "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }
