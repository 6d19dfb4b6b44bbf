// Tensor-core flash-attention forward for bfloat16 / float16, D % 16 == 0,
// D <= 128 (sm_80+: cp.async, ldmatrix, mma.sync m16n8k16 with float32
// accumulators).
//
// Block: one (b, h) and BQ = 16 * NW query rows (NW = kMmaWarps = 4 warps,
// 128 threads); warp w owns rows 16w .. 16w+15.  DB is the head-size bucket
// (32, 64, 128); k-steps / column tiles at or beyond D are skipped.  Key tiles
// of BK = 64 keys.  Shared memory (element type, rows padded to DB + 8
// elements so that the eight 16-byte rows read by each ldmatrix phase fall in
// distinct bank groups; 52 KB for DB = 128):
//   sQ [BQ][DB + 8]   loaded once into registers as MMA A fragments
//                     (reused at the end to stage the output rows)
//   sK [BK][DB + 8]   B operand of S = Q K^T (ldmatrix, K rows are n)
//   sV [BK][DB + 8]   B operand of O += P V (ldmatrix.trans, V rows are k)
// Rows beyond Tq and keys at or beyond key_lengths[b] are zero filled, so
// padding never feeds NaN into the products; masked scores are -inf.
// Warps skip key tiles (and 16-key steps) that none of their rows can see.
// Pipeline per key tile (cp.async): the copy of V_j overlaps S = Q K_j^T, the
// copy of K_{j+1} overlaps the softmax and P V_j.
//
// Register layout of an m16n8 float accumulator tile (lane = 4 * g + t):
//   c0, c1 = (row g,     columns 2t, 2t+1),  c2, c3 = (row g + 8, same columns)
// so each thread holds two rows of S (g, g+8) and the row max / sum need only
// the 4 lanes of a quad (shuffle xor 1, 2).  The S accumulators of key tiles
// 2kk, 2kk+1 are exactly the A fragment (rows x 16 keys) of P for the k-step
// kk of P V after rounding to the element type, so P never leaves registers.
// The running sum l is accumulated from the float32 p values.
#include "kernels/attention_cuda_common.cuh"

namespace keraslm {
namespace cuda {
namespace attn {
namespace {

// Warps per block (16 query rows each) and keys per tile.  More warps per
// block re-use each K / V tile for more query rows (less L2 traffic) at the
// cost of fewer, larger blocks.
constexpr int kMmaWarps = 4, kMmaKeys = 64;

template <int DB, int NW>
constexpr size_t mma_smem_bytes() { return size_t(16 * NW + 2 * kMmaKeys) * (DB + 8) * 2; }

__device__ __forceinline__ uint32_t smem_u32(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// 16-byte global -> shared copy; zero fill when !valid (src is not read).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}

// c += A (16x16, row) * B (16x8, col), float32 accumulate.
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                         __nv_bfloat16) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                         __half) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

// Two floats -> one 32-bit register of two elements, `lo` in the low half
// (the lower column index, as the MMA fragments expect).
__device__ __forceinline__ uint32_t pack2(float lo, float hi, __nv_bfloat16) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi, __half) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <typename T, int DB, int NW>
__global__ void __launch_bounds__(32 * NW) mma_forward_kernel(const AttentionParams p, const int64_t nqt) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int NT = 32 * NW, BQ = 16 * NW, BK = kMmaKeys, PITCH = DB + 8;
  constexpr int CPR = DB / 8;   // 16-byte chunks per row
  constexpr int KT = DB / 16;   // k-steps of Q K^T
  constexpr int NS = BK / 8;    // 8-key tiles of S
  constexpr int NO = DB / 8;    // 8-column tiles of O
  extern __shared__ uint4 mma_smem[];
  T* sQ = reinterpret_cast<T*>(mma_smem);
  T* sK = sQ + BQ * PITCH;
  T* sV = sK + BK * PITCH;
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int D = static_cast<int>(p.D);

  // blockIdx.x -> (query tile, head, batch); last query tiles first.
  int64_t x = blockIdx.x;
  const int64_t qt = nqt - 1 - x % nqt;
  x /= nqt;
  const int64_t h = x % p.H, b = x / p.H, hk = h / (p.H / p.Hkv);
  const int64_t i0 = qt * BQ;
  const int nr = static_cast<int>(p.Tq - i0 < BQ ? p.Tq - i0 : BQ);
  const int len = key_length(p, b);
  const int kend_blk = key_end(p, i0 + nr - 1, len);

  const T* qb = static_cast<const T*>(p.q) + b * p.q_stride.b + i0 * p.q_stride.t + h * p.q_stride.h;
  const T* kb = static_cast<const T*>(p.k) + b * p.k_stride.b + hk * p.k_stride.h;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_stride.b + hk * p.v_stride.h;
  T* ob = static_cast<T*>(p.out) + b * p.out_stride.b + i0 * p.out_stride.t + h * p.out_stride.h;
  float* lse = p.lse + (b * p.H + h) * p.Tq + i0;

