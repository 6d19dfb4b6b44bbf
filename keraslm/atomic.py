"""Atomic writes of files and directories: a crash leaves the old version or the new one, never a torn one.

Everything is written under a hidden ``.tmp-<host>-<pid>-*`` name beside its
destination, synced to disk, given the permissions an ordinary ``open()`` would
(under the current umask), then renamed into place. Checkpoints, run records
and SavedModel exports all go through here. A writer killed mid-write leaves its
temporary behind; :func:`remove_stale_temporaries` deletes those of processes
of this host that are no longer running (the next run or export calls it).

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.json")
    >>> atomic_write_text(path, "{}")
    >>> open(path).read()
    '{}'
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import tempfile

TEMP_PREFIX = ".tmp-"
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
_OURS = re.compile(rf"^{re.escape(TEMP_PREFIX)}(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-")


def _prefix(kind=""):
    return f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{kind}"


def umask_mode(mode=0o666):
    """``mode`` as an ordinary ``open()`` (0o666) or ``mkdir()`` (0o777) would create it under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def fsync_path(path):
    """Flushes a file or a directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write, suffix=""):
    """Calls ``write(tmp_path)`` on a temporary file beside ``path``, then renames it over ``path``.

    Args:
        path: the destination file.
        write: a function that writes the complete file at the path it is given.
        suffix: the temporary file's suffix (some writers check the extension, e.g. ``".keras"``).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(), suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        fsync_path(tmp)
        os.chmod(tmp, umask_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` via a temporary file and an atomic rename."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def json_safe(value):
    """``value`` with every non-finite float (NaN, inf) replaced by None, so that it is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path, value):
    """Writes ``value`` as strict JSON (non-finite numbers become null), atomically."""
    atomic_write_text(path, json.dumps(json_safe(value), indent=1, allow_nan=False))


def temporary_directory(parent, prefix):
    """A new hidden directory ``<parent>/.tmp-<host>-<pid>-<prefix>*`` with ordinary (umask) permissions."""
    tmp = tempfile.mkdtemp(prefix=_prefix(prefix), dir=parent)
    os.chmod(tmp, umask_mode(0o777))  # mkdtemp creates 0700; a server may run as another user
    return tmp


def publish_directory(tmp, final):
    """Syncs every file under ``tmp`` and renames it to ``final`` (which must not exist).

    Raises:
        FileExistsError: ``final`` exists (``tmp`` is left for the caller to remove).
        OSError: the rename failed.
    """
    for directory, _, files in os.walk(tmp):
        for name in files + ["."]:
            fsync_path(os.path.join(directory, name))
    if os.path.exists(final):
        raise FileExistsError(final)
    os.rename(tmp, final)
    fsync_path(os.path.dirname(os.path.abspath(final)))


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(directory):
    """Deletes the temporaries that writers on this host left in ``directory`` when they were killed.

    Only names of our own pattern (``.tmp-<host>-<pid>-*``) whose host is this one and whose
    process is no longer running are removed; returns their names.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _OURS.match(name)
        if not match or match["host"] != _HOST or int(match["pid"]) == os.getpid() or _running(int(match["pid"])):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                continue
        removed.append(name)
    return removed
