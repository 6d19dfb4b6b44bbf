"""A run's logs by optimizer step: ``logs/training.csv`` and TensorBoard scalars, and the ``loss.png`` at its end.

Keras reports the loss once per execution (``steps_per_execution`` steps) as the running mean since the
epoch began, and the harness's epoch is a checkpoint interval. :class:`StepLog` turns that into rows
keyed by the true optimizer step: every ``log_every`` steps (or the first execution past a multiple of
it), at every evaluation and at the last step, each with the mean loss over the steps since the
previous row. Only the chief writes (``strategy.extended.should_checkpoint``); on a resume, rows and
TensorBoard events beyond the checkpoint's step are dropped first, so no step appears twice.

Files are never left torn: rows are appended a whole line at a time (a torn last line, from a crash,
is dropped on resume and skipped by readers), and files that are rewritten (the CSV or an event file
cut back on resume, ``loss.png``) go through :mod:`keraslm.atomic`.
"""

from __future__ import annotations

import glob
import logging
import os
import time

import keras
import tensorflow as tf

from keraslm.atomic import atomic_write, atomic_write_text
from keraslm.curves import COLUMNS, HEADER, format_row, parse_line, plot_curves

log = logging.getLogger("keraslm")

# TensorBoard runs under logs/ (the layout of Keras' TensorBoard callback: both runs share the tag
# "loss", so TensorBoard draws training and validation loss on one chart).
TRAIN, VALIDATION = "train", "validation"


