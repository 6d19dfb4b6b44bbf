// Standalone kernel tests: every fast kernel against the reference on random
// shapes (no Python, no TF).  Built with -DKERASLM_BUILD_TESTS=ON, and run
// under AddressSanitizer + UBSan with -DKERASLM_SANITIZE=ON.
//
// Usage: keraslm_kernel_tests [iterations] [seed]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/bfloat16.h"
#include "kernels/decoder_step.h"
#include "kernels/layer_norm.h"
#include "kernels/linear.h"
#include "kernels/sampling.h"
#include "kernels/thread_pool.h"

using namespace keraslm;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  }
}

// Largest |a - b| / (atol + rtol * |b|) over both arrays; -inf pairs match.
double worst(const std::vector<float>& a, const std::vector<float>& b, double atol, double rtol) {
  double w = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(a[i]) && a[i] == b[i]) continue;
    if (!std::isfinite(a[i])) return 1e30;
    w = std::max(w, std::fabs(double(a[i]) - b[i]) / (atol + rtol * std::fabs(double(b[i]))));
  }
  return w;
}

struct AttnCase {
  int64_t B, Tq, Tk, H, Hkv, D;
  bool causal, lengths;
};

std::string describe(const AttnCase& c) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "B=%ld Tq=%ld Tk=%ld H=%ld Hkv=%ld D=%ld causal=%d lengths=%d", (long)c.B,
                (long)c.Tq, (long)c.Tk, (long)c.H, (long)c.Hkv, (long)c.D, c.causal, c.lengths);
  return buf;
}

void attention_case(const AttnCase& c, std::mt19937& rng, const Parallel& par) {
  std::normal_distribution<float> nd(0.f, 1.f);
  auto randn = [&](int64_t n) {
    std::vector<float> x(n);
    for (auto& v : x) v = nd(rng);
    return x;
  };
  auto q = randn(c.B * c.Tq * c.H * c.D), k = randn(c.B * c.Tk * c.Hkv * c.D),
       v = randn(c.B * c.Tk * c.Hkv * c.D), dout = randn(c.B * c.Tq * c.H * c.D);
  std::vector<int32_t> lens(c.B);
  for (auto& l : lens) l = std::uniform_int_distribution<int32_t>(0, int32_t(c.Tk))(rng);
  if (c.B > 0) lens[0] = int32_t(c.Tk);

  AttentionParams p;
  p.B = c.B; p.Tq = c.Tq; p.Tk = c.Tk; p.H = c.H; p.Hkv = c.Hkv; p.D = c.D;
  p.causal = c.causal;
  p.scale = 1.f / std::sqrt(float(c.D));
  p.key_lengths = c.lengths ? lens.data() : nullptr;
  p.q = q.data(); p.q_stride = dense_strides(c.Tq, c.H, c.D);
  p.k = k.data(); p.k_stride = dense_strides(c.Tk, c.Hkv, c.D);
  p.v = v.data(); p.v_stride = dense_strides(c.Tk, c.Hkv, c.D);
  p.out_stride = dense_strides(c.Tq, c.H, c.D);

  std::vector<float> out_ref(q.size()), lse_ref(c.B * c.H * c.Tq), out(q.size(), NAN), lse(lse_ref.size(), NAN);
  AttentionParams pr = p;
  pr.out = out_ref.data(); pr.lse = lse_ref.data();
  attention_forward_reference(pr);
  AttentionParams pf = p;
  pf.out = out.data(); pf.lse = lse.data();
  attention_forward(pf, par);
  check(worst(out, out_ref, 2e-5, 2e-4) <= 1, "forward out " + describe(c));
  check(worst(lse, lse_ref, 2e-5, 2e-5) <= 1, "forward lse " + describe(c));

  std::vector<float> dq_ref(q.size()), dk_ref(k.size()), dv_ref(v.size());
  std::vector<float> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN);
  AttentionGradParams g;
  g.fwd = pr;
  g.dout = dout.data(); g.dout_stride = p.out_stride;
  g.dq_stride = p.q_stride; g.dk_stride = p.k_stride; g.dv_stride = p.v_stride;
  AttentionGradParams gr = g;
  gr.dq = dq_ref.data(); gr.dk = dk_ref.data(); gr.dv = dv_ref.data();
  attention_backward_reference(gr);
  AttentionGradParams gf = g;
  gf.dq = dq.data(); gf.dk = dk.data(); gf.dv = dv.data();
  attention_backward(gf, par);
  check(worst(dq, dq_ref, 1e-4, 1e-3) <= 1, "backward dq " + describe(c));
  check(worst(dk, dk_ref, 1e-4, 1e-3) <= 1, "backward dk " + describe(c));
  check(worst(dv, dv_ref, 1e-4, 1e-3) <= 1, "backward dv " + describe(c));
}

// Worst error of the entries that are not NaN in either array, or 1e30 when
// `ref` is NaN where `a` is not, or (exact_nans) the NaNs differ at all.
double worst_nan_pattern(const std::vector<float>& a, const std::vector<float>& ref, double atol, double rtol,
                         bool exact_nans = true) {
  std::vector<float> a2(a), b2(ref);
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(ref[i]) && !std::isnan(a[i])) return 1e30;
    if (std::isnan(a[i]) && !std::isnan(ref[i]) && exact_nans) return 1e30;
    if (std::isnan(a[i]) || std::isnan(ref[i])) a2[i] = b2[i] = 0.f;
  }
  return worst(a2, b2, atol, rtol);
}

