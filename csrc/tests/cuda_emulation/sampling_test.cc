// The CUDA sampling kernel (csrc/kernels/sampling_cuda.cu), run on the CPU
// through the CUDA emulation, against the fast CPU sampler (keraslm::sample)
// and the reference (sample_reference).
//
// Usage: keraslm_emulated_sampling [random_calls=30] [seed=1] [max_vocab=70000]
// Runs fixed edge cases (ties, +-0, -inf, extreme values, every status code),
// then random calls: V from 1 to max_vocab, tied / banned / constant rows,
// greedy and extreme temperatures, every filter, repetition penalties with
// duplicate and pad previous ids, per-row and broadcast parameters.
// The contract (sampling_cuda.h): a valid row gets the fast CPU kernel's id,
// and its logprob to float rounding; the reference may differ only at an
// exact probability boundary, where the fast CPU kernel differs from it in
// the same way (counted and shown, not failed).  A row with bad input gets
// its status, id -1 and a NaN logprob.  Exit status: 0 all match, 1 a
// mismatch, 3 an error found by the emulation itself.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda_emulation.h"
#include "kernels/sampling.h"
#include "kernels/sampling_checks.h"
#include "kernels/sampling_cuda.h"

using keraslm::SamplingParams;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// One sample() call: B rows sharing V and L.  A parameter given once is
// broadcast (stride 0).
struct Call {
  int64_t B = 1, V = 0, L = 0;
  std::vector<float> logits, coins, temperature, top_p, min_p, penalty;
  std::vector<int32_t> top_k, prev;
  int32_t pad_id = -1;
  SamplingParams params(int64_t row = 0) const {  // the call from `row` on
    auto stride = [&](size_t n) { return n == 1 ? int64_t(0) : int64_t(1); };
    SamplingParams p;
    p.B = B - row, p.V = V, p.L = L, p.pad_id = pad_id;
    p.logits = logits.data() + row * V, p.logits_stride = V, p.coins = coins.data() + row;
    p.temperature_stride = stride(temperature.size()), p.temperature = temperature.data() + row * p.temperature_stride;
    p.top_k_stride = stride(top_k.size()), p.top_k = top_k.data() + row * p.top_k_stride;
    p.top_p_stride = stride(top_p.size()), p.top_p = top_p.data() + row * p.top_p_stride;
    p.min_p_stride = stride(min_p.size()), p.min_p = min_p.data() + row * p.min_p_stride;
    p.repetition_penalty_stride = stride(penalty.size());
    p.repetition_penalty = penalty.data() + row * p.repetition_penalty_stride;
    p.previous_ids = L > 0 ? prev.data() + row * L : nullptr;
    return p;
  }
};

Call single(std::vector<float> x, std::vector<int32_t> prev, float t, int32_t k, float p, float m, float r,
            float coin) {
  Call c;
  c.V = int64_t(x.size()), c.L = int64_t(prev.size());
  c.logits = std::move(x), c.prev = std::move(prev);
  c.coins = {coin}, c.temperature = {t}, c.top_k = {k}, c.top_p = {p}, c.min_p = {m}, c.penalty = {r};
  return c;
}

// Status of row b by the contract of sampling_cuda.h.
int32_t expected_status(const Call& c, int64_t b) {
  for (int64_t l = 0; l < c.L; ++l) {
    const int32_t t = c.prev[size_t(b * c.L + l)];
    if (t != c.pad_id && (t < 0 || t >= c.V)) return keraslm::cuda::SamplingStatus::kBadPreviousId;
  }
  return keraslm::sampling_checks::scan_row(c.logits.data() + b * c.V, c.V);  // 1 NaN / +inf, 2 none finite
}

struct Totals {
  long rows = 0, failed = 0, boundary = 0;
  double worst_logprob = 0;  // largest |logprob - CPU logprob|
};

bool close(float a, float b) { return a == b || std::fabs(a - b) <= 2e-6f * (1 + std::fabs(b)); }

