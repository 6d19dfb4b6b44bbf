// Flash-attention forward with float32 FMA math: every dtype, any D <= 256.
//
// Rows.  The query rows that read kv head hk of batch b are enumerated
// rho = g * Tq + i (g < G the query head within the group, h = hk * G + g).
// A block owns BQ = 4 * R consecutive rho (warp w owns rows w*R .. w*R+R-1),
// so one K/V tile in shared memory serves every query head of a GQA group
// when Tq is small (decode), and plain query tiles of one head otherwise.
//
// Keys.  The block walks key tiles of BK = 32 * KPL keys (KPL = 2 for
// D <= 128, 1 for D = 256) up to the largest visible end among its rows; with
// nsplit > 1 it only walks its share [k_begin, k_end) of that range.
//
// Per key tile (shared memory, all float32):
//   sQ [BQ][DB]      q * scale * log2(e), loaded once
//   sK [BK][DB + 4]  lane c reads key row c as float4: the +4 pad makes the
//                    8 lanes of each quarter-warp hit distinct bank groups
//   sV [BK][DB]      lane reads column d = lane + 32u: conflict free
//   sP [BQ][BK]      probabilities of the tile, per warp rows
// Scores: lane owns keys lane + 32e and computes x[r][e] for the warp's R
// rows; the online softmax keeps the running max m (log2 units, identical in
// all lanes) and a per-lane partial sum l (summed across lanes at the end:
// the rescale factor alpha is the same in every lane, so this is exact).
// O += P V: lane owns output columns d = lane + 32u, u < DB / 32.
// Non-finite scores: fmaxf skips NaN, but exp2f(NaN - m) is NaN, so a NaN
// (or +inf) score a row can see makes its l and output NaN; the epilogue
// tests l == 0 (no key), not l > 0, so that NaN reaches out and lse.
#include "kernels/attention_cuda_common.cuh"

