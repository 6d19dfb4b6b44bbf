"""Training curves: the ``logs/training.csv`` format of a run, reading it back, and drawing it.

A run's harness appends one row every ``log_every`` optimizer steps (and at every evaluation and at the
last step): ``step`` (optimizer steps done), ``loss`` (mean training loss over the steps since the
previous row), ``learning_rate`` (the rate of the row's last step), ``tokens_per_second`` (training
steps only) and ``val_loss`` (empty where no evaluation ran). This module needs no TensorFlow
(``keraslm plot`` uses it); matplotlib is imported when a picture is drawn, with its Agg canvas and
no pyplot (the caller's matplotlib backend is left alone).

Example:
    >>> import os, tempfile
    >>> run = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(run, "logs"))
    >>> with open(os.path.join(run, "logs", "training.csv"), "w") as f:
    ...     _ = f.write("step,loss,learning_rate,tokens_per_second,val_loss\\n1,4.2,0.001,900,\\n2,3.9,0.001,950,3.95\\n")
    >>> curves = read_curves(run)
    >>> curves["step"], curves["loss"], curves["val_loss"][1]
    ([1, 2], [4.2, 3.9], 3.95)
    >>> plot_curves([run], os.path.join(run, "loss.png")).endswith("loss.png")
    True
"""

from __future__ import annotations

import json
import math
import os

from keraslm.atomic import atomic_write

COLUMNS = ("step", "loss", "learning_rate", "tokens_per_second", "val_loss")
HEADER = ",".join(COLUMNS) + "\n"
CSV_NAME = os.path.join("logs", "training.csv")


def csv_path(run):
    """The ``training.csv`` of ``run`` (a run directory, or the CSV file itself)."""
    run = os.fspath(run)
    return run if os.path.isfile(run) else os.path.join(run, CSV_NAME)


def format_row(row):
    """One CSV line (with its newline) of ``row``, a dict of the columns (None or absent = empty)."""
    cells = []
    for name in COLUMNS:
        value = row.get(name)
        cells.append("" if value is None else str(int(value)) if name == "step" else f"{float(value):.7g}")
    return ",".join(cells) + "\n"


def parse_line(line):
    """``{column: value}`` of one complete CSV line, or None for a torn or malformed one."""
    if not line.endswith("\n"):
        return None
    cells = line.rstrip("\r\n").split(",")
    if len(cells) != len(COLUMNS):
        return None
    try:
        row = {"step": int(cells[0])}
        row.update({name: float(c) if c else None for name, c in zip(COLUMNS[1:], cells[1:])})
    except ValueError:
        return None
    return row


def read_curves(run):
    """The columns of a run's ``training.csv``: ``{column: [values]}``, rows in file order (a missing value
    is NaN; torn or malformed lines, such as a crash's last one, are skipped).

    Raises:
        FileNotFoundError: the run has no ``logs/training.csv``.
        ValueError: the file is not a keraslm training log, or holds no rows.
    """
    path = csv_path(run)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no training log in {os.fspath(run)} (expected {path})")
    with open(path, newline="") as f:
        lines = f.readlines()
    if not lines or lines[0].strip() != HEADER.strip():
        raise ValueError(f"{path} is not a keraslm training log (its header is not {HEADER.strip()!r})")
    rows = [r for r in map(parse_line, lines[1:]) if r is not None]
    if not rows:
        raise ValueError(f"{path} holds no rows yet")
    curves = {name: [r[name] if r[name] is not None else math.nan for r in rows] for name in COLUMNS}
    curves["step"] = [r["step"] for r in rows]
    return curves


def _final_val_loss(run, last_step):
    """The final model's full-split validation loss from the run's ``metrics.json`` (None when absent or
    not of the logged run's last step)."""
    path = csv_path(run)
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "metrics.json")
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return None
    value = metrics.get("val_loss") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) and metrics.get("steps") == last_step else None


def _labels(runs):
    """Short names for the runs: their directory names, or the paths as given where those repeat."""
    names = []
    for run in runs:
        path = os.path.normpath(os.fspath(run))
        if os.path.isfile(path):
            path = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        names.append(os.path.basename(os.path.abspath(path)))
    if len(set(names)) < len(names):
        names = [os.fspath(r) for r in runs]
    return names


def plot_curves(runs, out, labels=None):
    """Draws the training and validation loss against the step (learning rate on a second axis) of
    one or several runs into the PNG file ``out``, written atomically; returns ``out``. A finished run's
    final model (its ``metrics.json``: whole validation split, weight average applied) is a star.

    Args:
        runs: run directories (or their ``training.csv`` files).
        out: the PNG file to write.
        labels: legend names of the runs (default: their directory names).

    Raises:
        FileNotFoundError / ValueError: a run has no readable training log (the message names it).
    """
    curves = [read_curves(run) for run in runs]       # every run checked before anything is drawn
    labels = list(labels) if labels is not None else _labels(runs)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lr_ax = ax.twinx()
    several = len(curves) > 1
    for i, (run, c, label) in enumerate(zip(runs, curves, labels)):
        color, prefix = f"C{i}", f"{label} " if several else ""
        ax.plot(c["step"], c["loss"], color=color, linewidth=1.2, label=f"{prefix}train")
        val = [(s, v) for s, v in zip(c["step"], c["val_loss"]) if not math.isnan(v)]
        if val:
            ax.plot(*zip(*val), color=color, linestyle="--", marker="o", markersize=3.5,
                    label=f"{prefix}validation")
        final = _final_val_loss(run, c["step"][-1])
        if final is not None:
            ax.plot([c["step"][-1]], [final], color=color, marker="*", markersize=10, linestyle="none",
                    label=f"{prefix}final model, whole validation split")
        lr_ax.plot(c["step"], c["learning_rate"], color=color, linestyle=":", linewidth=1, alpha=0.7,
                   label=f"{prefix}learning rate")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    lr_ax.set_ylabel("learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.grid(alpha=0.3)
    if not several:
        ax.set_title(labels[0])
    handles, names = ax.get_legend_handles_labels()
    lr_handles, lr_names = lr_ax.get_legend_handles_labels()
    ax.legend(handles + lr_handles, names + lr_names, loc="upper right", fontsize="small")
    out = os.fspath(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110), suffix=".png")
    return out
