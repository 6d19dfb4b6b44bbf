"""Pretrained word vectors (GloVe, word2vec text, fastText ``.vec``) as an embedding matrix."""

from __future__ import annotations

import gzip
import logging
import os

import numpy as np

from keraslm.data.tokenizer_base import PAD_TOKEN
from keraslm.validation import positive_int

logger = logging.getLogger(__name__)


def load_word_vectors(path, vocabulary, *, dim=None, lowercase=False, seed=0, scale=0.1):
    """Reads pretrained vectors for a vocabulary, streaming the file line by line.

    Formats: GloVe text (``word v1 ... vD`` on every line), word2vec text and
    fastText ``.vec`` (the same after a ``"N D"`` header line, which is
    skipped); a ``.gz`` file is decompressed on the fly. Words containing
    spaces (a few GloVe entries) are recognised once ``D`` is known. Only the
    vectors of vocabulary words are parsed; every line's width is checked.

    Args:
        path: the vectors file.
        vocabulary: list of tokens in id order, or a tokenizer (its
            ``vocabulary`` is used).
        dim: expected vector size ``D`` (default: from the header or the
            first line).
        lowercase: match case-insensitively (an exact-case entry of the file
            wins over a case-folded one; otherwise the first entry wins).
        seed: seed of the random vectors of words missing from the file.
        scale: standard deviation of those random vectors.

    Returns:
        ``(matrix, found)``: float32 ``[V, D]`` with row ``i`` the vector of
        ``vocabulary[i]`` (zeros for ``"<pad>"``, small seeded random values
        for words not in the file), and the number of vocabulary words found.
        The count is also logged: ``"found X of Y vocabulary words"``.

    Raises:
        ValueError: a line whose width differs from ``D`` (the error names the
            line number), unparseable numbers, a header that contradicts
            ``dim``, or a file with no vectors.

    Example:
        >>> import pathlib, tempfile
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "glove.txt"
        >>> _ = f.write_text("cat 1 2\\ndog 3 4\\n")
        >>> matrix, found = load_word_vectors(f, ["<pad>", "<unk>", "dog"])
        >>> matrix.shape, found, matrix[2].tolist(), matrix[0].tolist()
        ((3, 2), 1, [3.0, 4.0], [0.0, 0.0])
    """
    tokens = list(getattr(vocabulary, "vocabulary", vocabulary))
    if not tokens:
        raise ValueError("expected a non-empty vocabulary, got []")
    positive_int("dim", dim, allow_none=True)
    fold = str.lower if lowercase else (lambda w: w)
    rows = {}  # folded token -> vocabulary rows
    for i, token in enumerate(tokens):
        if token != PAD_TOKEN:
            rows.setdefault(fold(token), []).append(i)

    vectors, exact = {}, set()  # row -> vector; rows filled by an exact-case match
    width = dim
    with _open_text(path) as f:
        first = True
        for lineno, line in enumerate(f, 1):
            line = line.rstrip()
            if not line:
                continue
            if first:
                first = False
                header = line.split()
                if len(header) == 2 and header[0].isdigit() and header[1].isdigit():
                    if dim is not None and int(header[1]) != dim:
                        raise ValueError(f"{os.fspath(path)!r} line {lineno}: the header says vectors have "
                                         f"{header[1]} dimensions, expected dim={dim}")
                    width = int(header[1])
                    continue
                if width is None:
                    width = len(line.split(" ")) - 1
                    if width < 1:
                        raise ValueError(f"{os.fspath(path)!r} line {lineno}: expected 'word v1 v2 ...', "
                                         f"got {line[:80]!r}")
            word, values = _split_line(line, width, path, lineno)
            targets = rows.get(fold(word))
            if targets is None:
                continue
            is_exact = not lowercase or word in (tokens[r] for r in targets)
            todo = [r for r in targets if r not in vectors or (is_exact and r not in exact)]
            if not todo:
                continue
            if isinstance(values, str):
                values = values.split(" ")
            try:
                vector = np.asarray(values, dtype=np.float32)  # [D]
            except ValueError:
                raise ValueError(f"{os.fspath(path)!r} line {lineno}: expected {width} numbers after "
                                 f"{word!r}, got {' '.join(values)[:80]!r}") from None
            for r in todo:
                if is_exact and tokens[r] == word:
                    exact.add(r)
                vectors[r] = vector
    if width is None:
        raise ValueError(f"no word vectors in {os.fspath(path)!r}")

    rng = np.random.default_rng(seed)
    matrix = (rng.standard_normal((len(tokens), width)) * scale).astype(np.float32)  # [V, D]
    for r, vector in vectors.items():
        matrix[r] = vector
    for i, token in enumerate(tokens):
        if token == PAD_TOKEN:
            matrix[i] = 0.0
    found = len(vectors)
    logger.info("found %d of %d vocabulary words in %s", found, len(tokens), os.fspath(path))
    return matrix, found


def _open_text(path):
    path = os.fspath(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _split_line(line, width, path, lineno):
    """(word, its ``width`` numbers: one unsplit string, or a list of strings)."""
    n_fields = line.count(" ") + 1
    if n_fields == width + 1:
        word, _, rest = line.partition(" ")
        return word, rest
    fields = line.split(" ")
    if n_fields > width + 1 and not _is_number(fields[-width - 1]):  # a word that contains spaces
        return " ".join(fields[:-width]), fields[-width:]
    raise ValueError(f"{os.fspath(path)!r} line {lineno}: expected a word and {width} numbers, "
                     f"got {n_fields - 1} value(s) after {fields[0]!r}")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True
