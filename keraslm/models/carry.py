"""The recurrent state that stateful truncated backpropagation through time carries between training windows.

Zaremba et al. 2014 (and every PTB LSTM since) cut the training text into ``B`` contiguous streams
and train on consecutive windows of them: the LSTM state at the end of one window is the initial
state of the next (gradients stop at the window's start), and it starts from zeros at the start of
each pass over the data. :class:`CarriedState` holds that state for a :class:`RecurrentLM` during
``fit``: variables ``[B, U]`` per layer and state, read at the start of each training step and
written at its end, plus the step's position in the epoch, which resets the state to zeros every
``steps_per_epoch`` steps. The variables are not model weights (a saved model does not hold them);
checkpoints store them beside the model (:meth:`to_json`, :meth:`load_json`), so a resumed run
continues with the very state an uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keraslm.validation import positive_int


class CarriedState:
    """The state carried from one training window to the next.

    Args:
        structure: the model's state as ``init_cache`` gives it: per layer, a tuple of ``[B, U]``
            tensors (``(h, c)`` for an LSTM, ``(h,)`` for a GRU / SimpleRNN).
        steps_per_epoch: windows per pass over the streams: the state is zero at every multiple.

    Example:
        >>> carry = CarriedState(((tf.zeros([2, 3]), tf.zeros([2, 3])),), steps_per_epoch=2)
        >>> _ = carry.update(((tf.ones([2, 3]), tf.ones([2, 3])),))
        >>> float(carry.initial()[0][0][0, 0]), int(carry.position.numpy())
        (1.0, 1)
        >>> _ = carry.update(carry.initial())
        >>> float(carry.initial()[0][0][0, 0])          # step 2 starts epoch 2 from zeros
        0.0
    """

    def __init__(self, structure, steps_per_epoch):
        self.steps_per_epoch = int(positive_int("steps_per_epoch", steps_per_epoch))
        self._sizes = [len(layer) for layer in structure]
        self.variables = [tf.Variable(tf.zeros(s.shape, tf.float32), trainable=False, name=f"carried_state_{i}")
                          for i, s in enumerate(s for layer in structure for s in layer)]
        self.position = tf.Variable(0, dtype=tf.int64, trainable=False, name="carried_state_position")

    @property
    def batch_size(self):
        return int(self.variables[0].shape[0])

    def initial(self, dtype=tf.float32):
        """The initial state of the current step: the carried one, or zeros at the start of an epoch."""
        fresh = tf.equal(self.position % self.steps_per_epoch, 0)
        flat = [tf.cast(tf.where(fresh, tf.zeros_like(v), v), dtype) for v in self.variables]
        return self._nest(flat)

    def update(self, states):
        """Stores a step's final state (no gradient flows through it) and advances the position."""
        flat = [s for layer in states for s in layer]
        ops = [v.assign(tf.cast(tf.stop_gradient(s), tf.float32)) for v, s in zip(self.variables, flat)]
        ops.append(self.position.assign_add(1))
        return ops

    def to_json(self):
        """The state as plain lists (exact: float32 values survive JSON through Python floats)."""
        return {"position": int(self.position.numpy()), "values": [v.numpy().tolist() for v in self.variables]}

    def load_json(self, state):
        """Restores what :meth:`to_json` wrote; ValueError when it does not fit this model and batch."""
        values = state.get("values", [])
        shapes = [tuple(v.shape) for v in self.variables]
        got = [np.shape(x) for x in values]
        if got != shapes:
            raise ValueError(f"the checkpoint's carried state has shapes {got}, the model and batch need {shapes}")
        for v, x in zip(self.variables, values):
            v.assign(np.asarray(x, np.float32))
        self.position.assign(int(state.get("position", 0)))

    def _nest(self, flat):
        out, i = [], 0
        for n in self._sizes:
            out.append(tuple(flat[i:i + n]))
            i += n
        return tuple(out)
