// Helpers of the GPU OpKernels (built only with KERASLM_WITH_CUDA): the CUDA
// stream of the op and device scratch from TF's allocator.
#pragma once

#include <cstddef>

#include "kernels/cuda_device.h"
#include "tf/tf_common.h"
#include "xla/stream_executor/stream.h"

namespace keraslm {

using ::tensorflow::DEVICE_GPU;

// The op's CUDA stream (a cudaStream_t) as void*.
inline void* GpuStream(OpKernelContext* ctx) {
  return ctx->op_device_context()->stream()->platform_specific_handle().stream;
}

// A CUDA error message (or nullptr) as a Status.
inline Status CudaStatus(const char* error, const char* what) {
  if (error == nullptr) return Status();
  return ::tensorflow::errors::Internal("keraslm CUDA ", what, " failed: ", error);
}

// Device scratch of at least `bytes` bytes (TF's GPU allocator aligns to 256).
inline Status AllocateScratch(OpKernelContext* ctx, size_t bytes, Tensor* scratch, char** data) {
  TF_RETURN_IF_ERROR(ctx->allocate_temp(::tensorflow::DT_INT8, TensorShape({int64_t(bytes > 0 ? bytes : 1)}),
                                        scratch));
  *data = reinterpret_cast<char*>(scratch->flat<int8_t>().data());
  return Status();
}

}  // namespace keraslm
