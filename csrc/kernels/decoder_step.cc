// CPU implementation of decoder_step.h.
//
// The step is a sequence of phases (LayerNorm, the four matrix products in
// column chunks, the cache write, attention per (row, kv head), ...).  All
// threads the host lends run the same walk over the phases: each claims the
// unclaimed chunks of the current phase, then waits until the chunks others
// claimed are finished, then moves on.  Nobody ever waits for work nobody
// has claimed, so a helper that starts late (or never) only means the others
// do more of the work, and the result does not depend on who ran which chunk.
//
// Why: at batch 1 the step streams every weight once, and one core reads
// memory at well under half the speed two cores do, while handing each
// product to the thread pool separately costs more than it saves (about one
// wake-up per product).  Here a helper is woken once per step.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>

#include "kernels/attention.h"
#include "kernels/decoder_step.h"
#include "kernels/linear.h"

namespace keraslm {
namespace {

constexpr int64_t kColumnChunk = 64;  // columns per chunk of a product (whole vector panels)
constexpr int64_t kKeySplit = 512;    // live keys per attention chunk (long caches are split and combined)
constexpr int64_t kMaxSplits = 64;

// out[b] = (x[b] - mean) / sqrt(var + eps) * gamma (+ beta) for B rows of C.
void layer_norm(const float* x, const float* gamma, const float* beta, float eps, int64_t B, int64_t C,
                float* out) {
  for (int64_t b = 0; b < B; ++b) {
    const float* xr = x + b * C;
    float* o = out + b * C;
    double sum = 0.0;
    for (int64_t c = 0; c < C; ++c) sum += xr[c];
    const float mean = static_cast<float>(sum / C);
    double sq = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double d = xr[c] - mean;
      sq += d * d;
    }
    const float inv = 1.0f / std::sqrt(static_cast<float>(sq / C) + eps);
    for (int64_t c = 0; c < C; ++c) {
      const float v = (xr[c] - mean) * inv * gamma[c];
      o[c] = beta ? v + beta[c] : v;
    }
  }
}

inline float gelu_tanh(float v) {
  constexpr float kC = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * v * (1.0f + std::tanh(kC * (v + 0.044715f * v * v * v)));
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// The claim/finish counters of one phase, on separate cache lines.
struct alignas(64) Counter {
  std::atomic<int64_t> value{0};
  char pad[64 - sizeof(std::atomic<int64_t>)];
};

constexpr int kPhases = 9;

class Step {
 public:
  explicit Step(const DecoderStepParams& p) : p_(p) {
    C_ = p.H * p.D;
    Q_ = (p.H + 2 * p.Hkv) * p.D;
    h_ = p.scratch;          // [B, C]  ln_1(x), later ln_2(x1)
    qkv_ = h_ + p.B * C_;    // [B, Q]
    att_ = qkv_ + p.B * Q_;  // [B, C]  attention output
    x1_ = att_ + p.B * C_;   // [B, C]
    lse_ = x1_ + p.B * C_;   // [B, H]
    f_ = lse_ + p.B * p.H;   // [B, F]
    int64_t live = 0;
    for (int64_t b = 0; b < p.B; ++b) live = std::max<int64_t>(live, p.key_lengths[b]);
    splits_ = std::min(kMaxSplits, std::max<int64_t>(1, (live + kKeySplit - 1) / kKeySplit));
    span_ = (live + splits_ - 1) / splits_;
    part_out_ = f_ + p.B * p.F;                      // [B, splits, H, D] when split
    part_lse_ = part_out_ + p.B * splits_ * C_;     // [B, splits, H]
    const int64_t chunks[kPhases] = {1, column_chunks(Q_), 1, p.B * (splits_ == 1 ? p.Hkv : splits_),
                                     splits_ > 1 ? p.B : 0,
                                     column_chunks(C_), 1, column_chunks(p.F), column_chunks(C_)};
    std::copy(chunks, chunks + kPhases, chunks_);
  }

  // Walks every phase; any number of threads may call it concurrently.
  void participate() {
    for (int phase = 0; phase < kPhases; ++phase) {
      const int64_t n = chunks_[phase];
      for (int64_t c; (c = claimed_[phase].value.fetch_add(1, std::memory_order_relaxed)) < n;) {
        run(phase, c);
        finished_[phase].value.fetch_add(1, std::memory_order_release);
      }
      for (int spins = 0; finished_[phase].value.load(std::memory_order_acquire) < n; ++spins) {
        if (spins < 4096) cpu_relax();
        else std::this_thread::yield();
      }
    }
  }

 private:
  static int64_t column_chunks(int64_t n) { return (n + kColumnChunk - 1) / kColumnChunk; }

  // Columns of chunk c of a product x [B, K] @ w [K, N] (+ bias) -> out [B, N].
  void product(const float* x, const float* w, const float* bias, int64_t K, int64_t N, float* out, int64_t c,
               int64_t* n0, int64_t* n1) const {
    LinearParams lp;
    lp.M = p_.B; lp.K = K; lp.N = N;
    lp.x = x; lp.w = w; lp.bias = bias; lp.out = out;
    *n0 = c * kColumnChunk;
    *n1 = std::min(N, *n0 + kColumnChunk);
    linear_forward_columns(lp, *n0, *n1);
  }

  void run(int phase, int64_t c) {
    const DecoderStepParams& p = p_;
    const int64_t B = p.B, C = C_, Q = Q_, F = p.F;
    int64_t n0 = 0, n1 = 0;
    switch (phase) {
      case 0:
        layer_norm(p.x, p.ln1_gamma, p.ln1_beta, p.eps, B, C, h_);
        break;
      case 1:
        product(h_, p.w_qkv, p.b_qkv, C, Q, qkv_, c, &n0, &n1);
        break;
      case 2: {  // the new key and value into the caches
        const int64_t row = p.Hkv * p.D;
        for (int64_t b = 0; b < B; ++b) {
          const int64_t at = (b * p.S + p.index[b]) * row;
          std::memcpy(p.k_cache + at, qkv_ + b * Q + C, row * sizeof(float));
          std::memcpy(p.v_cache + at, qkv_ + b * Q + C + row, row * sizeof(float));
        }
        break;
      }
      case 3: {  // keys [j0, j1) of row b for kv heads [g0, g1) and their query heads
        // Long caches are split by keys with every head in a chunk (contiguous reads); short ones by
        // kv head, so both threads still share the work.
        const int64_t groups = splits_ == 1 ? p.Hkv : 1;
        const int64_t b = c / (groups * splits_), g = c / splits_ % groups, split = c % splits_;
        const int64_t g0 = g * p.Hkv / groups, g1 = (g + 1) * p.Hkv / groups;
        const int64_t G = p.H / p.Hkv, D = p.D;
        const int64_t j0 = split * span_, j1 = std::min<int64_t>(p.S, j0 + span_);
        const int32_t len = static_cast<int32_t>(std::clamp<int64_t>(p.key_lengths[b] - j0, 0, j1 - j0));
        AttentionParams ap;
        ap.B = 1; ap.Tq = 1; ap.Tk = j1 - j0; ap.H = (g1 - g0) * G; ap.Hkv = g1 - g0; ap.D = D;
        ap.causal = false;  // one query at the end of the cache sees every key below key_lengths
        ap.scale = 1.0f / std::sqrt(static_cast<float>(D));
        ap.key_lengths = &len;
        const int64_t at = (b * p.S + j0) * p.Hkv * D + g0 * D;
        ap.q = qkv_ + b * Q + g0 * G * D;  ap.q_stride = {Q, Q, D};
        ap.k = p.k_cache + at;            ap.k_stride = dense_strides(p.S, p.Hkv, D);
        ap.v = p.v_cache + at;            ap.v_stride = dense_strides(p.S, p.Hkv, D);
        if (splits_ == 1) {
          ap.out = att_ + b * C + g0 * G * D;
          ap.lse = lse_ + b * p.H + g0 * G;
        } else {
          ap.out = part_out_ + (b * splits_ + split) * C + g0 * G * D;
          ap.lse = part_lse_ + (b * splits_ + split) * p.H + g0 * G;
        }
        ap.out_stride = {C, C, D};
        if (ap.Tk > 0) attention_forward(ap, Parallel::serial());
        else {
          for (int64_t h = 0; h < ap.H; ++h) {
            std::fill(ap.out + h * D, ap.out + (h + 1) * D, 0.f);
            ap.lse[h] = -INFINITY;
          }
        }
        break;
      }
      case 4: {  // row c: merge the key splits' softmaxes (weights exp(lse_i - lse))
        const int64_t b = c, D = p.D;
        for (int64_t h = 0; h < p.H; ++h) {
          float m = -INFINITY;
          for (int64_t i = 0; i < splits_; ++i) m = std::max(m, part_lse_[(b * splits_ + i) * p.H + h]);
          float* out = att_ + b * C + h * D;
          std::fill(out, out + D, 0.f);
          if (m == -INFINITY) continue;  // no visible key: zeros, like the kernel
          float total = 0.f;
          for (int64_t i = 0; i < splits_; ++i) {
            const float w = std::exp(part_lse_[(b * splits_ + i) * p.H + h] - m);
            if (w == 0.f) continue;
            total += w;
            const float* part = part_out_ + (b * splits_ + i) * C + h * D;
            for (int64_t d = 0; d < D; ++d) out[d] += w * part[d];
          }
          for (int64_t d = 0; d < D; ++d) out[d] /= total;
        }
        break;
      }
      case 5:  // x1 = x + attention @ w_o (+ b_o)
        product(att_, p.w_o, p.b_o, C, C, x1_, c, &n0, &n1);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t n = n0; n < n1; ++n) x1_[b * C + n] += p.x[b * C + n];
        break;
      case 6:
        layer_norm(x1_, p.ln2_gamma, p.ln2_beta, p.eps, B, C, h_);
        break;
      case 7:
        product(h_, p.w_fc, p.b_fc, C, F, f_, c, &n0, &n1);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t n = n0; n < n1; ++n) f_[b * F + n] = gelu_tanh(f_[b * F + n]);
        break;
      case 8:  // y = x1 + gelu(...) @ w_proj (+ b_proj)
        product(f_, p.w_proj, p.b_proj, F, C, p.y, c, &n0, &n1);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t n = n0; n < n1; ++n) p.y[b * C + n] += x1_[b * C + n];
        break;
    }
  }

  const DecoderStepParams& p_;
  int64_t C_ = 0, Q_ = 0, splits_ = 1, span_ = 0;
  float *h_, *qkv_, *att_, *x1_, *lse_, *f_, *part_out_, *part_lse_;
  int64_t chunks_[kPhases];
  Counter claimed_[kPhases], finished_[kPhases];
};

}  // namespace

int64_t decoder_step_scratch_floats(const DecoderStepParams& p) {
  const int64_t C = p.H * p.D, Q = (p.H + 2 * p.Hkv) * p.D;
  const int64_t splits = std::min(kMaxSplits, std::max<int64_t>(1, (p.S + kKeySplit - 1) / kKeySplit));
  return p.B * (3 * C + Q + p.H + p.F + splits * (C + p.H));
}

void decoder_step_forward(const DecoderStepParams& p, const Parallel& par) {
  Step step(p);
  const int64_t team = std::max(1, par.num_threads);
  // A large cost per unit: one unit per thread.
  par(team, int64_t(1) << 30, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) step.participate();
  });
}

}  // namespace keraslm
