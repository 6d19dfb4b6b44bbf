// Validation of the values of a sampling call, shared by the TF op and the
// pybind11 module so that both reject the same inputs with the same message.
// Shapes are checked by each glue (they differ in how shapes are expressed);
// this checks every value the kernels rely on.  Header-only, framework-free.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "kernels/parallel.h"
#include "kernels/sampling.h"

namespace keraslm {
namespace sampling_checks {

inline std::string fmt(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// "name = v" for a broadcast parameter, "name[b] = v" for a per-row one.
inline std::string at(const char* name, int64_t stride, int64_t b, const std::string& v) {
  return stride == 0 ? std::string(name) + " = " + v : std::string(name) + "[" + std::to_string(b) + "] = " + v;
}

// First index (in rows of `stride`-spaced values) where ok() fails, or -1.
template <class T, class Ok>
int64_t first_bad(const T* v, int64_t stride, int64_t B, Ok ok) {
  const int64_t n = stride == 0 ? (B > 0 ? 1 : 0) : B;
  for (int64_t b = 0; b < n; ++b)
    if (!ok(v[b * stride])) return b;
  return -1;
}

// Per-row scan of the logits: 1 = NaN or +inf, 2 = no finite value, 0 = ok.
// Written on 4-wide vectors (SSE2, every x86-64 CPU) without early exit so
// that the common, valid case costs about one load per 4 logits.
inline int scan_row(const float* x, int64_t V) {
  typedef float v4 __attribute__((vector_size(16), aligned(4)));
  typedef int32_t v4i __attribute__((vector_size(16)));
  const float inf = std::numeric_limits<float>::infinity();
  const v4 pinf = {inf, inf, inf, inf}, ninf = -pinf;
  v4i bad = {}, finite = {};
  int64_t i = 0;
  for (; i + 4 <= V; i += 4) {
    const v4 v = *reinterpret_cast<const v4*>(x + i);
    bad |= ~(v < pinf);  // NaN or +inf
    finite |= v > ninf;
  }
  bool any_bad = (bad[0] | bad[1] | bad[2] | bad[3]) != 0;
  bool any_finite = (finite[0] | finite[1] | finite[2] | finite[3]) != 0;
  for (; i < V; ++i) {
    any_bad |= !(x[i] < inf);
    any_finite |= x[i] > -inf;
  }
  return any_bad ? 1 : any_finite ? 0 : 2;
}

}  // namespace sampling_checks

// Checks the per-row parameters and the coins of a sampling call whose shapes
// the caller has already validated.  Returns "" when they are valid, else a
// message naming the argument and the bad value.  (The CUDA glue runs this on
// the host copies of these small arrays; the logits and previous ids are
// checked where they live.)
inline std::string check_sampling_parameters(const SamplingParams& p) {
  using namespace sampling_checks;
  const int64_t B = p.B;
  int64_t b;
  if ((b = first_bad(p.temperature, p.temperature_stride, B,
                     [](float t) { return t >= 0 && t < std::numeric_limits<float>::infinity(); })) >= 0)
    return "temperature must be finite and >= 0 (0 = greedy); got " +
           at("temperature", p.temperature_stride, b, fmt(p.temperature[b * p.temperature_stride]));
  if ((b = first_bad(p.top_k, p.top_k_stride, B, [](int32_t k) { return k >= 0; })) >= 0)
    return "top_k must be >= 0 (0 = off); got " +
           at("top_k", p.top_k_stride, b, std::to_string(p.top_k[b * p.top_k_stride]));
  if ((b = first_bad(p.top_p, p.top_p_stride, B, [](float v) { return v > 0 && v <= 1; })) >= 0)
    return "top_p must be in (0, 1] (1 = off); got " + at("top_p", p.top_p_stride, b, fmt(p.top_p[b * p.top_p_stride]));
  if ((b = first_bad(p.min_p, p.min_p_stride, B, [](float v) { return v >= 0 && v <= 1; })) >= 0)
    return "min_p must be in [0, 1] (0 = off); got " + at("min_p", p.min_p_stride, b, fmt(p.min_p[b * p.min_p_stride]));
  if ((b = first_bad(p.repetition_penalty, p.repetition_penalty_stride, B,
                     [](float r) { return r > 0 && r < std::numeric_limits<float>::infinity(); })) >= 0)
    return "repetition_penalty must be finite and > 0 (1 = off); got " +
           at("repetition_penalty", p.repetition_penalty_stride, b,
              fmt(p.repetition_penalty[b * p.repetition_penalty_stride]));
  if ((b = first_bad(p.coins, 1, B, [](float u) { return u >= 0 && u < 1; })) >= 0)
    return "coins must be in [0, 1); got coins[" + std::to_string(b) + "] = " + fmt(p.coins[b]);
  return "";
}

// Message for previous_ids[row, col] = t outside [0, V) and not pad_id.
inline std::string previous_id_error(const SamplingParams& p, int64_t row, int64_t col, int32_t t) {
  return "previous_ids must be in [0, V=" + std::to_string(p.V) + ") or equal to pad_id=" +
         std::to_string(p.pad_id) + "; got previous_ids[" + std::to_string(row) + ", " + std::to_string(col) +
         "] = " + std::to_string(t);
}

// Message for a row of logits (host copy x, V values) that failed the scan:
// status 1 (a NaN or +inf) or 2 (no finite value).
inline std::string logits_row_error(int64_t row, const float* x, int64_t V, int status) {
  using namespace sampling_checks;
  if (status == 2)
    return "every row of logits needs at least one finite value; logits[" + std::to_string(row) + ", :] is all -inf";
  int64_t i = 0;
  while (i + 1 < V && x[i] < std::numeric_limits<float>::infinity()) ++i;
  return "logits must not contain NaN or +inf (use -inf to ban a token); got logits[" + std::to_string(row) + ", " +
         std::to_string(i) + "] = " + fmt(x[i]);
}

// Checks every value of a sampling call whose shapes the caller has already
// validated (p.B, p.V >= 1, p.L, pointers and strides set; host memory).
// Returns "" when the call is valid, else a message naming the argument and
// the bad value.
inline std::string check_sampling_values(const SamplingParams& p, const Parallel& par) {
  using namespace sampling_checks;
  std::string error = check_sampling_parameters(p);
  if (!error.empty()) return error;
  for (int64_t i = 0; i < p.B * p.L; ++i) {
    const int32_t t = p.previous_ids[i];
    if (t != p.pad_id && (t < 0 || t >= p.V)) return previous_id_error(p, i / p.L, i % p.L, t);
  }
  std::vector<int8_t> status(p.B, 0);
  par(p.B, 2 * p.V, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) status[r] = int8_t(scan_row(p.logits + r * p.logits_stride, p.V));
  });
  for (int64_t b = 0; b < p.B; ++b)
    if (status[b] != 0) return logits_row_error(b, p.logits + b * p.logits_stride, p.V, status[b]);
  return "";
}

}  // namespace keraslm
