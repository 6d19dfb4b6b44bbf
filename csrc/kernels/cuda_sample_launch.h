// Host side of a CUDA sampling call, shared by the TF GPU kernel and the
// DLPack entry points: the per-row parameters and coins arrive in host memory
// (small arrays, checked here with the CPU messages), the logits and previous
// ids in device memory (checked by the kernel, which reports a status per
// row).  Framework-free; the caller provides device scratch and a stream.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda_device.h"
#include "kernels/sampling_checks.h"
#include "kernels/sampling_cuda.h"

namespace keraslm {
namespace cuda {

class SampleLaunch {
 public:
  // h: coins and the five parameter arrays in host memory; logits,
  // previous_ids, ids and logprobs in device memory.
  explicit SampleLaunch(const SamplingParams& h) : h_(h) {
    const int64_t B = h.B;
    auto n = [&](int64_t stride) { return stride == 0 ? 1 : B; };
    // Packed host copy: coins, temperature, top_k, top_p, min_p, penalty.
    sizes_ = {B, n(h.temperature_stride), n(h.top_k_stride), n(h.top_p_stride), n(h.min_p_stride),
              n(h.repetition_penalty_stride)};
    int64_t words = 0;
    for (int64_t s : sizes_) words += s;
    pack_.resize(words);
    const void* src[6] = {h.coins, h.temperature, h.top_k, h.top_p, h.min_p, h.repetition_penalty};
    int64_t at = 0;
    for (int i = 0; i < 6; ++i) {
      std::memcpy(&pack_[at], src[i], 4 * sizes_[i]);  // float32 and int32 are both 4 bytes
      at += sizes_[i];
    }
    pack_bytes_ = align256(4 * words);
    status_bytes_ = align256(sizeof(int32_t) * B);
  }

  // Device scratch bytes run() needs.
  size_t scratch_bytes() const { return pack_bytes_ + status_bytes_ + sample_workspace(h_); }

  // Validates, samples into h.ids / h.logprobs, and waits for the stream.
  // Returns "" on success; else the message, with *input_error telling a bad
  // user input (a ValueError / InvalidArgument) from a CUDA failure.
  std::string run(char* scratch, void* stream, bool* input_error) {
    *input_error = true;
    std::string error = check_sampling_parameters(h_);
    if (!error.empty()) return error;
    *input_error = false;
    if (const char* e = copy_to_device(scratch, pack_.data(), 4 * pack_.size(), stream)) return e;
    SamplingParams d = h_;
    const float* f = reinterpret_cast<const float*>(scratch);
    const int32_t* i = reinterpret_cast<const int32_t*>(scratch);
    int64_t at = 0;
    d.coins = f + at;              at += sizes_[0];
    d.temperature = f + at;        at += sizes_[1];
    d.top_k = i + at;              at += sizes_[2];
    d.top_p = f + at;              at += sizes_[3];
    d.min_p = f + at;              at += sizes_[4];
    d.repetition_penalty = f + at;
    int32_t* status = reinterpret_cast<int32_t*>(scratch + pack_bytes_);
    if (const char* e = sample(d, status, scratch + pack_bytes_ + status_bytes_, stream)) return e;
    std::vector<int32_t> host_status(h_.B);
    if (const char* e = copy_to_host(host_status.data(), status, sizeof(int32_t) * h_.B, stream)) return e;
    // Same precedence as the CPU checks: any bad previous id, then the first bad row of logits.
    for (int64_t b = 0; b < h_.B; ++b)
      if (host_status[b] == SamplingStatus::kBadPreviousId) return row_error(b, host_status[b], stream, input_error);
    for (int64_t b = 0; b < h_.B; ++b)
      if (host_status[b] != SamplingStatus::kOk) return row_error(b, host_status[b], stream, input_error);
    return "";
  }

 private:
  // The message for row b's status (copies that row back to name the value).
  std::string row_error(int64_t b, int32_t status, void* stream, bool* input_error) {
    if (status == SamplingStatus::kBadPreviousId) {
      std::vector<int32_t> row(h_.L);
      if (const char* e = copy_to_host(row.data(), h_.previous_ids + b * h_.L, sizeof(int32_t) * h_.L, stream))
        return e;
      for (int64_t l = 0; l < h_.L; ++l)
        if (row[l] != h_.pad_id && (row[l] < 0 || row[l] >= h_.V)) {
          *input_error = true;
          return previous_id_error(h_, b, l, row[l]);
        }
    } else if (status == SamplingStatus::kBadLogit || status == SamplingStatus::kNoFiniteLogit) {
      std::vector<float> row(h_.V);
      if (const char* e = copy_to_host(row.data(), h_.logits + b * h_.logits_stride, sizeof(float) * h_.V, stream))
        return e;
      *input_error = true;
      return logits_row_error(b, row.data(), h_.V, status);
    }
    return "the CUDA sampler reported status " + std::to_string(status) + " for row " + std::to_string(b);
  }

  SamplingParams h_;
  std::vector<int64_t> sizes_;
  std::vector<uint32_t> pack_;
  size_t pack_bytes_ = 0, status_bytes_ = 0;
};

}  // namespace cuda
}  // namespace keraslm