// NaN in, NaN out, as in the reference: a NaN query row, and a NaN key that
// only some rows see (causal), make exactly those rows (and their gradients)
// NaN; NaN keys and values past the key lengths must not leak.
void attention_nan_case(const AttnCase& c, std::mt19937& rng, const Parallel& par) {
  std::normal_distribution<float> nd(0.f, 1.f);
  auto randn = [&](int64_t n) {
    std::vector<float> x(n);
    for (auto& v : x) v = nd(rng);
    return x;
  };
  auto q = randn(c.B * c.Tq * c.H * c.D), k = randn(c.B * c.Tk * c.Hkv * c.D),
       v = randn(c.B * c.Tk * c.Hkv * c.D), dout = randn(c.B * c.Tq * c.H * c.D);
  std::vector<int32_t> lens(c.B, int32_t(c.Tk));
  if (c.lengths) lens[c.B - 1] = int32_t(c.Tk / 2);
  const int64_t kd = c.Hkv * c.D;
  q[(0 * c.Tq + c.Tq / 2) * c.H * c.D + 1 % c.D] = NAN;         // q row (b 0, i Tq/2, h 0)
  k[((c.B - 1) * c.Tk + c.Tk / 3) * kd + c.D - 1] = NAN;         // key Tk/3 of the last batch, kv head 0
  for (int64_t b = 0; b < c.B; ++b)                              // past the key lengths: never read
    for (int64_t j = lens[b]; j < c.Tk; ++j)
      for (int64_t i = 0; i < kd; ++i) k[(b * c.Tk + j) * kd + i] = v[(b * c.Tk + j) * kd + i] = NAN;

  AttentionParams p;
  p.B = c.B; p.Tq = c.Tq; p.Tk = c.Tk; p.H = c.H; p.Hkv = c.Hkv; p.D = c.D;
  p.causal = c.causal;
  p.scale = 1.f / std::sqrt(float(c.D));
  p.key_lengths = c.lengths ? lens.data() : nullptr;
  p.q = q.data(); p.q_stride = dense_strides(c.Tq, c.H, c.D);
  p.k = k.data(); p.k_stride = dense_strides(c.Tk, c.Hkv, c.D);
  p.v = v.data(); p.v_stride = dense_strides(c.Tk, c.Hkv, c.D);
  p.out_stride = dense_strides(c.Tq, c.H, c.D);
  std::vector<float> out_ref(q.size()), lse_ref(c.B * c.H * c.Tq), out(q.size(), 0.f), lse(lse_ref.size(), 0.f);
  AttentionParams pr = p, pf = p;
  pr.out = out_ref.data(); pr.lse = lse_ref.data();
  pf.out = out.data(); pf.lse = lse.data();
  attention_forward_reference(pr);
  attention_forward(pf, par);
  int64_t nan_rows = 0, finite_rows = 0;
  for (float x : lse_ref) (std::isnan(x) ? nan_rows : finite_rows) += 1;
  check(nan_rows > 0 && finite_rows > 0, "NaN case exercises both kinds of rows " + describe(c));
  check(worst_nan_pattern(out, out_ref, 2e-5, 2e-4) <= 1, "NaN forward out " + describe(c));
  check(worst_nan_pattern(lse, lse_ref, 2e-5, 2e-5) <= 1, "NaN forward lse " + describe(c));

  std::vector<float> dq_ref(q.size()), dk_ref(k.size()), dv_ref(v.size());
  std::vector<float> dq(q.size(), 0.f), dk(k.size(), 0.f), dv(v.size(), 0.f);
  AttentionGradParams g;
  g.dout = dout.data(); g.dout_stride = p.out_stride;
  g.dq_stride = p.q_stride; g.dk_stride = p.k_stride; g.dv_stride = p.v_stride;
  AttentionGradParams gr = g, gf = g;
  gr.fwd = pr; gr.dq = dq_ref.data(); gr.dk = dk_ref.data(); gr.dv = dv_ref.data();
  gf.fwd = pf; gf.dq = dq.data(); gf.dk = dk.data(); gf.dv = dv.data();
  attention_backward_reference(gr);
  attention_backward(gf, par);
  // Every gradient the reference makes NaN is NaN.  The tiled products may
  // also spread NaN to pairs hidden by the causal mask (0 * NaN, as autodiff
  // of the pure-TF reference does); keys past the key lengths stay exact.
  check(worst_nan_pattern(dq, dq_ref, 1e-4, 1e-3, false) <= 1, "NaN backward dq " + describe(c));
  check(worst_nan_pattern(dk, dk_ref, 1e-4, 1e-3, false) <= 1, "NaN backward dk " + describe(c));
  check(worst_nan_pattern(dv, dv_ref, 1e-4, 1e-3, false) <= 1, "NaN backward dv " + describe(c));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t j = lens[b]; j < c.Tk; ++j)
      for (int64_t i = 0; i < kd; ++i)
        check(dk[(b * c.Tk + j) * kd + i] == 0.f && dv[(b * c.Tk + j) * kd + i] == 0.f,
              "NaN backward: zero gradient past the key length " + describe(c));
}

