// Token sampling on an NVIDIA GPU: the contract of sampling.h (steps 1-8, the
// same ranking, tie rule and kept set) on device memory, one thread block per
// row (sampling_cuda.cu; compute capability 7.0 or newer).  Tokens are
// ranked by the penalised logit in double, as on the CPU.  Top-k and top-p
// cutoffs are found by radix selection over the row (no sort of V).  Top-p
// compares exact integer sums of the weights round(exp(z - zmax) * 2^62)
// with ceil(p * their total); the inverse CDF sums exp(z - zmax) in double in
// a fixed order.  So a row's result is the same from run to run, and the same
// coins give the same ids as the CPU kernels up to rounding at an exact
// probability boundary (e.g. equal tokens whose mass reaches p exactly: exact
// sums cut there, as the fast CPU kernel does, while the double running sum of
// the reference may round below p and keep one more token).
//
// Every pointer in SamplingParams is device memory.  The glue checks the
// per-row parameters and coins (small, host-side) before the call; the
// logits and previous ids, which live on the device, are checked by the
// kernel itself, which writes one status per row:
//   0 ok, 1 a NaN or +inf logit, 2 no finite logit, 3 a previous id outside
//   [0, V) that is not pad_id.
// A row with a bad previous id gets 3 whatever its logits; else a NaN / +inf
// gives 1 before "no finite logit" gives 2.  Rows with a non-zero status get
// id -1 and logprob NaN; the glue turns the first bad row into an error
// message.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/sampling.h"

namespace keraslm {
namespace cuda {

struct SamplingStatus {
  enum : int32_t { kOk = 0, kBadLogit = 1, kNoFiniteLogit = 2, kBadPreviousId = 3 };
};

// Bytes of device scratch sample() needs (256-byte aligned): per row, a copy
// of the logits row (used with a repetition penalty) and one double per 1024
// ids.  The kernel initialises what it reads; the caller need not clear it.
size_t sample_workspace(const SamplingParams& p);

// p: device pointers (logits, coins, the five parameter arrays with stride 0
// or 1, previous_ids, ids, logprobs); status: device int32 [B].
// Returns nullptr on success, else a static CUDA error message.
const char* sample(const SamplingParams& p, int32_t* status, void* workspace, void* stream);

}  // namespace cuda
}  // namespace keraslm