void run(const Call& c, const std::string& name, Totals& t) {
  SamplingParams p = c.params();
  std::vector<int32_t> ids(size_t(c.B), 12345), status(size_t(c.B), 99);
  std::vector<float> lp(size_t(c.B), 12345.f);
  p.ids = ids.data(), p.logprobs = lp.data();
  const size_t ws_bytes = keraslm::cuda::sample_workspace(p);
  void* ws = std::aligned_alloc(256, (ws_bytes + 255) & ~size_t(255));
  std::memset(ws, 0xff, ws_bytes);  // the kernel must initialise what it reads
  const char* err = keraslm::cuda::sample(p, status.data(), ws, nullptr);
  std::free(ws);
  for (int64_t b = 0; b < c.B; ++b) {
    ++t.rows;
    char row[200];
    std::snprintf(row, sizeof row, "%s row %ld (V=%ld L=%ld T=%g k=%d p=%.9g m=%g r=%g coin=%.9g)", name.c_str(),
                  long(b), long(c.V), long(c.L), p.temperature[b * p.temperature_stride], p.top_k[b * p.top_k_stride],
                  p.top_p[b * p.top_p_stride], p.min_p[b * p.min_p_stride],
                  p.repetition_penalty[b * p.repetition_penalty_stride], p.coins[b]);
    const int32_t want = expected_status(c, b);
    if (err || status[size_t(b)] != want) {
      ++t.failed;
      std::printf("FAIL %s: status %d, expected %d %s\n", row, status[size_t(b)], want, err ? err : "");
      continue;
    }
    if (want != 0) {
      if (ids[size_t(b)] != -1 || !std::isnan(lp[size_t(b)])) {
        ++t.failed;
        std::printf("FAIL %s: status %d but id %d logprob %g\n", row, want, ids[size_t(b)], lp[size_t(b)]);
      }
      continue;
    }
    SamplingParams one = c.params(b);  // the CPU kernels on this row alone
    one.B = 1;
    int32_t cpu_id = -7, ref_id = -7;
    float cpu_lp = kNaN, ref_lp = kNaN;
    one.ids = &cpu_id, one.logprobs = &cpu_lp;
    keraslm::sample(one, keraslm::Parallel::serial());
    one.ids = &ref_id, one.logprobs = &ref_lp;
    keraslm::sample_reference(one);
    const int32_t id = ids[size_t(b)];
    const float l = lp[size_t(b)];
    if (id == cpu_id) t.worst_logprob = std::fmax(t.worst_logprob, std::fabs(double(l) - cpu_lp));
    if (id != cpu_id || !close(l, cpu_lp)) {
      ++t.failed;
      std::printf("FAIL %s: id %d logprob %.9g, CPU kernel %d %.9g, reference %d %.9g\n", row, id, l, cpu_id, cpu_lp,
                  ref_id, ref_lp);
    } else if (id != ref_id || !close(l, ref_lp)) {
      ++t.boundary;
      std::printf("boundary %s: id %d logprob %.9g as the CPU kernel; reference %d %.9g\n", row, id, l, ref_id, ref_lp);
    }
  }
}

