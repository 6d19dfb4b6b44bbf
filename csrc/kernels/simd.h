// Portable SIMD vocabulary for the fast kernels, on GCC/Clang vector
// extensions.  The width follows the variant being compiled: 16 floats with
// AVX-512, 8 with AVX2, 4 otherwise (SSE2, every x86-64 CPU).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>

#include "kernels/bfloat16.h"

#ifndef KERASLM_ISA
#error "simd.h is only used by the per-ISA kernel sources (KERASLM_ISA must be defined)"
#endif

namespace keraslm {
namespace KERASLM_ISA {

#if defined(__AVX512F__)
constexpr int W = 16;
#elif defined(__AVX2__)
constexpr int W = 8;
#else
constexpr int W = 4;
#endif

typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));
typedef float vf_unaligned __attribute__((vector_size(W * 4), aligned(4)));

inline vf vload(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }
// W bfloat16 values (their bit patterns, as uint16_t) widened to float32: the
// upper half of a float32's bits, so widening is exact.  One zero-extending
// load per vector (GCC's generic widening of a vector took four shuffles).
inline vf vload(const uint16_t* p) {
#if defined(__AVX512F__)
  const __m512i bits = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16);
  return reinterpret_cast<vf>(_mm512_castsi512_ps(bits));
#elif defined(__AVX2__)
  const __m256i bits = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
  return reinterpret_cast<vf>(_mm256_castsi256_ps(bits));
#else
  const __m128i half = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return reinterpret_cast<vf>(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), half)));
#endif
}
inline float scalar(float v) { return v; }
inline float scalar(uint16_t bf16) { return bf16_to_float(bf16); }
inline void vstore(float* p, vf x) { *reinterpret_cast<vf_unaligned*>(p) = x; }
inline vf vset1(float x) { return vf{} + x; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }

inline float hmax(vf x) {
  float m = x[0];
  for (int i = 1; i < W; ++i) m = m > x[i] ? m : x[i];
  return m;
}
// Pairwise (tree) sum of the lanes: log2(W) dependent adds instead of W.
inline float hsum(vf x) {
  float t[W];
  std::memcpy(t, &x, sizeof(t));
  for (int w = W / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) t[i] += t[i + w];
  return t[0];
}

// 2^x for x <= 0 (inputs below -126 give 0, -inf gives 0).  Relative error
// about 2e-7: x = n + f with n = round(x), f in [-0.5, 0.5], a degree-6
// polynomial for 2^f and n put into the exponent bits.
inline vf vexp2_nonpos(vf x) {
  const vf lo = vset1(-126.f);
  vi underflow = x < lo;
  x = vmax(x, lo);
  vf y = x + 0.5f;
  vi xi = __builtin_convertvector(y, vi);          // truncation toward zero
  vf fi = __builtin_convertvector(xi, vf);
  vi adjust = fi > y;                               // floor(y) for negative y
  xi = xi + adjust;                                 // adjust is -1 where true
  fi = __builtin_convertvector(xi, vf);
  vf f = x - fi;                                    // [-0.5, 0.5]
  vf p = vset1(1.535336188319500e-4f);
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  vi bits = (xi + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  vf r = p * scale;
  return underflow ? vf{} : r;
}

}  // namespace KERASLM_ISA
}  // namespace keraslm
