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
// At small batch sizes each product is split by rows of its weights (each
// chunk streams one contiguous block) and a following phase adds the row
// blocks' partial sums in block order; larger batches split by columns.
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
// Up to this batch, products are split by rows of w (linear_partial_rows: each chunk streams one
// contiguous block of the weights) into at most kRowChunks partial sums, added up by a column-chunked
// phase that follows; larger batches split by columns (w read once per 6 rows held in registers).
constexpr int64_t kStreamBatch = 4;
constexpr int64_t kRowChunks = 16;

bool streams(const DecoderStepParams& p) { return p.B <= kStreamBatch; }

// Rows of w per chunk of a row-split product with K rows: a multiple of 4, at most `chunks` chunks.
int64_t rows_per_chunk(int64_t K, int64_t chunks) { return std::max<int64_t>(4, ((K + chunks - 1) / chunks + 3) / 4 * 4); }

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

enum Phase {
  kLn1, kQkv, kQkvSum, kCacheWrite, kAttention, kMerge, kO, kOSum, kLn2, kFc, kFcSum, kProj, kProjSum, kPhases
};

// One of the four products: out [B, N] = x [B, K] @ w [K, N] (+ bias), then an epilogue on columns [n0, n1).
struct Product {
  const float* x;
  const float* w;
  const uint16_t* w_bf16;
  const float* bias;
  int64_t K, N;
  float* out;
};