AttnCase random_attention_case(std::mt19937& rng) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int64_t ds[] = {1, 3, 8, 16, 33, 64, 80, 128};
  AttnCase c;
  c.B = pick(1, 3);
  c.Hkv = pick(1, 2);
  c.H = c.Hkv * pick(1, 3);
  c.D = ds[pick(0, 7)];
  c.Tq = pick(0, 3) == 0 ? pick(1, 4) : pick(1, 150);
  c.Tk = pick(0, 3) == 0 ? c.Tq : pick(1, 200);
  c.causal = pick(0, 1);
  c.lengths = pick(0, 1);
  return c;
}

// Sampling: the fast kernel against the reference on random rows.
void sampling_case(std::mt19937& rng, const Parallel& par) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  std::uniform_real_distribution<float> u01(0.f, 1.f);
  std::normal_distribution<float> nd(0.f, 2.f);
  SamplingParams p;
  p.B = pick(0, 5);
  p.V = pick(0, 2) == 0 ? pick(1, 20) : pick(20, 3000);
  p.L = pick(0, 6);
  std::vector<float> logits(p.B * p.V), coins(p.B), temp(p.B), top_p(p.B), min_p(p.B), pen(p.B);
  std::vector<int32_t> top_k(p.B), prev(p.B * p.L);
  for (auto& x : logits) x = pick(0, 30) == 0 ? -INFINITY : nd(rng);
  for (int64_t b = 0; b < p.B; ++b) {
    logits[b * p.V] = 0.5f;  // at least one finite logit per row
    coins[b] = u01(rng) * 0.999f;
    temp[b] = pick(0, 4) == 0 ? 0.f : 0.2f + 2 * u01(rng);
    top_k[b] = pick(0, 2) == 0 ? 0 : int32_t(pick(1, p.V + 2));
    top_p[b] = pick(0, 2) == 0 ? 1.f : 0.05f + 0.9f * u01(rng);
    min_p[b] = pick(0, 2) == 0 ? 0.f : 0.3f * u01(rng);
    pen[b] = pick(0, 2) == 0 ? 1.f : 0.5f + 1.5f * u01(rng);
  }
  for (auto& x : prev) x = pick(0, 5) == 0 ? -1 : int32_t(pick(0, p.V - 1));
  p.logits = logits.data(); p.logits_stride = p.V;
  p.coins = coins.data();
  p.temperature = temp.data(); p.temperature_stride = 1;
  p.top_k = top_k.data(); p.top_k_stride = 1;
  p.top_p = top_p.data(); p.top_p_stride = 1;
  p.min_p = min_p.data(); p.min_p_stride = 1;
  p.repetition_penalty = pen.data(); p.repetition_penalty_stride = 1;
  p.previous_ids = prev.data();
  p.pad_id = -1;
  std::vector<int32_t> ids_ref(p.B), ids(p.B);
  std::vector<float> lp_ref(p.B), lp(p.B);
  SamplingParams pr = p, pf = p;
  pr.ids = ids_ref.data(); pr.logprobs = lp_ref.data();
  pf.ids = ids.data(); pf.logprobs = lp.data();
  sample_reference(pr);
  sample(pf, par);
  for (int64_t b = 0; b < p.B; ++b) {
    // Ids may differ only when the coin sits on a CDF boundary (float
    // rounding); then both picks are adjacent kept tokens with close logprobs.
    if (ids[b] != ids_ref[b]) {
      check(std::fabs(lp[b] - lp_ref[b]) < 1e-3 || std::fabs(coins[b]) < 1e-4,
            "sample ids differ away from a boundary (V=" + std::to_string(p.V) + ")");
    } else {
      check(std::fabs(lp[b] - lp_ref[b]) <= 1e-4 + 1e-4 * std::fabs(lp_ref[b]),
            "sample logprob (V=" + std::to_string(p.V) + ")");
    }
  }
}

// ---- Tolerances of the float32 kernels against the double references.
// kU is float32's unit roundoff.  Summing n terms in float32 in any order
// errs by at most about n * kU * sum|term| (the classic gamma_n bound), so the
// bounds below are worst cases of float32 accumulation, computed per element
// from the data; a correct kernel stays well inside them while a wiring bug
// (a dropped term, a wrong index, a wrong constant) exceeds them by orders of
// magnitude.  Each bound carries a factor 2 for the first-order terms left out.
constexpr double kU = 5.9604644775390625e-8;  // 2^-24

// Largest |a - ref| / tol; 0 where they are equal, 1e30 for a non-finite a.
double worst_bounded(const std::vector<float>& a, const std::vector<float>& ref, const std::vector<double>& tol) {
  double w = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == ref[i]) continue;
    if (!std::isfinite(a[i])) return 1e30;
    w = std::max(w, std::fabs(double(a[i]) - ref[i]) / tol[i]);
  }
  return w;
}

// The bfloat16 bits of each value (round to nearest even), and the floats they stand for (in place).
std::vector<uint16_t> to_bf16(std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = round_to_bf16(v[i]);
    uint32_t u;
    std::memcpy(&u, &v[i], sizeof(u));
    bits[i] = uint16_t(u >> 16);
  }
  return bits;
}

std::vector<float> randn_vec(std::mt19937& rng, int64_t n, float scale = 1.f, float offset = 0.f) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(n);
  for (auto& v : x) v = offset + scale * nd(rng);
  return x;
}

