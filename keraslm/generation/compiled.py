"""Compiled generation functions, kept per model without keeping the model alive.

Every decoding path (sampling loop, streaming step, beam search) compiles
``tf.function``\\ s around one model and reuses them across calls. They are
cached in a ``WeakKeyDictionary`` keyed by the model, and the functions reach
the model only through a weak reference, so ``del model`` frees the model, its
variables and its compiled graphs (a function that closed over the model
would keep its own key alive forever).
"""

from __future__ import annotations

import weakref

_CACHE = weakref.WeakKeyDictionary()


def compiled(model, kind, build):
    """The functions of ``kind`` for ``model``, built once by ``build(model_ref)``.

    Args:
        model: the model (a weak-referenceable object).
        kind: a name for this family of functions (one entry per model and kind).
        build: called with a zero-argument function that returns the model; the
            functions it builds must call it at trace time instead of closing
            over the model.

    Returns:
        Whatever ``build`` returned, cached.
    """
    per_model = _CACHE.setdefault(model, {})
    if kind not in per_model:
        per_model[kind] = build(_model_getter(weakref.ref(model)))
    return per_model[kind]


def _model_getter(ref):
    def get():
        model = ref()
        if model is None:  # only reachable if a compiled function outlives its model's cache entry
            raise RuntimeError("the model of this compiled generation function was deleted")
        return model

    return get
