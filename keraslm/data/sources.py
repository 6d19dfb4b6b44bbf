"""Corpus sources: paths and globs, in-memory texts, character positions, streaming.

A corpus is a sequence of *documents* (UTF-8 files, or in-memory strings)
concatenated in order. A newline is inserted between two documents when the
first does not already end with one, so the last word of a file never runs
into the first word of the next. Positions are counted in Unicode characters
(code points): that is what the train / validation split and a
character-level tokenizer see.

Files are never read whole. One streaming pass cuts them into pieces of about
``CHUNK_BYTES`` that end at a newline (for a longer line: at a space or tab,
else at a character boundary) and counts their characters; later passes seek
straight to the pieces they need. A word tokenizer therefore never sees a word
cut in two, except at the train / validation boundary itself.
"""

from __future__ import annotations

import bisect
import glob
import os
import re
from typing import NamedTuple

CHUNK_BYTES = 1 << 20  # target size of one streamed piece (bytes for files, characters for texts)

SPLITS = ("train", "validation", "all")

_GLOB_CHARS = re.compile(r"[*?\[]")
_FILE_NAME = re.compile(r"[\w.\-~+@]+\.[A-Za-z0-9]{1,10}")


BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin")
BUILTIN_DATASETS = {"tinyshakespeare": "tinyshakespeare.txt"}  # name -> file in keraslm/data/builtin


def builtin_dataset(name):
    """The path of a dataset that ships with keraslm (see ``BUILTIN_DATASETS``), or None for other names."""
    if name not in BUILTIN_DATASETS:
        return None
    return os.path.join(BUILTIN_DIR, BUILTIN_DATASETS[name])


