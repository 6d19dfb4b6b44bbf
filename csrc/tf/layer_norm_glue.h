// Shape checks of Keraslm>LayerNorm / Keraslm>LayerNormGrad, shared by the TF
// kernels (layer_norm_ops.cc) and the XLA lowerings (layer_norm_xla.cc).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace keraslm {

inline std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// Rows R and features C of x [..., C]; "" or a message naming the bad value.
inline std::string layer_norm_check(const std::vector<int64_t>& x, const std::vector<int64_t>& gamma,
                                    const std::vector<int64_t>& beta, bool use_beta, float epsilon, int64_t* R,
                                    int64_t* C) {
  if (!(epsilon > 0.0f) || !std::isfinite(epsilon))
    return "epsilon must be a positive finite number, got " + std::to_string(epsilon);
  if (x.empty()) return "x must have rank >= 1 [..., C], got a scalar";
  *C = x.back();
  *R = 1;
  for (size_t i = 0; i + 1 < x.size(); ++i) *R *= x[i];
  if (gamma != std::vector<int64_t>{*C})
    return "gamma must have shape [" + std::to_string(*C) + "] (the last axis of x " + dims_str(x) + "), got " +
           dims_str(gamma);
  if (use_beta && beta != std::vector<int64_t>{*C})
    return "beta must have shape [" + std::to_string(*C) + "], got " + dims_str(beta);
  return "";
}

// The extra inputs of the gradient: dy like x, mean and rstd like x without its last axis.
inline std::string layer_norm_grad_check(const std::vector<int64_t>& dy, const std::vector<int64_t>& x,
                                         const std::vector<int64_t>& mean, const std::vector<int64_t>& rstd) {
  if (dy != x) return "dy must have the shape of x " + dims_str(x) + ", got " + dims_str(dy);
  const std::vector<int64_t> rows(x.begin(), x.end() - (x.empty() ? 0 : 1));
  if (mean != rows) return "mean must have shape " + dims_str(rows) + ", got " + dims_str(mean);
  if (rstd != rows) return "rstd must have shape " + dims_str(rows) + ", got " + dims_str(rstd);
  return "";
}

bool layer_norm_xla_lowering_registered();

}  // namespace keraslm
