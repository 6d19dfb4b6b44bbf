"""keraslm: Keras language models with fused attention and sampling kernels.

``keraslm.ops`` holds the differentiable fused attention and the sampler (TF
custom ops with a pure-TF fallback); ``keraslm._C`` runs the same C++ kernels
on numpy arrays, and ``keraslm._C.dlpack`` runs them (and the CUDA kernels)
on DLPack tensors from torch, CuPy or numpy, without TensorFlow.

The package imports its parts (and TensorFlow) on first use: ``import keraslm``
is instant, ``keraslm.train`` / ``keraslm.models`` / ... load what they need.
"""

import importlib as _importlib
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# Public names -> the module that defines them (imported on first access).
_NAMES = {"TrainConfig": "keraslm.config", "train": "keraslm.training", "evaluate": "keraslm.evaluation",
          "load_model": "keraslm.checkpoint"}
_SUBMODULES = ("atomic", "checkpoint", "cli", "config", "convert", "data", "evaluation", "export", "generation",
               "layers", "metrics", "models", "ops", "optimizers", "precision", "presets", "training",
               "validation")


def __getattr__(name):
    if name in _NAMES or name in _SUBMODULES:
        module_name = _NAMES.get(name, f"keraslm.{name}")
        try:
            module = _importlib.import_module(module_name)
        except ImportError as error:
            if "tensorflow" in str(error).lower() and _tensorflow_missing():
                raise ImportError(f"keraslm.{name} needs TensorFlow, which failed to import ({error}); without it "
                                  "only the kernels in keraslm._C are available") from error
            raise
        value = getattr(module, name) if name in _NAMES else module
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keraslm' has no attribute {name!r}")


def _tensorflow_missing():
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return True
    return False


def __dir__():
    return sorted(set(globals()) | set(_NAMES) | set(_SUBMODULES))


try:  # the compiled numpy module; absent only in a source tree that was never built
    from keraslm import _C  # noqa: E402,F401
except ImportError:  # pragma: no cover - exercised by the fallback tests in a subprocess
    pass

__all__ = ["TrainConfig", "__version__", "data", "evaluate", "layers", "load_model", "models", "ops", "train"]
