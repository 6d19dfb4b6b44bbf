// Device helpers shared by the CUDA attention kernels (see attention_cuda.h).
//
// Conventions used by every kernel:
//   * shape letters B (batch), Tq / Tk (query / key time), H / Hkv (query /
//     key-value heads, G = H / Hkv query heads per kv head), D (head size);
//   * element (b, t, h, d) of a [B, T, H, D] tensor lives at
//     b * stride.b + t * stride.t + h * stride.h + d (int64 arithmetic);
//   * positions (query index i, key index j) fit in int; offsets are int64;
//   * every block has kThreads = 128 threads (4 warps);
//   * scores are carried in log2 units: x = scale * log2(e) * <q, k>, so
//     exp(s - m) = exp2(x - m2); lse = ln(2) * (m2 + log2(l)).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention_cuda.h"

namespace keraslm {
namespace cuda {
namespace attn {

constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Forward calls with Tq <= kDecodeRows take the split-key decode path.
constexpr int64_t kDecodeRows = 16;

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// ---- element conversions (round to nearest even on the way out) ----------
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

// 16 loaded bytes -> 16 / sizeof(T) floats (the last argument selects T).
__device__ __forceinline__ void unpack16(const uint4& u, float* f, float) {
  f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y);
  f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void unpack16(const uint4& u, float* f, __nv_bfloat16) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {  // a bfloat16 is the top half of a float32
    f[2 * k] = __uint_as_float(w[k] << 16);
    f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack16(const uint4& u, float* f, __half) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    f[2 * k] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[k] & 0xffffu)));
    f[2 * k + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[k] >> 16)));
  }
}

// ---- warp reductions (result in every lane) --------------------------------
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ float dot4(const float4& a, const float4& b, float acc) {
  return fmaf(a.x, b.x, fmaf(a.y, b.y, fmaf(a.z, b.z, fmaf(a.w, b.w, acc))));
}

// ---- visibility --------------------------------------------------------------
// Valid keys of batch b: [0, len).
__device__ __forceinline__ int key_length(const AttentionParams& p, int64_t b) {
  int64_t len = p.Tk;
  if (p.key_lengths != nullptr) {
    const int64_t kl = p.key_lengths[b];
    len = kl < 0 ? 0 : (kl < len ? kl : len);
  }
  return static_cast<int>(len);
}

// Keys [0, end) visible to query i (bottom-right causal alignment, then the
// key length).  Non-decreasing in i.
__device__ __forceinline__ int key_end(const AttentionParams& p, int64_t i, int len) {
  int64_t e = p.causal ? i + (p.Tk - p.Tq) + 1 : p.Tk;
  e = e < len ? e : len;
  return e > 0 ? static_cast<int>(e) : 0;
}

