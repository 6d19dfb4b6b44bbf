// Shared by the XLA lowerings of our ops (the csrc/tf/*_xla.cc files): they
// lower to XLA custom calls with the typed FFI on the host platform, which
// gives the handlers XLA's own intra-op thread pool and lets them fail with
// an error (ffi::Error, an InvalidArgumentError in TF) instead of crashing.
#pragma once

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "kernels/parallel.h"
#include "xla/ffi/api/c_api.h"
#include "xla/ffi/api/ffi.h"

extern "C" const XLA_FFI_Api* XLA_FFI_GetApi();  // libtensorflow_framework.so.2

namespace keraslm {

// A Parallel that shares the units of a kernel between the calling thread and
// XLA's intra-op pool.  Units are claimed from a shared counter, so the caller
// never waits for a pool thread that has not started (it would run the units
// itself); it only waits for units another thread has claimed.  Running on
// XLA's threads matters on small machines: a thread of our own would compete
// with XLA's workers, which spin while they wait for work.
inline Parallel ffi_parallel(xla::ffi::ThreadPool& pool) {
  Parallel par;
  par.num_threads = static_cast<int>(pool.num_threads()) + 1;
  par.for_range = [&pool](int64_t n, int64_t /*cost*/, const Parallel::RangeFn& fn) {
    struct Shared {
      std::atomic<int64_t> next{0}, done{0};
      int64_t n = 0, grain = 1;
      const Parallel::RangeFn* fn = nullptr;
      void work() {
        for (;;) {
          const int64_t begin = next.fetch_add(grain);
          if (begin >= n) return;
          const int64_t end = begin + grain < n ? begin + grain : n;
          (*fn)(begin, end);
          done.fetch_add(end - begin);
        }
      }
    };
    auto shared = std::make_shared<Shared>();
    shared->n = n;
    shared->fn = &fn;
    const int64_t threads = pool.num_threads() + 1;
    shared->grain = n / (4 * threads) > 1 ? n / (4 * threads) : 1;
    for (int64_t t = 1; t < threads; ++t) pool.Schedule([shared] { shared->work(); });
    shared->work();
    while (shared->done.load() < n) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  };
  return par;
}

// A float32 attribute in the MLIR syntax XLA parses custom-call attributes
// with (a decimal point is required; 9 significant digits round-trip).
inline std::string mlir_f32(float x) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.9e : f32", static_cast<double>(x));
  return buf;
}

inline const char* mlir_bool(bool x) { return x ? "true" : "false"; }

// An integer attribute in MLIR syntax.
inline std::string mlir_i64(int64_t x) { return std::to_string(x) + " : i64"; }

// The custom call's error for a check of the glue that failed (the same
// message the TF OpKernel gives); Success for an ok status.
inline xla::ffi::Error ffi_error(const absl::Status& s) {
  if (s.ok()) return xla::ffi::Error::Success();
  return xla::ffi::Error(xla::ffi::ErrorCode::kInvalidArgument, std::string(s.message()));
}

}  // namespace keraslm
