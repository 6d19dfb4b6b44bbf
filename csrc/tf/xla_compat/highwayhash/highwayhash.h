// Stand-in: see ../README.md.  xla::HighwayHashPrinter has a member of this
// type; we never construct that class.
#pragma once
#include <cstdint>
#define HH_TARGET_PREFERRED 0u
namespace highwayhash {
template <uint32_t Target>
class HighwayHashCatT {
  uint64_t opaque_[32];
};
}  // namespace highwayhash
