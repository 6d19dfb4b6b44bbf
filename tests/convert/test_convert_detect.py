"""detect_format / load_pretrained: what a path holds, and one-line errors for what it lacks."""

import os

import pytest
from convert_helpers import one_line

from keraslm.convert import FORMATS, detect_format, load_pretrained
from keraslm.models import TransformerLM


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    model = TransformerLM(vocab_size=11, max_length=8, num_layers=1, num_heads=2, width=8)
    model.build_for_inference()
    model.save(path)
    return path


def test_keraslm_formats(keras_file, tmp_path):
    assert detect_format(keras_file) == "keras"
    assert detect_format(keras_file.parent) == "run"  # a directory with model.keras
    run = tmp_path / "run"
    os.makedirs(run / "checkpoints")
    os.link(keras_file, run / "checkpoints" / "last.keras")
    assert detect_format(run) == "run"
    for path in (keras_file, run):
        with pytest.raises(ValueError) as e:
            load_pretrained(path)
        assert "keraslm.load_model" in one_line(e)
    assert set(FORMATS) == {"keras", "run", "hf-gpt2", "keras-hub-gpt2", "nanogpt"}


def test_what_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        detect_format(tmp_path / "nowhere")
    assert "does not exist" in one_line(e)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError) as e:
        detect_format(text)
    assert "expected a .keras file" in one_line(e)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError) as e:
        detect_format(tmp_path)
    assert "config.json is not readable JSON" in one_line(e)


def test_docstring_examples_run():
    import doctest

    import keraslm.convert.layout as layout

    result = doctest.testmod(layout, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted and not result.failed
