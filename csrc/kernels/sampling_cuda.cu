// CUDA token sampling (the contract of sampling_cuda.h): one thread block of
// kThreads threads per row; every pass reads the row with coalesced loads.
//
//   1. Status: one pass checks the logits (NaN / +inf, any finite value) and
//      the previous ids; with a repetition penalty it also copies the row
//      into the workspace, without one it already finds the first and last
//      ranked tokens.  A bad row gets id -1, logprob NaN and its status.
//   2. Keys: with a penalty (r != 1 and L > 0) each non-pad previous id t
//      sets copy[t] = NaN (duplicates write the same value), and after a
//      barrier the key of token i is x_i in double, except where the copy
//      holds NaN: there it is x_i / r if x_i > 0, else x_i * r (double), so
//      the penalty is applied once per distinct id, from the original logit.
//      A second pass then finds the first and last ranked tokens.
//   3. Greedy rows (T == 0): the first ranked token (largest key, smallest id).
//   4. zmax = (max key) / T; e = exp(z - zmax) with z = key / T (double).
//   5-6. top-k, then top-p inside the top-k set: radix selection of the
//      cutoff token (sampling_cuda_select.cuh), a few passes each.
//   7-8. Kept: ranked at or before the cutoff, and z >= zmax + log(min_p).
//      Inverse CDF over e in id order (double): the row is cut into pages of
//      1024 ids, a page into 32 lines of 32 ids (one per lane).  Line totals
//      and page totals are inclusive warp scans (fixed order); each warp owns
//      a contiguous run of pages and chains their totals; one thread chains
//      the warp totals into the total and finds the warp where the running
//      sum first exceeds coin * total; that warp descends page -> line -> id
//      with the same sums (page totals are kept in the workspace, line and
//      id sums are recomputed bit for bit).  Where rounding makes two levels
//      disagree (the target within rounding of a boundary), the last kept id
//      of positive weight in the range reached is taken.  A zero-weight id is
//      never drawn.
// Every sum has a fixed order (integer sums in the selection are exact), so
// a row's result is the same from run to run.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>

#include "kernels/sampling_cuda.h"
#include "kernels/sampling_cuda_select.cuh"

namespace keraslm {
namespace cuda {
namespace {

using namespace sampling_detail;

constexpr int kLine = 32;          // ids per line: one per lane
constexpr int kPage = 32 * kLine;  // ids per page: one line total per lane

// Per-row workspace: a copy of the logits row (V floats, used with a
// repetition penalty), then the page totals (one double per 1024 ids); each
// region is rounded up to 256 bytes.
struct Layout {
  size_t copy_bytes, row_bytes;
};
inline size_t round_up_256(size_t n) { return (n + 255) & ~size_t(255); }
inline Layout layout(int64_t V) {
  const size_t v = V > 0 ? size_t(V) : 0;
  const size_t pages = (v + kPage - 1) / kPage;
  Layout l;
  l.copy_bytes = round_up_256(4 * v);
  l.row_bytes = l.copy_bytes + round_up_256(8 * pages);
  return l;
}

struct Shared {
  SelectShared sel;
  u128 red_min[kWarps], red_max[kWarps];
  double wsum[kWarps];      // per warp: chained page totals
  double excl, total, target;
  int wstar, fallback;      // the warp that holds the draw; rounding fallback
  long long chosen;
};

// Block-wide min and max of rank integers (every thread gets the result).
__device__ void block_minmax(u128& mn, u128& mx, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) {
    const u128 a = shfl_xor128(mn, m), c = shfl_xor128(mx, m);
    if (a < mn) mn = a;
    if (c > mx) mx = c;
  }
  if (lane == 0) sh.red_min[warp] = mn, sh.red_max[warp] = mx;
  __syncthreads();
  mn = sh.red_min[0], mx = sh.red_max[0];
  for (int w = 1; w < kWarps; ++w) {
    if (sh.red_min[w] < mn) mn = sh.red_min[w];
    if (sh.red_max[w] > mx) mx = sh.red_max[w];
  }
  __syncthreads();
}

// Line totals of one page (called by a whole warp): lane l returns the total
// of line l, the last value of the inclusive warp scan of its 32 weights.
template <class F>
__device__ double line_totals(int64_t page, F& weight) {
  const int lane = threadIdx.x & 31;
  double mine = 0;
  for (int l0 = 0; l0 < 32; l0 += 8) {
    double e[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) e[j] = weight(page * kPage + (l0 + j) * kLine + lane);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const double t = __shfl_sync(kFull, warp_scan(e[j]), 31);
      if (lane == l0 + j) mine = t;
    }
  }
  return mine;
}

__device__ void sample_row(const SamplingParams& p, int32_t* status, char* workspace, const Layout& lay, int64_t b,
                           Shared& sh) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t V = p.V, L = p.L;
  const float* x = p.logits + b * p.logits_stride;
  const int32_t* prev = L > 0 ? p.previous_ids + b * L : nullptr;
  const float temperature = p.temperature[b * p.temperature_stride];
  const int32_t top_k = p.top_k[b * p.top_k_stride];
  const float top_p = p.top_p[b * p.top_p_stride];
  const float min_p = p.min_p[b * p.min_p_stride];
  const float penalty = p.repetition_penalty[b * p.repetition_penalty_stride];
  char* ws = workspace + size_t(b) * lay.row_bytes;
  float* copy = reinterpret_cast<float*>(ws);
  double* page_total = reinterpret_cast<double*>(ws + lay.copy_bytes);
  const bool penalise = penalty != 1.f && L > 0;

