// The naive dense-layer spec (linear.h): out = x @ w (+ bias), one output at a
// time, the dot product in double.  Slow on purpose; the tests hold the fast
// kernel (linear_forward and linear_forward_columns) to it.
#include "kernels/bfloat16.h"
#include "kernels/linear.h"

namespace keraslm {
namespace {

// w[i] as a double, from the float32 or the bfloat16 weights.
double weight(const LinearParams& p, int64_t i) { return p.w_bf16 ? bf16_to_float(p.w_bf16[i]) : p.w[i]; }

}  // namespace

void linear_forward_reference(const LinearParams& p) {
  const int64_t M = p.M, K = p.K, N = p.N;
  for (int64_t m = 0; m < M; ++m) {
    const float* x = p.x + m * K;  // [K]
    float* out = p.out + m * N;    // [N]
    for (int64_t n = 0; n < N; ++n) {
      // out[m, n] = sum_k x[m, k] * w[k, n] + bias[n];  w is [K, N] row-major ([N, K] with transpose_w).
      double s = p.bias ? double(p.bias[n]) : 0.0;
      for (int64_t k = 0; k < K; ++k) s += double(x[k]) * weight(p, p.transpose_w ? n * K + k : k * N + n);
      out[n] = static_cast<float>(s);
    }
  }
}

}  // namespace keraslm
