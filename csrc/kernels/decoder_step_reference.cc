// The naive spec of one fused decoding step (decoder_step.h), written out from
// its formulas: LayerNorm, the four products, the cache write, attention over
// the live keys with the grouped-query head mapping, tanh-GELU.  One row at a
// time, every intermediate in double; only the caches (float tensors the step
// writes and then reads) and y are rounded to float.  It calls none of the
// fast kernels and ignores p.scratch.  Slow on purpose; the tests hold
// decoder_step_forward to it.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/bfloat16.h"
#include "kernels/decoder_step.h"

namespace keraslm {
namespace {

// out = (x - mean) / sqrt(var + eps) * gamma (+ beta) over one row of C values.
void layer_norm_row(const std::vector<double>& x, const float* gamma, const float* beta, double eps,
                    std::vector<double>& out) {
  const int64_t C = static_cast<int64_t>(x.size());
  double sum = 0;
  for (int64_t c = 0; c < C; ++c) sum += x[c];
  const double mean = sum / C;
  double sq = 0;
  for (int64_t c = 0; c < C; ++c) sq += (x[c] - mean) * (x[c] - mean);
  const double rstd = 1.0 / std::sqrt(sq / C + eps);
  out.resize(C);
  for (int64_t c = 0; c < C; ++c) out[c] = (x[c] - mean) * rstd * gamma[c] + (beta ? beta[c] : 0.0);
}

// w[i]: the float32 weight, or the bfloat16 one when given.
double weight(const float* w, const uint16_t* w_bf16, int64_t i) { return w_bf16 ? bf16_to_float(w_bf16[i]) : w[i]; }

// out[n] = sum_k x[k] * w[k, n] (+ bias[n]):  x [K], w [K, N] row-major, out [N].
void product_row(const std::vector<double>& x, const float* w, const uint16_t* w_bf16, const float* bias,
                 int64_t N, std::vector<double>& out) {
  const int64_t K = static_cast<int64_t>(x.size());
  out.assign(N, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    double s = bias ? double(bias[n]) : 0.0;
    for (int64_t k = 0; k < K; ++k) s += x[k] * weight(w, w_bf16, k * N + n);
    out[n] = s;
  }
}

double gelu_tanh(double u) {
  const double kPi = 3.14159265358979323846;
  const double kC = std::sqrt(2.0 / kPi);
  return 0.5 * u * (1.0 + std::tanh(kC * (u + 0.044715 * u * u * u)));
}

}  // namespace

void decoder_step_forward_reference(const DecoderStepParams& p) {
  const int64_t B = p.B, S = p.S, H = p.H, Hkv = p.Hkv, D = p.D, F = p.F;
  const int64_t C = H * D;             // model width
  const int64_t G = H / Hkv;           // query heads per kv head
  const int64_t row = Hkv * D;         // one cache row [Hkv, D]
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> x(C), h, qkv, a(C), x1, o, f, m, scores;

  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < C; ++c) x[c] = p.x[b * C + c];  // x [C]

    // h = ln_1(x);  qkv = h @ w_qkv + b_qkv = [q | k | v]   [(H + 2 Hkv) D]
    layer_norm_row(x, p.ln1_gamma, p.ln1_beta, p.eps, h);
    product_row(h, p.w_qkv, p.w_qkv_bf16, p.b_qkv, (H + 2 * Hkv) * D, qkv);
    const double* q = qkv.data();          // [H, D]
    const double* k_new = q + C;           // [Hkv, D]
    const double* v_new = k_new + row;     // [Hkv, D]

    // k_cache[b, index[b]] = k;  v_cache[b, index[b]] = v   (float tensors).
    float* k_cache = p.k_cache + b * S * row;  // [S, Hkv, D]
    float* v_cache = p.v_cache + b * S * row;  // [S, Hkv, D]
    const int64_t at = p.index[b];
    for (int64_t e = 0; e < row; ++e) {
      k_cache[at * row + e] = static_cast<float>(k_new[e]);
      v_cache[at * row + e] = static_cast<float>(v_new[e]);
    }

    // a[h] = sum_j softmax_j(scale * <q[h], k_cache[j, h / G]>) v_cache[j, h / G]
    // over the live keys j < key_lengths[b]; no live key gives a[h] = 0.
    const int64_t live = p.key_lengths[b];
    std::fill(a.begin(), a.end(), 0.0);
    for (int64_t hq = 0; hq < H; ++hq) {
      const int64_t hk = hq / G;
      scores.assign(live, 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < live; ++j) {
        const float* kj = k_cache + j * row + hk * D;  // [D]
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += q[hq * D + d] * kj[d];
        scores[j] = s * scale;
        mx = std::max(mx, scores[j]);
      }
      double total = 0;
      for (int64_t j = 0; j < live; ++j) total += std::exp(scores[j] - mx);
      for (int64_t j = 0; j < live; ++j) {
        const double pj = std::exp(scores[j] - mx) / total;
        const float* vj = v_cache + j * row + hk * D;  // [D]
        for (int64_t d = 0; d < D; ++d) a[hq * D + d] += pj * vj[d];
      }
    }

    // x1 = x + a @ w_o + b_o   [C]
    product_row(a, p.w_o, p.w_o_bf16, p.b_o, C, o);
    x1.resize(C);
    for (int64_t c = 0; c < C; ++c) x1[c] = x[c] + o[c];

    // y = x1 + gelu_tanh(ln_2(x1) @ w_fc + b_fc) @ w_proj + b_proj   [C]
    layer_norm_row(x1, p.ln2_gamma, p.ln2_beta, p.eps, h);
    product_row(h, p.w_fc, p.w_fc_bf16, p.b_fc, F, f);  // [F]
    for (int64_t i = 0; i < F; ++i) f[i] = gelu_tanh(f[i]);
    product_row(f, p.w_proj, p.w_proj_bf16, p.b_proj, C, m);
    for (int64_t c = 0; c < C; ++c) p.y[b * C + c] = static_cast<float>(x1[c] + m[c]);
  }
}

}  // namespace keraslm