// ---- global -> shared tile copy (float32 in shared memory) -----------------
// dst[r * pitch + d] = mul * row_ptr(r)[d] for r < ROWS, d < DB; zero where
// d >= D or row_ptr(r) == nullptr (padding rows, masked keys: shared memory
// never holds garbage, so 0 * value stays 0).  With `vec` every row start is
// 16-byte aligned and D is a multiple of 16 / sizeof(T): 16-byte loads;
// otherwise element loads.  Loads are issued in batches of 8 before their
// stores so that several are in flight per thread.  pitch % 4 == 0.
template <typename T, int ROWS, int DB, typename RowFn>
__device__ __forceinline__ void load_tile(float* dst, int pitch, RowFn row_ptr, int D, float mul, bool vec) {
  if (vec) {
    constexpr int VEC = 16 / static_cast<int>(sizeof(T));
    constexpr int VPR = DB / VEC;  // vectors per row
    constexpr int TOTAL = ROWS * VPR;
    constexpr int N = (TOTAL + kThreads - 1) / kThreads;
    constexpr int BATCH = N < 8 ? N : 8;
    static_assert(N % BATCH == 0, "batch must divide the per-thread count");
#pragma unroll 1
    for (int n0 = 0; n0 < N; n0 += BATCH) {
      uint4 buf[BATCH];
#pragma unroll
      for (int k = 0; k < BATCH; ++k) {
        const int slot = (n0 + k) * kThreads + static_cast<int>(threadIdx.x);
        const int r = slot / VPR, d = (slot % VPR) * VEC;
        const T* src = (slot < TOTAL && d < D) ? row_ptr(r) : nullptr;
        buf[k] = src != nullptr ? *reinterpret_cast<const uint4*>(src + d) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
      for (int k = 0; k < BATCH; ++k) {
        const int slot = (n0 + k) * kThreads + static_cast<int>(threadIdx.x);
        if (slot < TOTAL) {
          const int r = slot / VPR, d = (slot % VPR) * VEC;
          float f[VEC];
          unpack16(buf[k], f, T());
          float4* o = reinterpret_cast<float4*>(dst + r * pitch + d);
#pragma unroll
          for (int e = 0; e < VEC / 4; ++e)
            o[e] = make_float4(f[4 * e] * mul, f[4 * e + 1] * mul, f[4 * e + 2] * mul, f[4 * e + 3] * mul);
        }
      }
    }
  } else {
    constexpr int TOTAL = ROWS * DB;
    constexpr int N = (TOTAL + kThreads - 1) / kThreads;
    constexpr int BATCH = N < 8 ? N : 8;
    static_assert(N % BATCH == 0, "batch must divide the per-thread count");
#pragma unroll 1
    for (int n0 = 0; n0 < N; n0 += BATCH) {
      float buf[BATCH];
#pragma unroll
      for (int k = 0; k < BATCH; ++k) {
        const int slot = (n0 + k) * kThreads + static_cast<int>(threadIdx.x);
        const int r = slot / DB, d = slot % DB;
        const T* src = (slot < TOTAL && d < D) ? row_ptr(r) : nullptr;
        buf[k] = src != nullptr ? to_float(src[d]) : 0.f;
      }
#pragma unroll
      for (int k = 0; k < BATCH; ++k) {
        const int slot = (n0 + k) * kThreads + static_cast<int>(threadIdx.x);
        if (slot < TOTAL) dst[(slot / DB) * pitch + slot % DB] = buf[k] * mul;
      }
    }
  }
}

// ---- host helpers ------------------------------------------------------------
// True when every row start of the tensor is 16-byte aligned (a stride only
// matters when its dimension has more than one entry).
inline bool rows_aligned16(const void* ptr, const Strides3& s, int64_t nb, int64_t nt, int64_t nh,
                           int elem_size) {
  auto ok = [&](int64_t stride, int64_t n) { return n <= 1 || (stride * elem_size) % 16 == 0; };
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && ok(s.b, nb) && ok(s.t, nt) && ok(s.h, nh);
}

// Head-size bucket of the FMA kernels: 32, 64, 128 or 256.
inline int head_bucket(int64_t D) { return D <= 32 ? 32 : D <= 64 ? 64 : D <= 128 ? 128 : 256; }

inline const char* last_launch_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

// Opts a kernel into more than 48 KB of dynamic shared memory.
template <typename Kernel>
inline const char* allow_smem(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return nullptr;
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

constexpr int64_t kMaxGridX = 2147483647;
constexpr const char* kGridTooLarge = "attention: launch grid too large";

// ---- entry points between the translation units ------------------------------
// Flash-style FMA forward (attention_cuda_fma.cu), any dtype and D <= 256.
// rows_per_warp: 8 (prefill) or 2 (small decode groups).  nsplit > 1 splits
// the keys of every row tile and writes partials (see attention_cuda_decode.cu)
// instead of out / lse.
const char* fma_forward(const AttentionParams& p, int rows_per_warp, int nsplit, float* part_acc,
                        float2* part_ml, cudaStream_t stream);
// Tensor-core forward (attention_cuda_mma.cu) for bfloat16 / float16.
bool mma_forward_supported(const AttentionParams& p);
const char* mma_forward(const AttentionParams& p, cudaStream_t stream);
// Split-key decode (attention_cuda_decode.cu), Tq <= kDecodeRows.
size_t decode_workspace(const AttentionParams& p);
const char* decode_forward(const AttentionParams& p, void* workspace, cudaStream_t stream);
// dK / dV of the backward (attention_cuda_backward_dkdv.cu); delta [B, H, Tq].
const char* backward_dkdv(const AttentionGradParams& g, const float* delta, cudaStream_t stream);

}  // namespace attn
}  // namespace cuda
}  // namespace keraslm