class Step {
 public:
  // Row-split products take four chunks per thread (fewer partial sums to add than kRowChunks, and
  // still some slack for a thread that starts late).
  Step(const DecoderStepParams& p, int64_t team)
      : p_(p), stream_(streams(p)), row_chunks_(std::min<int64_t>(kRowChunks, 4 * team)) {
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
    // Short caches: one attention chunk per row, or per group of kv heads when there are fewer rows
    // than threads (every chunk is a call with its own set-up, so no more chunks than that).
    groups_ = splits_ > 1 || p.B >= team ? 1 : std::min(p.Hkv, (team + p.B - 1) / p.B);
    part_out_ = f_ + p.B * p.F;                      // [B, splits, H, D] when split
    part_lse_ = part_out_ + p.B * splits_ * C_;     // [B, splits, H]
    rows_part_ = part_lse_ + p.B * splits_ * p.H;   // [kRowChunks, B, max(Q, F)] partial products
    products_[0] = {h_, p.w_qkv, p.w_qkv_bf16, p.b_qkv, C_, Q_, qkv_};
    products_[1] = {att_, p.w_o, p.w_o_bf16, p.b_o, C_, C_, x1_};
    products_[2] = {h_, p.w_fc, p.w_fc_bf16, p.b_fc, C_, p.F, f_};
    products_[3] = {f_, p.w_proj, p.w_proj_bf16, p.b_proj, p.F, C_, p.y};
    auto product_chunks = [&](const Product& q) { return stream_ ? row_blocks(q) : column_chunks(q.N); };
    auto sum_chunks = [&](const Product& q) { return stream_ ? column_chunks(q.N) : 0; };
    const int64_t chunks[kPhases] = {
        1, product_chunks(products_[0]), sum_chunks(products_[0]), 1,
        p.B * groups_ * splits_, splits_ > 1 ? p.B : 0,
        product_chunks(products_[1]), sum_chunks(products_[1]), 1,
        product_chunks(products_[2]), sum_chunks(products_[2]),
        product_chunks(products_[3]), sum_chunks(products_[3])};
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
  // Rows of w per row block of product q (row-split products), and its number of row blocks.
  int64_t block_rows(const Product& q) const { return rows_per_chunk(q.K, row_chunks_); }
  int64_t row_blocks(const Product& q) const { return (q.K + block_rows(q) - 1) / block_rows(q); }

  LinearParams linear(const Product& q) const {
    LinearParams lp;
    lp.M = p_.B; lp.K = q.K; lp.N = q.N;
    lp.x = q.x; lp.w = q.w; lp.w_bf16 = q.w_bf16; lp.bias = q.bias; lp.out = q.out;
    return lp;
  }

  // Chunk c of product q: its row block's partial sums (streaming; the epilogue then runs in the
  // summing phase), or its columns with the bias and the epilogue.
  template <class Epilogue>
  void product(const Product& q, int64_t c, Epilogue epilogue) {
    if (stream_) {
      const int64_t rows = block_rows(q);
      linear_partial_rows(linear(q), c * rows, std::min(q.K, (c + 1) * rows), rows_part_ + c * p_.B * q.N);
      return;
    }
    const int64_t n0 = c * kColumnChunk, n1 = std::min(q.N, n0 + kColumnChunk);
    linear_forward_columns(linear(q), n0, n1);
    epilogue(n0, n1);
  }

  // Columns of chunk c of product q (streaming): the bias plus the row blocks' partials in block order,
  // then the epilogue.
  template <class Epilogue>
  void sum(const Product& q, int64_t c, Epilogue epilogue) {
    const int64_t n0 = c * kColumnChunk, n1 = std::min(q.N, n0 + kColumnChunk);
    const int64_t blocks = row_blocks(q), BN = p_.B * q.N;
    for (int64_t b = 0; b < p_.B; ++b) {
      float* out = q.out + b * q.N;
      for (int64_t n = n0; n < n1; ++n) out[n] = q.bias ? q.bias[n] : 0.f;
      for (int64_t i = 0; i < blocks; ++i) {
        const float* part = rows_part_ + i * BN + b * q.N;
        for (int64_t n = n0; n < n1; ++n) out[n] += part[n];
      }
    }
    epilogue(n0, n1);
  }

  void run(int phase, int64_t c) {
    const DecoderStepParams& p = p_;
    const int64_t B = p.B, C = C_, Q = Q_, F = p.F;
    auto none = [](int64_t, int64_t) {};
    auto add_x = [&](int64_t n0, int64_t n1) {  // x1 = x + attention @ w_o (+ b_o)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t n = n0; n < n1; ++n) x1_[b * C + n] += p.x[b * C + n];
    };
    auto gelu = [&](int64_t n0, int64_t n1) {
      for (int64_t b = 0; b < B; ++b) gelu_tanh_inplace(f_ + b * F + n0, n1 - n0);
    };
    auto add_x1 = [&](int64_t n0, int64_t n1) {  // y = x1 + gelu(...) @ w_proj (+ b_proj)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t n = n0; n < n1; ++n) p.y[b * C + n] += x1_[b * C + n];
    };
    switch (phase) {
      case kLn1:
        layer_norm(p.x, p.ln1_gamma, p.ln1_beta, p.eps, B, C, h_);
        break;
      case kQkv: product(products_[0], c, none); break;
      case kQkvSum: sum(products_[0], c, none); break;
      case kCacheWrite: {  // the new key and value into the caches
        const int64_t row = p.Hkv * p.D;
        for (int64_t b = 0; b < B; ++b) {
          const int64_t at = (b * p.S + p.index[b]) * row;
          std::memcpy(p.k_cache + at, qkv_ + b * Q + C, row * sizeof(float));
          std::memcpy(p.v_cache + at, qkv_ + b * Q + C + row, row * sizeof(float));
        }
        break;
      }
      case kAttention: {  // keys [j0, j1) of row b for kv heads [g0, g1) and their query heads
        // Long caches are split by keys with every head in a chunk (contiguous reads); short ones by
        // row, and by groups of kv heads when the threads outnumber the rows.
        const int64_t groups = groups_;
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
      case kMerge: {  // row c: merge the key splits' softmaxes (weights exp(lse_i - lse))
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
      case kO: product(products_[1], c, add_x); break;
      case kOSum: sum(products_[1], c, add_x); break;
      case kLn2:
        layer_norm(x1_, p.ln2_gamma, p.ln2_beta, p.eps, B, C, h_);
        break;
      case kFc: product(products_[2], c, gelu); break;
      case kFcSum: sum(products_[2], c, gelu); break;
      case kProj: product(products_[3], c, add_x1); break;
      case kProjSum: sum(products_[3], c, add_x1); break;
    }
  }

  const DecoderStepParams& p_;
  const bool stream_;
  const int64_t row_chunks_;
  int64_t C_ = 0, Q_ = 0, splits_ = 1, span_ = 0, groups_ = 1;
  float *h_, *qkv_, *att_, *x1_, *lse_, *f_, *part_out_, *part_lse_, *rows_part_;
  Product products_[4];
  int64_t chunks_[kPhases];
  Counter claimed_[kPhases], finished_[kPhases];
};

}  // namespace

int64_t decoder_step_scratch_floats(const DecoderStepParams& p) {
  const int64_t C = p.H * p.D, Q = (p.H + 2 * p.Hkv) * p.D;
  const int64_t splits = std::min(kMaxSplits, std::max<int64_t>(1, (p.S + kKeySplit - 1) / kKeySplit));
  const int64_t partials = streams(p) ? kRowChunks * p.B * std::max(Q, p.F) : 0;
  return p.B * (3 * C + Q + p.H + p.F + splits * (C + p.H)) + partials;
}

void decoder_step_forward(const DecoderStepParams& p, const Parallel& par) {
  const int64_t team = std::max(1, par.num_threads);
  Step step(p, team);
  // A large cost per unit: one unit per thread.
  par(team, int64_t(1) << 30, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) step.participate();
  });
}

}  // namespace keraslm
