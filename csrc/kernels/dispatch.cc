// Run-time choice of the instruction-set variant of the fast kernels.
// attention_cpu.cc, sampling_cpu.cc, linear_cpu.cc and layer_norm_cpu.cc are compiled once per variant, each
// into namespace keraslm::<isa>; this file picks one per process.
#include <cstdlib>
#include <cstring>

#include "kernels/attention.h"
#include "kernels/layer_norm.h"
#include "kernels/linear.h"
#include "kernels/sampling.h"

namespace keraslm {

#define KERASLM_DECLARE_VARIANT(isa)                                           \
  namespace isa {                                                              \
  void attention_forward(const AttentionParams& p, const Parallel& par);       \
  void attention_backward(const AttentionGradParams& g, const Parallel& par);  \
  void sample(const SamplingParams& p, const Parallel& par);                   \
  void linear_forward(const LinearParams& p, const Parallel& par);             \
  void linear_forward_columns(const LinearParams& p, int64_t n0, int64_t n1);  \
  void linear_partial_rows(const LinearParams& p, int64_t k0, int64_t k1, float* part); \
  void gelu_tanh_inplace(float* x, int64_t n);                                 \
  void layer_norm_forward(const LayerNormParams& p, const Parallel& par);      \
  void layer_norm_backward(const LayerNormGradParams& g, const Parallel& par); \
  }
KERASLM_DECLARE_VARIANT(generic)
KERASLM_DECLARE_VARIANT(avx2)
KERASLM_DECLARE_VARIANT(avx512)
#undef KERASLM_DECLARE_VARIANT

namespace {

enum class Isa { kGeneric, kAvx2, kAvx512 };

Isa detect() {
  __builtin_cpu_init();
  Isa best = Isa::kGeneric;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    best = Isa::kAvx512;
  // KERASLM_ISA may lower the choice (never raise it past what the CPU has).
  if (const char* env = std::getenv("KERASLM_ISA")) {
    Isa want = best;
    if (!std::strcmp(env, "generic")) want = Isa::kGeneric;
    else if (!std::strcmp(env, "avx2")) want = Isa::kAvx2;
    else if (!std::strcmp(env, "avx512")) want = Isa::kAvx512;
    if (want < best) best = want;
  }
  return best;
}

Isa isa() {
  static const Isa chosen = detect();
  return chosen;
}

}  // namespace

const char* cpu_isa() {
  switch (isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "generic";
  }
}

void attention_forward(const AttentionParams& p, const Parallel& par) {
  switch (isa()) {
    case Isa::kAvx512: return avx512::attention_forward(p, par);
    case Isa::kAvx2: return avx2::attention_forward(p, par);
    default: return generic::attention_forward(p, par);
  }
}

void attention_backward(const AttentionGradParams& g, const Parallel& par) {
  switch (isa()) {
    case Isa::kAvx512: return avx512::attention_backward(g, par);
    case Isa::kAvx2: return avx2::attention_backward(g, par);
    default: return generic::attention_backward(g, par);
  }
}

void sample(const SamplingParams& p, const Parallel& par) {
  switch (isa()) {
    case Isa::kAvx512: return avx512::sample(p, par);
    case Isa::kAvx2: return avx2::sample(p, par);
    default: return generic::sample(p, par);
  }
}

void linear_forward(const LinearParams& p, const Parallel& par) {
  switch (isa()) {
    case Isa::kAvx512: return avx512::linear_forward(p, par);
    case Isa::kAvx2: return avx2::linear_forward(p, par);
    default: return generic::linear_forward(p, par);
  }
}

void linear_forward_columns(const LinearParams& p, int64_t n0, int64_t n1) {
  switch (isa()) {
    case Isa::kAvx512: return avx512::linear_forward_columns(p, n0, n1);
    case Isa::kAvx2: return avx2::linear_forward_columns(p, n0, n1);
    default: return generic::linear_forward_columns(p, n0, n1);
  }
}

void linear_partial_rows(const LinearParams& p, int64_t k0, int64_t k1, float* part) {
  switch (isa()) {
    case Isa::kAvx512: return avx512::linear_partial_rows(p, k0, k1, part);
    case Isa::kAvx2: return avx2::linear_partial_rows(p, k0, k1, part);
    default: return generic::linear_partial_rows(p, k0, k1, part);
  }
}

void gelu_tanh_inplace(float* x, int64_t n) {
  switch (isa()) {
    case Isa::kAvx512: return avx512::gelu_tanh_inplace(x, n);
    case Isa::kAvx2: return avx2::gelu_tanh_inplace(x, n);
    default: return generic::gelu_tanh_inplace(x, n);
  }
}

void layer_norm_forward(const LayerNormParams& p, const Parallel& par) {
  switch (isa()) {
    case Isa::kAvx512: return avx512::layer_norm_forward(p, par);
    case Isa::kAvx2: return avx2::layer_norm_forward(p, par);
    default: return generic::layer_norm_forward(p, par);
  }
}

void layer_norm_backward(const LayerNormGradParams& g, const Parallel& par) {
  switch (isa()) {
    case Isa::kAvx512: return avx512::layer_norm_backward(g, par);
    case Isa::kAvx2: return avx2::layer_norm_backward(g, par);
    default: return generic::layer_norm_backward(g, par);
  }
}

}  // namespace keraslm
