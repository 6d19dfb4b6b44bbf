// CPU kernels of layer_norm.h (compiled once per ISA; see dispatch.cc).  The
// row sums use W-lane vector accumulators (the compiler may not reorder a
// scalar float sum, which would leave it one add per cycle-latency), with the
// row tail in scalars; sums are float32 (a row whose squared deviations
// overflow float32 is redone in double, see row_in_double).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/layer_norm.h"
#include "kernels/simd.h"

namespace keraslm {
namespace KERASLM_ISA {
namespace {

// Row chunks of the backward pass: each chunk owns a partial sum of dgamma /
// dbeta, added up in chunk order at the end.
int64_t chunk_count(int64_t R, const Parallel& par) {
  return std::max<int64_t>(1, std::min<int64_t>(R, 4 * std::max(par.num_threads, 1)));
}

float row_sum(const float* x, int64_t C) {
  vf acc = {};
  int64_t c = 0;
  for (; c + W <= C; c += W) acc += vload(x + c);
  float s = hsum(acc);
  for (; c < C; ++c) s += x[c];
  return s;
}

float row_sq_dev(const float* x, float mean, int64_t C) {
  vf acc = {};
  const vf m = vset1(mean);
  int64_t c = 0;
  for (; c + W <= C; c += W) {
    const vf d = vload(x + c) - m;
    acc += d * d;
  }
  float s = hsum(acc);
  for (; c < C; ++c) s += (x[c] - mean) * (x[c] - mean);
  return s;
}

// One row in double, as layer_norm_forward_reference computes it: for rows
// whose float sum of squared deviations is not finite.  That is either an
// overflow (|x - mean| around 1e19 and beyond, or a float sum of x that
// overflowed), which double holds exactly enough, or a non-finite x, which
// gives NaN as in the reference.  The common case pays one test per row.
void row_in_double(const LayerNormParams& p, int64_t r) {
  const int64_t C = p.C;
  const float* x = p.x + r * C;
  float* y = p.y + r * C;
  double sum = 0;
  for (int64_t c = 0; c < C; ++c) sum += x[c];
  const double mean = sum / C;
  double sq = 0;
  for (int64_t c = 0; c < C; ++c) sq += (x[c] - mean) * (x[c] - mean);
  const double rstd = 1.0 / std::sqrt(sq / C + double(p.epsilon));
  for (int64_t c = 0; c < C; ++c) {
    double v = (x[c] - mean) * rstd * p.gamma[c];
    if (p.beta) v += p.beta[c];
    y[c] = static_cast<float>(v);
  }
  p.mean[r] = static_cast<float>(mean);
  p.rstd[r] = static_cast<float>(rstd);
}

}  // namespace

void layer_norm_forward(const LayerNormParams& p, const Parallel& par) {
  const int64_t C = p.C;
  const float inv_c = C > 0 ? 1.0f / static_cast<float>(C) : 0.0f;
  par(p.R, /*cost_per_unit=*/8 * C, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = p.x + r * C;
      float* y = p.y + r * C;
      const float mean = row_sum(x, C) * inv_c;
      const float sq = row_sq_dev(x, mean, C);
      if (!std::isfinite(sq)) {  // overflow (deviations beyond ~1e19) or non-finite x: see row_in_double
        row_in_double(p, r);
        continue;
      }
      const float rstd = 1.0f / std::sqrt(sq * inv_c + p.epsilon);
      if (p.beta) {
        for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - mean) * rstd * p.gamma[c] + p.beta[c];
      } else {
        for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - mean) * rstd * p.gamma[c];
      }
      p.mean[r] = mean;
      p.rstd[r] = rstd;
    }
  });
}

void layer_norm_backward(const LayerNormGradParams& g, const Parallel& par) {
  const int64_t R = g.R, C = g.C;
  const float inv_c = C > 0 ? 1.0f / static_cast<float>(C) : 0.0f;
  const int64_t chunks = chunk_count(R, par);
  const int64_t rows_per_chunk = (R + chunks - 1) / chunks;
  std::vector<float> partial(static_cast<size_t>(chunks) * 2 * C, 0.0f);  // [chunk][dgamma | dbeta]
  par(chunks, /*cost_per_unit=*/12 * C * rows_per_chunk, [&](int64_t k0, int64_t k1) {
    std::vector<float> gx(C);
    for (int64_t k = k0; k < k1; ++k) {
      float* dgamma = partial.data() + k * 2 * C;
      float* dbeta = dgamma + C;
      for (int64_t r = k * rows_per_chunk; r < std::min(R, (k + 1) * rows_per_chunk); ++r) {
        const float* dy = g.dy + r * C;
        const float* x = g.x + r * C;
        float* dx = g.dx + r * C;
        const float mean = g.mean[r], rstd = g.rstd[r];
        vf acc_g = {}, acc_gx = {};
        const vf vm = vset1(mean), vr = vset1(rstd);
        int64_t c = 0;
        for (; c + W <= C; c += W) {
          const vf d = vload(dy + c), xhat = (vload(x + c) - vm) * vr, gc = d * vload(g.gamma + c);
          vstore(gx.data() + c, xhat);
          acc_g += gc;
          acc_gx += gc * xhat;
          vstore(dgamma + c, vload(dgamma + c) + d * xhat);
          vstore(dbeta + c, vload(dbeta + c) + d);
        }
        float sum_g = hsum(acc_g), sum_gx = hsum(acc_gx);
        for (; c < C; ++c) {
          const float xhat = (x[c] - mean) * rstd;
          const float gc = dy[c] * g.gamma[c];
          gx[c] = xhat;
          sum_g += gc;
          sum_gx += gc * xhat;
          dgamma[c] += dy[c] * xhat;
          dbeta[c] += dy[c];
        }
        const float mean_g = sum_g * inv_c, mean_gx = sum_gx * inv_c;
        for (int64_t c = 0; c < C; ++c) dx[c] = rstd * (dy[c] * g.gamma[c] - mean_g - gx[c] * mean_gx);
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    float sg = 0.0f, sb = 0.0f;
    for (int64_t k = 0; k < chunks; ++k) {
      sg += partial[k * 2 * C + c];
      sb += partial[k * 2 * C + C + c];
    }
    g.dgamma[c] = sg;
    if (g.dbeta) g.dbeta[c] = sb;
  }
}

}  // namespace KERASLM_ISA
}  // namespace keraslm
