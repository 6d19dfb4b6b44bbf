"""RecurrentLM: Embedding -> stacked LSTM / GRU / SimpleRNN -> Dense."""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from keraslm.models.base import CausalLM, check_positive_int

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
        tokenizer: optional tokenizer layer saved with the model.

    Example:
        >>> import tensorflow as tf
        >>> model = RecurrentLM(vocab_size=11, embedding_dim=8, hidden_units=16, num_layers=2, cell="gru")
        >>> model(tf.zeros([2, 5], tf.int32)).shape
        TensorShape([2, 5, 11])
    """

    def __init__(self, vocab_size, embedding_dim, hidden_units, num_layers=1, cell="lstm", dropout=0.0,
                 tie_embeddings=False, tokenizer=None, **kwargs):
        super().__init__(tokenizer=tokenizer, **kwargs)
        self._vocab_size = check_positive_int("vocab_size", vocab_size)
        check_positive_int("embedding_dim", embedding_dim)
        check_positive_int("num_layers", num_layers)
        units = [hidden_units] * num_layers if isinstance(hidden_units, int) else list(hidden_units)
        if len(units) != num_layers:
            raise ValueError(f"hidden_units has {len(units)} entries but num_layers={num_layers}")
        for u in units:
            check_positive_int("hidden_units", u)
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if tie_embeddings and units[-1] != embedding_dim:
            raise ValueError(f"tie_embeddings needs the last hidden_units ({units[-1]}) == embedding_dim "
                             f"({embedding_dim})")
        self.embedding_dim, self.hidden_units, self.num_layers = embedding_dim, hidden_units, num_layers
        self.cell, self.dropout, self.tie_embeddings = cell, dropout, tie_embeddings
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

    def _run(self, token_ids, states, mask, training, fast=None):
        x = self.drop(self.embedding(token_ids), training=training)              # [B, T, E]
        if fast is None:
            fast = mask is None and not tf.config.list_physical_devices("GPU")   # GPUs: Keras' cuDNN path
        new_states = []
        for i, rnn in enumerate(self.rnns):
            initial = None if states is None else list(states[i])
            if fast and _fast_path_applies(rnn):
                out = _fast_sequence(rnn, x, initial)
            else:
                out = rnn(x, initial_state=initial, mask=mask, training=training)
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
            "dropout": self.dropout, "tie_embeddings": self.tie_embeddings, **self._base_config(),
            "name": self.name, "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }


def _fast_path_applies(rnn):
    """Whether :func:`_fast_sequence` computes exactly what this Keras layer computes."""
    if not isinstance(rnn, (keras.layers.LSTM, keras.layers.GRU)) or not rnn.built:
        return False
    cell = rnn.cell
    plain = (cell.activation is keras.activations.tanh and cell.recurrent_activation is keras.activations.sigmoid
             and cell.use_bias and not cell.dropout and not cell.recurrent_dropout and not rnn.go_backwards
             and not rnn.unroll)
    return plain and (isinstance(rnn, keras.layers.LSTM) or cell.reset_after)


def _fast_sequence(rnn, x, initial_state=None):
    """``rnn(x, initial_state)`` of a built Keras LSTM / GRU layer (``return_sequences`` and
    ``return_state``), on the layer's own weights: ``[outputs [B, T, U], *final states]``.

    Keras projects each timestep's input inside the loop and lets autodiff
    accumulate the recurrent kernel's gradient one timestep at a time (an
    ``[U, G*U]`` sum per step). Here all inputs are projected by one matmul
    before the loop, the loop does only the recurrent product and the gates,
    and the backward loop (written out in :func:`_recurrence`) produces the
    per-timestep gate gradients, from which the recurrent kernel's gradient is
    one ``[U, B*T] x [B*T, G*U]`` matmul.
    """
    cell = rnn.cell
    lstm = isinstance(rnn, keras.layers.LSTM)
    dt = x.dtype
    B, T, E = tf.shape(x)[0], tf.shape(x)[1], x.shape[-1]
    U = cell.units
    kernel, recurrent = tf.cast(cell.kernel, dt), tf.cast(cell.recurrent_kernel, dt)
    bias = tf.cast(cell.bias, dt)
    if lstm:
        input_bias, recurrent_bias = bias, tf.zeros([4 * U], dt)                 # [4U]
    else:
        input_bias, recurrent_bias = bias[0], bias[1]                            # [3U] each (reset_after)
    gates = tf.matmul(tf.reshape(x, [-1, E]), kernel) + input_bias              # [B * T, G * U]
    gates = tf.transpose(tf.reshape(gates, [B, T, -1]), [1, 0, 2])              # [T, B, G * U]
    if initial_state is None:
        initial_state = [tf.zeros([B, U], dt)] * (2 if lstm else 1)
    h0 = tf.cast(initial_state[0], dt)
    c0 = tf.cast(initial_state[1], dt) if lstm else tf.zeros([B, 0], dt)
    hs, h, c = _recurrence(lstm, gates, recurrent, recurrent_bias, h0, c0)
    outputs = tf.transpose(hs, [1, 0, 2])                                        # [B, T, U]
    return [outputs, h, c] if lstm else [outputs, h]


def _recurrence(lstm, gates, recurrent, recurrent_bias, h0, c0):
    """The LSTM / GRU loop over pre-projected inputs ``gates [T, B, G*U]`` from ``h0`` (and ``c0``).

    Returns ``(hs [T, B, U], h_T, c_T)`` (``c`` is ``[B, 0]`` for a GRU), with a
    hand-written backward loop (see :func:`_fast_sequence`).
    """

    @tf.custom_gradient
    def run(gates, recurrent, recurrent_bias, h0, c0):
        if lstm:
            def step(carry, xt):
                h, c, *_ = carry
                i, f, g, o = tf.split(xt + tf.matmul(h, recurrent), 4, axis=-1)
                i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
                c = f * c + i * g
                tc = tf.tanh(c)
                return o * tc, c, i, f, g, o, tc
            zeros = tf.zeros_like(h0)
            hs, cs, i, f, g, o, tc = tf.scan(step, gates, initializer=(h0, c0, *[zeros] * 5))
            h_last, c_last = hs[-1], cs[-1]
        else:
            def step(carry, xt):
                h = carry[0]
                xz, xr, xh = tf.split(xt, 3, axis=-1)
                rz, rr, rh = tf.split(tf.matmul(h, recurrent) + recurrent_bias, 3, axis=-1)
                z, r = tf.sigmoid(xz + rz), tf.sigmoid(xr + rr)
                n = tf.tanh(xh + r * rh)
                return z * h + (1 - z) * n, z, r, n, rh
            zeros = tf.zeros_like(h0)
            hs, z, r, n, rh = tf.scan(step, gates, initializer=(h0, *[zeros] * 4))
            h_last, c_last = hs[-1], c0
        h_prev = tf.concat([h0[None], hs[:-1]], 0)                             # [T, B, U]

        def grad(dhs, dh_last, dc_last):
            dhs = tf.zeros_like(hs) if dhs is None else dhs
            dh_last = tf.zeros_like(h0) if dh_last is None else dh_last
            rec_t = tf.transpose(recurrent)                                     # [G*U, U]
            if lstm:
                dc_last = tf.zeros_like(c0) if dc_last is None else dc_last
                c_prev = tf.concat([c0[None], cs[:-1]], 0)                      # [T, B, U]

                def back(carry, xs):                 # carry: gradients reaching h_t, c_t from step t + 1
                    dh, dc, _ = carry
                    dh_t, i, f, g, o, tc, cp = xs
                    dh = dh + dh_t
                    dc = dc + dh * o * (1 - tc * tc)
                    dz = tf.concat([dc * g * i * (1 - i), dc * cp * f * (1 - f), dc * i * (1 - g * g),
                                    dh * tc * o * (1 - o)], -1)                 # [B, 4U] pre-activation
                    return tf.matmul(dz, rec_t), dc * f, dz

                dh_in, dc_in, d_inner = tf.scan(back, (dhs, i, f, g, o, tc, c_prev), reverse=True,
                                                initializer=(dh_last, dc_last, tf.zeros_like(gates[0])))
                dgates, dbias, dc0 = d_inner, None, dc_in[0]
            else:
                def back(carry, xs):                 # carry: the gradient reaching h_t from step t + 1
                    dh = carry[0] + xs[0]
                    hp, z, r, n, rh = xs[1:]
                    dn = dh * (1 - z) * (1 - n * n)
                    dz = dh * (hp - n) * z * (1 - z)
                    dr = dn * rh * r * (1 - r)
                    d_inner = tf.concat([dz, dr, dn * r], -1)                    # [B, 3U] of h @ R + b
                    d_gate = tf.concat([dz, dr, dn], -1)                         # [B, 3U] of the inputs
                    return dh * z + tf.matmul(d_inner, rec_t), d_inner, d_gate

                dh_in, d_inner, dgates = tf.scan(back, (dhs, h_prev, z, r, n, rh), reverse=True,
                                                 initializer=(dh_last, tf.zeros_like(gates[0]),
                                                              tf.zeros_like(gates[0])))
                dbias, dc0 = tf.reduce_sum(d_inner, [0, 1]), tf.zeros_like(c0)
            flat = tf.reshape(d_inner, [-1, tf.shape(gates)[-1]])                # [T*B, G*U]
            drec = tf.matmul(tf.reshape(h_prev, [-1, tf.shape(h0)[-1]]), flat, transpose_a=True)  # [U, G*U]
            return dgates, drec, dbias, dh_in[0], dc0

        return (hs, h_last, c_last), grad

    return run(gates, recurrent, recurrent_bias, h0, c0)