  Row row;
  row.x = x;
  row.w = penalise ? copy : x;
  row.V = V;
  row.penalty = penalty;
  row.idbits = V > 1 ? 64 - __clzll((long long)(V - 1)) : 0;
  row.nbits = 64 + row.idbits;

  auto write = [&](int32_t id, float logprob, int32_t st) {
    if (tid == 0) p.ids[b] = id, p.logprobs[b] = logprob, status[b] = st;
  };

  // 1. Status (previous ids first: their check comes first on the CPU too).
  bool bad_prev = false;
  for (int64_t l = tid; l < L; l += kThreads) {
    const int32_t t = prev[l];
    if (t != p.pad_id && (t < 0 || t >= V)) bad_prev = true;
  }
  bool bad = false, finite = false;
  u128 rmin = ~u128(0), rmax = 0;  // first and last ranked tokens
  for_tokens(x, V, [&](int64_t i, float v, bool valid) {
    if (!valid) return;
    bad |= !(v < CUDART_INF_F);
    finite |= v > -CUDART_INF_F;
    if (penalise) {
      copy[i] = v;
    } else {
      const u128 r = row.rank(v, i);
      if (r < rmin) rmin = r;
      if (r > rmax) rmax = r;
    }
  });
  const bool any_bad_prev = __syncthreads_or(bad_prev);
  const bool any_bad = __syncthreads_or(bad);
  const bool any_finite = __syncthreads_or(finite);
  const int32_t st = any_bad_prev ? int32_t(SamplingStatus::kBadPreviousId)
                     : any_bad    ? int32_t(SamplingStatus::kBadLogit)
                     : !any_finite ? int32_t(SamplingStatus::kNoFiniteLogit)
                                   : int32_t(SamplingStatus::kOk);
  if (st != SamplingStatus::kOk) {
    write(-1, CUDART_NAN_F, st);
    return;
  }

  // 2. Keys: mark the penalised ids (the copy is complete: barrier above).
  if (penalise) {
    for (int64_t l = tid; l < L; l += kThreads) {
      const int32_t t = prev[l];
      if (t != p.pad_id) copy[t] = CUDART_NAN_F;
    }
    __syncthreads();
    for_tokens(copy, V, [&](int64_t i, float v, bool valid) {
      if (!valid) return;
      const u128 r = row.rank(row.key(v, i), i);
      if (r < rmin) rmin = r;
      if (r > rmax) rmax = r;
    });
  }
  block_minmax(rmin, rmax, sh);
  const int64_t best = int64_t(ull(rmin & low_mask(row.idbits)));

  // 3. Greedy.
  if (temperature == 0.f) {
    write(int32_t(best), 0.f, SamplingStatus::kOk);
    return;
  }

  // 4-6. Cutoffs.  The ranks of all tokens share their leading pos0 bits.
  const double T = temperature;
  const double zmax = row.key_bound(rmin) / T;  // the max key (finite)
  const u128 diff = rmin ^ rmax;
  const int pos0 = diff == 0 ? row.nbits : clz128(diff) - (128 - row.nbits);
  u128 cut = ~u128(0);  // last kept rank: all
  const bool use_k = top_k > 0 && top_k < V;
  if (use_k) cut = select_cut(row, sh.sel, SelectQuery{false, top_k, 0.f, ~u128(0), V}, rmin, pos0, T, zmax);
  if (top_p < 1.f)
    cut = select_cut(row, sh.sel, SelectQuery{true, 0, top_p, cut, use_k ? int64_t(top_k) : V}, rmin, pos0, T, zmax);

  // 7. The kept weight of id i (0 past V or when not kept).
  const double threshold = min_p > 0.f ? zmax + log(double(min_p)) : -CUDART_INF;
  const float cut_lo = __double2float_rd(row.key_bound(cut));  // float pre-filter
  auto weight = [&](int64_t i) -> double {
    if (i >= V) return 0.0;
    const float v = row.w[i];
    if (!(v >= cut_lo || v != v)) return 0.0;
    const double key = row.key(v, i);
    if (row.rank(key, i) > cut) return 0.0;
    const double z = key / T;
    if (!(z >= threshold)) return 0.0;
    return exp(z - zmax);
  };

