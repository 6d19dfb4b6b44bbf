// Shared by the TF kernel (matmul_bf16_ops.cc) and the XLA lowering
// (matmul_bf16_xla.cc) of Keraslm>MatmulBf16.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/parallel.h"

namespace keraslm {

struct MatmulBf16Dims {
  int64_t M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
};

// Fills *d from the operand shapes; returns "" or a message naming the bad
// shapes.
std::string matmul_bf16_dims(const std::vector<int64_t>& a_shape, const std::vector<int64_t>& b_shape, bool ta,
                             bool tb, MatmulBf16Dims* d);

// c [M, N] = op(a) @ op(b), densely packed row-major operands.
void run_matmul_bf16(const MatmulBf16Dims& d, const float* a, const float* b, float* c, const Parallel& par);

// True when this library registered the XLA lowering of Keraslm>MatmulBf16
// (matmul_bf16_xla.cc) / of the attention ops (attention_xla.cc).
bool matmul_bf16_xla_lowering_registered();
bool attention_xla_lowering_registered();

}  // namespace keraslm
