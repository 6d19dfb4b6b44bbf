// gemm_bf16 (gemm_bf16.h): the availability check, the float64 reference and
// the entry point that hands over to the AMX kernel (gemm_bf16_amx.cc).
// Compiled for plain x86-64: nothing here may use AMX itself.
#include "kernels/gemm_bf16.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && defined(__linux__) && defined(KERASLM_HAVE_AMX_KERNEL)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define KERASLM_AMX_POSSIBLE 1
#endif

namespace keraslm {

#ifdef KERASLM_AMX_POSSIBLE
namespace amx {
void gemm_bf16(const GemmBf16Params& p, const Parallel& par);
}
#endif

namespace {

struct AmxState {
  bool ok = false;
  const char* reason = "this build has no AMX kernel (it needs x86-64 Linux and a compiler with AMX support)";
};

AmxState probe() {
  AmxState s;
#ifdef KERASLM_AMX_POSSIBLE
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    s.reason = "the CPU does not report its extended features (CPUID leaf 7)";
    return s;
  }
  const bool amx_tile = edx & (1u << 24), amx_bf16 = edx & (1u << 22);
  unsigned eax1 = 0, ebx1 = 0, ecx1 = 0, edx1 = 0;
  __get_cpuid_count(7, 1, &eax1, &ebx1, &ecx1, &edx1);
  const bool avx512_bf16 = eax1 & (1u << 5);
  if (!amx_tile || !amx_bf16 || !avx512_bf16) {
    s.reason = "the CPU has no AMX-BF16 / AVX512-BF16";
    return s;
  }
  // Linux hands out the AMX tile data state on request only.
  constexpr int kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    s.reason = "the kernel refused this process the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)";
    return s;
  }
  unsigned long features = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &features) != 0 || !(features & (1ul << kXfeatureXtiledata))) {
    s.reason = "the kernel did not grant the AMX tile state";
    return s;
  }
  s.ok = true;
  s.reason = "";
#endif
  return s;
}

const AmxState& state() {
  static const AmxState s = probe();
  return s;
}

}  // namespace

bool amx_bf16_available() { return state().ok; }

const char* amx_bf16_unavailable_reason() { return state().reason; }

void gemm_bf16(const GemmBf16Params& p, const Parallel& par) {
  if (!amx_bf16_available())
    throw std::runtime_error(std::string("gemm_bf16 needs AMX-BF16: ") + amx_bf16_unavailable_reason());
#ifdef KERASLM_AMX_POSSIBLE
  amx::gemm_bf16(p, par);
#endif
}

float round_to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if (std::isnan(x)) {
    bits = (bits | 0x00400000u) & 0xFFFF0000u;  // quiet NaN, sign kept
  } else {
    bits += 0x7FFFu + ((bits >> 16) & 1u);  // round to nearest, ties to even
    bits &= 0xFFFF0000u;
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

void gemm_bf16_reference(const GemmBf16Params& p) {
  for (int64_t m = 0; m < p.M; ++m) {
    for (int64_t n = 0; n < p.N; ++n) {
      double acc = 0.0;
      for (int64_t k = 0; k < p.K; ++k) {
        const float a = p.trans_a ? p.a[k * p.lda + m] : p.a[m * p.lda + k];
        const float b = p.trans_b ? p.b[n * p.ldb + k] : p.b[k * p.ldb + n];
        acc += static_cast<double>(round_to_bf16(a)) * static_cast<double>(round_to_bf16(b));
      }
      p.c[m * p.ldc + n] = static_cast<float>(acc);
    }
  }
}

}  // namespace keraslm