// Layer norm: forward (y, mean, rstd) and backward (dx, dgamma, dbeta) against
// the reference.  Each row gets its own scale and offset (row_scale > 0 fixes
// them: the huge / tiny rows of the edge cases).
void layer_norm_case(int64_t R, int64_t C, float eps, bool beta_on, bool dbeta_on, float row_scale,
                     float row_offset, std::mt19937& rng, const Parallel& par) {
  std::uniform_real_distribution<float> u01(0.f, 1.f);
  std::vector<float> x(R * C);
  for (int64_t r = 0; r < R; ++r) {
    const float scale = row_scale > 0 ? row_scale : std::pow(10.f, -2.f + 4.f * u01(rng));
    const float offset = row_scale > 0 ? row_offset : scale * (u01(rng) < 0.2f ? 100.f : 3.f) * (2 * u01(rng) - 1);
    auto row = randn_vec(rng, C, scale, offset);
    std::copy(row.begin(), row.end(), x.begin() + r * C);
  }
  auto gamma = randn_vec(rng, C, 0.5f, 1.f), beta = randn_vec(rng, C, 0.5f), dy = randn_vec(rng, R * C);
  char what[160];
  std::snprintf(what, sizeof what, "R=%ld C=%ld eps=%g beta=%d dbeta=%d scale=%g offset=%g", (long)R, (long)C,
                eps, beta_on, dbeta_on, row_scale, row_offset);

  LayerNormParams p;
  p.R = R; p.C = C; p.epsilon = eps;
  p.x = x.data(); p.gamma = gamma.data(); p.beta = beta_on ? beta.data() : nullptr;
  std::vector<float> y_ref(R * C), mean_ref(R), rstd_ref(R), y(R * C, NAN), mean(R, NAN), rstd(R, NAN);
  LayerNormParams pr = p, pf = p;
  pr.y = y_ref.data(); pr.mean = mean_ref.data(); pr.rstd = rstd_ref.data();
  pf.y = y.data(); pf.mean = mean.data(); pf.rstd = rstd.data();
  layer_norm_forward_reference(pr);
  layer_norm_forward(pf, par);

  // Forward: float sums of C terms err by (C + 3) kU * mean|x| in the mean
  // (dmu), which enters y directly and rstd to second order; the variance
  // sum errs by about C kU relative, rstd by half that.
  std::vector<double> tol_y(R * C), tol_mean(R), tol_rstd(R);
  for (int64_t r = 0; r < R; ++r) {
    const double mu = mean_ref[r], rs = rstd_ref[r];
    double m1 = 0;
    for (int64_t c = 0; c < C; ++c) m1 += std::fabs(x[r * C + c]);
    m1 /= C;
    const double dmu = (C + 3) * kU * m1;
    const double rel_r = (C / 2.0 + 8) * kU + 0.5 * dmu * dmu * rs * rs;
    tol_mean[r] = 2 * dmu + 1e-300;
    tol_rstd[r] = 2 * (rel_r + kU) * rs;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const double dev = std::fabs(x[i] - mu), b = beta_on ? std::fabs(beta[c]) : 0.0;
      tol_y[i] = 2 * (std::fabs(gamma[c]) * rs * (dmu + dev * (rel_r + 4 * kU)) + 2 * kU * (std::fabs(y_ref[i]) + b)) +
                 1e-300;
    }
  }
  check(worst_bounded(y, y_ref, tol_y) <= 1, "layer_norm forward y " + std::string(what));
  check(worst_bounded(mean, mean_ref, tol_mean) <= 1, "layer_norm forward mean " + std::string(what));
  check(worst_bounded(rstd, rstd_ref, tol_rstd) <= 1, "layer_norm forward rstd " + std::string(what));

  // Backward from the reference's mean and rstd (both sides get the same).
  LayerNormGradParams g;
  g.R = R; g.C = C; g.dy = dy.data(); g.x = x.data(); g.gamma = gamma.data();
  g.mean = mean_ref.data(); g.rstd = rstd_ref.data();
  std::vector<float> dx_ref(R * C), dg_ref(C), db_ref(C), dx(R * C, NAN), dg(C, NAN), db(C, NAN);
  LayerNormGradParams gr = g, gf = g;
  gr.dx = dx_ref.data(); gr.dgamma = dg_ref.data(); gr.dbeta = dbeta_on ? db_ref.data() : nullptr;
  gf.dx = dx.data(); gf.dgamma = dg.data(); gf.dbeta = dbeta_on ? db.data() : nullptr;
  layer_norm_backward_reference(gr);
  layer_norm_backward(gf, par);

  // dx: the row sums of g = dy * gamma and g * xhat (C terms each);
  // dgamma, dbeta: column sums over R rows.
  std::vector<double> tol_dx(R * C), tol_dg(C, 1e-300), tol_db(C, 1e-300);
  for (int64_t r = 0; r < R; ++r) {
    const double mu = mean_ref[r], rs = rstd_ref[r];
    double mg = 0, mgx = 0;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const double xhat = (x[i] - mu) * rs, gc = double(dy[i]) * gamma[c];
      mg += std::fabs(gc) / C;
      mgx += std::fabs(gc * xhat) / C;
      tol_dg[c] += 2 * (R + 6) * kU * std::fabs(dy[i] * xhat);
      tol_db[c] += 2 * (R + 2) * kU * std::fabs(dy[i]);
    }
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const double xhat = (x[i] - mu) * rs, gc = double(dy[i]) * gamma[c];
      tol_dx[i] = 2 * (C + 16) * kU * rs * (std::fabs(gc) + mg + std::fabs(xhat) * mgx) +
                  2 * kU * std::fabs(dx_ref[i]) + 1e-300;
    }
  }
  check(worst_bounded(dx, dx_ref, tol_dx) <= 1, "layer_norm backward dx " + std::string(what));
  check(worst_bounded(dg, dg_ref, tol_dg) <= 1, "layer_norm backward dgamma " + std::string(what));
  if (dbeta_on) check(worst_bounded(db, db_ref, tol_db) <= 1, "layer_norm backward dbeta " + std::string(what));
}

