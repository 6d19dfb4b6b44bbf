// Block-wide building blocks of the CUDA sampling kernel (sampling_cuda.cu):
// the rank integer of a token, warp scans, the token loop, and the radix
// selection of the top-k / top-p cutoff.  Included only by sampling_cuda.cu.
//
// Ranking.  A token's rank integer is R = (u << idbits) | id, where u is a
// 64-bit order-reversing image of its key (the penalised logit x' as a
// double: larger key -> smaller u) and idbits is the number of bits of V - 1.
// Sorting by R ascending is the ranking of sampling.h (key descending, then
// id ascending), and every R in a row is distinct.  -0.0 is mapped like +0.0
// (they compare equal, so they tie and the lower id goes first).
//
// Selection (select_cut).  The cutoff is the first token in rank order at
// which a cumulative weight over the candidates reaches a target:
//   * top-k: weight 1 per token, target k (the k-th ranked token);
//   * top-p: weight W = round(e * 2^62) (e = exp(z - zmax) in double; the top
//     token has W = 2^62 exactly), candidates = the top-k set, target
//     ceil(p * S) with S the total W of the candidates.
// Weights are integers and sums are exact (128-bit), so the result does not
// depend on the order in which threads add, and "cum >= ceil(p * S)" is the
// exact rational test "cum >= p * S".  W differs from e * 2^62 by at most 1/2,
// i.e. the top-p masses are those of double e to within 2^-63 per token.
// The search is an MSB-first radix descent over R, 8 bits per level: one pass
// over the row histograms the candidates that share the prefix fixed so far
// (count and weight per digit), one warp walks the bins in rank order and
// fixes the next digit (the bin where the cumulative weight reaches the
// target).  Once at most kGather candidates remain they are gathered into
// shared memory and finished exactly there.  The descent starts below the
// bits that every token of the row shares.
#pragma once

#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>

#include "kernels/sampling_cuda.h"

namespace keraslm {
namespace cuda {
namespace sampling_detail {

typedef unsigned __int128 u128;
typedef unsigned long long ull;

constexpr int kThreads = 512;              // threads per block (one block per row)
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;                 // loads in flight per thread in light row passes
constexpr int kDigitBits = 8;              // radix digit
constexpr int kBins = 1 << kDigitBits;
constexpr int kGather = 256;               // finish the selection in shared memory below this
constexpr int kPieceBits = 27;             // W is histogrammed as three pieces (27, 27, 9 bits)
constexpr unsigned kPieceMask = (1u << kPieceBits) - 1;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ u128 low_mask(int n) { return n >= 128 ? ~u128(0) : (u128(1) << n) - 1; }

// Leading zeros of a 128-bit value (128 for 0).
__device__ __forceinline__ int clz128(u128 v) {
  const ull hi = ull(v >> 64), lo = ull(v);
  return hi ? __clzll((long long)hi) : 64 + (lo ? __clzll((long long)lo) : 64);
}

// Order-reversing 64-bit image of a key (no NaN): a > b <=> u(a) < u(b).
__device__ __forceinline__ ull rank_u(double key) {
  if (key == 0.0) key = 0.0;  // -0.0 ranks as +0.0
  const ull bits = ull(__double_as_longlong(key));
  const ull ord = (bits >> 63) ? ~bits : (bits | (1ull << 63));  // ascending with the key
  return ~ord;
}

// Inverse of rank_u; images that are no key (NaN patterns) are clamped to the
// infinity on their side, so that key_from_u is monotone on all of 64 bits.
__device__ __forceinline__ double key_from_u(ull u) {
  const ull ord = ~u;
  const ull kSign = 1ull << 63;
  const ull ord_pinf = 0x7FF0000000000000ull | kSign;  // image of +inf
  const ull ord_ninf = ~0xFFF0000000000000ull;         // image of -inf
  if (ord >= ord_pinf) return CUDART_INF;
  if (ord <= ord_ninf) return -CUDART_INF;
  const ull bits = (ord & kSign) ? (ord & ~kSign) : ~ord;
  return __longlong_as_double((long long)bits);
}

// One row as the passes see it.
struct Row {
  const float* x;  // logits
  const float* w;  // x, or a copy of x in which the penalised ids are NaN
  int64_t V;
  double penalty;
  int idbits;      // bits of V - 1
  int nbits;       // 64 + idbits: width of R

