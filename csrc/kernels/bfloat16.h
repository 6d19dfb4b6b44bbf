// bfloat16 values held as their bit patterns (uint16_t): the upper half of a
// float32's bits.  Framework-free helpers shared by the kernels, their
// references and the tests.
#pragma once

#include <cstdint>
#include <cstring>

namespace keraslm {

// The float32 a bfloat16 bit pattern stands for (exact).
inline float bf16_to_float(uint16_t bits) {
  const uint32_t wide = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
}

// Round a float32 to the nearest bfloat16 (ties to even; NaN stays NaN) and
// return it widened back to float32 (gemm_bf16.cc).
float round_to_bf16(float x);

}  // namespace keraslm