namespace keraslm {
namespace cuda {
namespace attn {
namespace {

template <int DB, int R>
struct FmaShape {
  static constexpr int kRows = 4 * R;
  static constexpr int kKeysPerLane = DB <= 128 ? 2 : 1;
  static constexpr int kKeys = 32 * kKeysPerLane;
  static constexpr int kKPitch = DB + 4;
  static constexpr size_t kSmemBytes =
      sizeof(float) * size_t(kRows * DB + kKeys * kKPitch + kKeys * DB + kRows * kKeys);
};

struct FmaArgs {
  AttentionParams p;
  int64_t row_tiles;  // ceil(G * Tq / BQ) per (b, kv head)
  int nsplit;
  bool vec;           // q, k, v rows 16-byte aligned and D % (16 / sizeof(T)) == 0
  float* part_acc;    // [B*H*Tq][nsplit][D], nsplit > 1 only
  float2* part_ml;    // [B*H*Tq][nsplit]: (max in log2 units, sum)
};

template <typename T, int DB, int R>
__global__ void __launch_bounds__(kThreads) fma_forward_kernel(const FmaArgs a) {
  using S = FmaShape<DB, R>;
  constexpr int BQ = S::kRows, KPL = S::kKeysPerLane, BK = S::kKeys, KP = S::kKPitch, NU = DB / 32;
  const AttentionParams& p = a.p;
  extern __shared__ float4 fma_smem[];
  float* sQ = reinterpret_cast<float*>(fma_smem);
  float* sK = sQ + BQ * DB;
  float* sV = sK + BK * KP;
  float* sP = sV + BK * DB;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int D = static_cast<int>(p.D);

  // blockIdx.x -> (split, row tile, kv head, batch), split fastest; row tiles
  // run last-first so that the long causal tiles start early.
  int64_t x = blockIdx.x;
  const int split = static_cast<int>(x % a.nsplit);
  x /= a.nsplit;
  const int64_t rt = a.row_tiles - 1 - x % a.row_tiles;
  x /= a.row_tiles;
  const int64_t hk = x % p.Hkv, b = x / p.Hkv;
  const int64_t G = p.H / p.Hkv, rows = G * p.Tq, rho0 = rt * BQ;
  const int nr = static_cast<int>(rows - rho0 < BQ ? rows - rho0 : BQ);
  const int len = key_length(p, b);

  // Largest query index of the tile: its last row, unless the tile crosses
  // into the next head (then some row has i = Tq - 1).
  const int64_t last = rho0 + nr - 1;
  const int64_t i_max = (rho0 / p.Tq == last / p.Tq) ? last % p.Tq : p.Tq - 1;
  const int kend_blk = key_end(p, i_max, len);
  const int chunk = static_cast<int>(ceil_div(ceil_div(kend_blk, a.nsplit), BK) * BK);
  const int k_begin = min(split * chunk, kend_blk);
  const int k_end = min(k_begin + chunk, kend_blk);

  const T* qb = static_cast<const T*>(p.q) + b * p.q_stride.b;
  const T* kb = static_cast<const T*>(p.k) + b * p.k_stride.b + hk * p.k_stride.h;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_stride.b + hk * p.v_stride.h;

  // The warp's rows: visible end clipped to this split (0 for padding rows).
  int kend[R];
  int kend_hi = 0;
#pragma unroll
  for (int rr = 0; rr < R; ++rr) {
    const int r = warp * R + rr;
    kend[rr] = r < nr ? min(key_end(p, (rho0 + r) % p.Tq, len), k_end) : 0;
    kend_hi = max(kend_hi, kend[rr]);
  }

  float m[R], l[R], acc[R][NU];
#pragma unroll
  for (int rr = 0; rr < R; ++rr) {
    m[rr] = neg_inf();
    l[rr] = 0.f;
#pragma unroll
    for (int u = 0; u < NU; ++u) acc[rr][u] = 0.f;
  }

  if (k_begin < k_end) {
    const float qscale = p.scale * kLog2e;
    load_tile<T, BQ, DB>(sQ, DB, [&](int r) -> const T* {
      if (r >= nr) return nullptr;
      const int64_t rho = rho0 + r, g = rho / p.Tq, i = rho - g * p.Tq;
      return qb + i * p.q_stride.t + (hk * G + g) * p.q_stride.h;
    }, D, qscale, a.vec);
  }
  const int dl4 = (D + 3) & ~3;

  for (int j0 = k_begin; j0 < k_end; j0 += BK) {
    __syncthreads();  // previous tile consumed (and sQ written, first time)
    load_tile<T, BK, DB>(sK, KP, [&](int r) -> const T* {
      return j0 + r < k_end ? kb + int64_t(j0 + r) * p.k_stride.t : nullptr;
    }, D, 1.f, a.vec);
    load_tile<T, BK, DB>(sV, DB, [&](int r) -> const T* {
      return j0 + r < k_end ? vb + int64_t(j0 + r) * p.v_stride.t : nullptr;
    }, D, 1.f, a.vec);
    __syncthreads();
    if (j0 >= kend_hi) continue;  // no row of this warp sees the tile (warp uniform)

    float s[R][KPL];
#pragma unroll
    for (int rr = 0; rr < R; ++rr)
#pragma unroll
      for (int e = 0; e < KPL; ++e) s[rr][e] = 0.f;
#pragma unroll 2
    for (int d = 0; d < dl4; d += 4) {
      float4 kv[KPL];
#pragma unroll
      for (int e = 0; e < KPL; ++e) kv[e] = *reinterpret_cast<const float4*>(sK + (lane + 32 * e) * KP + d);
#pragma unroll
      for (int rr = 0; rr < R; ++rr) {
        const float4 qv = *reinterpret_cast<const float4*>(sQ + (warp * R + rr) * DB + d);
#pragma unroll
        for (int e = 0; e < KPL; ++e) s[rr][e] = dot4(qv, kv[e], s[rr][e]);
      }
    }

    // Online softmax, one row at a time.
#pragma unroll
    for (int rr = 0; rr < R; ++rr) {
      float mx = neg_inf();
#pragma unroll
      for (int e = 0; e < KPL; ++e) {
        if (j0 + lane + 32 * e >= kend[rr]) s[rr][e] = neg_inf();
        mx = fmaxf(mx, s[rr][e]);
      }
      mx = warp_max(mx);
      const float m_new = fmaxf(m[rr], mx);
      const float m_use = m_new == neg_inf() ? 0.f : m_new;  // row saw nothing yet: p = 0
      const float alpha = exp2f(m[rr] - m_use);
      m[rr] = m_new;
      float ps = 0.f;
#pragma unroll
      for (int e = 0; e < KPL; ++e) {
        const float pe = exp2f(s[rr][e] - m_use);
        sP[(warp * R + rr) * BK + lane + 32 * e] = pe;
        ps += pe;
      }
      l[rr] = l[rr] * alpha + ps;
#pragma unroll
      for (int u = 0; u < NU; ++u) acc[rr][u] *= alpha;
    }
    __syncwarp();

    // O += P V over the keys of the tile that exist (the rest have p = 0 and
    // zero V rows).
    const int cl = min(BK, (k_end - j0 + 3) & ~3);
#pragma unroll 2
    for (int c = 0; c < cl; c += 4) {
      float4 pv[R];
#pragma unroll
      for (int rr = 0; rr < R; ++rr) pv[rr] = *reinterpret_cast<const float4*>(sP + (warp * R + rr) * BK + c);
#pragma unroll
      for (int u = 0; u < NU; ++u) {
        const float* vc = sV + c * DB + lane + 32 * u;
        const float4 vv = make_float4(vc[0], vc[DB], vc[2 * DB], vc[3 * DB]);
#pragma unroll
        for (int rr = 0; rr < R; ++rr) acc[rr][u] = dot4(pv[rr], vv, acc[rr][u]);
      }
    }
  }

  // Epilogue: no block-level synchronisation below.
#pragma unroll
  for (int rr = 0; rr < R; ++rr) {
    const int r = warp * R + rr;
    if (r >= nr) continue;  // warp uniform
    const float lt = warp_sum(l[rr]);
    const int64_t rho = rho0 + r, g = rho / p.Tq, i = rho - g * p.Tq, h = hk * G + g;
    const int64_t row = (b * p.H + h) * p.Tq + i;  // index into lse [B, H, Tq]
    if (a.nsplit == 1) {
      // lt == 0: the row saw no key (out 0, lse -inf); NaN: it saw a NaN or +inf score (NaN out and lse).
      const float inv = lt == 0.f ? 0.f : 1.f / lt;
      T* o = static_cast<T*>(p.out) + b * p.out_stride.b + i * p.out_stride.t + h * p.out_stride.h;
#pragma unroll
      for (int u = 0; u < NU; ++u) {
        const int d = lane + 32 * u;
        if (d < D) o[d] = from_float<T>(acc[rr][u] * inv);
      }
      if (lane == 0) p.lse[row] = lt == 0.f ? neg_inf() : (m[rr] + log2f(lt)) * kLn2;
    } else {
      const int64_t slot = row * a.nsplit + split;
      if (lane == 0) a.part_ml[slot] = make_float2(m[rr], lt);
      if (lt != 0.f) {  // empty partials leave their accumulator unwritten (NaN ones are written)
        float* pa = a.part_acc + slot * p.D;
#pragma unroll
        for (int u = 0; u < NU; ++u) {
          const int d = lane + 32 * u;
          if (d < D) pa[d] = acc[rr][u];
        }
      }
    }
  }
}

template <typename T, int DB, int R>
const char* launch(const FmaArgs& a, cudaStream_t stream) {
  using S = FmaShape<DB, R>;
  const AttentionParams& p = a.p;
  const int64_t blocks = p.B * p.Hkv * a.row_tiles * a.nsplit;
  if (blocks > kMaxGridX) return kGridTooLarge;
  auto kernel = fma_forward_kernel<T, DB, R>;
  if (const char* err = allow_smem(kernel, S::kSmemBytes)) return err;
  kernel<<<static_cast<unsigned>(blocks), kThreads, S::kSmemBytes, stream>>>(a);
  return last_launch_error();
}

template <typename T, int R>
const char* launch_bucket(FmaArgs a, cudaStream_t stream) {
  const AttentionParams& p = a.p;
  a.row_tiles = ceil_div(p.H / p.Hkv * p.Tq, 4 * R);
  a.vec = (p.D % (16 / sizeof(T))) == 0 &&
          rows_aligned16(p.q, p.q_stride, p.B, p.Tq, p.H, sizeof(T)) &&
          rows_aligned16(p.k, p.k_stride, p.B, p.Tk, p.Hkv, sizeof(T)) &&
          rows_aligned16(p.v, p.v_stride, p.B, p.Tk, p.Hkv, sizeof(T));
  switch (head_bucket(p.D)) {
    case 32: return launch<T, 32, R>(a, stream);
    case 64: return launch<T, 64, R>(a, stream);
    case 128: return launch<T, 128, R>(a, stream);
    default: return launch<T, 256, R>(a, stream);
  }
}

template <typename T>
const char* launch_dtype(const FmaArgs& a, int rows_per_warp, cudaStream_t stream) {
  return rows_per_warp == 2 ? launch_bucket<T, 2>(a, stream) : launch_bucket<T, 8>(a, stream);
}

}  // namespace

const char* fma_forward(const AttentionParams& p, int rows_per_warp, int nsplit, float* part_acc,
                        float2* part_ml, cudaStream_t stream) {
  FmaArgs a;
  a.p = p;
  a.row_tiles = 0;
  a.nsplit = nsplit;
  a.vec = false;
  a.part_acc = part_acc;
  a.part_ml = part_ml;
  switch (p.dtype) {
    case DType::kBFloat16: return launch_dtype<__nv_bfloat16>(a, rows_per_warp, stream);
    case DType::kFloat16: return launch_dtype<__half>(a, rows_per_warp, stream);
    default: return launch_dtype<float>(a, rows_per_warp, stream);
  }
}

}  // namespace attn
}  // namespace cuda
}  // namespace keraslm
