// Backward, dK and dV (float32 FMA math for every dtype, deterministic).
//
// Block: one (b, kv head hk, key tile of BK keys) owns dK, dV of its keys in
// registers and walks, for each of the G query heads h = hk * G + g, the query
// tiles of 32 rows that can see the tile (causal: rows i >= j0 - (Tk - Tq)).
// For a (key tile, query tile) pair, with x in log2 units and P recomputed
// from the saved lse:
//   P[j][i]  = exp2(scale log2(e) <k_j, q_i> - log2(e) lse_i)   (0 if hidden)
//   dP[j][i] = <v_j, dout_i>
//   dS[j][i] = P[j][i] (dP[j][i] - delta_i)
//   dV[j]   += sum_i P[j][i] dout_i,    dK[j] += scale * sum_i dS[j][i] q_i
// Threads: warp w owns keys w*KW .. w*KW+KW-1 of the tile (KW = 8, or 4 for
// D = 256); in the score step lane = query row of the tile, in the
// accumulation step lane = output column d = lane + 32u.  The warp's P / dS
// rows go through shared memory (its own rows only: __syncwarp suffices).
// Shared memory (float32):
//   sK, sV [BK][DB]          broadcast float4 reads (all lanes, same key)
//   sQ, sDO [32][DB + 4]     lane = row reads float4: pad keeps quarter-warps
//                            on distinct bank groups
//   sP, sDS [BK][32]
// Keys j >= key_lengths[b] have no visible query: dK = dV = 0 is written.
#include "kernels/attention_cuda_common.cuh"

