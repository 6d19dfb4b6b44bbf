// Fast CPU kernel of linear.h (compiled once per ISA; see dispatch.cc).
//
// out[m0:m0+R, n:n+4W] is accumulated in R x 4 vector registers while the
// loop walks k, loading 4 vectors of w's row k (prefetched a few rows ahead)
// and broadcasting x[m, k]: w is streamed once per block of R <= 6 rows
// (narrower panels for more rows measured slower: fewer cache lines in
// flight per row of w).  Leftover columns use single vectors, then scalars.
// The weights are float32 or bfloat16 (T = float or uint16_t: vload widens).
//
// linear_partial_rows walks w the other way: four whole rows at a time, front
// to back, adding into an [M, N] block of partial sums that stays in cache.
#include <algorithm>
#include <cmath>

#include "kernels/linear.h"
#include "kernels/simd.h"

namespace keraslm {
namespace KERASLM_ISA {
namespace {

constexpr int64_t kAhead = 8;  // prefetch distance in rows of w
constexpr int64_t kRows = 6;   // rows of out per pass over w: 6 x 4 accumulators + 4 w vectors

// Columns [n0, n1) of R rows starting at x / out, with panels of V vectors.
template <int R, int V, class T>
void rows_block(const LinearParams& p, const T* w, const float* x, float* out, int64_t n0, int64_t n1) {
  const int64_t K = p.K, N = p.N;
  int64_t n = n0;
  for (; n + V * W <= n1; n += V * W) {
    vf acc[R][V] = {};
    const T* wk = w + n;
    for (int64_t k = 0; k < K; ++k, wk += N) {
      // Rows of w are N floats apart (beyond the hardware prefetcher's reach
      // for wide layers): fetch the panel a few rows ahead.
      if (k + kAhead < K)
        for (int j = 0; j < V * W; j += 64 / int(sizeof(T))) __builtin_prefetch(wk + kAhead * N + j);
      vf wv[V];
#pragma GCC unroll 4
      for (int j = 0; j < V; ++j) wv[j] = vload(wk + j * W);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const vf xv = vset1(x[r * K + k]);
#pragma GCC unroll 4
        for (int j = 0; j < V; ++j) acc[r][j] += xv * wv[j];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < V; ++j) {
        vf y = acc[r][j];
        if (p.bias) y += vload(p.bias + n + j * W);
        vstore(out + r * N + n + j * W, y);
      }
  }
  for (; n + W <= n1; n += W) {  // single vectors
    vf acc[R] = {};
    const T* wk = w + n;
    for (int64_t k = 0; k < K; ++k, wk += N) {
      const vf wv = vload(wk);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] += vset1(x[r * K + k]) * wv;
    }
    for (int r = 0; r < R; ++r) vstore(out + r * N + n, p.bias ? acc[r] + vload(p.bias + n) : acc[r]);
  }
  for (; n < n1; ++n)  // scalars
    for (int r = 0; r < R; ++r) {
      float s = 0.f;
      for (int64_t k = 0; k < K; ++k) s += x[r * K + k] * scalar(w[k * N + n]);
      out[r * N + n] = p.bias ? s + p.bias[n] : s;
    }
}

// All rows, columns [n0, n1).
template <class T>
void columns(const LinearParams& p, const T* w, int64_t n0, int64_t n1) {
  for (int64_t m0 = 0; m0 < p.M; m0 += kRows) {
    const float* x = p.x + m0 * p.K;
    float* out = p.out + m0 * p.N;
    switch (std::min<int64_t>(kRows, p.M - m0)) {
      case 1: rows_block<1, 4>(p, w, x, out, n0, n1); break;
      case 2: rows_block<2, 4>(p, w, x, out, n0, n1); break;
      case 3: rows_block<3, 4>(p, w, x, out, n0, n1); break;
      case 4: rows_block<4, 4>(p, w, x, out, n0, n1); break;
      case 5: rows_block<5, 4>(p, w, x, out, n0, n1); break;
      default: rows_block<6, 4>(p, w, x, out, n0, n1); break;
    }
  }
}

void columns(const LinearParams& p, int64_t n0, int64_t n1) {
  if (p.w_bf16) columns(p, p.w_bf16, n0, n1);
  else columns(p, p.w, n0, n1);
}

// part[m, :] = sum over rows k of w in [k0, k1) of x[m, k] w[k, :], four rows of w per pass.
template <class T>
void partial_rows(const LinearParams& p, const T* w, int64_t k0, int64_t k1, float* part) {
  const int64_t M = p.M, K = p.K, N = p.N, vectors = N / W * W;
  std::fill(part, part + M * N, 0.f);
  int64_t k = k0;
  for (; k + 4 <= k1; k += 4) {
    const T *w0 = w + k * N, *w1 = w0 + N, *w2 = w1 + N, *w3 = w2 + N;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = p.x + m * K + k;
      const vf x0 = vset1(xm[0]), x1 = vset1(xm[1]), x2 = vset1(xm[2]), x3 = vset1(xm[3]);
      float* o = part + m * N;
      for (int64_t n = 0; n < vectors; n += W) {
        // The last of the next four rows, ahead of use (the hardware prefetchers follow four
        // interleaved short streams poorly when rows are narrow: 1.1-1.2x on such rows, measured).
        __builtin_prefetch(w3 + n + 4 * N);
        vstore(o + n, vload(o + n) + x0 * vload(w0 + n) + x1 * vload(w1 + n) + x2 * vload(w2 + n) +
                          x3 * vload(w3 + n));
      }
      for (int64_t n = vectors; n < N; ++n)
        o[n] = o[n] + xm[0] * scalar(w0[n]) + xm[1] * scalar(w1[n]) + xm[2] * scalar(w2[n]) + xm[3] * scalar(w3[n]);
    }
  }
  for (; k < k1; ++k) {
    const T* wk = w + k * N;
    for (int64_t m = 0; m < M; ++m) {
      const float xk = p.x[m * K + k];
      float* o = part + m * N;
      for (int64_t n = 0; n < vectors; n += W) vstore(o + n, vload(o + n) + vset1(xk) * vload(wk + n));
      for (int64_t n = vectors; n < N; ++n) o[n] += xk * scalar(wk[n]);
    }
  }
}

// transpose_w: out[m, n] for rows n in [n0, n1) of w [N, K], one row of w at a time: the rows are
// read front to back in one stream (reading four rows in lockstep, four short streams, measured about
// half as fast), four independent accumulators along k, then the leftover k.
template <class T>
void transposed_rows(const LinearParams& p, const T* w, int64_t n0, int64_t n1) {
  const int64_t M = p.M, K = p.K, N = p.N, vectors = K / W * W;
  for (int64_t n = n0; n < n1; ++n) {
    const T* wn = w + n * K;
    for (int64_t m = 0; m < M; ++m) {
      const float* x = p.x + m * K;
      vf a0{}, a1{}, a2{}, a3{};
      int64_t k = 0;
      for (; k + 4 * W <= vectors; k += 4 * W) {
        a0 += vload(x + k) * vload(wn + k);
        a1 += vload(x + k + W) * vload(wn + k + W);
        a2 += vload(x + k + 2 * W) * vload(wn + k + 2 * W);
        a3 += vload(x + k + 3 * W) * vload(wn + k + 3 * W);
      }
      for (; k < vectors; k += W) a0 += vload(x + k) * vload(wn + k);
      float s = hsum((a0 + a1) + (a2 + a3));
      for (k = vectors; k < K; ++k) s += x[k] * scalar(wn[k]);
      p.out[m * N + n] = p.bias ? s + p.bias[n] : s;
    }
  }
}

void transposed(const LinearParams& p, const Parallel& par) {
  constexpr int64_t kRowsPerUnit = 64;  // rows of w per unit of work
  const int64_t units = (p.N + kRowsPerUnit - 1) / kRowsPerUnit;
  const Parallel& run = p.N * p.K >= (int64_t(1) << 16) ? par : Parallel::serial();
  run(units, kRowsPerUnit * p.K * p.M * 2, [&](int64_t begin, int64_t end) {
    const int64_t n0 = begin * kRowsPerUnit, n1 = std::min(p.N, end * kRowsPerUnit);
    if (p.w_bf16) transposed_rows(p, p.w_bf16, n0, n1);
    else transposed_rows(p, p.w, n0, n1);
  });
}

}  // namespace

