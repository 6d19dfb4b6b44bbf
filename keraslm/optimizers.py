"""Optimizers and the learning-rate schedule of the training harness."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

# Weights that get no weight decay: LayerNorm scales/offsets, biases, embeddings.
NO_DECAY_NAMES = ["bias", "gamma", "beta", "embeddings"]


@keras.saving.register_keras_serializable(package="keraslm")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``peak`` over ``warmup_steps``, cosine decay to ``minimum`` at ``decay_steps``.

    nanoGPT's schedule: ``lr(s) = peak * (s + 1) / (warmup_steps + 1)`` during
    warmup, then ``minimum + (peak - minimum) * (1 + cos(pi * r)) / 2`` with
    ``r = (s - warmup) / (decay_steps - warmup)``, and ``minimum`` after.

    Example:
        >>> sched = WarmupCosine(1e-3, 1e-4, warmup_steps=10, decay_steps=100)
        >>> [round(float(sched(s)), 6) for s in (0, 10, 100, 200)]
        [9.1e-05, 0.001, 0.0001, 0.0001]
    """

    def __init__(self, peak, minimum, warmup_steps, decay_steps):
        if peak <= 0 or minimum < 0 or minimum > peak:
            raise ValueError(f"need 0 <= minimum <= peak and peak > 0, got peak={peak}, minimum={minimum}")
        if warmup_steps < 0 or decay_steps < warmup_steps:
            raise ValueError(f"need 0 <= warmup_steps <= decay_steps, got {warmup_steps}, {decay_steps}")
        self.peak, self.minimum = float(peak), float(minimum)
        self.warmup_steps, self.decay_steps = int(warmup_steps), int(decay_steps)

    def __call__(self, step):
        s = tf.cast(step, tf.float32)
        warm = self.peak * (s + 1.0) / (self.warmup_steps + 1.0)
        span = max(self.decay_steps - self.warmup_steps, 1)
        r = tf.clip_by_value((s - self.warmup_steps) / span, 0.0, 1.0)
        cosine = self.minimum + 0.5 * (self.peak - self.minimum) * (1.0 + tf.cos(math.pi * r))
        return tf.where(s < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "minimum": self.minimum, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps}


@keras.saving.register_keras_serializable(package="keraslm")
class AdamW(keras.optimizers.AdamW):
    """Keras AdamW that never decays LayerNorm parameters, biases or embeddings.

    Keras does not save ``exclude_from_weight_decay`` settings with a model, so
    the exclusions live in the class: a model reloaded from a checkpoint keeps
    training with exactly the same update rule.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)


def make_optimizer(name, learning_rate, *, weight_decay=0.0, beta1=0.9, beta2=0.999, grad_clip=0.0,
                   momentum=0.0, ema_momentum=0.0):
    """Builds ``"adamw"``, ``"adam"`` or ``"sgd"`` with global-norm clipping.

    AdamW decays every weight except LayerNorm parameters, biases and embeddings.

    Args:
        name: optimizer name.
        learning_rate: a float or a schedule.
        weight_decay: decoupled weight decay (AdamW only).
        beta1, beta2: Adam betas.
        grad_clip: clip gradients to this global norm (0 = off).
        momentum: SGD momentum.
        ema_momentum: keep an exponential moving average of the weights with this momentum
            (Keras ``use_ema``; 0 = off). Keras copies the average into the weights at the end
            of ``fit`` (``finalize_variable_values``).
    """
    if not 0.0 <= ema_momentum < 1.0:
        raise ValueError(f"ema_momentum must be in [0, 1), got {ema_momentum!r}")
    extra = {"global_clipnorm": grad_clip} if grad_clip and grad_clip > 0 else {}
    if ema_momentum > 0:
        extra.update(use_ema=True, ema_momentum=ema_momentum)
    if name == "adamw":
        return AdamW(learning_rate, weight_decay=weight_decay, beta_1=beta1, beta_2=beta2, **extra)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, beta_1=beta1, beta_2=beta2, **extra)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, **extra)
    raise ValueError(f"optimizer must be 'adamw', 'adam' or 'sgd', got {name!r}")
