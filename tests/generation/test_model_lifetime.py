"""A model that has generated is freed once the caller lets go of it (compiled loops hold it weakly)."""

import gc
import weakref

import pytest

import keraslm
from keraslm.data import CharTokenizer
from keraslm.generation.compiled import compiled
from keraslm.models import RecurrentLM, TransformerLM


def _model(kind, tok):
    if kind == "gpt":
        return TransformerLM(vocab_size=tok.vocab_size, max_length=16, num_layers=1, num_heads=2, width=8,
                             tokenizer=tok)
    return RecurrentLM(vocab_size=tok.vocab_size, embedding_dim=4, hidden_units=4, tokenizer=tok)


@pytest.mark.parametrize("kind", ["gpt", "rnn"])
def test_generated_models_are_freed(kind, tmp_path):
    tok = CharTokenizer()
    tok.adapt(["hello world"])
    refs = []
    for i in range(3):
        model = _model(kind, tok)
        if i == 2:  # a model loaded from disk too
            model.save(str(tmp_path / "m.keras"))
            model = keraslm.load_model(str(tmp_path / "m.keras"))
        model.generate("hel", max_new_tokens=3, seed=1)
        list(model.stream("hel", max_new_tokens=3, seed=1))
        model.generate("hel", max_new_tokens=3, num_beams=2)
        refs.append(weakref.ref(model))
        del model
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_compiled_functions_are_cached_per_model():
    class Dummy:
        pass

    built = []
    a, b = Dummy(), Dummy()
    first = compiled(a, "x", lambda get: built.append(get) or object())
    assert compiled(a, "x", lambda get: built.append(get) or object()) is first
    assert compiled(b, "x", lambda get: built.append(get) or object()) is not first
    assert len(built) == 2 and built[0]() is a and built[1]() is b
