// Forward entry points of attention_cuda.h: choose the path.
//
//   Tq <= kDecodeRows (16)         split-key decode (attention_cuda_decode.cu),
//                                  FMA math, every dtype and D
//   bfloat16 / float16, D % 16 == 0, D <= 128, 16-byte aligned rows of q, k,
//   v and out, sm_80+              tensor-core kernel (attention_cuda_mma.cu)
//   otherwise                      FMA kernel (attention_cuda_fma.cu)
#include "kernels/attention_cuda_common.cuh"

namespace keraslm {
namespace cuda {

size_t attention_forward_workspace(const AttentionParams& p) {
  if (p.B <= 0 || p.H <= 0 || p.Tq <= 0) return 0;
  return p.Tq <= attn::kDecodeRows ? attn::decode_workspace(p) : 0;
}

const char* attention_forward(const AttentionParams& p, void* workspace, void* stream) {
  if (p.B <= 0 || p.H <= 0 || p.Tq <= 0) return nullptr;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.Tq <= attn::kDecodeRows) return attn::decode_forward(p, workspace, s);
  if (attn::mma_forward_supported(p)) return attn::mma_forward(p, s);
  return attn::fma_forward(p, 8, 1, nullptr, nullptr, s);
}

}  // namespace cuda
}  // namespace keraslm
