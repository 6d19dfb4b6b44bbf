"""RecurrentLM: Embedding -> stacked LSTM / GRU / SimpleRNN -> Dense."""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from keraslm.layers.recurrence import check_fast, run_recurrent_layer
from keraslm.models.base import CausalLM
from keraslm.models.carry import CarriedState
from keraslm.validation import number, positive_int

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
        init_scale: ``None``: Keras' initialisers (and an LSTM forget-gate bias of 1);
            a number ``s``: every weight, biases included, drawn uniformly from
            ``[-s, s]`` (Zaremba et al.'s initialisation).
        tokenizer: optional tokenizer layer saved with the model.

    During training, :meth:`start_carrying_state` makes the model carry its state
    from one training step to the next (stateful truncated BPTT; see
    :mod:`keraslm.models.carry`).

    Example:
        >>> import tensorflow as tf
        >>> model = RecurrentLM(vocab_size=11, embedding_dim=8, hidden_units=16, num_layers=2, cell="gru")
        >>> model(tf.zeros([2, 5], tf.int32)).shape
        TensorShape([2, 5, 11])
    """

    carries_state = True  # evaluation can carry the state across a whole text (keraslm.evaluation)

    def __init__(self, vocab_size, embedding_dim, hidden_units, num_layers=1, cell="lstm", dropout=0.0,
                 tie_embeddings=False, fast="auto", init_scale=None, tokenizer=None, **kwargs):
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
        self.init_scale = None if init_scale is None else number("init_scale", init_scale, low=0, low_open=True)
        self._units = units
        self._carry = None
        dt = self.dtype_policy
        init = _uniform_initializers(self.init_scale)
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding", dtype=dt,
                                                **init("embeddings_initializer"))
        rnn_init = ("kernel_initializer", "recurrent_initializer", "bias_initializer")
        self.rnns = [_CELLS[cell](u, return_sequences=True, return_state=True, name=f"{cell}_{i}", dtype=dt,
                                  **init(*rnn_init), **({"unit_forget_bias": False}
                                                        if cell == "lstm" and self.init_scale else {}))
                     for i, u in enumerate(units)]
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.head = None if tie_embeddings else keras.layers.Dense(vocab_size, name="head", dtype=dt,
                                                                   **init("kernel_initializer", "bias_initializer"))

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
        carry = self._carry
        if carry is None or training is not True:
            return self._run(token_ids, None, None, training)[0]
        x, states = self._run(token_ids, carry.initial(self.compute_dtype), None, training)
        with tf.control_dependencies(carry.update(states)):
            return tf.identity(x)

    @property
    def carried_state(self):
        """The :class:`~keraslm.models.carry.CarriedState` in use, or None."""
        return self._carry

    def start_carrying_state(self, batch_size, steps_per_epoch):
        """From now on, each training call (``training=True``, as in ``fit``) starts from the state the
        previous one ended with, and from zeros every ``steps_per_epoch`` calls (stateful truncated
        BPTT); other calls are unaffected. Every training batch must have ``batch_size`` rows.

        Returns:
            The new :class:`~keraslm.models.carry.CarriedState` (zeros, position 0).
        """
        positive_int("batch_size", batch_size)
        self._carry = CarriedState(self.init_cache(batch_size), steps_per_epoch)
        self.train_function = None   # traced again, with the state
        return self._carry

    def stop_carrying_state(self):
        """Training calls start from zeros again."""
        self._carry = None
        self.train_function = None

    def logits_from_features(self, x):
        if self.head is not None:
            return self.head(x)
        return tf.matmul(x, tf.cast(self.embedding.embeddings, x.dtype), transpose_b=True)   # [B, T, V]

    def head_layers(self):
        return [] if self.head is None else [self.head]

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
            "init_scale": self.init_scale,
            **self._base_config(),
            "name": self.name, "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }


def _uniform_initializers(scale):
    """``init(*names)``: keyword arguments giving each named initializer its own ``RandomUniform(-scale, scale)``
    (none when ``scale`` is None: Keras' defaults)."""
    def init(*names):
        if scale is None:
            return {}
        return {n: keras.initializers.RandomUniform(-scale, scale) for n in names}
    return init
