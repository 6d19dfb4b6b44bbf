// Shape checks of Keraslm>Linear and the run of a validated call, shared by
// the TF kernel (linear_ops.cc) and the XLA lowering (linear_xla.cc).
#pragma once

#include "kernels/linear.h"
#include "tf/tf_common.h"

namespace keraslm {

// The output width N of w: its columns, or its rows when transposed ([N, K]).
inline int64_t LinearOutputs(const TensorShape& w, bool transpose_w) { return w.dim_size(transpose_w ? 0 : 1); }

// x [M, K], w [K, N] (or [N, K] with transpose_w), bias [N] when use_bias (ignored otherwise).
inline Status ValidateLinearShapes(const TensorShape& x, const TensorShape& w, const TensorShape& bias,
                                   bool use_bias, bool transpose_w = false) {
  if (x.dims() != 2) return InvalidArgument("x must have rank 2 [M, K], got shape ", x.DebugString());
  if (w.dims() != 2)
    return InvalidArgument("w must have rank 2 ", transpose_w ? "[N, K]" : "[K, N]", ", got shape ", w.DebugString());
  const int64_t K = w.dim_size(transpose_w ? 1 : 0), N = LinearOutputs(w, transpose_w);
  if (x.dim_size(1) != K)
    return InvalidArgument("x has ", x.dim_size(1), " columns but w has ", K, transpose_w ? " columns" : " rows");
  if (use_bias && !(bias.dims() == 1 && bias.dim_size(0) == N))
    return InvalidArgument("bias must have shape [", N, "], got ", bias.DebugString());
  return Status();
}

// Params of a validated call (p.out left to the caller); w_data is float32, or bfloat16 bits when bf16_w.
inline LinearParams MakeLinearParams(const TensorShape& x, const TensorShape& w, const float* x_data,
                                     const void* w_data, const float* bias, bool transpose_w = false,
                                     bool bf16_w = false) {
  LinearParams p;
  p.M = x.dim_size(0);
  p.K = x.dim_size(1);
  p.N = LinearOutputs(w, transpose_w);
  p.x = x_data;
  if (bf16_w) p.w_bf16 = static_cast<const uint16_t*>(w_data);
  else p.w = static_cast<const float*>(w_data);
  p.transpose_w = transpose_w;
  p.bias = bias;
  return p;
}

// out = x @ w (+ bias); K = 0 is an empty sum (out = bias, or 0).
inline void run_linear(const LinearParams& p, const Parallel& par) {
  if (p.M == 0 || p.N == 0) return;
  if (p.K == 0) {
    for (int64_t m = 0; m < p.M; ++m)
      for (int64_t n = 0; n < p.N; ++n) p.out[m * p.N + n] = p.bias ? p.bias[n] : 0.f;
    return;
  }
  linear_forward(p, par);
}

// Whether this build lowers the op to an XLA custom call (linear_xla.cc).
bool linear_xla_lowering_registered();

}  // namespace keraslm