// Random logits with ties, bans, constants and extremes, as in real use.
Call random_call(std::mt19937_64& g, int64_t max_vocab) {
  static const int64_t kVocab[] = {1, 2, 3, 7, 33, 100, 255, 256, 257, 1000, 1025, 3000, 5000, 20000, 70000};
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<double> n(0, 1);
  Call c;
  do c.V = g() % 4 == 0 ? int64_t(1 + g() % uint64_t(max_vocab)) : kVocab[g() % 15];
  while (c.V > max_vocab);
  c.L = g() % 3 == 0 ? 0 : int64_t(1 + g() % 12);
  c.B = int64_t(1 + g() % 3);
  if (c.V > 10000) c.B = 1;
  c.pad_id = g() % 3 == 0 ? int32_t(g() % uint64_t(c.V)) : -1;
  const size_t per_row = g() % 2 ? size_t(c.B) : 1;  // else broadcast
  for (int64_t b = 0; b < c.B; ++b) {
    const int dist = int(g() % 7);
    const double scale = u(g) < 0.5 ? 3 : 20;
    for (int64_t i = 0; i < c.V; ++i) {
      const double v = n(g) * scale;
      float f = float(v);
      if (dist == 1) f = __uint_as_float(__float_as_uint(f) & 0xffff0000u);  // bfloat16 values: many ties
      if (dist == 2) f = float(std::round(v / 4));                            // heavy ties
      if (dist == 3) f = 0.f;                                                 // all equal
      if (dist == 4 && u(g) < 0.3) f = -kInf;                                 // banned tokens
      if (dist == 5) f = g() % 2 ? 0.f : -0.f;                                // +0 and -0
      if (dist == 6) f = -std::fabs(f) - 1;                                   // all negative
      c.logits.push_back(f);
    }
    if (dist == 4) c.logits[size_t(b * c.V) + g() % uint64_t(c.V)] = 1.f;  // one finite value
    for (int64_t l = 0; l < c.L; ++l) c.prev.push_back(g() % 4 == 0 ? c.pad_id : int32_t(g() % uint64_t(c.V)));
    if (c.L > 1) c.prev[size_t(b * c.L + 1)] = c.prev[size_t(b * c.L)];  // a duplicate
    const float coin = g() % 10 == 0 ? 0.f : g() % 10 == 0 ? 0.99999994f : float(u(g));
    c.coins.push_back(coin < 1 ? coin : 0.5f);
    if (size_t(b) >= per_row) continue;
    static const float kT[] = {0.f, 0.5f, 1.f, 2.f, 1e-3f, 7.f}, kM[] = {0.f, 0.f, 0.05f, 0.5f, 1.f, 1e-4f};
    static const float kP[] = {1.f, 1.f, 0.9f, 0.5f, 0.1f, 1e-6f, 0.999f, 0.99999994f}, kR[] = {1.f, 1.3f, 0.7f, 2.f};
    const int32_t V = int32_t(c.V), kK[] = {0, 1, 2, 5, 50, 255, 256, 257, 300, 600, V - 1, V, V + 5};
    c.temperature.push_back(kT[g() % 6]), c.top_p.push_back(kP[g() % 8]), c.min_p.push_back(kM[g() % 6]);
    c.penalty.push_back(kR[g() % 4]), c.top_k.push_back(std::max(0, kK[g() % 13]));
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  const int random_calls = argc > 1 ? std::atoi(argv[1]) : 30;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  const int64_t max_vocab = argc > 3 ? std::atoll(argv[3]) : 70000;
  cuda_emulation::set_schedule_seed(seed);
  std::vector<Call> calls = {
      single({0.5f}, {}, 1, 0, 0.5f, 0.5f, 2, 0.3f),                 // V = 1
      single({-50, 0}, {}, 1, 0, 1, 0, 1, 0.f),
      single({0, -800}, {}, 1, 0, 1, 0, 1, 0.99999994f),
      single({2, 1.9f}, {0}, 0, 0, 1, 0, 2, 0.5f),                   // greedy after a penalty
      single({-1, -1.5f}, {0, 0, 0}, 0, 0, 1, 0, 2, 0.5f),           // penalty once per distinct id
      single({-0.f, 0.f}, {}, 0, 0, 1, 0, 1, 0.5f),                  // -0 ties +0
      single({0.f, -0.f, 0.f}, {}, 1, 2, 1, 0, 1, 0.9f),
      single({-kInf, 1, -kInf, -kInf}, {}, 1, 3, 0.5f, 0, 1, 0.99f),
      single({1, 1}, {}, 1, 0, 0.5f, 0, 1, 0.99f),                   // top-p at an exact tie
      single({3e38f, -3e38f, 3e38f}, {1}, 1e-38f, 0, 0.7f, 0, 1e-30f, 0.3f),
      single({1e-45f, -1e-45f, 0}, {0, 1}, 3e38f, 0, 1, 0.999f, 1e30f, 0.6f),
      single({5, 4, 3, 2, 1}, {}, 1, 0, 1, 0.3f, 1, 0.99f),          // min-p
  };
  std::vector<float> sparse(3000, -kInf);
  sparse[2999] = 0, sparse[5] = -1;
  calls.push_back(single(sparse, {}, 1, 2000, 1, 0, 1, 0.99f));
  calls.push_back(single(sparse, {2999}, 2, 2001, 0.3f, 0, 0.5f, 0.2f));
  Call bad = single(std::vector<float>(7 * 40), std::vector<int32_t>(7 * 3, 5), 1, 10, 0.9f, 0, 1.5f, 0.25f);
  bad.B = 7, bad.V = 40, bad.L = 3, bad.coins.assign(7, 0.25f), bad.pad_id = -2;  // statuses 0 1 1 2 3 3 2
  for (size_t i = 0; i < bad.logits.size(); ++i) bad.logits[i] = float(i * 13 % 17) - 8;
  bad.logits[1 * 40 + 7] = kNaN, bad.logits[2 * 40 + 39] = kInf;
  for (int i = 0; i < 40; ++i) bad.logits[size_t(3 * 40 + i)] = bad.logits[size_t(6 * 40 + i)] = -kInf;
  bad.prev[4 * 3 + 2] = 40, bad.prev[5 * 3] = -3, bad.logits[5 * 40 + 3] = kNaN, bad.prev[6 * 3 + 1] = -2;
  calls.push_back(bad);
  std::mt19937_64 g(seed);
  for (int i = 0; i < random_calls; ++i) calls.push_back(random_call(g, max_vocab));
  Totals t;
  for (size_t i = 0; i < calls.size(); ++i) {
    const long failed = t.failed;
    run(calls[i], "call " + std::to_string(i), t);
    std::printf("%s call %2zu B=%ld V=%ld L=%ld\n", t.failed == failed ? "ok  " : "FAIL", i, long(calls[i].B),
                long(calls[i].V), long(calls[i].L));
    std::fflush(stdout);
  }
  cuda_emulation::print_launch_summary();
  std::printf("sampling (sm_%d): %ld rows, %ld failed, %ld at a probability boundary of the reference, "
              "worst |logprob - CPU logprob| %.3g\n", CUDA_EMULATION_ARCH / 10, t.rows, t.failed, t.boundary,
              t.worst_logprob);
  return t.failed ? 1 : 0;
}
