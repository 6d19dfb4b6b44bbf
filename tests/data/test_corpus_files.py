"""resolve_files and Corpus: globs, errors, concatenation, streaming pieces, character split."""

import os
import pathlib

import pytest
import tensorflow as tf

from keraslm.data import Corpus, resolve_files, sources


def test_resolve_files_sorted_deduplicated_and_recursive(write, tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt", "notes.md"):
        write(name, "x\n")
    names = lambda files: [pathlib.Path(f).relative_to(tmp_path).as_posix() for f in files]  # noqa: E731
    assert names(resolve_files(str(tmp_path / "*.txt"))) == ["a.txt", "b.txt"]
    assert names(resolve_files([tmp_path / "b.txt", str(tmp_path / "*.txt")])) == ["a.txt", "b.txt"]
    assert names(resolve_files(str(tmp_path / "**" / "*.txt"))) == ["a.txt", "b.txt", "sub/c.txt"]


def test_resolve_files_errors_name_the_pattern(write, tmp_path):
    write("a.txt", "x")
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="file not found: .*missing.txt"):
        resolve_files([str(tmp_path / "a.txt"), missing])
    with pytest.raises(ValueError, match=r"no file matches the glob pattern .*\*\.csv"):
        resolve_files(str(tmp_path / "*.csv"))
    with pytest.raises(ValueError, match="is a directory"):
        resolve_files(tmp_path)
    with pytest.raises(ValueError, match="empty list"):
        resolve_files([])
    write("e1.txt", "")
    write("e2.txt", "")
    with pytest.raises(ValueError, match="empty corpus"):
        resolve_files(str(tmp_path / "e*.txt"))


def test_concatenation_inserts_newlines_between_files_and_skips_empty_ones(write, tmp_path):
    write("1.txt", "ab")
    write("2.txt", "")
    write("3.txt", "cd\n")
    write("4.txt", "é")
    corpus = Corpus.from_source(str(tmp_path / "*.txt"))
    assert "".join(_text(p) for p in corpus.iter_text()) == "ab\ncd\né"
    assert corpus.total_chars == 7
    assert _joined(corpus, 2, 5) == "\ncd"
    assert corpus.split_range("train", 0.3) == (0, 4) and corpus.split_range("validation", 0.3) == (4, 7)
    assert corpus.split_range("all") == (0, 7)
    with pytest.raises(ValueError, match="'test'"):
        corpus.split_range("test")
    with pytest.raises(ValueError, match="1.5"):
        corpus.split_range("train", 1.5)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_small_pieces_end_at_newlines_and_reassemble_exactly(write, monkeypatch, chunk):
    text = "line one\nzweite Zeile ü\n" + "x" * 100 + " ünïcödé 日本語 end\nno newline at the end"
    path = write("t.txt", text)
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk)
    corpus = Corpus.from_source(path)
    pieces = [_text(p) for p in corpus.iter_text()]
    assert "".join(pieces) == text and corpus.total_chars == len(text)
    assert all(p.endswith(("\n", " ")) or len(p.encode()) <= 4 * chunk for p in pieces[:-1])
    for lo, hi in [(0, len(text)), (3, 50), (110, 130), (len(text) - 3, len(text)), (5, 5)]:
        assert _joined(corpus, lo, hi) == text[lo:hi]
    texts = Corpus.from_source([text, "second"])
    assert _joined(texts, 0, None) == text + "\nsecond"


def test_short_documents_are_streamed_in_few_large_pieces(monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 100)
    corpus = Corpus.from_source([f"line {i}" for i in range(100)])
    pieces = list(corpus.iter_text())
    assert b"".join(pieces).decode() == "\n".join(f"line {i}" for i in range(100))
    assert len(pieces) == 8 and all(100 <= len(p) < 110 for p in pieces[:-1])


def test_invalid_utf8_is_reported(write):
    path = write("bad.txt", b"fine\n\xff\xfe broken")
    with pytest.raises(ValueError, match=r"bad.txt.*not valid UTF-8 \(byte 5"):
        Corpus.from_source(path)


def test_sources_tell_paths_from_texts(write, tmp_path):
    path = write("a.txt", "from file\n")
    assert _joined(Corpus.from_source(str(path)), 0, None) == "from file\n"
    assert _joined(Corpus.from_source(path), 0, None) == "from file\n"
    assert _joined(Corpus.from_source(["hello world", "two"]), 0, None) == "hello world\ntwo"
    assert _joined(Corpus.from_source("one line of text\nand another"), 0, None) == "one line of text\nand another"
    with pytest.raises(ValueError, match="file not found: 'missing.txt'"):
        Corpus.from_source("missing.txt")
    with pytest.raises(ValueError, match="no file matches"):
        Corpus.from_source([os.path.join(str(tmp_path), "nothing", "*.txt")])
    with pytest.raises(TypeError, match="Dataset"):
        Corpus.from_source(tf.data.Dataset.from_tensor_slices(["a"]))
    with pytest.raises(ValueError, match="empty corpus"):
        Corpus.from_source(["", ""])
    assert sources.looks_like_paths(["data/*.txt", "corpus.txt"])
    assert not sources.looks_like_paths(["corpus.txt", "just some words"])


def _text(piece):
    return piece.decode("utf-8") if isinstance(piece, bytes) else piece


def _joined(corpus, lo, hi):
    return "".join(_text(p) for p in corpus.iter_text(lo, hi))


def test_builtin_dataset_by_name(tmp_path, monkeypatch):
    path = sources.builtin_dataset("tinyshakespeare")
    assert os.path.getsize(path) > 1_000_000
    assert open(path).read(12) == "First Citize"
    assert resolve_files("tinyshakespeare") == [path]
    assert resolve_files(["tinyshakespeare", str(path)]) == [path]
    corpus = Corpus.from_source(["tinyshakespeare"])
    assert next(corpus.iter_text()).startswith(b"First Citizen")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tinyshakespeare").write_text("a local file of that name wins")
    assert resolve_files("tinyshakespeare") == ["tinyshakespeare"]
    with pytest.raises(ValueError, match="file not found: 'tinyshakespear' .*built-in datasets: tinyshakespeare"):
        resolve_files("tinyshakespear")
