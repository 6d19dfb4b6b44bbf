// Matrix product with bfloat16 inputs and float32 accumulation on Intel AMX,
// for float32 tensors: C = op(A) @ op(B).
//
// This is the "bfloat16 matmul precision" of the training harness (what
// torch calls float32 matmul precision "medium"): the inputs are rounded to
// bfloat16 (round to nearest even) while they are packed, the products are
// exact in float32 and the sums are float32.  Everything outside the product
// stays float32.
//
// Shapes: op(A) is [M, K], op(B) is [K, N], C is [M, N] (row stride ldc).
//   A is stored [M, K] (row stride lda), or [K, M] when trans_a;
//   B is stored [K, N] (row stride ldb), or [N, K] when trans_b.
// Any M, N, K >= 0 (K == 0 gives zeros); no alignment is required.
#pragma once

#include <cstdint>

#include "kernels/bfloat16.h"  // round_to_bf16
#include "kernels/parallel.h"

namespace keraslm {

struct GemmBf16Params {
  int64_t M = 0, N = 0, K = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  bool trans_a = false;
  const float* b = nullptr;
  int64_t ldb = 0;
  bool trans_b = false;
  float* c = nullptr;
  int64_t ldc = 0;
};

// True when the CPU has AMX-BF16 and AVX512-BF16 and the OS lets this
// process use the AMX tile registers (asked for once, on the first call).
bool amx_bf16_available();

// Why amx_bf16_available() is false ("" when it is true).
const char* amx_bf16_unavailable_reason();

// C = op(A) @ op(B) as described above.  Requires amx_bf16_available().
void gemm_bf16(const GemmBf16Params& p, const Parallel& par);

// The same product without AMX, one output at a time in float64 over the
// bfloat16-rounded inputs: the reference the tests compare with.
void gemm_bf16_reference(const GemmBf16Params& p);

}  // namespace keraslm
