// Small-batch dense layer: out = x @ w (+ bias), the matrix-vector products of
// one decoding step.
//
// Shapes: x [M, K] (row stride K), w [K, N] row-major (Keras' Dense kernel
// layout), bias [N] or nullptr, out [M, N] (row stride N); float32.
//
// At decode time M (the batch) is small and the cost is reading w once per
// token: the kernel keeps up to 6 rows of out in registers while it streams
// w, so w is read once for every 6 rows, and splits the columns across
// threads when w is large enough to be worth it.  Accumulation is float32 in
// order k = 0 .. K-1 per output (the glue tests hold it to float64 numpy).
#pragma once

#include <cstdint>

#include "kernels/parallel.h"

namespace keraslm {

struct LinearParams {
  int64_t M = 0, K = 0, N = 0;
  const float* x = nullptr;
  const float* w = nullptr;
  const float* bias = nullptr;
  float* out = nullptr;
};

// Reference (linear_reference.cc): the naive spec, double accumulators.
void linear_forward_reference(const LinearParams& p);

// Fast CPU kernel (linear_cpu.cc, ISA-dispatched).
void linear_forward(const LinearParams& p, const Parallel& par);

// Columns [n0, n1) of out only, on the calling thread (the same arithmetic
// per column as linear_forward): for callers that split the columns among
// their own workers.
void linear_forward_columns(const LinearParams& p, int64_t n0, int64_t n1);

}  // namespace keraslm
