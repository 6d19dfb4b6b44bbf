"""keraslm: Keras language models with fused attention and sampling kernels.

``keraslm.ops`` holds the differentiable fused attention and the sampler (TF
custom ops with a pure-TF fallback); ``keraslm._C`` runs the same C++ kernels
on numpy arrays, and ``keraslm._C.dlpack`` runs them (and the CUDA kernels)
on DLPack tensors from torch, CuPy or numpy, without TensorFlow.
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

try:
    import tensorflow as _tf  # noqa: E402,F401
except ImportError as _error:  # kernels-only use: keraslm._C works without TensorFlow
    _TF_IMPORT_ERROR = _error
else:
    _TF_IMPORT_ERROR = None

if _TF_IMPORT_ERROR is None:
    from keraslm import ops  # noqa: E402
    from keraslm import data, layers, models  # noqa: E402
    from keraslm.checkpoint import load_model  # noqa: E402
    from keraslm.evaluation import evaluate  # noqa: E402
    from keraslm.training import TrainConfig, train  # noqa: E402
else:
    def __getattr__(name):
        if name.startswith("_"):  # private names and submodules such as keraslm._C
            raise AttributeError(name)
        raise ImportError(f"keraslm.{name} needs TensorFlow, which failed to import ({_TF_IMPORT_ERROR}); "
                          "without it only the kernels in keraslm._C are available")

try:  # the compiled numpy module; absent only in a source tree that was never built
    from keraslm import _C  # noqa: E402,F401
except ImportError:  # pragma: no cover - exercised by the fallback tests in a subprocess
    pass

__all__ = ["TrainConfig", "__version__", "data", "evaluate", "layers", "load_model", "models", "ops", "train"]
