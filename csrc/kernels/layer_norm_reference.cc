// The naive layer-norm spec (layer_norm.h): one row at a time, every sum in
// double, floats written at the end.  Slow on purpose; the tests hold the
// fast kernels to it.
#include <cmath>
#include <vector>

#include "kernels/layer_norm.h"

namespace keraslm {

void layer_norm_forward_reference(const LayerNormParams& p) {
  const int64_t R = p.R, C = p.C;
  for (int64_t r = 0; r < R; ++r) {
    const float* x = p.x + r * C;  // [C]
    float* y = p.y + r * C;        // [C]
    // mean = sum(x) / C;  var = sum((x - mean)^2) / C  (biased, two passes).
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += x[c];
    const double mean = sum / C;
    double sq = 0;
    for (int64_t c = 0; c < C; ++c) sq += (x[c] - mean) * (x[c] - mean);
    const double rstd = 1.0 / std::sqrt(sq / C + double(p.epsilon));
    // y = (x - mean) * rstd * gamma + beta.
    for (int64_t c = 0; c < C; ++c) {
      double v = (x[c] - mean) * rstd * p.gamma[c];
      if (p.beta) v += p.beta[c];
      y[c] = static_cast<float>(v);
    }
    p.mean[r] = static_cast<float>(mean);
    p.rstd[r] = static_cast<float>(rstd);
  }
}

void layer_norm_backward_reference(const LayerNormGradParams& g) {
  const int64_t R = g.R, C = g.C;
  // Column sums over rows: dgamma = sum_r dy * xhat, dbeta = sum_r dy   [C].
  std::vector<double> dgamma(C, 0.0), dbeta(C, 0.0), xhat(C), gy(C);
  for (int64_t r = 0; r < R; ++r) {
    const float* dy = g.dy + r * C;  // [C]
    const float* x = g.x + r * C;    // [C]
    float* dx = g.dx + r * C;        // [C]
    // The mean and rstd given by the forward pass (floats) define xhat.
    const double mean = g.mean[r], rstd = g.rstd[r];
    double sum_g = 0, sum_gx = 0;
    for (int64_t c = 0; c < C; ++c) {
      xhat[c] = (x[c] - mean) * rstd;
      gy[c] = double(dy[c]) * g.gamma[c];  // g = dy * gamma
      sum_g += gy[c];
      sum_gx += gy[c] * xhat[c];
      dgamma[c] += double(dy[c]) * xhat[c];
      dbeta[c] += dy[c];
    }
    // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
    const double mean_g = sum_g / C, mean_gx = sum_gx / C;
    for (int64_t c = 0; c < C; ++c) dx[c] = static_cast<float>(rstd * (gy[c] - mean_g - xhat[c] * mean_gx));
  }
  for (int64_t c = 0; c < C; ++c) {
    g.dgamma[c] = static_cast<float>(dgamma[c]);
    if (g.dbeta) g.dbeta[c] = static_cast<float>(dbeta[c]);
  }
}

}  // namespace keraslm
