"""Docstring examples are part of the documentation: they must run."""

import doctest
import importlib

import pytest

MODULES = [
    "keraslm.atomic",
    "keraslm.curves",
    "keraslm.optimizers",
    "keraslm.ops._loader",
    "keraslm.ops.attention",
    "keraslm.ops.sampling",
    "keraslm.validation",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module) if t.examples]
    assert tests, f"{name} has no docstring examples"
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
