// Shape validation and params of Keraslm>Sample, shared by the CPU and GPU
// OpKernels and the XLA lowering (sampling_xla.cc), so that every path
// rejects the same inputs with the same messages (value checks:
// kernels/sampling_checks.h).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/sampling.h"
#include "tf/tf_common.h"

namespace keraslm {

// Per-row parameters, in input order after logits and coins.
constexpr const char* kSampleParamNames[] = {"temperature", "top_k", "top_p", "min_p", "repetition_penalty"};
constexpr int kSampleInputs = 8;  // logits, coins, the five parameters, previous_ids

// Checks the ranks and sizes of the 8 inputs of Keraslm>Sample (in input order).
inline Status ValidateSampleShapes(const std::vector<TensorShape>& in) {
  const TensorShape& logits = in[0];
  const TensorShape& coins = in[1];
  const TensorShape& prev = in[7];
  if (logits.dims() != 2)
    return InvalidArgument("logits must be a 2-D tensor [batch, vocab]; got shape ", logits.DebugString());
  const int64_t B = logits.dim_size(0), V = logits.dim_size(1);
  if (V <= 0)
    return InvalidArgument("logits must have at least one column (vocabulary size); got shape ",
                           logits.DebugString());
  if (V > INT32_MAX)
    return InvalidArgument("logits has ", V, " columns; ids are int32, so at most 2^31 - 1 are supported");
  if (!(coins.dims() == 1 && coins.dim_size(0) == B))
    return InvalidArgument("coins must have shape [", B, "] (one per row of logits); got shape ",
                           coins.DebugString());
  for (int i = 2; i < 7; ++i) {
    const TensorShape& t = in[i];
    if (!(t.dims() == 0 || (t.dims() == 1 && t.dim_size(0) == B)))
      return InvalidArgument(kSampleParamNames[i - 2], " must be a scalar or have shape [", B,
                             "] (one per row of logits); got shape ", t.DebugString());
  }
  if (!(prev.dims() == 2 && prev.dim_size(0) == B))
    return InvalidArgument("previous_ids must have shape [", B, ", L]; got shape ", prev.DebugString());
  return Status();
}

inline Status ValidateSampleShapes(OpKernelContext* ctx) {
  std::vector<TensorShape> in;
  for (int i = 0; i < kSampleInputs; ++i) in.push_back(ctx->input(i).shape());
  return ValidateSampleShapes(in);
}

// Validates the shapes and allocates the outputs ids [B] and logprobs [B];
// *run says whether there is anything to sample (B > 0).
inline Status PrepareSample(OpKernelContext* ctx, Tensor** ids, Tensor** logprobs, bool* run) {
  TF_RETURN_IF_ERROR(ValidateSampleShapes(ctx));
  const int64_t B = ctx->input(0).dim_size(0);
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({B}), ids));
  TF_RETURN_IF_ERROR(ctx->allocate_output(1, TensorShape({B}), logprobs));
  *run = B > 0;
  return Status();
}

// Params of a call with validated shapes: `data` and `rank` of the 8 inputs
// in input order (a rank-0 parameter is broadcast: stride 0), wherever they
// live; L is previous_ids' second dimension.
inline SamplingParams MakeSampleParams(int64_t B, int64_t V, int64_t L, const void* const data[kSampleInputs],
                                       const int rank[kSampleInputs], int32_t pad_id, int32_t* ids,
                                       float* logprobs) {
  auto f32 = [&](int i) { return static_cast<const float*>(data[i]); };
  auto stride = [&](int i) -> int64_t { return rank[i] == 0 ? 0 : 1; };
  SamplingParams p;
  p.B = B;
  p.V = V;
  p.L = L;
  p.logits = f32(0);
  p.logits_stride = V;
  p.coins = f32(1);
  p.temperature = f32(2);
  p.temperature_stride = stride(2);
  p.top_k = static_cast<const int32_t*>(data[3]);
  p.top_k_stride = stride(3);
  p.top_p = f32(4);
  p.top_p_stride = stride(4);
  p.min_p = f32(5);
  p.min_p_stride = stride(5);
  p.repetition_penalty = f32(6);
  p.repetition_penalty_stride = stride(6);
  p.previous_ids = L > 0 ? static_cast<const int32_t*>(data[7]) : nullptr;
  p.pad_id = pad_id;
  p.ids = ids;
  p.logprobs = logprobs;
  return p;
}

// Params pointing at the op's inputs and outputs (wherever they live).
inline SamplingParams SampleParams(OpKernelContext* ctx, int32_t pad_id, Tensor* ids, Tensor* logprobs) {
  const void* data[kSampleInputs];
  int rank[kSampleInputs];
  for (int i = 0; i < kSampleInputs; ++i) {
    const Tensor& t = ctx->input(i);
    data[i] = t.NumElements() > 0 ? t.tensor_data().data() : nullptr;
    rank[i] = t.dims();
  }
  const Tensor& logits = ctx->input(0);
  return MakeSampleParams(logits.dim_size(0), logits.dim_size(1), ctx->input(7).dim_size(1), data, rank, pad_id,
                          ids->flat<int32_t>().data(), logprobs->flat<float>().data());
}

// Whether this build lowers the op to an XLA custom call (sampling_xla.cc).
bool sample_xla_lowering_registered();

}  // namespace keraslm
