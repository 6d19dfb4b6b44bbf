"""Python face of the keraslm kernels.

Each op runs either as our compiled TF custom op or as a pure-TF reference with
the same maths, chosen by a single switch (see :mod:`keraslm.ops._loader`):

    keraslm.ops.set_implementation("auto" | "custom" | "reference")
    KERASLM_OPS=reference python ...

:mod:`keraslm.ops.hardware` answers what this machine and build accelerate.
"""

from keraslm.ops._loader import (
    build_info,
    custom_ops_available,
    implementation,
    implementation_scope,
    load_error,
    set_implementation,
)
from keraslm.ops._loader import use_custom as uses_custom_op
from keraslm.ops.attention import attention, attention_reference
from keraslm.ops.decoder import decoder_block_step
from keraslm.ops.hardware import (
    amx_bf16_available,
    bf16_products_unavailable_reason,
    bfloat16_matmul_unavailable_reason,
)
from keraslm.ops.layer_norm import layer_norm, layer_norm_reference
from keraslm.ops.linear import linear
from keraslm.ops.matmul import (
    bf16_products_active,
    dense_matmul,
    matmul_bf16,
    matmul_bf16_reference,
    matmul_precision,
    matmul_precision_scope,
    set_matmul_precision,
)
from keraslm.ops.sampling import filtered_logprobs, sample, sample_reference

__all__ = [
    "amx_bf16_available",
    "attention",
    "attention_reference",
    "bf16_products_active",
    "bf16_products_unavailable_reason",
    "bfloat16_matmul_unavailable_reason",
    "build_info",
    "custom_ops_available",
    "decoder_block_step",
    "dense_matmul",
    "filtered_logprobs",
    "implementation",
    "implementation_scope",
    "layer_norm",
    "layer_norm_reference",
    "linear",
    "load_error",
    "matmul_bf16",
    "matmul_bf16_reference",
    "matmul_precision",
    "matmul_precision_scope",
    "sample",
    "sample_reference",
    "set_implementation",
    "set_matmul_precision",
    "uses_custom_op",
]
