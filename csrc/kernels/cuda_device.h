// Small CUDA runtime helpers for the glue (TF ops, pybind11), so that the
// glue never includes CUDA headers.  Streams are cudaStream_t passed as void*;
// nullptr is the legacy default stream.  Functions that can fail return
// nullptr on success, else a static message naming the CUDA error.
#pragma once

#include <cstddef>

namespace keraslm {
namespace cuda {

// Number of usable CUDA devices; 0 without a driver or a device (never fails).
int device_count();

// Copies `bytes` bytes on `stream`.  to_device returns once `src` may be
// reused (the copy itself is ordered on the stream); to_host waits for the
// stream, so `dst` holds the data on return.
const char* copy_to_device(void* dst, const void* src, size_t bytes, void* stream);
const char* copy_to_host(void* dst, const void* src, size_t bytes, void* stream);

// Stream-ordered device memory (cudaMallocAsync / cudaFreeAsync).
const char* device_alloc(void** ptr, size_t bytes, void* stream);
const char* device_free(void* ptr, void* stream);

// Waits for all work queued on `stream`.
const char* synchronize(void* stream);

// Device ordinal that owns `ptr`, or -1 if it is not device memory.
int pointer_device(const void* ptr);

// Makes `device` the calling thread's current device.
const char* set_device(int device);

// Rounds a byte count up to the 256-byte alignment of workspace regions.
inline size_t align256(size_t bytes) { return (bytes + 255) & ~size_t(255); }

}  // namespace cuda
}  // namespace keraslm
