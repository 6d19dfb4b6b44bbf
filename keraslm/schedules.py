"""Learning-rate schedules by epoch: the step decay of Zaremba et al. 2014 (and of most LSTM language models).

Example:
    >>> sched = EpochDecay(1.0, decay=0.5, decay_after_epochs=4, steps_per_epoch=10)
    >>> [float(sched(s)) for s in (0, 39, 40, 50, 129)]
    [1.0, 1.0, 0.5, 0.25, 0.001953125]
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keraslm.validation import non_negative_int, number, positive_int


@keras.saving.register_keras_serializable(package="keraslm")
class EpochDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``initial * decay ** max(epoch - decay_after_epochs, 0)`` for the 1-based ``epoch`` a step is in.

    Zaremba et al.'s schedule: the learning rate stays at ``initial`` for the first
    ``decay_after_epochs`` epochs, then is multiplied by ``decay`` at the start of each later epoch
    (their "small" model: 1.0 for epochs 1-4, 0.5 for epoch 5, 0.25 for epoch 6, ...).

    Args:
        initial: the learning rate of the first epochs (> 0).
        decay: the factor per epoch, in (0, 1].
        decay_after_epochs: epochs at the initial rate (>= 0).
        steps_per_epoch: optimizer steps in one epoch (> 0).
    """

    def __init__(self, initial, decay, decay_after_epochs, steps_per_epoch):
        self.initial = number("learning_rate", initial, low=0, low_open=True)
        self.decay = number("lr_decay", decay, low=0, high=1, low_open=True)
        self.decay_after_epochs = int(non_negative_int("decay_after_epochs", decay_after_epochs))
        self.steps_per_epoch = int(positive_int("steps_per_epoch", steps_per_epoch))

    def __call__(self, step):
        epoch = tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch) + 1          # 1-based
        decays = tf.cast(tf.maximum(epoch - self.decay_after_epochs, 0), tf.float32)
        return self.initial * tf.pow(tf.constant(self.decay, tf.float32), decays)

    def get_config(self):
        return {"initial": self.initial, "decay": self.decay, "decay_after_epochs": self.decay_after_epochs,
                "steps_per_epoch": self.steps_per_epoch}