  if (kend_blk == 0) {  // no row of the tile sees any key: out = 0, lse = -inf
    for (int idx = tid; idx < nr * D; idx += NT)
      ob[(idx / D) * p.out_stride.t + idx % D] = from_float<T>(0.f);
    for (int r = tid; r < nr; r += NT) lse[r] = neg_inf();
    return;
  }

  // Copies rows [row0, row0 + nrows) of a [T, D] slice (row stride `stride`)
  // into dst; rows r >= nvalid are zero filled.  Columns >= D are never read.
  auto load_rows = [&](T* dst, const T* src, int64_t stride, int row0, int nvalid, int nrows) {
#pragma unroll
    for (int c = tid; c < nrows * CPR; c += NT) {
      const int r = c / CPR, col = (c % CPR) * 8;
      if (col < D) {
        const bool valid = r < nvalid;
        cp_async16(smem_u32(dst + r * PITCH + col), valid ? src + int64_t(row0 + r) * stride + col : src, valid);
      }
    }
  };

  // Rows of this thread: i0 + 16w + g (half 0) and + 8 (half 1).
  const int wr = 16 * warp;
  const int kendA = key_end(p, i0 + wr + g, len), kendB = key_end(p, i0 + wr + g + 8, len);
  const int kend_lo = key_end(p, i0 + wr, len);  // smallest end among the warp's rows
  const int kend_hi = wr < nr ? key_end(p, i0 + min(wr + 15, nr - 1), len) : 0;
  const int nkt = (kend_blk + BK - 1) / BK;

  load_rows(sQ, qb, p.q_stride.t, 0, nr, BQ);
  cp_async_commit();
  load_rows(sK, kb, p.k_stride.t, 0, len, BK);
  cp_async_commit();
  cp_async_wait<1>();  // Q has landed
  __syncthreads();

  uint32_t qf[KT][4];
#pragma unroll
  for (int kk = 0; kk < KT; ++kk) {
    qf[kk][0] = qf[kk][1] = qf[kk][2] = qf[kk][3] = 0u;
    if (kk * 16 < D) ldsm_x4(smem_u32(sQ + (wr + (lane & 15)) * PITCH + kk * 16 + ((lane >> 4) << 3)), qf[kk]);
  }

  float o[NO][4];
#pragma unroll
  for (int nt = 0; nt < NO; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float m0 = neg_inf(), m1 = neg_inf(), l0 = 0.f, l1 = 0.f;
  const float sl2 = p.scale * kLog2e;

  for (int jt = 0; jt < nkt; ++jt) {
    const int j0 = jt * BK;
    cp_async_wait<0>();  // K_j has landed ...
    __syncthreads();     // ... for every thread, and every warp is done with sV
    load_rows(sV, vb, p.v_stride.t, j0, len - j0, BK);
    cp_async_commit();

    const bool active = j0 < kend_hi;  // warp uniform
    float s[NS][4];
#pragma unroll
    for (int nt = 0; nt < NS; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    if (active) {
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) {
        if (kk * 16 >= D) continue;
#pragma unroll
        for (int np = 0; np < NS / 2; ++np) {
          if (j0 + 16 * np >= kend_hi) continue;  // keys no row of the warp sees
          uint32_t kf[4];
          ldsm_x4(smem_u32(sK + (16 * np + (lane & 7) + ((lane >> 4) << 3)) * PITCH + kk * 16 +
                           (((lane >> 3) & 1) << 3)),
                  kf);
          mma16816(s[2 * np], qf[kk], kf[0], kf[1], T());
          mma16816(s[2 * np + 1], qf[kk], kf[2], kf[3], T());
        }
      }
    }
    cp_async_wait<0>();  // V_j has landed ...
    __syncthreads();     // ... for every thread, and every warp is done with sK
    if (jt + 1 < nkt) {
      load_rows(sK, kb, p.k_stride.t, j0 + BK, len - j0 - BK, BK);
      cp_async_commit();
    }
    if (!active) continue;

    // Online softmax in registers (log2 units).
    const bool need_mask = j0 + BK > kend_lo;
    float mx0 = neg_inf(), mx1 = neg_inf();
#pragma unroll
    for (int nt = 0; nt < NS; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float v = s[nt][e] * sl2;
        if (need_mask && j0 + 8 * nt + 2 * t4 + (e & 1) >= (e < 2 ? kendA : kendB)) v = neg_inf();
        s[nt][e] = v;
        if (e < 2) mx0 = fmaxf(mx0, v); else mx1 = fmaxf(mx1, v);
      }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    const float mu0 = mn0 == neg_inf() ? 0.f : mn0, mu1 = mn1 == neg_inf() ? 0.f : mn1;
    const float al0 = exp2f(m0 - mu0), al1 = exp2f(m1 - mu1);
    m0 = mn0;
    m1 = mn1;
    float ls0 = 0.f, ls1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < NS; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - mu0);
      s[nt][1] = exp2f(s[nt][1] - mu0);
      s[nt][2] = exp2f(s[nt][2] - mu1);
      s[nt][3] = exp2f(s[nt][3] - mu1);
      ls0 += s[nt][0] + s[nt][1];
      ls1 += s[nt][2] + s[nt][3];
    }
    l0 = l0 * al0 + ls0;
    l1 = l1 * al1 + ls1;
#pragma unroll
    for (int nt = 0; nt < NO; ++nt) {
      o[nt][0] *= al0; o[nt][1] *= al0;
      o[nt][2] *= al1; o[nt][3] *= al1;
    }

