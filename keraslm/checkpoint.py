"""Loading and saving runs: models by path (run directories, ``.keras`` files, the shipped models),
atomic checkpoints, and the run state that makes an interrupted run resumable."""

from __future__ import annotations

import json
import os

import keras

from keraslm.atomic import atomic_write, atomic_write_text

DEFAULT_MODEL = "shakespeare-nano"


def atomic_save_model(model, path):
    """Saves a Keras model (with its optimizer state) to ``path`` atomically."""
    atomic_write(path, model.save, suffix=".keras")


class Checkpointer(keras.callbacks.Callback):
    """Saves ``<dir>/last.keras`` and ``<dir>/state.json`` at the end of every Keras epoch.

    One Keras epoch of the harness is ``checkpoint_every`` optimizer steps, so
    this checkpoints every N steps. ``state.json`` (written after the model)
    records the completed step count; a resumed run skips that many batches
    of the deterministic data order and continues the schedule from the
    restored optimizer step.
    """

    def __init__(self, directory, steps_per_epoch, extra_state=None):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = steps_per_epoch
        self.extra_state = dict(extra_state or {})

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        atomic_save_model(self.model, os.path.join(self.directory, "last.keras"))
        state = {"step": step, **self.extra_state,
                 "logs": {k: float(v) for k, v in (logs or {}).items()}}
        atomic_write_text(os.path.join(self.directory, "state.json"), json.dumps(state, indent=1))


def read_state(directory):
    """The saved run state, or None when ``directory`` holds no complete checkpoint."""
    state_path = os.path.join(directory, "state.json")
    model_path = os.path.join(directory, "last.keras")
    if not (os.path.exists(state_path) and os.path.exists(model_path)):
        return None
    with open(state_path) as f:
        return json.load(f)


def load_model(path):
    """Loads a trained model from a ``.keras`` file or a run directory."""
    if os.path.isdir(path):
        candidates = [os.path.join(path, "model.keras"), os.path.join(path, "checkpoints", "last.keras")]
        found = [c for c in candidates if os.path.exists(c)]
        if not found:
            raise FileNotFoundError(f"no model.keras or checkpoints/last.keras in {path}")
        path = found[0]
    elif not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    return keras.saving.load_model(path)


def shipped_models_dir():
    """The ``saved_models`` directory: inside the installed package, or beside it in a source tree."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "saved_models"), os.path.join(os.path.dirname(here), "saved_models")):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError("keraslm's saved_models directory is missing from this installation; pass --model")


def default_model_path(name=DEFAULT_MODEL):
    """Path of a shipped model's ``model.keras`` (default: the Shakespeare character model)."""
    path = os.path.join(shipped_models_dir(), name, "model.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"shipped model {name!r} not found at {path}")
    return path