  // The key of token i, whose entry in w is v.
  __device__ __forceinline__ double key(float v, int64_t i) const {
    if (v == v) return v;
    const double xv = x[i];
    return xv > 0 ? xv / penalty : xv * penalty;
  }
  __device__ __forceinline__ u128 rank(double key, int64_t i) const {
    return (u128(rank_u(key)) << idbits) | u128(ull(i));
  }
  // The key whose image is the u part of r: the tokens with ranks in
  // [r_lo, r_hi] have keys in [key_bound(r_hi), key_bound(r_lo)].
  __device__ __forceinline__ double key_bound(u128 r) const { return key_from_u(ull(r >> idbits)); }
};

// e = exp(z - zmax) as the integer weight W = round(e * 2^62) <= 2^62.
__device__ __forceinline__ ull mass_of(double key, double T, double zmax) {
  const double e = exp(key / T - zmax);
  return __double2ull_rn(e * 0x1p62);
}

// Shuffles of 128-bit values (two 64-bit halves).
__device__ __forceinline__ u128 shfl_up128(u128 v, int d) {
  const ull lo = __shfl_up_sync(kFull, ull(v), d), hi = __shfl_up_sync(kFull, ull(v >> 64), d);
  return (u128(hi) << 64) | lo;
}
__device__ __forceinline__ u128 shfl128(u128 v, int src) {
  const ull lo = __shfl_sync(kFull, ull(v), src), hi = __shfl_sync(kFull, ull(v >> 64), src);
  return (u128(hi) << 64) | lo;
}
__device__ __forceinline__ u128 shfl_xor128(u128 v, int m) {
  const ull lo = __shfl_xor_sync(kFull, ull(v), m), hi = __shfl_xor_sync(kFull, ull(v >> 64), m);
  return (u128(hi) << 64) | lo;
}

// Inclusive warp scans (Kogge-Stone; the order of additions is fixed, so a
// double scan of the same inputs always gives the same bits).
__device__ __forceinline__ u128 warp_scan(u128 v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const u128 t = shfl_up128(v, d);
    if (lane >= d) v += t;
  }
  return v;
}
__device__ __forceinline__ double warp_scan(double v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const double t = __shfl_up_sync(kFull, v, d);
    if (lane >= d) v += t;
  }
  return v;
}

// Calls f(i, v, valid) for every id of the row, v = w[i]: thread t of the
// block takes ids base + j * kThreads + t (j < U), so each load is coalesced
// and U loads are in flight.  Every thread of the block runs the same number
// of calls (valid = false past V), so f may use warp intrinsics over the
// full warp.
template <int U = kUnroll, class F>
__device__ __forceinline__ void for_tokens(const float* w, int64_t V, F&& f) {
  for (int64_t base = 0; base < V; base += int64_t(kThreads) * U) {
    float v[U];
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t i = base + j * kThreads + threadIdx.x;
      v[j] = i < V ? w[i] : 0.f;
    }
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t i = base + j * kThreads + threadIdx.x;
      f(i, v[j], i < V);
    }
  }
}

// ceil(p * S) for 0 < p < 1 (a float), exactly: p = m * 2^-s with m < 2^24.
__device__ __forceinline__ u128 ceil_mul(float p, u128 S) {
  const unsigned bits = __float_as_uint(p);
  const int E = int(bits >> 23) & 0xFF;
  ull m = bits & 0x7FFFFFu;
  int s = 149;                       // subnormal: p = m * 2^-149
  if (E != 0) m |= 0x800000u, s = 150 - E;  // normal: p = (2^23 + M) * 2^(E - 150); s >= 24
  const u128 prod = u128(m) * S;     // S < 2^93, so prod < 2^117
  if (s >= 128) return prod != 0 ? 1 : 0;
  return (prod + low_mask(s)) >> s;
}

struct SelectShared {
  unsigned count[kBins];           // candidates per digit
  ull piece[3][kBins];             // their W, as sums of 27-, 27- and 9-bit pieces
  u128 gR[kGather];                // gathered candidates: rank integer
  ull gW[kGather];                 //   and weight (top-p)
  u128 before, target, result;     // walk results / the answer
  unsigned n;                      // candidates in the chosen bin
  int digit;                       // the chosen bin
  int gn;                          // gathered so far
};