void random_layer_norm_case(std::mt19937& rng, const Parallel& par) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const float eps[] = {1e-5f, 1e-3f, 1e-12f};
  layer_norm_case(pick(0, 3) == 0 ? pick(0, 2) : pick(0, 40), pick(0, 3) == 0 ? pick(1, 17) : pick(1, 300),
                  eps[pick(0, 2)], pick(0, 1), pick(0, 1), 0.f, 0.f, rng, par);
}

// Linear: linear_forward, and linear_forward_columns over a random partition
// of the columns with one piece left out (it must stay untouched).
// With bf16, the kernels read bfloat16 weights (w_bf16; the float w then holds the same values) and
// linear_forward, which takes float32 weights only, is not run.  linear_partial_rows is checked over
// a random split of the rows of w, its partials added in order.
void linear_case(int64_t M, int64_t K, int64_t N, bool bias_on, std::mt19937& rng, const Parallel& par,
                 bool bf16 = false) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  auto x = randn_vec(rng, M * K), w = randn_vec(rng, K * N), bias = randn_vec(rng, N);
  const std::vector<uint16_t> w16 = bf16 ? to_bf16(w) : std::vector<uint16_t>();
  char what[120];
  std::snprintf(what, sizeof what, "M=%ld K=%ld N=%ld bias=%d bf16=%d", (long)M, (long)K, (long)N, bias_on, bf16);
  LinearParams p;
  p.M = M; p.K = K; p.N = N;
  p.x = x.data(); p.w = w.data(); p.bias = bias_on ? bias.data() : nullptr;
  std::vector<float> ref(M * N), out(M * N, NAN);
  LinearParams pr = p, pf = p;
  if (bf16) {
    pr.w = pf.w = nullptr;
    pr.w_bf16 = pf.w_bf16 = w16.data();
  }
  pr.out = ref.data();
  pf.out = out.data();
  linear_forward_reference(pr);
  LinearParams p32 = p;  // float32 weights holding the same values
  p32.out = out.data();
  linear_forward(p32, par);

  // A float32 dot product of K terms plus the bias: (K + 1) roundings of at
  // most kU * sum|terms| each; the reference's own rounding adds kU |ref|.
  std::vector<double> tol(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias_on ? std::fabs(bias[n]) : 0.0;
      for (int64_t k = 0; k < K; ++k) s += std::fabs(double(x[m * K + k]) * w[k * N + n]);
      tol[m * N + n] = 2 * ((K + 2) * kU * s + kU * std::fabs(ref[m * N + n])) + 1e-300;
    }
  check(worst_bounded(out, ref, tol) <= 1, "linear_forward " + std::string(what));

  // Columns: cut [0, N) at random points; every piece but `skip` is computed.
  std::vector<int64_t> cuts = {0, N};
  for (int i = pick(0, 4); i > 0; --i) cuts.push_back(pick(0, N));
  std::sort(cuts.begin(), cuts.end());
  const size_t skip = size_t(pick(0, int64_t(cuts.size()) - 2));
  const float sentinel = 12345.f;
  std::vector<float> cols(M * N, sentinel), expect = ref;
  pf.out = cols.data();
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    if (i == skip) {
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = cuts[i]; n < cuts[i + 1]; ++n) expect[m * N + n] = sentinel;
    } else {
      linear_forward_columns(pf, cuts[i], cuts[i + 1]);
    }
  }
  check(worst_bounded(cols, expect, tol) <= 1, "linear_forward_columns " + std::string(what));

  // transpose_w: the same product with w given as [N, K] (float32, and bfloat16 in bf16 cases).
  std::vector<float> wt(K * N);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) wt[n * K + k] = w[k * N + n];
  std::vector<uint16_t> wt16 = bf16 ? to_bf16(wt) : std::vector<uint16_t>();  // (exact: w is already rounded)
  LinearParams pt = p;
  pt.transpose_w = true;
  pt.w = bf16 ? nullptr : wt.data();
  pt.w_bf16 = bf16 ? wt16.data() : nullptr;
  std::vector<float> trans(M * N, NAN);
  pt.out = trans.data();
  linear_forward(pt, par);
  check(worst_bounded(trans, ref, tol) <= 1, "linear_forward transpose_w " + std::string(what));

  // Row blocks: cut [0, K) at random points, add the blocks' partials (and the bias) in order.
  std::vector<int64_t> rows = {0, K};
  for (int i = pick(0, 4); i > 0; --i) rows.push_back(pick(0, K));
  std::sort(rows.begin(), rows.end());
  std::vector<float> total(M * N, 0.f), part(M * N, NAN);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) total[m * N + n] = bias_on ? bias[n] : 0.f;
  for (size_t i = 0; i + 1 < rows.size(); ++i) {
    std::fill(part.begin(), part.end(), NAN);
    linear_partial_rows(pf, rows[i], rows[i + 1], part.data());
    for (int64_t e = 0; e < M * N; ++e) total[e] += part[e];
  }
  check(worst_bounded(total, ref, tol) <= 1, "linear_partial_rows " + std::string(what));
}

