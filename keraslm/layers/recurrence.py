"""keraslm's own LSTM / GRU loop on the weights of Keras' layers, and the switch that picks it.

A Keras ``LSTM`` / ``GRU`` layer projects each timestep's input inside its loop
and lets autodiff accumulate the recurrent kernel's gradient one timestep at a
time. :func:`fast_sequence` computes the same thing on the same variables with
every input projected by one matmul before the loop and a hand-written
backward loop whose recurrent-kernel gradient is one matmul (README, "Models
and presets", has the measured speed-up). :func:`run_recurrent_layer` chooses
between it and the Keras layer with ``fast="auto" | True | False``, the way
Keras' ``LSTM(use_cudnn="auto")`` chooses cuDNN.
"""

from __future__ import annotations

import keras
import tensorflow as tf

def check_fast(fast):
    """Validates the ``fast`` switch: ``"auto"``, True or False."""
    if not (fast is True or fast is False or (isinstance(fast, str) and fast == "auto")):
        raise ValueError(f"fast must be 'auto', True or False, got {fast!r}")
    return fast


def run_recurrent_layer(rnn, x, initial_state=None, mask=None, training=None, fast="auto"):
    """``rnn(x, initial_state=..., mask=..., training=...)`` of a Keras recurrent layer built with
    ``return_sequences`` and ``return_state``: ``[outputs [B, T, U], *final states]``.

    Args:
        rnn: a built Keras ``LSTM``, ``GRU`` or ``SimpleRNN`` layer.
        x: ``[B, T, E]`` inputs.
        initial_state: optional list of ``[B, U]`` states.
        mask: optional ``[B, T]`` bool padding mask.
        training: Keras' training flag.
        fast: ``"auto"``: keraslm's loop where it computes exactly what the layer
            computes (plain LSTM / GRU settings, no mask) and no GPU is visible
            (GPUs keep Keras' cuDNN path); ``True``: keraslm's loop wherever it
            applies, GPU or not; ``False``: always the Keras layer. Layers or calls
            it does not cover (SimpleRNN, a padding mask) always run as the Keras layer.

    Returns:
        ``[outputs, *states]`` as the Keras layer returns them.
    """
    check_fast(fast)
    use = fast is True or (fast == "auto" and not tf.config.list_physical_devices("GPU"))
    if use and mask is None and fast_path_applies(rnn):
        return fast_sequence(rnn, x, initial_state)
    return rnn(x, initial_state=initial_state, mask=mask, training=training)


def fast_path_applies(rnn):
    """Whether :func:`fast_sequence` computes exactly what this Keras layer computes."""
    if not isinstance(rnn, (keras.layers.LSTM, keras.layers.GRU)) or not rnn.built:
        return False
    cell = rnn.cell
    plain = (cell.activation is keras.activations.tanh and cell.recurrent_activation is keras.activations.sigmoid
             and cell.use_bias and not cell.dropout and not cell.recurrent_dropout and not rnn.go_backwards
             and not rnn.unroll)
    return plain and (isinstance(rnn, keras.layers.LSTM) or cell.reset_after)


def fast_sequence(rnn, x, initial_state=None):
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
    hand-written backward loop (see :func:`fast_sequence`).
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
