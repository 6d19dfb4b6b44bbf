// Fused attention on an NVIDIA GPU: the contract of attention.h on device
// memory, for float32, bfloat16 and float16 inputs.
//
// Semantics are exactly those of attention.h (layout [B, T, H, D], GQA,
// bottom-right causal alignment, per-row key lengths, lse out of the forward,
// out = 0 / lse = -inf / zero gradients for rows with no visible key).
// Differences:
//   * q, k, v, out, dout, dq, dk, dv have the element type `dtype`; lse and
//     dlse are always float32; accumulation is always float32.
//   * every pointer (key_lengths included) is device memory;
//   * the caller passes device scratch of the size the *_workspace function
//     returns, and a stream (a cudaStream_t passed as void*).
// Math: the bfloat16 / float16 forward with Tq > 16, D % 16 == 0, D <= 128
// and 16-byte aligned rows of q, k, v, out runs its two matrix products on
// tensor cores (m16n8k16 MMA, float32 accumulate, P rounded to the element
// type); every other forward (float32, other D, unaligned rows, and the
// split-key decode path taken when Tq <= 16) and the whole backward pass use
// plain float32 FMA (no TF32), so float32 results match the CPU kernels to
// float32 rounding.  The backward is deterministic (no atomics).
//
// This header includes no CUDA, TensorFlow or Python headers; the glue checks
// every user input before calling (the kernels trust sizes, strides and
// key_lengths, as the CPU kernels do).  Strides are in elements; D is
// contiguous; the row starts of q, k, v, out, dout, dq, dk, dv must be
// aligned to the element size (any D is allowed).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/attention.h"

namespace keraslm {
namespace cuda {

enum class DType : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

inline int dtype_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }
inline const char* dtype_name(DType t) {
  return t == DType::kFloat32 ? "float32" : t == DType::kBFloat16 ? "bfloat16" : "float16";
}

struct AttentionParams {
  int64_t B = 0, Tq = 0, Tk = 0, H = 0, Hkv = 0, D = 0;
  bool causal = false;
  float scale = 0.f;
  DType dtype = DType::kFloat32;        // of q, k, v, out
  const int32_t* key_lengths = nullptr;  // device [B] or nullptr

  const void* q = nullptr;  Strides3 q_stride;
  const void* k = nullptr;  Strides3 k_stride;
  const void* v = nullptr;  Strides3 v_stride;
  void* out = nullptr;      Strides3 out_stride;
  float* lse = nullptr;     // device [B, H, Tq], dense
};

struct AttentionGradParams {
  AttentionParams fwd;            // q, k, v, out (read), lse (read), sizes, mask
  const void* dout = nullptr;  Strides3 dout_stride;
  const float* dlse = nullptr;    // device [B, H, Tq] or nullptr (zero)
  void* dq = nullptr;  Strides3 dq_stride;   // written (not accumulated)
  void* dk = nullptr;  Strides3 dk_stride;
  void* dv = nullptr;  Strides3 dv_stride;
};

// Bytes of device scratch each call needs (0 is possible; then workspace may
// be nullptr).  The scratch must be 256-byte aligned.
size_t attention_forward_workspace(const AttentionParams& p);
size_t attention_backward_workspace(const AttentionGradParams& g);

// Enqueue the kernels on `stream`.  Return nullptr on success, else a static
// message (the CUDA error string of a failed launch).  Short query blocks
// (decode with a KV cache) split the keys across thread blocks and combine
// the partial results, so the cost follows the live key length.
const char* attention_forward(const AttentionParams& p, void* workspace, void* stream);
const char* attention_backward(const AttentionGradParams& g, void* workspace, void* stream);

}  // namespace cuda
}  // namespace keraslm