void linear_forward(const LinearParams& p, const Parallel& par) {
  if (p.M == 0 || p.N == 0) return;
  if (p.transpose_w) return transposed(p, par);
  // Column chunks of whole 4-vector panels, one per thread, once w is read
  // more than once (more than kRows rows) and is big enough (>= 256 KB).
  // With one pass over w the kernel runs at memory speed on one core and the
  // hand-off to another thread costs more than it saves (measured).
  const int64_t panel = 4 * W;
  const int64_t panels = (p.N + panel - 1) / panel;
  const bool threaded = p.M > kRows && p.K * p.N >= (int64_t(1) << 16) && par.num_threads > 1;
  const int64_t chunks = threaded ? std::min<int64_t>(par.num_threads, panels) : 1;
  const int64_t per = (panels + chunks - 1) / chunks * panel;
  const Parallel& run = chunks > 1 ? par : Parallel::serial();
  run(chunks, p.K * per * ((p.M + kRows - 1) / kRows) * 2, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) columns(p, std::min(p.N, c * per), std::min(p.N, (c + 1) * per));
  });
}

void linear_forward_columns(const LinearParams& p, int64_t n0, int64_t n1) {
  if (p.M > 0 && n0 < n1) columns(p, n0, n1);
}

void gelu_tanh_inplace(float* x, int64_t n) {
  constexpr float kC = 0.7978845608028654f;           // sqrt(2 / pi)
  constexpr float kMinus2Log2e = -2.8853900817779268f;  // exp(-2 a) = 2^(a * kMinus2Log2e)
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const vf v = vload(x + i);
    const vf z = kC * (v + 0.044715f * v * v * v);
    const vf a = z < 0.f ? -z : z;
    const vf t = vexp2_nonpos(a * kMinus2Log2e);       // exp(-2 |z|) in [0, 1]
    const vf th = (1.f - t) / (1.f + t);               // tanh |z|
    vstore(x + i, 0.5f * v * (1.f + (z < 0.f ? -th : th)));
  }
  for (; i < n; ++i) x[i] = 0.5f * x[i] * (1.f + std::tanh(kC * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
}

void linear_partial_rows(const LinearParams& p, int64_t k0, int64_t k1, float* part) {
  if (p.w_bf16) partial_rows(p, p.w_bf16, k0, k1, part);
  else partial_rows(p, p.w, k0, k1, part);
}

}  // namespace KERASLM_ISA
}  // namespace keraslm
