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


class WarmAverage:
    """Keras' weight average (``use_ema``) made safe for short runs, for keraslm's optimizers.

    Keras averages with the fixed momentum m from the second step on, so after t steps the
    average still gives weight m**t to the first step's weights: at m = 0.99 and 40 steps, two
    thirds of the average is the barely trained model. Here the average follows the weights
    (momentum 0) while the learning rate warms up (the schedule's ``warmup_steps``; the model
    improves fast there and any average lags behind it), and then warms up itself with
    TensorFlow's ``ExponentialMovingAverage(num_updates=u)`` rule, ``min(m, (1 + u) / (10 + u))``
    at u steps after the learning-rate warm-up: it covers about the last tenth of the steps
    since, and reaches m at ``u = (10 m - 1) / (1 - m)`` (890 for 0.99). From there on it is
    Keras' average, in which the earlier steps keep a share of m**(u - 890). A run that ends within
    the learning-rate warm-up gets its last weights, exactly. The momentum is a function of the
    optimizer's step and its schedule, which a checkpoint holds, so a resumed run continues it.

    Example:
        >>> [round(float(WarmAverage.momentum_at(t, 0.99)), 3) for t in (0, 1, 40, 890, 2000)]
        [0.0, 0.182, 0.82, 0.99, 0.99]
        >>> [round(float(WarmAverage.momentum_at(t, 0.99, start=100)), 3) for t in (40, 100, 101, 140)]
        [0.0, 0.0, 0.182, 0.82]
    """

    @staticmethod
    def momentum_at(step, momentum, start=0):
        """The momentum of the average's update at 0-based optimizer step ``step`` (a number or a float
        tensor) when the average starts at step ``start``."""
        u = keras.ops.maximum(keras.ops.subtract(step, start), 0.0)
        warm = keras.ops.minimum(momentum, (1.0 + u) / (10.0 + u))
        return keras.ops.where(keras.ops.equal(u, 0.0), 0.0, warm)

    def _average_start(self):
        """The learning rate's warm-up steps (0 for a constant rate or a schedule without warm-up)."""
        return int(getattr(self._learning_rate, "warmup_steps", 0) or 0)

    def _clip_gradients(self, grads):
        """Global-norm clipping by the norm of the batch's gradient, as torch's ``clip_grad_norm_`` measures it.

        Keras measures an embedding's gradient (``IndexedSlices``) by its rows as gathered, so a token that
        occurs twice counts twice, squared separately; and under a distribution strategy it clips each
        replica's gradient before the all-reduce sums them. Here the norm is that of the summed, dense
        gradient (rows of the same token added first), over the whole batch: across replicas, of the
        all-reduced gradient, with each replica's part scaled by the factor that clips the sum. A NaN or
        infinite norm makes every gradient NaN, as in Keras.
        """
        clip = self.global_clipnorm
        if not clip or clip <= 0:
            return super()._clip_gradients(grads)
        present = [g for g in grads if g is not None]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            present = context.all_reduce(tf.distribute.ReduceOp.SUM, present)
        norm = tf.sqrt(tf.add_n([_squared_norm(g) for g in present])) if present else tf.constant(0.0)
        scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
        return [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]

    def _update_model_variables_moving_average(self, trainable_variables):
        """Keras' update (``BaseOptimizer._update_model_variables_moving_average``) with the warm momentum."""
        if not self.use_ema:
            return
        momentum = self.momentum_at(keras.ops.cast(self.iterations, "float32"), self.ema_momentum,
                                    self._average_start())
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = keras.ops.cast(momentum, var.dtype)
                average.assign(keras.ops.add(keras.ops.multiply(m, average),
                                             keras.ops.multiply(keras.ops.subtract(1, m), var)))


@keras.saving.register_keras_serializable(package="keraslm")
class AdamW(WarmAverage, keras.optimizers.AdamW):
    """Keras AdamW that never decays LayerNorm parameters, biases or embeddings.

    Keras does not save ``exclude_from_weight_decay`` settings with a model, so
    the exclusions live in the class: a model reloaded from a checkpoint keeps
    training with exactly the same update rule.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)


@keras.saving.register_keras_serializable(package="keraslm")
class Adam(WarmAverage, keras.optimizers.Adam):
    """Keras Adam with keraslm's warm weight average."""


@keras.saving.register_keras_serializable(package="keraslm")
class SGD(WarmAverage, keras.optimizers.SGD):
    """Keras SGD with keraslm's warm weight average."""


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
            (Keras ``use_ema``, warmed up: :class:`WarmAverage`; 0 = off). Keras copies the average
            into the weights at the end of ``fit`` (``finalize_variable_values``).
    """
    if not 0.0 <= ema_momentum < 1.0:
        raise ValueError(f"ema_momentum must be in [0, 1), got {ema_momentum!r}")
    extra = {"global_clipnorm": grad_clip} if grad_clip and grad_clip > 0 else {}
    if ema_momentum > 0:
        extra.update(use_ema=True, ema_momentum=ema_momentum)
    if name == "adamw":
        return AdamW(learning_rate, weight_decay=weight_decay, beta_1=beta1, beta_2=beta2, **extra)
    if name == "adam":
        return Adam(learning_rate, beta_1=beta1, beta_2=beta2, **extra)
    if name == "sgd":
        return SGD(learning_rate, momentum=momentum, **extra)
    raise ValueError(f"optimizer must be 'adamw', 'adam' or 'sgd', got {name!r}")


def _squared_norm(gradient):
    """Sum of squares of a gradient as a dense tensor (an ``IndexedSlices``' rows of one index added first)."""
    if isinstance(gradient, tf.IndexedSlices):
        unique, position = tf.unique(gradient.indices)
        rows = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(unique)[0])
        return tf.reduce_sum(tf.square(tf.cast(rows, tf.float32)))
    return tf.reduce_sum(tf.square(tf.cast(gradient, tf.float32)))

