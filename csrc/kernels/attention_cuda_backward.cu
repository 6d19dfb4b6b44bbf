// Backward entry points of attention_cuda.h: delta, dQ (here) and dK / dV
// (attention_cuda_backward_dkdv.cu).  float32 FMA math for every dtype; no
// atomics, every output element is written once by one thread, so results
// are bit-identical from run to run.
//
//   1. delta_kernel: delta[b,h,i] = <dout_i, out_i> - dlse[b,h,i]
//      (a gradient on lse adds dlse * P to dS: folded into delta).
//   2. dkdv kernel (other file).
//   3. dq_kernel: one block per (b, h, query tile of BQ rows) walks the key
//      tiles up to the tile's last visible key:
//        P = exp2(x - log2(e) lse), dS = P (dP - delta), dq_i = scale sum_j dS_ij k_j
//      Threads: warp w owns rows w*RW .. w*RW+RW-1 (RW = 8, or 4 for D = 256);
//      scores: lane = key of the 32-key tile; accumulation: lane = column
//      d = lane + 32u.  Shared memory (float32):
//        sQ (q * scale * log2 e), sDO [BQ][DB]  broadcast float4 reads
//        sK, sV [32][DB + 4]   lane = key reads float4 (pad: no bank conflict)
//        sDS [BQ][32]          the warp's own rows only
//
// Workspace: float delta[B * H * Tq] (row = (b * H + h) * Tq + i).
#include "kernels/attention_cuda_common.cuh"

