// TF glue of the fused one-token decoder block (kernels/decoder_step.h): the
// op Keraslm>DecoderBlockStep, its shape function and the validating CPU
// OpKernel (checks: decoder_step_glue.h, shared with the XLA lowering in
// decoder_step_xla.cc).  Inference only: the Python side registers a
// gradient that raises.
#include <cstring>
#include <vector>

#include "kernels/decoder_step.h"
#include "tf/attention_checks.h"
#include "tf/decoder_step_glue.h"

namespace keraslm {
namespace {

Status StepShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x, k, v;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(kX), 2, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(kKCache), 4, &k));
  TF_RETURN_IF_ERROR(c->Merge(k, c->input(kVCache), &v));
  c->set_output(0, x);
  c->set_output(1, v);
  c->set_output(2, v);
  return Status();
}

// Validates every input; fills the sizes of p.
Status Validate(OpKernelContext* ctx, int64_t H, bool use_bias, DecoderStepParams* p) {
  std::vector<TensorShape> shapes;
  for (int i = 0; i < kNumStepInputs; ++i) shapes.push_back(ctx->input(i).shape());
  TF_RETURN_IF_ERROR(ValidateStepShapes(shapes, H, use_bias, p));
  return ValidateStepValues(ctx->input(kIndex).flat<int32_t>().data(),
                            ctx->input(kKeyLengths).flat<int32_t>().data(), p->B, p->S);
}

// Output `out` (1 or 2) holding the cache of input `in`, written by the kernel:
// the input buffer itself when in_place (the caller owns the cache), else the
// input forwarded when nothing else holds it, else a copy.
Status CacheOutput(OpKernelContext* ctx, bool in_place, int in, int out, float** data) {
  const Tensor& cache = ctx->input(in);
  if (in_place) {
    ctx->set_output(out, cache);
    *data = const_cast<float*>(cache.flat<float>().data());
    return Status();
  }
  Tensor* result = nullptr;
  TF_RETURN_IF_ERROR(ctx->forward_input_or_allocate_output({in}, out, cache.shape(), &result));
  float* dst = result->flat<float>().data();
  const float* src = cache.flat<float>().data();
  if (dst != src && cache.NumElements() > 0) std::memcpy(dst, src, cache.NumElements() * sizeof(float));
  *data = dst;
  return Status();
}

class DecoderBlockStepOp : public OpKernel {
 public:
  // Run inline on the thread that schedules it, not handed to another inter-op thread: the op
  // spreads its own work over the intra-op pool, and in a decoding loop (one small op after another)
  // each hand-off was a thread wake-up (about 0.5 ms of a 2.6 ms gpt-mini step on a 2-core machine).
  bool IsExpensive() override { return false; }

  explicit DecoderBlockStepOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    int num_heads = 0;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_heads", &num_heads));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &eps_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_bias", &use_bias_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("in_place", &in_place_));
    tensorflow::DataType weights_type;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tw", &weights_type));
    bf16_weights_ = weights_type == tensorflow::DT_BFLOAT16;
    OP_REQUIRES_OK(ctx, ValidateStepAttrs(num_heads, eps_));
    H_ = num_heads;
  }

  void Compute(OpKernelContext* ctx) override {
    DecoderStepParams p;
    OP_REQUIRES_OK(ctx, Validate(ctx, H_, use_bias_, &p));
    p.eps = eps_;
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(kX).shape(), &y));
    OP_REQUIRES_OK(ctx, CacheOutput(ctx, in_place_, kKCache, 1, &p.k_cache));
    OP_REQUIRES_OK(ctx, CacheOutput(ctx, in_place_, kVCache, 2, &p.v_cache));
    Tensor scratch;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                           TensorShape({decoder_step_scratch_floats(p)}), &scratch));
    const void* data[kNumStepInputs];
    for (int i = 0; i < kNumStepInputs; ++i) data[i] = ctx->input(i).tensor_data().data();
    SetStepInputs(data, use_bias_, bf16_weights_, &p);
    p.y = y->flat<float>().data();
    p.scratch = scratch.flat<float>().data();
    if (p.B == 0) return;
    decoder_step_forward(p, tf_parallel(ctx));
  }

 private:
  int64_t H_ = 1;
  float eps_ = 1e-5f;
  bool use_bias_ = false, in_place_ = false, bf16_weights_ = false;
};

REGISTER_KERNEL_BUILDER(Name("Keraslm>DecoderBlockStep").Device(DEVICE_CPU), DecoderBlockStepOp);

}  // namespace

#ifndef KERASLM_HAVE_XLA_GLUE
bool decoder_block_step_xla_lowering_registered() { return false; }
#endif

}  // namespace keraslm

REGISTER_OP("Keraslm>DecoderBlockStep")
    .Input("x: float")
    .Input("k_cache: float")
    .Input("v_cache: float")
    .Input("index: int32")
    .Input("key_lengths: int32")
    .Input("ln_1_gamma: float")
    .Input("ln_1_beta: float")
    .Input("w_qkv: Tw")
    .Input("b_qkv: float")
    .Input("w_o: Tw")
    .Input("b_o: float")
    .Input("ln_2_gamma: float")
    .Input("ln_2_beta: float")
    .Input("w_fc: Tw")
    .Input("b_fc: float")
    .Input("w_proj: Tw")
    .Input("b_proj: float")
    .Attr("num_heads: int")
    .Attr("epsilon: float")
    .Attr("use_bias: bool = true")
    .Attr("in_place: bool = false")
    .Attr("Tw: {float, bfloat16} = DT_FLOAT")
    .Output("y: float")
    .Output("k_cache_out: float")
    .Output("v_cache_out: float")
    .SetShapeFn(keraslm::StepShape)
    .Doc(R"doc(
One decoding step of a pre-LayerNorm GPT block for one token per row:
y = x1 + mlp(ln_2(x1)), x1 = x + attn(ln_1(x)), where the new token's key and
value are written at row index[b] of the [B, S, Hkv, D] caches and row b
attends to its first key_lengths[b] keys.  With in_place the cache outputs
are the input buffers, written in place (for callers that own the cache);
otherwise the inputs are left unchanged.  Without use_bias the bias and beta
inputs are ignored (pass empty tensors).  float32, except that the four
matrices may be bfloat16 (Tw; the products still accumulate in float32).
No gradient.
)doc");
