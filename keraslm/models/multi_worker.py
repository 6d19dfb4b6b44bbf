"""What Keras 3's ``fit`` needs to train under ``tf.distribute.MultiWorkerMirroredStrategy``.

Keras 3.15 reaches two dead ends with a multi-worker strategy, both on its TF backend:

- before the first step it builds the metrics from one batch that it all-reduces across the
  workers outside any replica context (``_maybe_symbolic_build``), which a collective strategy
  refuses; and it takes that batch from the training iterator, so training would skip it;
- it all-reduces each step's logs with ``reduce("MEAN", value, axis=0)``, which fails for the
  scalars every ``train_step`` returns.

:class:`MultiWorkerFit` builds from this worker's part of a batch read from a fresh iterator (so no
training batch is lost) and returns the logs as ``[1]`` vectors under a multi-worker strategy,
whose mean over axis 0 is the mean over the workers. Single-process training is untouched.
"""

from __future__ import annotations

import tensorflow as tf


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class MultiWorkerFit:
    """Mixin for ``keras.Model`` subclasses; see the module docstring."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        dataset = getattr(iterator, "_distributed_dataset", None)
        if not _multi_worker(strategy) or dataset is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        batch = next(iter(dataset))
        local = tf.nest.map_structure(
            lambda x: strategy.experimental_local_results(x)[0] if isinstance(x, tf.distribute.DistributedValues)
            else x, batch)
        with strategy.scope():
            self._symbolic_build(data_batch=local)

    def train_step(self, data):
        return self._per_worker_logs(super().train_step(data))

    def test_step(self, data):
        return self._per_worker_logs(super().test_step(data))

    def _per_worker_logs(self, logs):
        if not _multi_worker(getattr(self, "_distribute_strategy", None)):
            return logs
        return {k: tf.reshape(v, [1]) if tf.is_tensor(v) and v.shape.rank == 0 else v for k, v in logs.items()}