namespace keraslm {
namespace cuda {
namespace attn {
namespace {

// One warp per row (b, h, i).
template <typename T>
__global__ void __launch_bounds__(kThreads) delta_kernel(const AttentionGradParams g, float* delta) {
  const AttentionParams& p = g.fwd;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (row >= p.B * p.H * p.Tq) return;
  const int64_t i = row % p.Tq, h = (row / p.Tq) % p.H, b = row / (p.Tq * p.H);
  const T* o = static_cast<const T*>(p.out) + b * p.out_stride.b + i * p.out_stride.t + h * p.out_stride.h;
  const T* dO = static_cast<const T*>(g.dout) + b * g.dout_stride.b + i * g.dout_stride.t + h * g.dout_stride.h;
  float s = 0.f;
  for (int d = lane; d < p.D; d += 32) s = fmaf(to_float(o[d]), to_float(dO[d]), s);
  s = warp_sum(s);
  if (lane == 0) delta[row] = s - (g.dlse != nullptr ? g.dlse[row] : 0.f);
}

template <int DB>
struct DqShape {
  static constexpr int kRowsPerWarp = DB <= 128 ? 8 : 4;
  static constexpr int kRows = 4 * kRowsPerWarp;
  static constexpr int kKeys = 32;
  static constexpr int kKPitch = DB + 4;
  static constexpr size_t kSmemBytes =
      sizeof(float) * size_t(2 * kRows * DB + 2 * kKeys * kKPitch + kRows * kKeys);
};

struct DqArgs {
  AttentionGradParams g;
  const float* delta;
  int64_t query_tiles;
  bool vec;  // q, k, v, dout rows 16-byte aligned and D % (16 / sizeof(T)) == 0
};

template <typename T, int DB>
__global__ void __launch_bounds__(kThreads) dq_kernel(const DqArgs a) {
  using S = DqShape<DB>;
  constexpr int RW = S::kRowsPerWarp, BQ = S::kRows, BK = S::kKeys, KP = S::kKPitch, NU = DB / 32;
  const AttentionParams& p = a.g.fwd;
  extern __shared__ float4 dq_smem[];
  float* sQ = reinterpret_cast<float*>(dq_smem);
  float* sDO = sQ + BQ * DB;
  float* sK = sDO + BQ * DB;
  float* sV = sK + BK * KP;
  float* sDS = sV + BK * KP;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int D = static_cast<int>(p.D);

  int64_t x = blockIdx.x;
  const int64_t qt = a.query_tiles - 1 - x % a.query_tiles;  // long causal tiles first
  x /= a.query_tiles;
  const int64_t h = x % p.H, b = x / p.H, hk = h / (p.H / p.Hkv);
  const int64_t i0 = qt * BQ;
  const int nr = static_cast<int>(p.Tq - i0 < BQ ? p.Tq - i0 : BQ);
  const int len = key_length(p, b);
  const int kend_blk = key_end(p, i0 + nr - 1, len);
  const float sl2 = p.scale * kLog2e;

  // The warp's rows (uniform across lanes); kend = 0 for padding rows and
  // rows that saw no key (lse = -inf).
  float lse2[RW], dlt[RW];
  int kend[RW];
  int kend_hi = 0;
#pragma unroll
  for (int rr = 0; rr < RW; ++rr) {
    const int r = warp * RW + rr;
    const int64_t row = (b * p.H + h) * p.Tq + i0 + r;
    lse2[rr] = r < nr ? p.lse[row] * kLog2e : neg_inf();
    dlt[rr] = r < nr ? a.delta[row] : 0.f;
    kend[rr] = (r < nr && lse2[rr] != neg_inf()) ? key_end(p, i0 + r, len) : 0;
    kend_hi = max(kend_hi, kend[rr]);
  }

  float dq[RW][NU];
#pragma unroll
  for (int rr = 0; rr < RW; ++rr)
#pragma unroll
    for (int u = 0; u < NU; ++u) dq[rr][u] = 0.f;

  const T* kb = static_cast<const T*>(p.k) + b * p.k_stride.b + hk * p.k_stride.h;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_stride.b + hk * p.v_stride.h;
  if (kend_blk > 0) {
    const T* qb = static_cast<const T*>(p.q) + b * p.q_stride.b + i0 * p.q_stride.t + h * p.q_stride.h;
    const T* ob = static_cast<const T*>(a.g.dout) + b * a.g.dout_stride.b + i0 * a.g.dout_stride.t +
                  h * a.g.dout_stride.h;
    load_tile<T, BQ, DB>(sQ, DB, [&](int r) -> const T* { return r < nr ? qb + r * p.q_stride.t : nullptr; },
                         D, sl2, a.vec);
    load_tile<T, BQ, DB>(sDO, DB, [&](int r) -> const T* {
      return r < nr ? ob + r * a.g.dout_stride.t : nullptr;
    }, D, 1.f, a.vec);
  }
  const int dl4 = (D + 3) & ~3;

  for (int j0 = 0; j0 < kend_blk; j0 += BK) {
    __syncthreads();  // previous key tile consumed (sQ / sDO written, first time)
    load_tile<T, BK, DB>(sK, KP, [&](int r) -> const T* {
      return j0 + r < len ? kb + int64_t(j0 + r) * p.k_stride.t : nullptr;
    }, D, 1.f, a.vec);
    load_tile<T, BK, DB>(sV, KP, [&](int r) -> const T* {
      return j0 + r < len ? vb + int64_t(j0 + r) * p.v_stride.t : nullptr;
    }, D, 1.f, a.vec);
    __syncthreads();
    if (j0 >= kend_hi) continue;  // warp uniform

    float s[RW], dp[RW];
#pragma unroll
    for (int rr = 0; rr < RW; ++rr) s[rr] = dp[rr] = 0.f;
#pragma unroll 2
    for (int d = 0; d < dl4; d += 4) {
      const float4 kv = *reinterpret_cast<const float4*>(sK + lane * KP + d);
      const float4 vv = *reinterpret_cast<const float4*>(sV + lane * KP + d);
#pragma unroll
      for (int rr = 0; rr < RW; ++rr) {
        const int r = warp * RW + rr;
        s[rr] = dot4(*reinterpret_cast<const float4*>(sQ + r * DB + d), kv, s[rr]);
        dp[rr] = dot4(*reinterpret_cast<const float4*>(sDO + r * DB + d), vv, dp[rr]);
      }
    }
#pragma unroll
    for (int rr = 0; rr < RW; ++rr) {
      const bool vis = j0 + lane < kend[rr];
      const float pr = vis ? exp2f(s[rr] - lse2[rr]) : 0.f;
      sDS[(warp * RW + rr) * BK + lane] = vis ? pr * (dp[rr] - dlt[rr]) : 0.f;
    }
    __syncwarp();

    const int cl = min(BK, (kend_hi - j0 + 3) & ~3);
#pragma unroll 2
    for (int c = 0; c < cl; c += 4) {
      float4 ds[RW];
#pragma unroll
      for (int rr = 0; rr < RW; ++rr) ds[rr] = *reinterpret_cast<const float4*>(sDS + (warp * RW + rr) * BK + c);
#pragma unroll
      for (int u = 0; u < NU; ++u) {
        const float* kc = sK + c * KP + lane + 32 * u;
        const float4 k4 = make_float4(kc[0], kc[KP], kc[2 * KP], kc[3 * KP]);
#pragma unroll
        for (int rr = 0; rr < RW; ++rr) dq[rr][u] = dot4(ds[rr], k4, dq[rr][u]);
      }
    }
  }

  T* dqb = static_cast<T*>(a.g.dq) + b * a.g.dq_stride.b + i0 * a.g.dq_stride.t + h * a.g.dq_stride.h;
#pragma unroll
  for (int rr = 0; rr < RW; ++rr) {
    const int r = warp * RW + rr;
    if (r >= nr) continue;
#pragma unroll
    for (int u = 0; u < NU; ++u) {
      const int d = lane + 32 * u;
      if (d < D) dqb[r * a.g.dq_stride.t + d] = from_float<T>(dq[rr][u] * p.scale);
    }
  }
}

template <typename T, int DB>
const char* launch_dq(DqArgs a, cudaStream_t stream) {
  using S = DqShape<DB>;
  const AttentionParams& p = a.g.fwd;
  a.query_tiles = ceil_div(p.Tq, S::kRows);
  const int64_t blocks = p.B * p.H * a.query_tiles;
  if (blocks > kMaxGridX) return kGridTooLarge;
  auto kernel = dq_kernel<T, DB>;
  if (const char* err = allow_smem(kernel, S::kSmemBytes)) return err;
  kernel<<<static_cast<unsigned>(blocks), kThreads, S::kSmemBytes, stream>>>(a);
  return last_launch_error();
}

template <typename T>
const char* launch_dtype(const AttentionGradParams& g, float* delta, cudaStream_t stream) {
  const AttentionParams& p = g.fwd;
  if (p.Tq > 0) {
    const int64_t blocks = ceil_div(p.B * p.H * p.Tq, kThreads / 32);
    if (blocks > kMaxGridX) return kGridTooLarge;
    delta_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(g, delta);
    if (const char* err = last_launch_error()) return err;
  }
  if (p.Tk > 0 && p.Hkv > 0) {
    if (const char* err = backward_dkdv(g, delta, stream)) return err;
  }
  if (p.Tq > 0) {
    DqArgs a;
    a.g = g;
    a.delta = delta;
    a.query_tiles = 0;
    a.vec = (p.D % (16 / sizeof(T))) == 0 && rows_aligned16(p.q, p.q_stride, p.B, p.Tq, p.H, sizeof(T)) &&
            rows_aligned16(p.k, p.k_stride, p.B, p.Tk, p.Hkv, sizeof(T)) &&
            rows_aligned16(p.v, p.v_stride, p.B, p.Tk, p.Hkv, sizeof(T)) &&
            rows_aligned16(g.dout, g.dout_stride, p.B, p.Tq, p.H, sizeof(T));
    switch (head_bucket(p.D)) {
      case 32: return launch_dq<T, 32>(a, stream);
      case 64: return launch_dq<T, 64>(a, stream);
      case 128: return launch_dq<T, 128>(a, stream);
      default: return launch_dq<T, 256>(a, stream);
    }
  }
  return nullptr;
}

}  // namespace
}  // namespace attn

size_t attention_backward_workspace(const AttentionGradParams& g) {
  const AttentionParams& p = g.fwd;
  if (p.B <= 0 || p.H <= 0 || p.Tq <= 0) return 0;
  return static_cast<size_t>(p.B * p.H * p.Tq) * sizeof(float);
}

const char* attention_backward(const AttentionGradParams& g, void* workspace, void* stream) {
  const AttentionParams& p = g.fwd;
  if (p.B <= 0 || p.H <= 0) return nullptr;
  if (p.Tq <= 0 && p.Tk <= 0) return nullptr;
  float* delta = static_cast<float*>(workspace);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::kBFloat16: return attn::launch_dtype<__nv_bfloat16>(g, delta, s);
    case DType::kFloat16: return attn::launch_dtype<__half>(g, delta, s);
    default: return attn::launch_dtype<float>(g, delta, s);
  }
}

}  // namespace cuda
}  // namespace keraslm