def is_chief(strategy):
    """True on the worker that writes a run's logs: every process, except under a multi-worker strategy,
    where only the chief does (``strategy.extended.should_checkpoint``)."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def default_log_every(steps):
    """About 100 rows per run: ``max(1, steps // 100)``."""
    return max(1, steps // 100)


def _truncate_csv(path, step):
    """Keeps the header and the complete rows of ``path`` up to ``step`` (rewritten atomically only when
    something goes); a file of another format is moved to ``training.old.csv``."""
    if not os.path.exists(path):
        atomic_write_text(path, HEADER)
        return
    with open(path, newline="") as f:
        lines = f.readlines()
    if not lines or lines[0] != HEADER:
        if lines:
            old = os.path.join(os.path.dirname(path), "training.old.csv")
            os.replace(path, old)
            log.info("%s had another format (an older keraslm's): kept as %s", path, old)
        atomic_write_text(path, HEADER)
        return
    rows = [line for line in lines[1:] if (row := parse_line(line)) is not None and row["step"] <= step]
    if len(rows) != len(lines) - 1:
        atomic_write_text(path, HEADER + "".join(rows))


def _events(path):
    """The events of a TensorBoard file as ``(serialized, step)``, up to a torn record if there is one."""
    events = []
    try:
        for record in tf.data.TFRecordDataset(path):
            data = record.numpy()
            events.append((data, tf.compat.v1.Event.FromString(data).step))
    except (tf.errors.DataLossError, ValueError):   # a record cut short by a crash: the end of the file
        pass
    return events


def _truncate_events(directory, step):
    """Drops the events beyond ``step`` from the TensorBoard files in ``directory`` (each file rewritten
    atomically, only when it holds such events or a torn record)."""
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        events = _events(path)
        keep = [data for data, s in events if s <= step]
        if len(keep) == len(events) and os.path.getsize(path) == sum(len(d) + 16 for d, _ in events):
            continue                                     # nothing beyond the step, nothing torn

        def write(tmp, keep=keep):
            with tf.io.TFRecordWriter(tmp) as w:
                for data in keep:
                    w.write(data)

        atomic_write(path, write)


def _learning_rate(optimizer, step):
    """The learning rate of optimizer step ``step`` (1-based: the step that made ``step`` steps done)."""
    rate = getattr(optimizer, "_learning_rate", None)
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(rate(max(step - 1, 0)))
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class StepLog(keras.callbacks.Callback):
    """Writes ``<log_dir>/training.csv`` rows and TensorBoard scalars (``train/``: loss, learning_rate,
    tokens_per_second; ``validation/``: loss) keyed by the optimizer step.

    Args:
        log_dir: the run's ``logs`` directory.
        every: a row every this many optimizer steps (with ``steps_per_execution`` k, at the first
            execution that passes each multiple).
        last_step: the run's final step (it always gets a row).
        tokens_per_step: tokens in one global batch (for tokens/s).
        start_step: the step the run starts from (rows and events beyond it are dropped first).
        enabled: False on the workers that must write nothing (not the chief).
    """

    def __init__(self, log_dir, every, last_step, tokens_per_step, start_step=0, enabled=True):
        super().__init__()
        if every < 1:
            raise ValueError(f"log_every must be a positive integer, got {every!r}")
        self.log_dir, self.every, self.last_step = log_dir, int(every), int(last_step)
        self.tokens_per_step, self.enabled = tokens_per_step, enabled
        self.csv = os.path.join(log_dir, "training.csv")
        self._last_row_step = int(start_step)
        self._writers = None
        self._pending = None
        self._loss_sum = self._loss_sum_at_row = 0.0   # sum of per-step losses since start_step
        self._epoch_sum = 0.0                          # ... before the current epoch
        self._epoch_start = self._seconds = 0.0
        self._t0 = None
        if enabled:
            os.makedirs(log_dir, exist_ok=True)
            _truncate_csv(self.csv, start_step)
            for name in (TRAIN, VALIDATION):
                _truncate_events(os.path.join(log_dir, name), start_step)

    @classmethod
    def for_run(cls, cfg, strategy, start_step):
        """The log of a run of ``cfg`` (a :class:`~keraslm.config.TrainConfig`) starting at ``start_step``."""
        return cls(os.path.join(cfg.out, "logs"), cfg.log_every or default_log_every(cfg.steps), cfg.steps,
                   cfg.batch_size * cfg.block_size, start_step, enabled=is_chief(strategy))

    # -- Keras hooks -------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.enabled and self._writers is None:
            self._writers = {name: tf.summary.create_file_writer(os.path.join(self.log_dir, name))
                             for name in (TRAIN, VALIDATION)}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._step()
        self._epoch_sum = self._loss_sum

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._t0 is not None:
            self._seconds += time.perf_counter() - self._t0
            self._t0 = None
        if not self.enabled:
            return
        self._flush()
        step = self._step()
        loss = (logs or {}).get("loss")
        if loss is not None:   # Keras' loss is the mean since the epoch began: back to a sum of steps
            self._loss_sum = self._epoch_sum + float(loss) * (step - self._epoch_start)
        if step // self.every > self._last_row_step // self.every or step >= self.last_step:
            self._new_row(step, loss is not None)

    def on_epoch_end(self, epoch, logs=None):
        val_loss = (logs or {}).get("val_loss")
        if not self.enabled or val_loss is None:
            return
        step = self._step()
        if self._pending is None or self._pending["step"] != step:
            self._flush()
            self._new_row(step, True)
        self._pending["val_loss"] = float(val_loss)
        self._flush()

    def on_train_end(self, logs=None):
        if self.enabled:
            self._flush()

    # -- rows ----------------------------------------------------------------------------------------

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def _new_row(self, step, with_loss):
        steps = step - self._last_row_step
        row = {"step": step, "learning_rate": _learning_rate(self.model.optimizer, step)}
        if with_loss and steps > 0:
            row["loss"] = (self._loss_sum - self._loss_sum_at_row) / steps
        if steps > 0 and self._seconds > 0:
            row["tokens_per_second"] = steps * self.tokens_per_step / self._seconds
        self._pending = row
        self._last_row_step, self._loss_sum_at_row, self._seconds = step, self._loss_sum, 0.0

    def _flush(self):
        """Writes the pending row: one appended CSV line, and its scalars."""
        row, self._pending = self._pending, None
        if row is None:
            return
        with open(self.csv, "a") as f:
            f.write(format_row(row))
        step = row["step"]
        with self._writers[TRAIN].as_default(step=step):
            for name in COLUMNS[1:4]:
                if row.get(name) is not None:
                    tf.summary.scalar(name, row[name])
        self._writers[TRAIN].flush()
        if row.get("val_loss") is not None:
            with self._writers[VALIDATION].as_default(step=step):
                tf.summary.scalar("loss", row["val_loss"])
            self._writers[VALIDATION].flush()

    # -- the picture ---------------------------------------------------------------------------------

    def plot(self, out):
        """Draws the run's curves into ``out`` (``loss.png``); a failure is a warning, never the run's end."""
        if not self.enabled:
            return None
        try:
            return plot_curves([self.csv], out, labels=[os.path.basename(os.path.dirname(out)) or "run"])
        except Exception as e:  # noqa: BLE001 - the picture is a convenience: the trained run stands
            log.warning("could not draw %s (%s: %s)", out, type(e).__name__, e)
            return None
