// Layer normalisation over the last axis, forward and backward, float32:
//   y = (x - mean) * rstd * gamma + beta,  rstd = 1 / sqrt(var + epsilon),
// with mean and var (biased) over the C values of a row.  The forward pass
// also returns mean and rstd per row for the backward pass, which gives
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * gamma,
//   dgamma = sum over rows of dy * xhat,  dbeta = sum over rows of dy,
// where xhat = (x - mean) * rstd.  The column sums are reduced in a fixed
// order (deterministic for a given thread count and row count).
#pragma once

#include <cstdint>

#include "kernels/parallel.h"

namespace keraslm {

struct LayerNormParams {
  int64_t R = 0, C = 0;  // rows, features
  float epsilon = 1e-5f;
  const float* x = nullptr;      // [R, C]
  const float* gamma = nullptr;  // [C]
  const float* beta = nullptr;   // [C] or nullptr (no offset)
  float* y = nullptr;            // [R, C]
  float* mean = nullptr;         // [R]
  float* rstd = nullptr;         // [R]
};

struct LayerNormGradParams {
  int64_t R = 0, C = 0;
  const float* dy = nullptr;     // [R, C]
  const float* x = nullptr;      // [R, C]
  const float* gamma = nullptr;  // [C]
  const float* mean = nullptr;   // [R] from the forward pass
  const float* rstd = nullptr;   // [R]
  float* dx = nullptr;           // [R, C]
  float* dgamma = nullptr;       // [C]
  float* dbeta = nullptr;        // [C] or nullptr (not wanted)
};

// Reference (layer_norm_reference.cc): the naive spec, double accumulators.
void layer_norm_forward_reference(const LayerNormParams& p);
void layer_norm_backward_reference(const LayerNormGradParams& g);

// Fast CPU kernels (layer_norm_cpu.cc, ISA-dispatched).
void layer_norm_forward(const LayerNormParams& p, const Parallel& par);
void layer_norm_backward(const LayerNormGradParams& g, const Parallel& par);

}  // namespace keraslm
