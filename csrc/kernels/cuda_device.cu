// CUDA runtime helpers behind cuda_device.h.
#include <cuda_runtime.h>

#include "kernels/cuda_device.h"

namespace keraslm {
namespace cuda {
namespace {

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
inline const char* check(cudaError_t err) {
  if (err == cudaSuccess) return nullptr;
  cudaGetLastError();  // clear a non-sticky error so later calls start clean
  return cudaGetErrorString(err);
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

const char* copy_to_device(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return nullptr;
  return check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, as_stream(stream)));
}

const char* copy_to_host(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return check(cudaStreamSynchronize(as_stream(stream)));
  if (const char* e = check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, as_stream(stream)))) return e;
  return check(cudaStreamSynchronize(as_stream(stream)));
}

const char* device_alloc(void** ptr, size_t bytes, void* stream) {
  *ptr = nullptr;
  if (bytes == 0) return nullptr;
  return check(cudaMallocAsync(ptr, bytes, as_stream(stream)));
}

const char* device_free(void* ptr, void* stream) {
  if (ptr == nullptr) return nullptr;
  return check(cudaFreeAsync(ptr, as_stream(stream)));
}

const char* synchronize(void* stream) { return check(cudaStreamSynchronize(as_stream(stream))); }

int pointer_device(const void* ptr) {
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) ? attr.device : -1;
}

const char* set_device(int device) { return check(cudaSetDevice(device)); }

}  // namespace cuda
}  // namespace keraslm