namespace keraslm {
namespace cuda {
namespace attn {
namespace {

template <int DB>
struct DkdvShape {
  static constexpr int kKeysPerWarp = DB <= 128 ? 8 : 4;
  static constexpr int kKeys = 4 * kKeysPerWarp;
  static constexpr int kRows = 32;
  static constexpr int kQPitch = DB + 4;
  static constexpr size_t kSmemBytes =
      sizeof(float) * size_t(2 * kKeys * DB + 2 * kRows * kQPitch + 2 * kKeys * kRows);
};

struct DkdvArgs {
  AttentionGradParams g;
  const float* delta;  // [B, H, Tq]
  int64_t key_tiles;
  bool vec;  // q, k, v, dout rows 16-byte aligned and D % (16 / sizeof(T)) == 0
};

template <typename T, int DB>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(const DkdvArgs a) {
  using S = DkdvShape<DB>;
  constexpr int KW = S::kKeysPerWarp, BK = S::kKeys, BQ = S::kRows, QP = S::kQPitch, NU = DB / 32;
  const AttentionParams& p = a.g.fwd;
  extern __shared__ float4 dkdv_smem[];
  float* sK = reinterpret_cast<float*>(dkdv_smem);
  float* sV = sK + BK * DB;
  float* sQ = sV + BK * DB;
  float* sDO = sQ + BQ * QP;
  float* sP = sDO + BQ * QP;
  float* sDS = sP + BK * BQ;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int D = static_cast<int>(p.D);

  int64_t x = blockIdx.x;
  const int64_t kt = x % a.key_tiles;
  x /= a.key_tiles;
  const int64_t hk = x % p.Hkv, b = x / p.Hkv, G = p.H / p.Hkv;
  const int j0 = static_cast<int>(kt * BK);
  const int len = key_length(p, b);

  float dk[KW][NU], dv[KW][NU];
#pragma unroll
  for (int cc = 0; cc < KW; ++cc)
#pragma unroll
    for (int u = 0; u < NU; ++u) dk[cc][u] = dv[cc][u] = 0.f;

  if (j0 < len) {  // block uniform
    const T* kb = static_cast<const T*>(p.k) + b * p.k_stride.b + hk * p.k_stride.h;
    const T* vb = static_cast<const T*>(p.v) + b * p.v_stride.b + hk * p.v_stride.h;
    load_tile<T, BK, DB>(sK, DB, [&](int r) -> const T* {
      return j0 + r < len ? kb + int64_t(j0 + r) * p.k_stride.t : nullptr;
    }, D, 1.f, a.vec);
    load_tile<T, BK, DB>(sV, DB, [&](int r) -> const T* {
      return j0 + r < len ? vb + int64_t(j0 + r) * p.v_stride.t : nullptr;
    }, D, 1.f, a.vec);

    // First query row that sees key j0 (later keys need later rows).
    const int64_t off = p.Tk - p.Tq;
    const int64_t i_first = p.causal ? (j0 - off > 0 ? j0 - off : 0) : 0;
    const float sl2 = p.scale * kLog2e;
    const int dl4 = (D + 3) & ~3;

    for (int64_t gi = 0; gi < G; ++gi) {
      const int64_t h = hk * G + gi;
      const T* qb = static_cast<const T*>(p.q) + b * p.q_stride.b + h * p.q_stride.h;
      const T* ob = static_cast<const T*>(a.g.dout) + b * a.g.dout_stride.b + h * a.g.dout_stride.h;
      for (int64_t i0 = i_first; i0 < p.Tq; i0 += BQ) {
        __syncthreads();  // previous query tile consumed (sK / sV written, first time)
        load_tile<T, BQ, DB>(sQ, QP, [&](int r) -> const T* {
          return i0 + r < p.Tq ? qb + (i0 + r) * p.q_stride.t : nullptr;
        }, D, 1.f, a.vec);
        load_tile<T, BQ, DB>(sDO, QP, [&](int r) -> const T* {
          return i0 + r < p.Tq ? ob + (i0 + r) * a.g.dout_stride.t : nullptr;
        }, D, 1.f, a.vec);
        // This lane's query row.
        const int64_t i = i0 + lane;
        const int64_t row = (b * p.H + h) * p.Tq + i;
        const float lse2 = i < p.Tq ? p.lse[row] * kLog2e : neg_inf();
        const float dlt = i < p.Tq ? a.delta[row] : 0.f;
        const int kend = (i < p.Tq && lse2 != neg_inf()) ? key_end(p, i, len) : 0;
        __syncthreads();

        float s[KW], dp[KW];
#pragma unroll
        for (int cc = 0; cc < KW; ++cc) s[cc] = dp[cc] = 0.f;
#pragma unroll 2
        for (int d = 0; d < dl4; d += 4) {
          const float4 qv = *reinterpret_cast<const float4*>(sQ + lane * QP + d);
          const float4 ov = *reinterpret_cast<const float4*>(sDO + lane * QP + d);
#pragma unroll
          for (int cc = 0; cc < KW; ++cc) {
            const int c = warp * KW + cc;
            s[cc] = dot4(*reinterpret_cast<const float4*>(sK + c * DB + d), qv, s[cc]);
            dp[cc] = dot4(*reinterpret_cast<const float4*>(sV + c * DB + d), ov, dp[cc]);
          }
        }
#pragma unroll
        for (int cc = 0; cc < KW; ++cc) {
          const int c = warp * KW + cc;
          const bool vis = j0 + c < kend;
          const float pr = vis ? exp2f(fmaf(s[cc], sl2, -lse2)) : 0.f;
          sP[c * BQ + lane] = pr;
          sDS[c * BQ + lane] = vis ? pr * (dp[cc] - dlt) : 0.f;
        }
        __syncwarp();

#pragma unroll 2
        for (int r = 0; r < BQ; r += 4) {
#pragma unroll
          for (int u = 0; u < NU; ++u) {
            const float* qc = sQ + r * QP + lane + 32 * u;
            const float* oc = sDO + r * QP + lane + 32 * u;
            const float4 q4 = make_float4(qc[0], qc[QP], qc[2 * QP], qc[3 * QP]);
            const float4 o4 = make_float4(oc[0], oc[QP], oc[2 * QP], oc[3 * QP]);
#pragma unroll
            for (int cc = 0; cc < KW; ++cc) {
              const int c = warp * KW + cc;
              dv[cc][u] = dot4(*reinterpret_cast<const float4*>(sP + c * BQ + r), o4, dv[cc][u]);
              dk[cc][u] = dot4(*reinterpret_cast<const float4*>(sDS + c * BQ + r), q4, dk[cc][u]);
            }
          }
        }
      }
    }
  }

  T* dkb = static_cast<T*>(a.g.dk) + b * a.g.dk_stride.b + hk * a.g.dk_stride.h;
  T* dvb = static_cast<T*>(a.g.dv) + b * a.g.dv_stride.b + hk * a.g.dv_stride.h;
#pragma unroll
  for (int cc = 0; cc < KW; ++cc) {
    const int64_t j = j0 + warp * KW + cc;
    if (j >= p.Tk) continue;
#pragma unroll
    for (int u = 0; u < NU; ++u) {
      const int d = lane + 32 * u;
      if (d >= D) continue;
      dkb[j * a.g.dk_stride.t + d] = from_float<T>(dk[cc][u] * p.scale);
      dvb[j * a.g.dv_stride.t + d] = from_float<T>(dv[cc][u]);
    }
  }
}

template <typename T, int DB>
const char* launch(DkdvArgs a, cudaStream_t stream) {
  using S = DkdvShape<DB>;
  const AttentionParams& p = a.g.fwd;
  a.key_tiles = ceil_div(p.Tk, S::kKeys);
  const int64_t blocks = p.B * p.Hkv * a.key_tiles;
  if (blocks > kMaxGridX) return kGridTooLarge;
  auto kernel = dkdv_kernel<T, DB>;
  if (const char* err = allow_smem(kernel, S::kSmemBytes)) return err;
  kernel<<<static_cast<unsigned>(blocks), kThreads, S::kSmemBytes, stream>>>(a);
  return last_launch_error();
}

template <typename T>
const char* launch_dtype(DkdvArgs a, cudaStream_t stream) {
  const AttentionGradParams& g = a.g;
  const AttentionParams& p = g.fwd;
  a.vec = (p.D % (16 / sizeof(T))) == 0 && rows_aligned16(p.q, p.q_stride, p.B, p.Tq, p.H, sizeof(T)) &&
          rows_aligned16(p.k, p.k_stride, p.B, p.Tk, p.Hkv, sizeof(T)) &&
          rows_aligned16(p.v, p.v_stride, p.B, p.Tk, p.Hkv, sizeof(T)) &&
          rows_aligned16(g.dout, g.dout_stride, p.B, p.Tq, p.H, sizeof(T));
  switch (head_bucket(p.D)) {
    case 32: return launch<T, 32>(a, stream);
    case 64: return launch<T, 64>(a, stream);
    case 128: return launch<T, 128>(a, stream);
    default: return launch<T, 256>(a, stream);
  }
}

}  // namespace

const char* backward_dkdv(const AttentionGradParams& g, const float* delta, cudaStream_t stream) {
  DkdvArgs a;
  a.g = g;
  a.delta = delta;
  a.key_tiles = 0;
  a.vec = false;
  switch (g.fwd.dtype) {
    case DType::kBFloat16: return launch_dtype<__nv_bfloat16>(a, stream);
    case DType::kFloat16: return launch_dtype<__half>(a, stream);
    default: return launch_dtype<float>(a, stream);
  }
}

}  // namespace attn
}  // namespace cuda
}  // namespace keraslm
