// Host emulation of the CUDA features used by the kernels of csrc/kernels, so
// that the kernel sources run unchanged on a CPU (tests only: built with
// -DKERASLM_BUILD_CUDA_EMULATION=ON).  transform.py turns each .cu / .cuh into
// host C++ that includes this header first; see there for the few rewrites.
//
// Execution model (cuda_emulation.cc):
//   * a launch runs synchronously, its blocks one after another; the threads
//     of a block are fibers on the calling OS thread;
//   * a thread runs until it reaches a synchronisation point (__syncthreads*,
//     __syncwarp, a shuffle / vote / match / reduce, ldmatrix, mma.sync); the
//     scheduler then resumes a runnable thread chosen at random (seeded), so a
//     missing barrier shows up as a wrong or changing result.  The lanes of a
//     warp are not in lockstep either (independent thread scheduling, as on
//     sm_70+): code that relies on implicit warp-synchronous execution fails;
//   * a warp collective needs all 32 lanes at the same intrinsic with the same
//     full mask (only __reduce_add_sync takes lane groups, whose masks are
//     checked for consistency); lanes at different barriers, or a barrier that
//     can never complete, abort with a diagnosis.  Exited threads count as
//     arrived at __syncthreads, as on the hardware.
// Limits:
//   * no memory model: between synchronisation points a thread's accesses are
//     not interleaved with other threads', so races finer than a barrier
//     interval are not found; atomics are plain read-modify-writes;
//   * cp.async copies happen at the cp.async.wait_group that retires their
//     group (the latest legal moment), so early reads see stale data;
//   * mma.sync adds its 16 products per output in float32 in k order, and the
//     math functions are the host's (no fast approximations, no implicit FMA
//     contraction), so results differ from a GPU by rounding only;
//   * dynamic shared memory is filled with 0xff bytes (NaN) for every block;
//     __shared__ variables are function statics; global memory is host memory
//     (out-of-bounds accesses are not detected here).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---- device code compiled as host code ----------------------------------------
#ifndef CUDA_EMULATION_ARCH
#define CUDA_EMULATION_ARCH 800
#endif
#define __CUDA_ARCH__ CUDA_EMULATION_ARCH  // after the toolkit headers: they see a host compiler
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __launch_bounds__(...)

namespace cuda_emulation {

[[noreturn]] void fatal(const char* fmt, ...);

template <class T> inline uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "value of at most 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T> inline T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

// Built-in variables of the running thread (set by the scheduler).
extern uint3 thread_idx, block_idx;
extern dim3 block_dim, grid_dim;

// A thread's side of a synchronisation point: the intrinsic, its mask, the
// inputs; a collective function fills `out` for every participant at once.
struct Slot {
  const char* op = nullptr;
  unsigned mask = 0;
  uint64_t in[10] = {};
  uint64_t out[4] = {};
};
using CollectiveFn = void (*)(Slot* slots, int n);  // n = 32 lanes, or the block

// The running thread's slot, after checking the mask (full unless `grouped`).
Slot& slot(const char* op, unsigned mask, bool grouped = false);
// Blocks until every lane of the warp (every live thread of the block) has
// arrived with the same op, runs fn once over all slots, then returns.
void warp_collective(Slot& s, CollectiveFn fn);
void block_barrier(Slot& s, CollectiveFn fn);

// What the intrinsics compute once their threads have met (intrinsics.cc).
void shuffle_fn(Slot* lanes, int n);   // in: value, lane argument, mode
void ballot_fn(Slot* lanes, int n);
void match_any_fn(Slot* lanes, int n);
void reduce_add_fn(Slot* lanes, int n);
void block_or_fn(Slot* threads, int n);

enum ShuffleMode { kIdx, kUp, kDown, kXor };
template <class T> inline T shuffle(const char* op, unsigned mask, T v, int arg, ShuffleMode mode, int width) {
  if (width != 32) fatal("%s: a width other than 32 is not emulated", op);
  Slot& s = slot(op, mask);
  s.in[0] = to_bits(v);
  s.in[1] = static_cast<uint64_t>(static_cast<uint32_t>(arg));
  s.in[2] = mode;
  warp_collective(s, shuffle_fn);
  return from_bits<T>(s.out[0]);
}

// Dynamic shared memory of the running block, and its address space.
extern unsigned char* shared_base;
extern size_t shared_size;
template <class T> inline T* dynamic_shared() { return reinterpret_cast<T*>(shared_base); }

// Inline PTX (transform.py rewrites asm statements into ptx() calls, run by
// intrinsics.cc): each
// operand keeps its constraint letter ('r', 'l', 'f', 'n'), its value, and for
// outputs the address it is written back to.
struct PtxOperand {
  char constraint;
  bool output;
  uint64_t value;
  void* ref;
  size_t size;
};
template <class T> inline PtxOperand ptx_in(char c, const T& v) { return {c, false, to_bits(v), nullptr, sizeof(T)}; }
template <class T> inline PtxOperand ptx_out(char c, T& v) { return {c, true, 0, &v, sizeof(T)}; }
template <class T> inline PtxOperand ptx_inout(char c, T& v) { return {c, true, to_bits(v), &v, sizeof(T)}; }
void ptx(const char* code, std::initializer_list<PtxOperand> operands);

// The running thread's cp.async copies not yet performed, and the end (in
// `pending`) of each committed group, oldest first.
struct AsyncCopy {
  unsigned char* dst;
  const unsigned char* src;
  uint32_t size, src_size;  // bytes written; bytes read (the rest is zero filled)
};
struct AsyncCopies {
  std::vector<AsyncCopy> pending;
  std::vector<size_t> group_ends;
};
AsyncCopies& async_copies();

// Kernel launches: transform.py rewrites `kernel<<<cfg>>>(args)` into
// `kernel | Launch(site, cfg).with(args)`.
struct LaunchConfig {
  dim3 grid, block;
  size_t smem = 0;
  const char* file;
  int line;
  const char* function;
};
template <class... A> struct BoundLaunch {
  LaunchConfig cfg;
  std::tuple<A...> args;
};
struct Launch {
  LaunchConfig cfg;
  Launch(const char* file, int line, const char* function, dim3 grid, dim3 block, size_t smem = 0,
         cudaStream_t = nullptr)
      : cfg{grid, block, smem, file, line, function} {}
  template <class... A> BoundLaunch<std::decay_t<A>...> with(A&&... args) const {
    return {cfg, std::tuple<std::decay_t<A>...>(std::forward<A>(args)...)};
  }
};
void launch(const void* kernel, const LaunchConfig& cfg, const std::function<void()>& body);
template <class K, class... A> void operator|(K kernel, BoundLaunch<A...>&& l) {
  launch(reinterpret_cast<const void*>(kernel), l.cfg, [&] { std::apply(kernel, l.args); });
}

// Test-program controls: the scheduler's seed, and a summary of every launch
// site that ran ("launch-site FILE:LINE launches N blocks M" per site).
void set_schedule_seed(uint64_t seed);
void print_launch_summary();

}  // namespace cuda_emulation

