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
//
// w may instead be given as bfloat16 (w_bf16: the values' bit patterns):
// decoding reads every weight once per token, so half the bytes is up to
// twice the speed at batch 1.  The products still accumulate in float32.
#pragma once

#include <cstdint>

#include "kernels/parallel.h"

namespace keraslm {

struct LinearParams {
  int64_t M = 0, K = 0, N = 0;
  const float* x = nullptr;
  const float* w = nullptr;
  const uint16_t* w_bf16 = nullptr;  // used instead of w when set
  // w is [N, K] instead (row n holds output n's weights: an embedding table used as the output
  // layer); linear_forward and the reference only.
  bool transpose_w = false;
  const float* bias = nullptr;
  float* out = nullptr;
};

// Reference (linear_reference.cc): the naive spec, double accumulators.
void linear_forward_reference(const LinearParams& p);

// Fast CPU kernel (linear_cpu.cc, ISA-dispatched).  With transpose_w each
// output is a dot product of a row of x with a contiguous row of w, four rows
// of w at a time, the rows of w split across threads (w streams once per
// row of x, from cache after the first).
void linear_forward(const LinearParams& p, const Parallel& par);

// Columns [n0, n1) of out only, on the calling thread (the same arithmetic
// per column as linear_forward): for callers that split the columns among
// their own workers.
void linear_forward_columns(const LinearParams& p, int64_t n0, int64_t n1);

// Partial products of rows [k0, k1) of w, for callers that split K among
// their workers: part[m, n] = sum_{k0 <= k < k1} x[m, k] w[k, n] (no bias),
// part [M, N].  It reads w's rows front to back (one contiguous block), which
// streams memory about 1.4x faster than walking a column panel down all K
// rows (measured at batch 1 with 2 threads); the caller adds the partials of
// the row blocks in a fixed order, so results do not depend on who ran which.
void linear_partial_rows(const LinearParams& p, int64_t k0, int64_t k1, float* part);

// x[i] = x[i] / 2 * (1 + tanh(sqrt(2 / pi) * (x[i] + 0.044715 x[i]^3))) for i < n, vectorized (tanh from
// a vector exp: absolute error about 1e-7 against std::tanh): the MLP activation of a decoding step.
void gelu_tanh_inplace(float* x, int64_t n);

}  // namespace keraslm