void random_linear_case(std::mt19937& rng, const Parallel& par) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  // A third of the cases are big enough (M > 6, K * N >= 2^16) for the threaded column split.
  const bool big = pick(0, 2) == 0;
  linear_case(big ? pick(7, 9) : pick(1, 9), big ? pick(220, 300) : pick(1, 300), big ? pick(220, 300) : pick(1, 300),
              pick(0, 1), rng, par, pick(0, 1));
}

// Decoder step: y and the whole caches against the reference.  `index` and
// `lens` give index and key_lengths per row (empty: random, index < S and
// key_lengths in [index + 1, S]).
struct StepCase {
  int64_t B, S, H, Hkv, D, F;
  bool biases;
  std::vector<int32_t> index, lens;
  bool bf16 = false;  // the four matrices as bfloat16 (for the kernel and the reference alike)
};

void decoder_step_case(const StepCase& c, std::mt19937& rng, const Parallel& par) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int64_t B = c.B, S = c.S, C = c.H * c.D, Q = (c.H + 2 * c.Hkv) * c.D, F = c.F;
  std::vector<int32_t> index = c.index, lens = c.lens;
  if (index.empty())
    for (int64_t b = 0; b < B; ++b) {
      index.push_back(int32_t(pick(0, S - 1)));
      lens.push_back(int32_t(pick(index.back() + 1, S)));
    }
  char what[200];
  std::snprintf(what, sizeof what, "B=%ld S=%ld H=%ld Hkv=%ld D=%ld F=%ld biases=%d bf16=%d index[0]=%d lens[0]=%d",
                (long)B, (long)S, (long)c.H, (long)c.Hkv, (long)c.D, (long)F, c.biases, c.bf16, index[0], lens[0]);
  // Weights scaled by 1 / sqrt(fan-in), so every stage is of order 1.
  auto x = randn_vec(rng, B * C), k_cache = randn_vec(rng, B * S * c.Hkv * c.D),
       v_cache = randn_vec(rng, B * S * c.Hkv * c.D);
  auto ln1_g = randn_vec(rng, C, 0.2f, 1.f), ln1_b = randn_vec(rng, C, 0.2f), ln2_g = randn_vec(rng, C, 0.2f, 1.f),
       ln2_b = randn_vec(rng, C, 0.2f);
  auto w_qkv = randn_vec(rng, C * Q, 1.f / std::sqrt(float(C))), b_qkv = randn_vec(rng, Q, 0.2f);
  auto w_o = randn_vec(rng, C * C, 1.f / std::sqrt(float(C))), b_o = randn_vec(rng, C, 0.2f);
  auto w_fc = randn_vec(rng, C * F, 1.f / std::sqrt(float(C))), b_fc = randn_vec(rng, F, 0.2f);
  auto w_proj = randn_vec(rng, F * C, 1.f / std::sqrt(float(F))), b_proj = randn_vec(rng, C, 0.2f);
  auto maybe = [&](const std::vector<float>& v) { return c.biases ? v.data() : nullptr; };
  std::vector<uint16_t> qkv16, o16, fc16, proj16;
  if (c.bf16) {  // (the float weights then hold the bfloat16 values, for the error bounds below)
    qkv16 = to_bf16(w_qkv); o16 = to_bf16(w_o); fc16 = to_bf16(w_fc); proj16 = to_bf16(w_proj);
  }

  DecoderStepParams p;
  p.B = B; p.S = S; p.H = c.H; p.Hkv = c.Hkv; p.D = c.D; p.F = F;
  p.x = x.data(); p.index = index.data(); p.key_lengths = lens.data();
  p.ln1_gamma = ln1_g.data(); p.ln1_beta = maybe(ln1_b);
  p.w_qkv = w_qkv.data(); p.b_qkv = maybe(b_qkv);
  p.w_o = w_o.data(); p.b_o = maybe(b_o);
  p.ln2_gamma = ln2_g.data(); p.ln2_beta = maybe(ln2_b);
  p.w_fc = w_fc.data(); p.b_fc = maybe(b_fc);
  p.w_proj = w_proj.data(); p.b_proj = maybe(b_proj);
  if (c.bf16) {
    p.w_qkv = p.w_o = p.w_fc = p.w_proj = nullptr;
    p.w_qkv_bf16 = qkv16.data(); p.w_o_bf16 = o16.data(); p.w_fc_bf16 = fc16.data(); p.w_proj_bf16 = proj16.data();
  }
  std::vector<float> k_ref = k_cache, v_ref = v_cache, y_ref(B * C), y(B * C, NAN);
  std::vector<float> scratch(decoder_step_scratch_floats(p), NAN);
  DecoderStepParams pr = p, pf = p;
  pr.k_cache = k_ref.data(); pr.v_cache = v_ref.data(); pr.y = y_ref.data();
  pf.k_cache = k_cache.data(); pf.v_cache = v_cache.data(); pf.y = y.data(); pf.scratch = scratch.data();
  decoder_step_forward_reference(pr);
  decoder_step_forward(pf, par);

  // Error bounds.  The step chains float32 sums of C (ln_1, qkv, w_o, ln_2,
  // w_fc), the live keys (attention) and F (w_proj) terms, each erring by
  // about n kU times its terms' magnitude.  Every stage is of order 1 here
  // (fan-in-scaled weights, LayerNorm outputs) or of the residual's size, so
  // the terms are bounded by the row's magnitude max(|x|, |x1|, |y|, 1) (y
  // itself may cancel to near 0) -- except that a LayerNorm turns the float
  // mean's error, C kU mean|x|, into C kU mean|x| rstd: a row of nearly equal
  // values (C = 2, say) amplifies it up to 1 / sqrt(eps).  So with
  // kappa = mean|x| * rstd of either LayerNorm's input,
  //   |dy| <= 2 (2 C + F + live + 16) kU max(|x|, |x1|, |y|, 1) (1 + kappa).
  // x1 comes from a second reference call with the MLP off (w_proj = 0).
  // The written cache rows are one product of C terms h_c w[c, n] after
  // h = ln_1(x), whose error is about C kU |gamma| (kappa_1 + |xhat|):
  //   |dk_n| <= 2 (2 C + 16) kU (sum_c (|gamma_c| (kappa_1 + |xhat_c|) + |beta_c|) |w[c, n]| + |bias_n|).
  // Every other cache row must be untouched, bit for bit.
  std::vector<float> x1(B * C), k_x1 = k_ref, v_x1 = v_ref, no_proj(F * C, 0.f);
  DecoderStepParams p1 = pr;
  p1.w_proj = no_proj.data(); p1.w_proj_bf16 = nullptr; p1.b_proj = nullptr;
  p1.k_cache = k_x1.data(); p1.v_cache = v_x1.data(); p1.y = x1.data();
  decoder_step_forward_reference(p1);
  // kappa of a LayerNorm over the rows of v [B, C], from the reference's rstd.
  auto kappa = [&](const std::vector<float>& v, const float* gamma) {
    std::vector<float> out(B * C), mean(B), rstd(B);
    std::vector<double> k(B);
    LayerNormParams ln;
    ln.R = B; ln.C = C; ln.epsilon = p.eps; ln.x = v.data(); ln.gamma = gamma;
    ln.y = out.data(); ln.mean = mean.data(); ln.rstd = rstd.data();
    layer_norm_forward_reference(ln);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i < C; ++i) k[b] += std::fabs(v[b * C + i]) / C;
      k[b] *= rstd[b];
    }
    return std::make_pair(k, std::vector<double>(rstd.begin(), rstd.end()));
  };
  const auto [kappa1, rstd1] = kappa(x, ln1_g.data());
  const auto kappa2 = kappa(x1, ln2_g.data()).first;
  std::vector<double> tol_y(B * C), tol_k(k_ref.size(), 1e-300), tol_v(k_ref.size(), 1e-300);
  const int64_t row = c.Hkv * c.D;
  for (int64_t b = 0; b < B; ++b) {
    double mag = 1, mean = 0;
    for (int64_t i = 0; i < C; ++i) {
      mag = std::max({mag, std::fabs(double(y_ref[b * C + i])), std::fabs(double(x[b * C + i])),
                      std::fabs(double(x1[b * C + i]))});
      mean += double(x[b * C + i]) / C;
    }
    const double bound = 2 * (2 * C + F + lens[b] + 16) * kU * mag * (1 + std::max(kappa1[b], kappa2[b]));
    for (int64_t i = 0; i < C; ++i) tol_y[b * C + i] = bound;
    for (int64_t e = 0; e < row; ++e) {
      double mk = p.b_qkv ? std::fabs(b_qkv[C + e]) : 0.0, mv = p.b_qkv ? std::fabs(b_qkv[C + row + e]) : 0.0;
      for (int64_t i = 0; i < C; ++i) {
        const double xhat = (x[b * C + i] - mean) * rstd1[b];
        const double hmag =
            std::fabs(ln1_g[i]) * (kappa1[b] + std::fabs(xhat)) + (p.ln1_beta ? std::fabs(ln1_b[i]) : 0.0);
        mk += hmag * std::fabs(w_qkv[i * Q + C + e]);
        mv += hmag * std::fabs(w_qkv[i * Q + C + row + e]);
      }
      tol_k[(b * S + index[b]) * row + e] = 2 * (2 * C + 16) * kU * mk + 1e-300;
      tol_v[(b * S + index[b]) * row + e] = 2 * (2 * C + 16) * kU * mv + 1e-300;
    }
  }
  check(worst_bounded(y, y_ref, tol_y) <= 1, "decoder_step y " + std::string(what));
  check(worst_bounded(k_cache, k_ref, tol_k) <= 1, "decoder_step k_cache " + std::string(what));
  check(worst_bounded(v_cache, v_ref, tol_v) <= 1, "decoder_step v_cache " + std::string(what));
}