    // O += P V, 16 keys per k-step.
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      if (j0 + 16 * kk >= kend_hi) continue;  // p = 0 for every row of the warp
      const uint32_t pa[4] = {pack2(s[2 * kk][0], s[2 * kk][1], T()), pack2(s[2 * kk][2], s[2 * kk][3], T()),
                              pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], T()),
                              pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], T())};
#pragma unroll
      for (int np = 0; np < DB / 16; ++np) {
        if (np * 16 >= D) continue;
        uint32_t vf[4];
        ldsm_x4_trans(smem_u32(sV + (16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3)) * PITCH + 16 * np +
                               ((lane >> 4) << 3)),
                      vf);
        mma16816(o[2 * np], pa, vf[0], vf[1], T());
        mma16816(o[2 * np + 1], pa, vf[2], vf[3], T());
      }
    }
  }

  // Epilogue: full row sums, normalise, stage the warp's 16 rows in its own
  // rows of sQ (no other warp touches them), then 16-byte stores.
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  // l == 0: no key (out 0, lse -inf); l NaN: a NaN / +inf score the row sees (NaN out and lse).
  const float inv0 = l0 == 0.f ? 0.f : 1.f / l0, inv1 = l1 == 0.f ? 0.f : 1.f / l1;
  T* st = sQ + wr * PITCH;
#pragma unroll
  for (int nt = 0; nt < NO; ++nt) {
    if (nt * 8 >= D) continue;
    *reinterpret_cast<uint32_t*>(st + g * PITCH + 8 * nt + 2 * t4) = pack2(o[nt][0] * inv0, o[nt][1] * inv0, T());
    *reinterpret_cast<uint32_t*>(st + (g + 8) * PITCH + 8 * nt + 2 * t4) =
        pack2(o[nt][2] * inv1, o[nt][3] * inv1, T());
  }
  __syncwarp();
#pragma unroll
  for (int c = lane; c < 16 * CPR; c += 32) {
    const int r = c / CPR, col = (c % CPR) * 8;
    if (col < D && wr + r < nr)
      *reinterpret_cast<uint4*>(ob + (wr + r) * p.out_stride.t + col) =
          *reinterpret_cast<const uint4*>(st + r * PITCH + col);
  }
  if (t4 == 0) {
    if (wr + g < nr) lse[wr + g] = l0 == 0.f ? neg_inf() : (m0 + log2f(l0)) * kLn2;
    if (wr + g + 8 < nr) lse[wr + g + 8] = l1 == 0.f ? neg_inf() : (m1 + log2f(l1)) * kLn2;
  }
#endif
}

template <typename T, int DB>
const char* launch(const AttentionParams& p, cudaStream_t stream) {
  constexpr int NW = kMmaWarps;
  const int64_t nqt = ceil_div(p.Tq, 16 * NW);
  const int64_t blocks = p.B * p.H * nqt;
  if (blocks > kMaxGridX) return kGridTooLarge;
  auto kernel = mma_forward_kernel<T, DB, NW>;
  constexpr size_t smem = mma_smem_bytes<DB, NW>();
  if (const char* err = allow_smem(kernel, smem)) return err;
  kernel<<<static_cast<unsigned>(blocks), 32 * NW, smem, stream>>>(p, nqt);
  return last_launch_error();
}

template <typename T>
const char* launch_dtype(const AttentionParams& p, cudaStream_t stream) {
  if (p.D <= 32) return launch<T, 32>(p, stream);
  if (p.D <= 64) return launch<T, 64>(p, stream);
  return launch<T, 128>(p, stream);
}

}  // namespace

bool mma_forward_supported(const AttentionParams& p) {
  if (p.dtype == DType::kFloat32 || p.D % 16 != 0 || p.D > 128 || p.D <= 0) return false;
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
    return false;
  if (major < 8) return false;
  return rows_aligned16(p.q, p.q_stride, p.B, p.Tq, p.H, 2) && rows_aligned16(p.k, p.k_stride, p.B, p.Tk, p.Hkv, 2) &&
         rows_aligned16(p.v, p.v_stride, p.B, p.Tk, p.Hkv, 2) &&
         rows_aligned16(p.out, p.out_stride, p.B, p.Tq, p.H, 2);
}

const char* mma_forward(const AttentionParams& p, cudaStream_t stream) {
  return p.dtype == DType::kBFloat16 ? launch_dtype<__nv_bfloat16>(p, stream) : launch_dtype<__half>(p, stream);
}

}  // namespace attn
}  // namespace cuda
}  // namespace keraslm
