"""Device arrays for the GPU tests: torch (or CuPy) tensors through DLPack."""

import numpy as np

DTYPES = ["float32", "bfloat16", "float16"]


class Backend:
    """Moves numpy arrays to the GPU and back, in float32 / bfloat16 / float16."""

    def __init__(self):
        try:
            import torch

            if not torch.cuda.is_available():
                raise ImportError
            self.torch, self.cupy = torch, None
        except ImportError:
            import cupy

            self.torch, self.cupy = None, cupy

    def supports(self, dtype):
        return self.torch is not None or dtype != "bfloat16"

    def to_device(self, x, dtype="float32"):
        x = np.ascontiguousarray(x)
        if self.torch is not None:
            t = self.torch.from_numpy(x).cuda()
            return t.to(getattr(self.torch, dtype)) if x.dtype.kind == "f" else t
        return self.cupy.asarray(x.astype(dtype) if x.dtype.kind == "f" else x)

    def to_numpy(self, t):
        """A keraslm._C.dlpack.Tensor (or a framework tensor) as a float64 / int numpy array."""
        if self.torch is not None:
            t = self.torch.from_dlpack(t)
            return (t.double() if t.is_floating_point() else t).cpu().numpy()
        a = self.cupy.from_dlpack(t)
        return self.cupy.asnumpy(a.astype("float64") if a.dtype.kind == "f" else a)

    def rounded(self, x, dtype):
        """x rounded to dtype, as float64 numpy (what the kernel actually sees)."""
        return self.to_numpy(self.to_device(x, dtype))

    def synchronize(self):
        if self.torch is not None:
            self.torch.cuda.synchronize()
        else:
            self.cupy.cuda.runtime.deviceSynchronize()
