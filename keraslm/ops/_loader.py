"""Lazy loading of the TF op library and the implementation switch.

The switch has three states:

* ``"auto"`` (default): use the custom ops when ``_tf_ops.so`` loads; if it
  does not, warn once and use the pure-TF reference.  Inside an XLA
  computation (``jit_compile=True``) the ops that this build lowers to XLA
  custom calls (``build_info()["xla_<op>"] == "1"``: attention, layer_norm,
  linear, sample, decoder_block_step, matmul_bf16) run there with the same
  checks; the others use the reference, whose run-time checks XLA drops.
* ``"custom"``: always use the custom ops; raise if they cannot be loaded or
  are requested inside XLA.
* ``"reference"``: always use the pure-TF reference (stock TF ops only; this
  is what exports use).

Set it with :func:`set_implementation`, temporarily with
:func:`implementation_scope`, or with the ``KERASLM_OPS`` environment variable.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

from keraslm.validation import in_xla_context

_VALID = ("auto", "custom", "reference")
_ENV = "KERASLM_OPS"

_lock = threading.Lock()
_state = {"impl": None, "module": None, "error": None, "loaded": False, "warned": False, "info": None}


def _check(value):
    if value is True:
        return "custom"
    if value is False:
        return "reference"
    if not isinstance(value, str) or value.lower() not in _VALID:
        raise ValueError(
            f"implementation must be one of {_VALID} (or True/False), got {value!r}")
    return value.lower()


def implementation() -> str:
    """The current switch value: ``"auto"``, ``"custom"`` or ``"reference"``."""
    if _state["impl"] is None:
        env = os.environ.get(_ENV)
        if env:
            try:
                _state["impl"] = _check(env)
            except ValueError as e:
                raise ValueError(f"environment variable {_ENV}: {e}") from None
        else:
            _state["impl"] = "auto"
    return _state["impl"]


def set_implementation(value) -> None:
    """Set the switch for the whole process.

    Args:
        value: ``"auto"``, ``"custom"`` (or ``True``), ``"reference"`` (or ``False``).
    """
    _state["impl"] = _check(value)


@contextlib.contextmanager
def implementation_scope(value):
    """Temporarily set the switch (not thread-local).

    Example:
        >>> import keraslm
        >>> with keraslm.ops.implementation_scope("reference"):
        ...     keraslm.ops.implementation()
        'reference'
    """
    previous = implementation()
    set_implementation(value)
    try:
        yield
    finally:
        _state["impl"] = previous


def _library_path() -> str:
    """Where ``_tf_ops.so`` is: beside the package, or (editable installs) beside ``keraslm._C``."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [os.path.join(package_dir, "_tf_ops.so")]
    try:
        import importlib.util

        spec = importlib.util.find_spec("keraslm._C")
        if spec is not None and spec.origin:
            candidates.append(os.path.join(os.path.dirname(spec.origin), "_tf_ops.so"))
    except (ImportError, ValueError):
        pass
    return next((c for c in candidates if os.path.exists(c)), candidates[0])


def op_library():
    """The loaded op module, or None (and the reason in ``load_error()``)."""
    if not _state["loaded"]:
        with _lock:
            if not _state["loaded"]:
                import tensorflow as tf

                path = _library_path()
                try:
                    if not os.path.exists(path):
                        raise FileNotFoundError(
                            f"{path} does not exist (keraslm was installed without its compiled "
                            "TF op library)")
                    _state["module"] = tf.load_op_library(path)
                except Exception as e:  # noqa: BLE001 - any failure means "no custom ops"
                    _state["error"] = f"{type(e).__name__}: {e}"
                    _state["module"] = None
                _state["loaded"] = True
    return _state["module"]


def load_error():
    """Why the op library failed to load, or None."""
    op_library()
    return _state["error"]


def custom_ops_available() -> bool:
    """True when the compiled TF op library loads in this process."""
    return op_library() is not None


def build_info() -> dict:
    """Facts about the compiled op library and this CPU, e.g.
    ``{"amx_bf16": "1", "xla_matmul_bf16": "1", ...}``; ``{}`` without the library."""
    if _state["info"] is None:
        lib = op_library()
        info = {}
        if lib is not None and hasattr(lib, "keraslm_build_info"):
            import tensorflow as tf

            with tf.init_scope(), tf.device("/CPU:0"):  # eager even while tracing
                text = lib.keraslm_build_info().numpy().decode()
            for item in text.split(";"):
                key, _, value = item.partition("=")
                info[key] = value
        _state["info"] = info
    return _state["info"]


def has_xla_lowering(op_name: str) -> bool:
    """True when this build lowers ``op_name`` to an XLA custom call (``build_info()["xla_<op_name>"]``)."""
    return build_info().get(f"xla_{op_name}") == "1"


def use_custom(op_name: str, xla_lowering: bool = False) -> bool:
    """Resolve the switch for one call of ``op_name``.

    ``xla_lowering``: the op has an XLA lowering in this build, so it may also
    be used inside jit-compiled functions.
    """
    impl = implementation()
    if impl == "reference":
        return False
    xla = in_xla_context() and not xla_lowering
    if impl == "custom":
        if op_library() is None:
            raise RuntimeError(
                f"keraslm.ops.{op_name}: implementation='custom' but the op library could not be "
                f"loaded: {_state['error']}")
        if xla:
            raise RuntimeError(
                f"keraslm.ops.{op_name}: implementation='custom' cannot run inside an XLA "
                "computation (jit_compile=True); use 'auto' or 'reference' there")
        return True
    if xla:
        return False
    if op_library() is None:
        if not _state["warned"]:
            _state["warned"] = True
            warnings.warn(
                "keraslm: the compiled TF ops are unavailable "
                f"({_state['error']}); falling back to the pure-TF reference ops, which are "
                "slower and use more memory.", RuntimeWarning, stacklevel=3)
        return False
    return True