def resolve_files(patterns):
    """Expands paths and glob patterns into a sorted list of files.

    Args:
        patterns: one path or glob (``str`` / ``os.PathLike``) or a list of
            them. ``~`` is expanded and ``**`` matches directories recursively.
            The name of a built-in dataset (``"tinyshakespeare"``) that is not
            also a file here stands for that dataset's file.

    Returns:
        The sorted, de-duplicated list of matching file paths.

    Raises:
        ValueError: a path that does not exist, a directory, a glob that
            matches no file, no pattern at all, or files that are all empty.

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "b.txt").write_text("b"), (d / "a.txt").write_text("a")
        >>> [pathlib.Path(f).name for f in resolve_files(str(d / "*.txt"))]
        ['a.txt', 'b.txt']
    """
    if isinstance(patterns, (str, bytes, os.PathLike)):
        patterns = [patterns]
    patterns = [os.fsdecode(p) for p in patterns]
    if not patterns:
        raise ValueError("expected at least one path or glob pattern, got an empty list")
    files = set()
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if _GLOB_CHARS.search(expanded):
            matches = [m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
            if not matches:
                raise ValueError(f"no file matches the glob pattern {pattern!r}")
        elif not os.path.exists(expanded) and builtin_dataset(pattern) is not None:
            matches = [builtin_dataset(pattern)]
        elif os.path.isdir(expanded):
            raise ValueError(f"{pattern!r} is a directory; give a glob such as "
                             f"{os.path.join(pattern, '*.txt')!r}")
        elif not os.path.isfile(expanded):
            raise ValueError(f"file not found: {pattern!r} (built-in datasets: {', '.join(BUILTIN_DATASETS)})")
        else:
            matches = [expanded]
        files.update(matches)
    files = sorted(files)
    if all(os.path.getsize(f) == 0 for f in files):
        raise ValueError(f"empty corpus: every file matched by {patterns!r} is empty ({len(files)} file(s))")
    return files


def looks_like_paths(items):
    """Whether a list of strings names files rather than holding text.

    Every item must look like a path: an ``os.PathLike``, or a string without
    a newline that exists, contains a glob character or a path separator, is
    a single word ending in a file extension (``corpus.txt``), or names a
    built-in dataset (``tinyshakespeare``). Anything else is in-memory text.

    Args:
        items: a list of ``str`` / ``bytes`` / ``os.PathLike``.

    Returns:
        ``True`` when every item looks like a path or glob.
    """
    if not items:
        return False
    for item in items:
        if isinstance(item, os.PathLike):
            continue
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace")
        if not isinstance(item, str) or "\n" in item or not item.strip() or len(item) > 4096:
            return False
        if os.path.exists(os.path.expanduser(item)) or builtin_dataset(item) is not None:
            continue
        if item != item.strip() or any(c.isspace() for c in item):
            return False
        if not (_GLOB_CHARS.search(item) or "/" in item or os.sep in item or _FILE_NAME.fullmatch(item)):
            return False
    return True


class _Piece(NamedTuple):
    doc: int  # index into Corpus.documents, or -1 for an inserted newline
    start: int  # first byte (files) or character (texts) within the document
    size: int  # bytes (files) or characters (texts)
    chars: int  # Unicode characters in the piece
    offset: int  # position of the piece's first character in the corpus


def _cut_point(buf):
    """Index just past the last newline (else space/tab, else before the last character); 0 for none."""
    i = buf.rfind(b"\n")
    if i < 0:
        i = max(buf.rfind(b" "), buf.rfind(b"\t"), buf.rfind(b"\r"))
    if i >= 0:
        return i + 1
    j = len(buf) - 1
    while j > 0 and (buf[j] & 0xC0) == 0x80:  # back up to the last lead byte
        j -= 1
    return j


def _text_cut_point(text, lo, hi):
    i = text.rfind("\n", lo, hi)
    if i < 0:
        i = max(text.rfind(" ", lo, hi), text.rfind("\t", lo, hi))
    return i + 1 if i >= 0 else hi


class Corpus:
    """A corpus indexed by character position, read lazily in pieces.

    Args:
        documents: a list of ``("file", path)`` or ``("text", string)`` pairs.

    Example:
        >>> c = Corpus([("text", "ab"), ("text", "cd\\n")])
        >>> c.total_chars, b"".join(c.iter_text())
        (6, b'ab\\ncd\\n')
        >>> c.split_range("validation", 0.5)
        (3, 6)
    """

    def __init__(self, documents):
        self.documents = []
        self._pieces = []
        total = 0
        pending_newline = False
        for kind, value in documents:
            if kind == "file":
                scanned = self._scan_file(value)
            elif kind == "text":
                if isinstance(value, bytes):
                    value = value.decode("utf-8")
                if not isinstance(value, str):
                    raise ValueError(f"expected text as str or bytes, got {type(value).__name__}: {value!r:.80}")
                scanned = self._scan_text(value)
            else:
                raise ValueError(f"unknown document kind {kind!r}; expected 'file' or 'text'")
            pieces, ends_with_newline = scanned
            if not pieces:
                continue  # empty documents add nothing, not even a separator
            if pending_newline:
                self._pieces.append(_Piece(-1, 0, 1, 1, total))
                total += 1
            self.documents.append((kind, value))
            doc = len(self.documents) - 1
            for start, size, chars in pieces:
                self._pieces.append(_Piece(doc, start, size, chars, total))
                total += chars
            pending_newline = not ends_with_newline
        if not self._pieces:
            raise ValueError(f"empty corpus: all {len(documents)} document(s) are empty")
        self.total_chars = total
        self._offsets = [p.offset for p in self._pieces]

    @classmethod
    def from_source(cls, source):
        """Builds a corpus from paths/globs or in-memory texts.

        Args:
            source: a ``Corpus``; a path or glob (``str`` / ``os.PathLike``)
                or a list of them (see ``looks_like_paths``); or a string, or
                an iterable of strings, of in-memory text.

        Returns:
            A ``Corpus``.
        """
        if isinstance(source, Corpus):
            return source
        if hasattr(source, "element_spec"):  # a tf.data.Dataset: cannot be indexed by position
            raise TypeError("a tf.data.Dataset cannot be split by character position; "
                            "pass file paths/globs or a list of strings")
        items = [source] if isinstance(source, (str, bytes, os.PathLike)) else list(source)
        if looks_like_paths(items):
            return cls([("file", f) for f in resolve_files(items)])
        return cls([("text", t) for t in items])

    @staticmethod
    def _scan_file(path):
        """((start byte, bytes, characters) of each piece, whether the file ends with a newline)."""
        pieces, pos, buf, last = [], 0, b"", b""
        with open(path, "rb") as f:
            while True:
                block = f.read(CHUNK_BYTES)
                buf += block
                if not buf:
                    break
                if block and len(buf) < CHUNK_BYTES:
                    continue
                cut = _cut_point(buf) if block else len(buf)
                if cut == 0:
                    continue  # not even one whole character yet: read more
                piece, buf = buf[:cut], buf[cut:]
                try:
                    chars = len(piece.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path!r} is not valid UTF-8 (byte {pos + e.start}: "
                                     f"{piece[e.start:e.start + 4]!r})") from None
                pieces.append((pos, cut, chars))
                pos += cut
                last = piece[-1:]
                if not block and not buf:
                    break
        return pieces, last == b"\n"

    @staticmethod
    def _scan_text(text):
        """((start, characters, characters) of each piece, whether the text ends with a newline)."""
        pieces, lo = [], 0
        while lo < len(text):
            hi = min(lo + CHUNK_BYTES, len(text))
            if hi < len(text):
                hi = _text_cut_point(text, lo, hi)
            pieces.append((lo, hi - lo, hi - lo))
            lo = hi
        return pieces, text.endswith("\n")

    def split_range(self, split="all", validation_fraction=0.1):
        """Character range ``[lo, hi)`` of a split.

        The first ``int(N * (1 - validation_fraction))`` characters are
        ``"train"``, the rest ``"validation"``; ``"all"`` is everything.

        Args:
            split: ``"train"``, ``"validation"`` or ``"all"``.
            validation_fraction: in ``[0, 1)``.

        Returns:
            ``(lo, hi)`` character positions.
        """
        if split not in SPLITS:
            raise ValueError(f"expected split to be one of {SPLITS}, got {split!r}")
        if not isinstance(validation_fraction, (int, float)) or not 0 <= validation_fraction < 1:
            raise ValueError(f"expected validation_fraction in [0, 1), got {validation_fraction!r}")
        boundary = int(self.total_chars * (1 - validation_fraction))
        return {"train": (0, boundary), "validation": (boundary, self.total_chars),
                "all": (0, self.total_chars)}[split]

    def iter_text(self, lo=0, hi=None):
        """Yields the UTF-8 text of characters ``[lo, hi)`` in pieces of about ``CHUNK_BYTES``.

        Pieces end at a newline (or space) where the corpus allows; small
        pieces (short documents) are joined so that a consumer such as a
        ``tf.data`` pipeline sees few, large elements.

        Args:
            lo: first character.
            hi: end character (default: the end of the corpus).

        Yields:
            ``bytes``.
        """
        buffer, size = [], 0
        for chunk in self._iter_pieces(lo, hi):
            buffer.append(chunk)
            size += len(chunk)
            if size >= CHUNK_BYTES:
                yield b"".join(buffer)
                buffer, size = [], 0
        if buffer:
            yield b"".join(buffer)

    def _iter_pieces(self, lo, hi):
        hi = self.total_chars if hi is None else min(hi, self.total_chars)
        if lo >= hi:
            return
        handle, handle_doc = None, None
        try:
            for i in range(max(bisect.bisect_right(self._offsets, lo) - 1, 0), len(self._pieces)):
                p = self._pieces[i]
                if p.offset >= hi:
                    break
                if p.doc < 0:
                    yield b"\n"
                    continue
                kind, value = self.documents[p.doc]
                cut = p.offset < lo or p.offset + p.chars > hi
                if kind == "text":
                    text = value[p.start:p.start + p.size]
                    if cut:
                        text = text[max(lo - p.offset, 0):min(hi, p.offset + p.chars) - p.offset]
                    yield text.encode("utf-8")
                    continue
                if handle_doc != p.doc:
                    if handle is not None:
                        handle.close()
                    handle, handle_doc = open(value, "rb"), p.doc
                handle.seek(p.start)
                chunk = handle.read(p.size)
                if cut:
                    text = chunk.decode("utf-8")[max(lo - p.offset, 0):min(hi, p.offset + p.chars) - p.offset]
                    chunk = text.encode("utf-8")
                yield chunk
        finally:
            if handle is not None:
                handle.close()
