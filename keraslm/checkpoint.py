"""Loading and saving runs: models by path (run directories, ``.keras`` files, the shipped models),
atomic checkpoints, and the run state that makes an interrupted run resumable."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import keras
import numpy as np

import keraslm.data  # noqa: F401 - registers the tokenizers, so .keras files holding them load
import keraslm.metrics  # noqa: F401 - registers the loss and metrics of compiled models
import keraslm.models  # noqa: F401 - registers the models
import keraslm.optimizers  # noqa: F401 - registers the optimizer and schedule
import keraslm.schedules  # noqa: F401 - registers the epoch-decay schedule
from keraslm.atomic import atomic_write, atomic_write_json, remove_stale_temporaries

log = logging.getLogger("keraslm")

DEFAULT_MODEL = "shakespeare-char"


def atomic_save_model(model, path):
    """Saves a Keras model (with its optimizer state) to ``path`` atomically."""
    atomic_write(path, model.save, suffix=".keras")


# A checkpoint is a model file and the state file that names its step and checksum. The last two are kept:
# each save first moves last -> previous, so a crash or a corrupt file never leaves the run without a
# good one.
SLOTS = (("last.keras", "state.json"), ("previous.keras", "previous_state.json"))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def all_finite(model):
    """True when every weight of ``model`` is finite."""
    return all(bool(np.isfinite(w).all()) for w in model.get_weights())


class Checkpointer(keras.callbacks.Callback):
    """Saves ``<dir>/last.keras`` and ``<dir>/state.json`` at the end of every Keras epoch,
    keeping the checkpoint before it as ``previous.keras`` / ``previous_state.json``.

    One Keras epoch of the harness is ``checkpoint_every`` optimizer steps, so
    this checkpoints every N steps. ``state.json`` (written after the model)
    records the completed step count and the model file's SHA-256; a resumed
    run skips that many batches of the deterministic data order and continues
    the schedule from the restored optimizer step. A model whose loss or
    weights are not finite is never saved: the last good checkpoint stays.
    """

    def __init__(self, directory, steps_per_epoch, extra_state=None):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = steps_per_epoch
        self.extra_state = dict(extra_state or {})

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        loss = (logs or {}).get("loss")
        if (loss is not None and not np.isfinite(loss)) or not all_finite(self.model):
            log.warning("step %d: the loss or the weights are not finite; checkpoint not written (the last good "
                        "one stays in %s)", step, self.directory)
            return
        save_checkpoint(self.model, self.directory, {"step": step, **self.extra_state, "logs": dict(logs or {})})


def save_checkpoint(model, directory, state):
    """Writes ``model`` as the last checkpoint of ``directory`` (the current last one becomes the previous)."""
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    (last, last_state), (prev, prev_state) = [[os.path.join(directory, n) for n in slot] for slot in SLOTS]
    if os.path.exists(last) and os.path.exists(last_state):
        os.replace(last, prev)
        os.replace(last_state, prev_state)
    atomic_save_model(model, last)
    # A stateful run's carried recurrent state is not a model weight: the state file holds it (exactly), so a
    # resumed run continues from the very state an uninterrupted one would have (keraslm.models.carry).
    carry = getattr(model, "carried_state", None)
    carried = {} if carry is None else {"carried_state": carry.to_json()}
    atomic_write_json(last_state, {**state, "sha256": _sha256(last), "seed_generators": _seed_states(model),
                                   **carried})


# Keras saves a model's weights but not the states of its random seed generators (dropout's): the
# checkpoint's state file holds them, in the model's variable order (their names carry a process-wide
# counter), so a resumed run draws the same dropout masks as one that never stopped.
def _seed_generators(model):
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _seed_states(model):
    return [v.numpy().tolist() for v in _seed_generators(model)]


def _restore_seed_states(model, states):
    generators = _seed_generators(model)
    if len(states) == len(generators):
        for v, value in zip(generators, states):
            v.assign(np.asarray(value, v.dtype))


class CheckpointError(ValueError):
    """The run directory holds checkpoints, but none of them can be resumed from."""


def _candidates(directory, problems):
    """Yields ``(model path, state)`` of the checkpoints whose state file is readable and matches the
    model file's checksum, newest first; appends what is wrong with the others to ``problems``."""
    for model_name, state_name in SLOTS:
        model_path, state_path = os.path.join(directory, model_name), os.path.join(directory, state_name)
        if not os.path.exists(model_path) and not os.path.exists(state_path):
            continue
        if not os.path.exists(model_path):
            problems.append(f"{model_path} is missing (its {state_name} is there)")
            continue
        if not os.path.exists(state_path):
            problems.append(f"{state_path} is missing")
            continue
        try:
            with open(state_path) as f:
                state = json.load(f)
            if not isinstance(state, dict) or not isinstance(state.get("step"), int):
                raise ValueError("no step recorded")
        except (OSError, ValueError) as e:
            problems.append(f"{state_path} is unreadable ({e})")
            continue
        if "sha256" in state and state["sha256"] != _sha256(model_path):
            problems.append(f"{model_path} does not match the checksum in {state_name} (corrupt or half written)")
            continue
        yield model_path, state


def has_checkpoint_files(directory):
    """True when ``directory`` holds any checkpoint or state file of ours."""
    return any(os.path.exists(os.path.join(directory, n)) for slot in SLOTS for n in slot)


def load_checkpoint(directory):
    """Loads the newest usable checkpoint of ``directory``: ``(model with its optimizer, state)``, or None
    when the directory holds no checkpoint at all.

    A last checkpoint whose state file is missing or unreadable, whose model file
    does not match the recorded checksum, or which fails to load, is skipped with
    a warning in favour of the previous one.

    Raises:
        CheckpointError: checkpoint files exist but none can be resumed from (names each bad file and why).
    """
    problems = []
    for path, state in _candidates(directory, problems):
        try:
            model = keras.saving.load_model(path)
        except Exception as e:  # noqa: BLE001 - any failure to read the file
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            problems.append(f"{path} cannot be loaded ({type(e).__name__}: {first})")
            continue
        if problems:
            log.warning("%s; resuming from the previous checkpoint %s", "; ".join(problems), path)
        _restore_seed_states(model, state.get("seed_generators", []))
        return model, state
    if problems:
        raise CheckpointError(f"cannot resume from {directory}: {'; '.join(problems)}. Delete the directory or "
                              "pass overwrite=True (--overwrite) to start over")
    return None


def load_model(path, **options):
    """Loads a model from any path keraslm knows, telling the format from what is there.

    Args:
        path: a keraslm run directory or ``.keras`` file, a Hugging Face GPT-2
            directory, a keras-hub GPT-2 preset directory, or a nanoGPT ``ckpt.pt``
            (see :mod:`keraslm.convert`).
        **options: for the foreign formats, the converter's options (e.g. ``tokenizer=``).

    Raises:
        FileNotFoundError / ValueError: in one line, naming the missing or unreadable file.
    """
    from keraslm import convert

    path = os.fspath(path)
    if os.path.exists(path) and convert.detect_format(path) not in ("keras", "run"):
        return convert.load_pretrained(path, **options)
    if os.path.isdir(path):
        candidates = [os.path.join(path, "model.keras"), os.path.join(path, "checkpoints", "last.keras")]
        found = [c for c in candidates if os.path.exists(c)]
        if not found:
            raise FileNotFoundError(f"no model.keras or checkpoints/last.keras in {path}")
        path = found[0]
    elif not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: say which one, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"cannot load the model in {path} ({type(e).__name__}: {first})") from None


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
