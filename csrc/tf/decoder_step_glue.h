// Checks of Keraslm>DecoderBlockStep, shared by the TF kernel
// (decoder_step_ops.cc) and the XLA lowering (decoder_step_xla.cc): the
// attributes, the shapes of the 17 inputs, and the values of index and
// key_lengths (data: checked when the op or the custom call runs).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/attention.h"
#include "kernels/decoder_step.h"
#include "tf/attention_checks.h"

namespace keraslm {

enum DecoderStepInput {
  kX, kKCache, kVCache, kIndex, kKeyLengths, kLn1Gamma, kLn1Beta, kWQkv, kBQkv, kWO, kBO,
  kLn2Gamma, kLn2Beta, kWFc, kBFc, kWProj, kBProj, kNumStepInputs
};

inline Status ValidateStepAttrs(int64_t num_heads, float epsilon) {
  KERASLM_REQUIRE(num_heads >= 1, InvalidArgument("num_heads must be >= 1, got ", num_heads));
  KERASLM_REQUIRE(std::isfinite(epsilon) && epsilon > 0.f,
                  InvalidArgument("epsilon must be positive and finite, got ", epsilon));
  return Status();
}

// Requires `t` to be a vector of n values.
inline Status CheckStepVector(const TensorShape& t, const char* name, int64_t n) {
  KERASLM_REQUIRE(t.dims() == 1 && t.dim_size(0) == n,
                  InvalidArgument(name, " must have shape [", n, "], got ", t.DebugString()));
  return Status();
}

inline Status CheckStepMatrix(const TensorShape& t, const char* name, int64_t rows, int64_t cols) {
  KERASLM_REQUIRE(t.dims() == 2 && t.dim_size(0) == rows && t.dim_size(1) == cols,
                  InvalidArgument(name, " must have shape [", rows, ", ", cols, "], got ", t.DebugString()));
  return Status();
}

// Validates the shapes of the 17 inputs (in input order); fills the sizes of p.
inline Status ValidateStepShapes(const std::vector<TensorShape>& in, int64_t H, bool use_bias,
                                 DecoderStepParams* p) {
  const TensorShape& x = in[kX];
  const TensorShape& kc = in[kKCache];
  const TensorShape& vc = in[kVCache];
  KERASLM_REQUIRE(x.dims() == 2, InvalidArgument("x must have rank 2 [B, C], got shape ", x.DebugString()));
  KERASLM_REQUIRE(kc.dims() == 4,
                  InvalidArgument("k_cache must have rank 4 [B, S, Hkv, D], got shape ", kc.DebugString()));
  KERASLM_REQUIRE(vc == kc, InvalidArgument("v_cache must have the shape of k_cache ", kc.DebugString(), ", got ",
                                            vc.DebugString()));
  const int64_t B = x.dim_size(0), C = x.dim_size(1), S = kc.dim_size(1), Hkv = kc.dim_size(2),
                D = kc.dim_size(3);
  KERASLM_REQUIRE(kc.dim_size(0) == B,
                  InvalidArgument("k_cache batch size ", kc.dim_size(0), " does not match x batch size ", B));
  KERASLM_REQUIRE(D >= 1 && D <= kMaxHeadDim,
                  InvalidArgument("cache head size D must be in [1, ", kMaxHeadDim, "], got ", D));
  KERASLM_REQUIRE(Hkv >= 1 && H % Hkv == 0,
                  InvalidArgument("num_heads=", H, " must be a positive multiple of the cache's key/value heads ",
                                  "Hkv=", Hkv));
  KERASLM_REQUIRE(C == H * D, InvalidArgument("x width ", C, " must equal num_heads * head size = ", H, " * ", D));
  const TensorShape& w_fc = in[kWFc];
  KERASLM_REQUIRE(w_fc.dims() == 2,
                  InvalidArgument("w_fc must have rank 2 [C, F], got shape ", w_fc.DebugString()));
  const int64_t F = w_fc.dim_size(1), Q = (H + 2 * Hkv) * D;
  TF_RETURN_IF_ERROR(CheckStepVector(in[kLn1Gamma], "ln_1 gamma", C));
  TF_RETURN_IF_ERROR(CheckStepVector(in[kLn2Gamma], "ln_2 gamma", C));
  TF_RETURN_IF_ERROR(CheckStepMatrix(in[kWQkv], "w_qkv", C, Q));
  TF_RETURN_IF_ERROR(CheckStepMatrix(in[kWO], "w_o", C, C));
  TF_RETURN_IF_ERROR(CheckStepMatrix(w_fc, "w_fc", C, F));
  TF_RETURN_IF_ERROR(CheckStepMatrix(in[kWProj], "w_proj", F, C));
  if (use_bias) {
    TF_RETURN_IF_ERROR(CheckStepVector(in[kLn1Beta], "ln_1 beta", C));
    TF_RETURN_IF_ERROR(CheckStepVector(in[kLn2Beta], "ln_2 beta", C));
    TF_RETURN_IF_ERROR(CheckStepVector(in[kBQkv], "b_qkv", Q));
    TF_RETURN_IF_ERROR(CheckStepVector(in[kBO], "b_o", C));
    TF_RETURN_IF_ERROR(CheckStepVector(in[kBFc], "b_fc", F));
    TF_RETURN_IF_ERROR(CheckStepVector(in[kBProj], "b_proj", C));
  }
  TF_RETURN_IF_ERROR(CheckStepVector(in[kIndex], "index", B));
  TF_RETURN_IF_ERROR(CheckStepVector(in[kKeyLengths], "key_lengths", B));
  p->B = B; p->S = S; p->H = H; p->Hkv = Hkv; p->D = D; p->F = F;
  return Status();
}

// Validates the values of index [B] (in [0, S)) and key_lengths [B] (in [0, S]).
inline Status ValidateStepValues(const int32_t* index, const int32_t* lens, int64_t B, int64_t S) {
  for (int64_t b = 0; b < B; ++b) {
    KERASLM_REQUIRE(index[b] >= 0 && index[b] < S,
                    InvalidArgument("index[", b, "] must be in [0, S=", S, "), got ", index[b]));
    KERASLM_REQUIRE(lens[b] >= 0 && lens[b] <= S,
                    InvalidArgument("key_lengths[", b, "] must be in [0, S=", S, "], got ", lens[b]));
  }
  return Status();
}

// Points p at the inputs (data of the 17 inputs, in input order); without
// use_bias the bias and beta inputs are not used; with bf16_weights the four
// matrices are bfloat16.  The caches, y and the scratch are the caller's.
inline void SetStepInputs(const void* const data[kNumStepInputs], bool use_bias, bool bf16_weights,
                          DecoderStepParams* p) {
  auto in = [&](int i) { return static_cast<const float*>(data[i]); };
  auto bias = [&](int i) { return use_bias ? in(i) : nullptr; };
  p->x = in(kX);
  p->index = static_cast<const int32_t*>(data[kIndex]);
  p->key_lengths = static_cast<const int32_t*>(data[kKeyLengths]);
  p->ln1_gamma = in(kLn1Gamma);  p->ln1_beta = bias(kLn1Beta);
  p->w_qkv = in(kWQkv);          p->b_qkv = bias(kBQkv);
  p->w_o = in(kWO);              p->b_o = bias(kBO);
  p->ln2_gamma = in(kLn2Gamma);  p->ln2_beta = bias(kLn2Beta);
  p->w_fc = in(kWFc);            p->b_fc = bias(kBFc);
  p->w_proj = in(kWProj);        p->b_proj = bias(kBProj);
  if (bf16_weights) {
    auto bf16 = [&](int i) { return static_cast<const uint16_t*>(data[i]); };
    p->w_qkv_bf16 = bf16(kWQkv);
    p->w_o_bf16 = bf16(kWO);
    p->w_fc_bf16 = bf16(kWFc);
    p->w_proj_bf16 = bf16(kWProj);
    p->w_qkv = p->w_o = p->w_fc = p->w_proj = nullptr;
  }
}

// Whether this build lowers the op to an XLA custom call (decoder_step_xla.cc).
bool decoder_block_step_xla_lowering_registered();

}  // namespace keraslm