#define threadIdx (::cuda_emulation::thread_idx)
#define blockIdx (::cuda_emulation::block_idx)
#define blockDim (::cuda_emulation::block_dim)
#define gridDim (::cuda_emulation::grid_dim)

// The C++ runtime API overload that cuda_runtime.h declares for nvcc only.
template <class T> inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}

// ---- bit casts, conversions, integer intrinsics -------------------------------
inline float __int_as_float(int x) { return cuda_emulation::from_bits<float>(uint32_t(x)); }
inline float __uint_as_float(unsigned x) { return cuda_emulation::from_bits<float>(x); }
inline unsigned __float_as_uint(float x) { return unsigned(cuda_emulation::to_bits(x)); }
inline long long __double_as_longlong(double x) { return (long long)cuda_emulation::to_bits(x); }
inline double __longlong_as_double(long long x) { return cuda_emulation::from_bits<double>(uint64_t(x)); }
inline float __double2float_rd(double d) {  // round toward -inf
  float f = float(d);
  return double(f) > d ? std::nextafter(f, -INFINITY) : f;
}
inline float __double2float_ru(double d) {  // round toward +inf
  float f = float(d);
  return double(f) < d ? std::nextafter(f, INFINITY) : f;
}
inline unsigned long long __double2ull_rn(double d) {
  if (!(d > 0)) return 0;  // negative and NaN convert to 0, as on the GPU
  if (d >= 18446744073709551616.0) return ~0ull;
  return (unsigned long long)std::nearbyint(d);  // default rounding: to nearest even
}
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
template <class T> inline T atomicAdd(T* address, T value) {  // threads never run concurrently
  const T old = *address;
  *address = old + value;
  return old;
}
inline size_t __cvta_generic_to_shared(const void* p) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < cuda_emulation::shared_base || c >= cuda_emulation::shared_base + cuda_emulation::shared_size)
    cuda_emulation::fatal("__cvta_generic_to_shared: %p is not in the block's dynamic shared memory", p);
  return size_t(c - cuda_emulation::shared_base);
}

// ---- synchronisation and warp collectives -------------------------------------
inline void __syncthreads() { cuda_emulation::block_barrier(cuda_emulation::slot("__syncthreads", ~0u), nullptr); }
inline int __syncthreads_or(int predicate) {
  cuda_emulation::Slot& s = cuda_emulation::slot("__syncthreads_or", ~0u);
  s.in[0] = predicate != 0;
  cuda_emulation::block_barrier(s, cuda_emulation::block_or_fn);
  return int(s.out[0]);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  cuda_emulation::warp_collective(cuda_emulation::slot("__syncwarp", mask), nullptr);
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return cuda_emulation::shuffle("__shfl_sync", mask, v, src_lane, cuda_emulation::kIdx, width);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emulation::shuffle("__shfl_up_sync", mask, v, int(delta), cuda_emulation::kUp, width);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emulation::shuffle("__shfl_down_sync", mask, v, int(delta), cuda_emulation::kDown, width);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return cuda_emulation::shuffle("__shfl_xor_sync", mask, v, lane_mask, cuda_emulation::kXor, width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  cuda_emulation::Slot& s = cuda_emulation::slot("__ballot_sync", mask);
  s.in[0] = predicate != 0;
  cuda_emulation::warp_collective(s, cuda_emulation::ballot_fn);
  return unsigned(s.out[0]);
}
template <class T> inline unsigned __match_any_sync(unsigned mask, T value) {
  cuda_emulation::Slot& s = cuda_emulation::slot("__match_any_sync", mask);
  s.in[0] = cuda_emulation::to_bits(value);
  cuda_emulation::warp_collective(s, cuda_emulation::match_any_fn);
  return unsigned(s.out[0]);
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned value) {
  cuda_emulation::Slot& s = cuda_emulation::slot("__reduce_add_sync", mask, true);
  s.in[0] = value;
  cuda_emulation::warp_collective(s, cuda_emulation::reduce_add_fn);
  return unsigned(s.out[0]);
}
inline int __reduce_add_sync(unsigned mask, int value) { return int(__reduce_add_sync(mask, unsigned(value))); }