struct SelectQuery {
  bool mass;      // false: top-k (weight 1); true: top-p (weight W)
  int64_t k;      // top-k: the 1-based rank of the cutoff (k < number of candidates)
  float p;        // top-p: 0 < p < 1
  u128 limit;     // the candidates are the tokens with R <= limit
  int64_t n;      // their number
};

__device__ __forceinline__ u128 bin_weight(const SelectShared& s, int bin, bool mass) {
  if (!mass) return s.count[bin];
  return u128(s.piece[0][bin]) + (u128(s.piece[1][bin]) << kPieceBits) + (u128(s.piece[2][bin]) << (2 * kPieceBits));
}

// The rank integer of the cutoff token (see the top of this file).  common:
// any token's R; pos0: the number of leading bits of R that all tokens of the
// row share.  Called by every thread of the block; returns the same value in
// all of them.  Uses s only (leaves it free for reuse on return).
__device__ u128 select_cut(const Row& row, SelectShared& s, const SelectQuery& q, u128 common, int pos0, double T,
                           double zmax) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int nbits = row.nbits;
  // The descent state (identical in every thread): the top `pos` bits of R
  // are fixed to those of `prefix` (lower bits 0); `before` is the weight of
  // the candidates ranked before the prefix; `n` the candidates inside it.
  int pos = pos0;
  u128 prefix = common & ~low_mask(nbits - pos0);
  u128 before = 0;
  u128 target = q.mass ? u128(0) : u128(q.k);
  bool have_target = !q.mass;  // top-p: ceil(p * S) once S is known
  int64_t n = q.n;
  const float limit_lo = __double2float_rd(row.key_bound(q.limit));

  // A float pre-filter for the candidates inside the prefix: their keys lie
  // in [key_lo, key_hi] (and above the limit's key), hence their floats in
  // [lo, hi] after outward rounding; penalised ids (NaN in w) always pass.
  // Tokens that pass get the exact test on R.
  auto bounds = [&](float& lo, float& hi) {
    lo = fmaxf(__double2float_rd(row.key_bound(prefix | low_mask(nbits - pos))), limit_lo);
    hi = __double2float_ru(row.key_bound(prefix));
  };
  auto candidate = [&](int64_t i, float v, bool valid, float lo, float hi, u128& R, double& key) {
    if (!valid || !((v >= lo && v <= hi) || v != v)) return false;
    key = row.key(v, i);
    R = row.rank(key, i);
    const int sh = nbits - pos;  // <= 95
    return (R >> sh) == (prefix >> sh) && R <= q.limit;
  };

  while (n > kGather && pos < nbits) {
    const int width = min(kDigitBits, nbits - pos), nb = 1 << width;
    const int dshift = nbits - pos - width;
    for (int j = tid; j < kBins; j += kThreads) {
      s.count[j] = 0;
      s.piece[0][j] = s.piece[1][j] = s.piece[2][j] = 0;
    }
    __syncthreads();

    // Histogram of the next digit.  Lanes with the same digit are combined
    // first (match + warp reductions), so shared atomics see one add per
    // digit per warp step; integer adds make the result order-free.
    float lo, hi;
    bounds(lo, hi);
    for_tokens<2>(row.w, row.V, [&](int64_t i, float v, bool valid) {
      u128 R;
      double key;
      int d = -1;
      ull W = 0;
      if (candidate(i, v, valid, lo, hi, R, key)) {
        d = int(unsigned(R >> dshift) & unsigned(nb - 1));
        if (q.mass) W = mass_of(key, T, zmax);
      }
      if (__ballot_sync(kFull, d >= 0) == 0) return;  // (uniform in the warp)
      // peers: the lanes with the same digit (the non-candidates, d = -1,
      // form a group too and reduce zeros); its lowest lane adds for all.
      const unsigned peers = __match_any_sync(kFull, d);
      const bool leader = d >= 0 && lane == __ffs(peers) - 1;
      if (leader) atomicAdd(&s.count[d], unsigned(__popc(peers)));
      if (q.mass) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
        // Per lane each piece is < 2^27, so a group sum fits in 32 bits.
        // Every lane calls, each with the mask of its own group.
        const unsigned p0 = __reduce_add_sync(peers, unsigned(W) & kPieceMask);
        const unsigned p1 = __reduce_add_sync(peers, unsigned(W >> kPieceBits) & kPieceMask);
        const unsigned p2 = __reduce_add_sync(peers, unsigned(W >> (2 * kPieceBits)));
        const bool adds = leader;
#else
        // No warp reductions before sm_80: every lane adds its own pieces.
        const bool adds = d >= 0;
        const unsigned p0 = unsigned(W) & kPieceMask, p1 = unsigned(W >> kPieceBits) & kPieceMask,
                       p2 = unsigned(W >> (2 * kPieceBits));
#endif
        if (adds) {
          if (p0) atomicAdd(&s.piece[0][d], ull(p0));
          if (p1) atomicAdd(&s.piece[1][d], ull(p1));
          if (p2) atomicAdd(&s.piece[2][d], ull(p2));
        }
      }
    });
    __syncthreads();

    // Walk (warp 0): lane l sums bins [l * per, (l + 1) * per); a warp scan
    // finds the first lane whose cumulative weight reaches the target, and
    // that lane finds the bin.  Invariant: before < target <= before + (the
    // weight inside the prefix), so such a bin exists.
    if (warp == 0) {
      const int per = (nb + 31) / 32;
      u128 lw = 0;
      for (int j = 0; j < per; ++j) {
        const int bin = lane * per + j;
        if (bin < nb) lw += bin_weight(s, bin, q.mass);
      }
      const u128 incl = warp_scan(lw);
      u128 tgt = target;
      if (!have_target) tgt = ceil_mul(q.p, shfl128(incl, 31));  // S = all candidates
      unsigned m = __ballot_sync(kFull, before + incl >= tgt);
      if (m == 0) m = 1u << 31;  // unreachable; keeps the loop finite
      if (lane == __ffs(m) - 1) {
        u128 acc = before + incl - lw;
        int chosen = -1;
        for (int j = 0; j < per && chosen < 0; ++j) {
          const int bin = lane * per + j;
          if (bin >= nb) break;
          const u128 bw = bin_weight(s, bin, q.mass);
          if (acc + bw >= tgt) chosen = bin;
          else acc += bw;
        }
        if (chosen < 0) chosen = min(nb, (lane + 1) * per) - 1;  // unreachable
        s.digit = chosen;
        s.before = acc;
        s.target = tgt;
        s.n = s.count[chosen];
      }
    }
    __syncthreads();
    prefix |= u128(unsigned(s.digit)) << dshift;
    pos += width;
    before = s.before;
    target = s.target;
    have_target = true;
    n = s.n;
    // No barrier needed here: s.digit etc. are next written after the
    // barriers of the next level, and s.count is not read again.
  }

  // Gather the remaining candidates (n <= kGather of them, in any order).
  if (tid == 0) {
    s.gn = 0;
    s.result = q.limit;  // unreachable default
  }
  __syncthreads();
  {
    float lo, hi;
    bounds(lo, hi);
    for_tokens<2>(row.w, row.V, [&](int64_t i, float v, bool valid) {
      u128 R;
      double key;
      if (candidate(i, v, valid, lo, hi, R, key)) {
        const int slot = atomicAdd(&s.gn, 1);
        if (slot < kGather) {
          s.gR[slot] = R;
          if (q.mass) s.gW[slot] = mass_of(key, T, zmax);
        }
      }
    });
  }
  __syncthreads();

  // Finish: candidate t's inclusive cumulative weight in rank order is the sum
  // over the gathered candidates with R <= R_t; the cutoff is the unique one
  // where before + cum first reaches the target (cum - own weight < target).
  const int g = min(s.gn, kGather);
  for (int t = tid; t < g; t += kThreads) {
    const u128 rt = s.gR[t];
    const u128 wt = q.mass ? u128(s.gW[t]) : u128(1);
    u128 cum = 0, total = 0;
    for (int j = 0; j < g; ++j) {
      const u128 wj = q.mass ? u128(s.gW[j]) : u128(1);
      total += wj;
      if (s.gR[j] <= rt) cum += wj;
    }
    const u128 tgt = have_target ? target : ceil_mul(q.p, total);
    if (before + cum >= tgt && before + cum - wt < tgt) s.result = rt;
  }
  __syncthreads();
  const u128 result = s.result;
  __syncthreads();  // s may be reused as soon as this returns
  return result;
}

}  // namespace sampling_detail
}  // namespace cuda
}  // namespace keraslm
