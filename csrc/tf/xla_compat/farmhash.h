// Stand-in: see README.md.  Declarations used by inline functions of
// tsl/platform/fingerprint.h, which we never call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
namespace util {
using uint128_t = std::pair<uint64_t, uint64_t>;
uint64_t Fingerprint64(const char* s, size_t n);
uint32_t Fingerprint32(const char* s, size_t n);
uint128_t Fingerprint128(const char* s, size_t n);
inline uint64_t Uint128Low64(const uint128_t& x) { return x.first; }
inline uint64_t Uint128High64(const uint128_t& x) { return x.second; }
}  // namespace util
