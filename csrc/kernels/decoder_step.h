// One decoding step of a pre-LayerNorm GPT block (GPT-2's h.N) for one new
// token per row, fused into a single call:
//
//   h   = ln_1(x)                          x   [B, C], C = H * D
//   qkv = h @ w_qkv + b_qkv                qkv [B, (H + 2 Hkv) D] = [q | k | v]
//   k_cache[b, index[b]] = k[b];  v_cache[b, index[b]] = v[b]
//   a   = attention(q, k_cache, v_cache)   keys j < key_lengths[b] of row b
//   x1  = x + a @ w_o + b_o
//   y   = x1 + gelu_tanh(ln_2(x1) @ w_fc + b_fc) @ w_proj + b_proj
//
// Caches are [B, S, Hkv, D]; query head h reads kv head h / (H / Hkv).
// LayerNorm: (x - mean) / sqrt(var + eps) * gamma (+ beta), biased variance.
// gelu_tanh(u) = u / 2 * (1 + tanh(sqrt(2 / pi) * (u + 0.044715 u^3))).
// Biases (b_*, and the LayerNorm betas) may be nullptr: no bias.
//
// The matrix products go through linear_forward (kernels/linear.h) and the
// attention through attention_forward (kernels/attention.h), so the fused
// step has their numerics; what it removes is the framework's per-op cost
// (about 40 small ops per block and token).
//
// The four matrices may be given as bfloat16 instead (w_*_bf16, the values'
// bit patterns; each product uses the bfloat16 one when it is set): an
// opt-in for decoding, where reading the weights is the cost of a step.
// Products accumulate in float32 either way.
//
// The kernel assumes valid inputs (0 <= index[b] < S, 0 <= key_lengths[b] <=
// S, D <= kMaxHeadDim, H % Hkv == 0); the TF glue checks them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/parallel.h"

namespace keraslm {

struct DecoderStepParams {
  int64_t B = 0, S = 0, H = 0, Hkv = 0, D = 0, F = 0;  // F: MLP width
  float eps = 1e-5f;
  const float* x = nullptr;               // [B, C]
  const int32_t* index = nullptr;         // [B] cache row written
  const int32_t* key_lengths = nullptr;   // [B] live keys attended to
  float* k_cache = nullptr;               // [B, S, Hkv, D], updated
  float* v_cache = nullptr;               // [B, S, Hkv, D], updated
  const float *ln1_gamma = nullptr, *ln1_beta = nullptr;   // [C]
  const float *w_qkv = nullptr, *b_qkv = nullptr;          // [C, (H + 2 Hkv) D], [(H + 2 Hkv) D]
  const float *w_o = nullptr, *b_o = nullptr;              // [C, C], [C]
  const float *ln2_gamma = nullptr, *ln2_beta = nullptr;   // [C]
  const float *w_fc = nullptr, *b_fc = nullptr;            // [C, F], [F]
  const float *w_proj = nullptr, *b_proj = nullptr;        // [F, C], [C]
  const uint16_t *w_qkv_bf16 = nullptr, *w_o_bf16 = nullptr, *w_fc_bf16 = nullptr, *w_proj_bf16 = nullptr;
  float* y = nullptr;                     // [B, C]
  float* scratch = nullptr;               // decoder_step_scratch_floats(*this) floats
};

// Size of the scratch buffer the caller provides, in floats.
int64_t decoder_step_scratch_floats(const DecoderStepParams& p);

// Reference (decoder_step_reference.cc): the formulas above written out in
// double, with its own scratch (p.scratch is not used).  It writes the same
// cache rows (rounded to float) and attends over the float caches.
void decoder_step_forward_reference(const DecoderStepParams& p);

// Fast CPU kernel (decoder_step.cc).
void decoder_step_forward(const DecoderStepParams& p, const Parallel& par);

}  // namespace keraslm
