// Shape checks of Keraslm>Linear and the run of a validated call, shared by
// the TF kernel (linear_ops.cc) and the XLA lowering (linear_xla.cc).
#pragma once

#include "kernels/linear.h"
#include "tf/tf_common.h"

namespace keraslm {

// x [M, K], w [K, N], bias [N] when use_bias (ignored otherwise).
inline Status ValidateLinearShapes(const TensorShape& x, const TensorShape& w, const TensorShape& bias,
                                   bool use_bias) {
  if (x.dims() != 2) return InvalidArgument("x must have rank 2 [M, K], got shape ", x.DebugString());
  if (w.dims() != 2) return InvalidArgument("w must have rank 2 [K, N], got shape ", w.DebugString());
  if (x.dim_size(1) != w.dim_size(0))
    return InvalidArgument("x has ", x.dim_size(1), " columns but w has ", w.dim_size(0), " rows");
  if (use_bias && !(bias.dims() == 1 && bias.dim_size(0) == w.dim_size(1)))
    return InvalidArgument("bias must have shape [", w.dim_size(1), "], got ", bias.DebugString());
  return Status();
}

// Params of a validated call (p.out left to the caller).
inline LinearParams MakeLinearParams(const TensorShape& x, const TensorShape& w, const float* x_data,
                                     const float* w_data, const float* bias) {
  LinearParams p;
  p.M = x.dim_size(0);
  p.K = x.dim_size(1);
  p.N = w.dim_size(1);
  p.x = x_data;
  p.w = w_data;
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
