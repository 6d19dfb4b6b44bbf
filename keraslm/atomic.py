"""Atomic writes of files and directories: a crash leaves the old version or the new one, never a torn one.

Everything is written under a hidden ``.tmp-*`` name beside its destination,
synced to disk, given the permissions an ordinary ``open()`` would (under the
current umask), then renamed into place. Checkpoints, run records and
SavedModel exports all go through here.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.json")
    >>> atomic_write_text(path, "{}")
    >>> open(path).read()
    '{}'
"""

from __future__ import annotations

import os
import tempfile

TEMP_PREFIX = ".tmp-"


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
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=directory)
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


def temporary_directory(parent, prefix):
    """A new hidden directory ``<parent>/.tmp-<prefix>*`` with ordinary (umask) permissions, to publish later."""
    tmp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{prefix}", dir=parent)
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