StepCase random_step_case(std::mt19937& rng) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int64_t ds[] = {1, 8, 33, 64};
  StepCase c;
  c.B = pick(1, 3);
  c.Hkv = pick(1, 2);
  c.H = c.Hkv * pick(1, 3);  // GQA groups of 1 to 3 query heads
  c.D = ds[pick(0, 3)];
  c.S = pick(1, 70);
  c.F = pick(1, 4 * c.H * c.D);
  c.biases = pick(0, 1);
  c.B = pick(0, 2) ? c.B : pick(5, 7);  // a third with more rows than the row-split products take
  c.bf16 = pick(0, 1);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 60;
  const unsigned seed = argc > 2 ? unsigned(std::atoi(argv[2])) : 1234u;
  std::mt19937 rng(seed);
  const Parallel pool = pool_parallel();
  std::printf("kernel tests: isa=%s threads=%d iterations=%d seed=%u\n", cpu_isa(), pool.num_threads, iters,
              seed);
  // Fixed edge cases first: decode, Tq > Tk causal, empty keys, one key.
  const AttnCase fixed[] = {
      {1, 1, 1, 1, 1, 8, true, false},    {2, 1, 300, 4, 2, 64, true, true},
      {1, 5, 3, 2, 1, 16, true, false},   {1, 70, 70, 2, 2, 80, true, true},
      {1, 1, 1000, 2, 1, 128, false, true}, {2, 65, 130, 3, 1, 64, true, false},
  };
  for (const auto& c : fixed) {
    attention_case(c, rng, pool);
    attention_case(c, rng, Parallel::serial());
  }
  // NaN propagation: the tiled path (Tq > 8), the split-key decode path
  // (Tq <= 8; one row and 1000 keys are split in four), GQA, causal or not.
  const AttnCase nan_cases[] = {
      {2, 40, 70, 4, 2, 16, true, true},  {2, 37, 37, 2, 1, 64, false, true}, {1, 1, 1000, 2, 2, 64, true, false},
      {2, 6, 300, 4, 2, 33, true, true},  {3, 8, 8, 2, 2, 8, true, false},    {1, 100, 100, 2, 1, 16, true, false},
  };
  for (const auto& c : nan_cases) {
    attention_nan_case(c, rng, pool);
    attention_nan_case(c, rng, Parallel::serial());
  }
  // Layer norm: one feature, no rows, huge, tiny and far-offset rows, and rows
  // whose float32 sums overflow.
  struct LnCase {
    int64_t R, C;
    float eps, scale, offset;
  };
  const LnCase ln_fixed[] = {{3, 1, 1e-5f, 0, 0},       {0, 7, 1e-5f, 0, 0},        {2, 257, 1e-5f, 1e17f, -3e17f},
                             {4, 33, 1e-5f, 1e-3f, 0}, {3, 100, 1e-5f, 1e-17f, 0}, {5, 300, 1e-5f, 1.f, 1e4f},
                             // Squared deviations that overflow float32 (and, at 3e37, row sums that do).
                             {3, 64, 1e-5f, 1e19f, 0},   {2, 40, 1e-5f, 3e37f, 0},   {2, 9, 1e-5f, 1e20f, 2e20f}};
  // Linear: K = 1, N = 1, and sizes one off the vector panels.
  const int64_t lin_fixed[][3] = {{1, 1, 1}, {9, 1, 300}, {3, 300, 1}, {7, 256, 257}, {1, 17, 63}, {6, 65, 129},
                                  {1, 77, 1031}};  // (a threaded transpose_w split)
  // Decoder step: C = 1, one cache slot, a cache long enough to be split by
  // keys (row 1 with few live keys), and rows that attend to no key or not
  // to the key just written.
  const StepCase step_fixed[] = {
      {1, 1, 1, 1, 1, 1, true, {0}, {1}},
      {2, 5, 3, 1, 8, 7, false, {4, 0}, {5, 1}},
      {2, 1100, 4, 2, 64, 96, true, {1029, 5}, {1030, 6}},
      {3, 9, 2, 2, 33, 40, true, {3, 8, 0}, {0, 8, 9}},
      {1, 40, 6, 6, 64, 1536, false, {39}, {40}, true},  // gpt-mini's block in bfloat16
      {6, 30, 4, 2, 16, 300, true, {}, {}, false},        // columns split (B > 4)
      {6, 30, 4, 2, 16, 300, true, {}, {}, true},
  };
  for (const Parallel& par : {pool, Parallel::serial()}) {
    for (const auto& c : ln_fixed)
      for (int beta = 0; beta < 2; ++beta) layer_norm_case(c.R, c.C, c.eps, beta, beta, c.scale, c.offset, rng, par);
    for (const auto& c : lin_fixed)
      for (int bias = 0; bias < 2; ++bias) linear_case(c[0], c[1], c[2], bias, rng, par, bias == 1);
    for (const auto& c : step_fixed) decoder_step_case(c, rng, par);
  }
  for (int it = 0; it < iters; ++it) {
    const Parallel& par = it % 2 ? pool : Parallel::serial();
    attention_case(random_attention_case(rng), rng, par);
    sampling_case(rng, par);
    random_layer_norm_case(rng, par);
    random_linear_case(rng, par);
    decoder_step_case(random_step_case(rng), rng, par);
  }
  if (failures) {
    std::printf("%d failed\n", failures);
    return 1;
  }
  std::printf("all kernel tests passed\n");
  return 0;
}