  // 8a. Page totals; warp w owns pages [w * ppw, (w + 1) * ppw).
  const int64_t npages = (V + kPage - 1) / kPage;
  const int64_t ppw = (npages + kWarps - 1) / kWarps;
  auto page_range = [&](int w, int64_t& begin, int64_t& end) {
    begin = w * ppw < npages ? w * ppw : npages;
    end = begin + ppw < npages ? begin + ppw : npages;
  };
  {
    int64_t begin, end;
    page_range(warp, begin, end);
    double acc = 0;
    for (int64_t pg = begin; pg < end; ++pg) {
      const double lt = line_totals(pg, weight);
      const double pt = __shfl_sync(kFull, warp_scan(lt), 31);
      if (lane == 0) page_total[pg] = pt;
      acc += pt;
    }
    if (lane == 0) sh.wsum[warp] = acc;
  }
  __syncthreads();

  // 8b. Total, target, and the warp where the chained sum first exceeds it.
  if (tid == 0) {
    double c = 0;
    for (int w = 0; w < kWarps; ++w) c += sh.wsum[w];
    const double total = c, target = double(p.coins[b]) * total;
    int wstar = -1;
    c = 0;
    for (int w = 0; w < kWarps && wstar < 0; ++w) {
      const double next = c + sh.wsum[w];  // the same chain as above
      if (sh.wsum[w] > 0 && next > target) wstar = w, sh.excl = c;
      c = next;
    }
    sh.fallback = wstar < 0;  // unreachable: target < total, as coin < 1
    for (int w = kWarps - 1; w >= 0 && wstar < 0; --w)
      if (sh.wsum[w] > 0) wstar = w;
    sh.wstar = wstar;
    sh.total = total;
    sh.target = target;
    sh.chosen = best;  // unreachable default
  }
  __syncthreads();

  // 8c. The chosen warp descends: page, line, id.  `c` is the running sum of
  // the kept weight of the ids before the current range.
  if (warp == sh.wstar) {
    const double target = sh.target;
    bool fb = sh.fallback;
    double c = sh.excl;
    int64_t begin, end;
    page_range(warp, begin, end);
    int64_t pg = -1;
    for (int64_t base = begin; base < end && pg < 0 && !fb; base += 32) {
      const double mine = base + lane < end ? page_total[base + lane] : 0.0;
      const int cnt = end - base < 32 ? int(end - base) : 32;
      for (int j = 0; j < cnt; ++j) {
        const double t = __shfl_sync(kFull, mine, j);
        if (t > 0 && c + t > target) {
          pg = base + j;
          break;
        }
        c += t;
      }
    }
    if (pg < 0) {  // rounding: the last page of positive weight
      fb = true;
      for (int64_t q = end - 1; q >= begin && pg < 0; --q)
        if (page_total[q] > 0) pg = q;
    }
    if (pg >= 0) {
      const double lt = line_totals(pg, weight);
      const double lincl = warp_scan(lt);
      const double lprev = __shfl_up_sync(kFull, lincl, 1);
      const double lexcl = lane > 0 ? lprev : 0.0;
      int line = -1;
      if (!fb) {
        const unsigned m = __ballot_sync(kFull, lt > 0 && c + lincl > target);
        if (m) {
          line = __ffs(m) - 1;
          c += __shfl_sync(kFull, lexcl, line);
        }
      }
      if (line < 0) {  // rounding: the last line of positive weight
        fb = true;
        const unsigned m = __ballot_sync(kFull, lt > 0);
        line = m ? 31 - __clz(m) : 0;
      }
      const int64_t first = pg * kPage + int64_t(line) * kLine;
      const double e = weight(first + lane);
      const double eincl = warp_scan(e);
      int j = -1;
      if (!fb) {
        const unsigned m = __ballot_sync(kFull, e > 0 && c + eincl > target);
        if (m) j = __ffs(m) - 1;
      }
      if (j < 0) {  // rounding: the last id of positive weight
        const unsigned m = __ballot_sync(kFull, e > 0);
        if (m) j = 31 - __clz(m);
      }
      if (lane == 0 && j >= 0) sh.chosen = first + j;
    }
  }
  __syncthreads();

  if (tid == 0) {
    const int64_t j = sh.chosen;
    const double z = row.key(row.w[j], j) / T;
    p.ids[b] = int32_t(j);
    p.logprobs[b] = float((z - zmax) - log(sh.total));
    status[b] = SamplingStatus::kOk;
  }
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const SamplingParams p, int32_t* status, char* workspace, const Layout lay) {
  __shared__ Shared sh;
  for (int64_t b = blockIdx.x; b < p.B; b += gridDim.x) {
    sample_row(p, status, workspace, lay, b, sh);
    __syncthreads();  // the next row reuses sh
  }
}

}  // namespace

size_t sample_workspace(const SamplingParams& p) {
  if (p.B <= 0) return 0;
  return size_t(p.B) * layout(p.V).row_bytes;
}

const char* sample(const SamplingParams& p, int32_t* status, void* workspace, void* stream) {
  if (p.B <= 0) return nullptr;
  const unsigned grid = p.B < 0x7fffffff ? unsigned(p.B) : 0x7fffffffu;
  sample_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p, status, static_cast<char*>(workspace),
                                                                          layout(p.V));
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace cuda
}  // namespace keraslm
