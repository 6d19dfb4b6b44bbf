// Shape validation and params of the Keraslm>Sample kernels, shared by the
// CPU and GPU OpKernels (value checks: kernels/sampling_checks.h).
#pragma once

#include <cstdint>

#include "kernels/sampling.h"
#include "tf/tf_common.h"

namespace keraslm {

// Per-row parameters, in input order after logits and coins.
constexpr const char* kSampleParamNames[] = {"temperature", "top_k", "top_p", "min_p", "repetition_penalty"};

// Checks the ranks and sizes of every input of Keraslm>Sample.
inline Status ValidateSampleShapes(OpKernelContext* ctx) {
  const Tensor& logits = ctx->input(0);
  const Tensor& coins = ctx->input(1);
  const Tensor& prev = ctx->input(7);
  if (logits.dims() != 2)
    return InvalidArgument("logits must be a 2-D tensor [batch, vocab]; got shape ", logits.shape().DebugString());
  const int64_t B = logits.dim_size(0), V = logits.dim_size(1);
  if (V <= 0)
    return InvalidArgument("logits must have at least one column (vocabulary size); got shape ",
                           logits.shape().DebugString());
  if (V > INT32_MAX)
    return InvalidArgument("logits has ", V, " columns; ids are int32, so at most 2^31 - 1 are supported");
  if (!(coins.dims() == 1 && coins.dim_size(0) == B))
    return InvalidArgument("coins must have shape [", B, "] (one per row of logits); got shape ",
                           coins.shape().DebugString());
  for (int i = 2; i < 7; ++i) {
    const Tensor& t = ctx->input(i);
    if (!(t.dims() == 0 || (t.dims() == 1 && t.dim_size(0) == B)))
      return InvalidArgument(kSampleParamNames[i - 2], " must be a scalar or have shape [", B,
                             "] (one per row of logits); got shape ", t.shape().DebugString());
  }
  if (!(prev.dims() == 2 && prev.dim_size(0) == B))
    return InvalidArgument("previous_ids must have shape [", B, ", L]; got shape ", prev.shape().DebugString());
  return Status();
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

// Params pointing at the op's inputs and outputs (wherever they live).
inline SamplingParams SampleParams(OpKernelContext* ctx, int32_t pad_id, Tensor* ids, Tensor* logprobs) {
  const Tensor& logits = ctx->input(0);
  const Tensor& prev = ctx->input(7);
  auto stride = [&](int i) -> int64_t { return ctx->input(i).dims() == 0 ? 0 : 1; };
  SamplingParams p;
  p.B = logits.dim_size(0);
  p.V = logits.dim_size(1);
  p.L = prev.dim_size(1);
  p.logits = logits.flat<float>().data();
  p.logits_stride = p.V;
  p.coins = ctx->input(1).flat<float>().data();
  p.temperature = ctx->input(2).flat<float>().data();
  p.temperature_stride = stride(2);
  p.top_k = ctx->input(3).flat<int32_t>().data();
  p.top_k_stride = stride(3);
  p.top_p = ctx->input(4).flat<float>().data();
  p.top_p_stride = stride(4);
  p.min_p = ctx->input(5).flat<float>().data();
  p.min_p_stride = stride(5);
  p.repetition_penalty = ctx->input(6).flat<float>().data();
  p.repetition_penalty_stride = stride(6);
  p.previous_ids = p.L > 0 ? prev.flat<int32_t>().data() : nullptr;
  p.pad_id = pad_id;
  p.ids = ids->flat<int32_t>().data();
  p.logprobs = logprobs->flat<float>().data();
  return p;
}

}  // namespace keraslm
