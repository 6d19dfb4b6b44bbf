// TF glue of the fused one-token decoder block (kernels/decoder_step.h): the
// op Keraslm>DecoderBlockStep, its shape function and the validating CPU
// OpKernel.  Inference only: the Python side registers a gradient that
// raises.
#include <cstring>

#include "kernels/decoder_step.h"
#include "tf/attention_checks.h"

namespace keraslm {
namespace {

enum Input {
  kX, kKCache, kVCache, kIndex, kKeyLengths, kLn1Gamma, kLn1Beta, kWQkv, kBQkv, kWO, kBO,
  kLn2Gamma, kLn2Beta, kWFc, kBFc, kWProj, kBProj, kNumInputs
};

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

// Requires `t` to be a vector of n values.
Status CheckVector(const Tensor& t, const char* name, int64_t n) {
  KERASLM_REQUIRE(t.dims() == 1 && t.dim_size(0) == n,
                  InvalidArgument(name, " must have shape [", n, "], got ", ShapeStr(t)));
  return Status();
}

Status CheckMatrix(const Tensor& t, const char* name, int64_t rows, int64_t cols) {
  KERASLM_REQUIRE(t.dims() == 2 && t.dim_size(0) == rows && t.dim_size(1) == cols,
                  InvalidArgument(name, " must have shape [", rows, ", ", cols, "], got ", ShapeStr(t)));
  return Status();
}

// Validates every input; fills the sizes of p.
Status Validate(OpKernelContext* ctx, int64_t H, bool use_bias, DecoderStepParams* p) {
  const Tensor& x = ctx->input(kX);
  const Tensor& kc = ctx->input(kKCache);
  const Tensor& vc = ctx->input(kVCache);
  KERASLM_REQUIRE(x.dims() == 2, InvalidArgument("x must have rank 2 [B, C], got shape ", ShapeStr(x)));
  KERASLM_REQUIRE(kc.dims() == 4,
                  InvalidArgument("k_cache must have rank 4 [B, S, Hkv, D], got shape ", ShapeStr(kc)));
  KERASLM_REQUIRE(vc.shape() == kc.shape(),
                  InvalidArgument("v_cache must have the shape of k_cache ", ShapeStr(kc), ", got ", ShapeStr(vc)));
  const int64_t B = x.dim_size(0), C = x.dim_size(1), S = kc.dim_size(1), Hkv = kc.dim_size(2),
                D = kc.dim_size(3);
  KERASLM_REQUIRE(kc.dim_size(0) == B,
                  InvalidArgument("k_cache batch size ", kc.dim_size(0), " does not match x batch size ", B));
  KERASLM_REQUIRE(D >= 1 && D <= kMaxHeadDim,
                  InvalidArgument("cache head size D must be in [1, ", kMaxHeadDim, "], got ", D));
  KERASLM_REQUIRE(Hkv >= 1 && H % Hkv == 0,
                  InvalidArgument("num_heads=", H, " must be a positive multiple of the cache's key/value heads ",
                                  "Hkv=", Hkv));
  KERASLM_REQUIRE(C == H * D, InvalidArgument("x width ", C, " must equal num_heads * head size = ", H, " * ", D));
  const Tensor& w_fc = ctx->input(kWFc);
  KERASLM_REQUIRE(w_fc.dims() == 2, InvalidArgument("w_fc must have rank 2 [C, F], got shape ", ShapeStr(w_fc)));
  const int64_t F = w_fc.dim_size(1), Q = (H + 2 * Hkv) * D;
  TF_RETURN_IF_ERROR(CheckVector(ctx->input(kLn1Gamma), "ln_1 gamma", C));
  TF_RETURN_IF_ERROR(CheckVector(ctx->input(kLn2Gamma), "ln_2 gamma", C));
  TF_RETURN_IF_ERROR(CheckMatrix(ctx->input(kWQkv), "w_qkv", C, Q));
  TF_RETURN_IF_ERROR(CheckMatrix(ctx->input(kWO), "w_o", C, C));
  TF_RETURN_IF_ERROR(CheckMatrix(w_fc, "w_fc", C, F));
  TF_RETURN_IF_ERROR(CheckMatrix(ctx->input(kWProj), "w_proj", F, C));
  if (use_bias) {
    TF_RETURN_IF_ERROR(CheckVector(ctx->input(kLn1Beta), "ln_1 beta", C));
    TF_RETURN_IF_ERROR(CheckVector(ctx->input(kLn2Beta), "ln_2 beta", C));
    TF_RETURN_IF_ERROR(CheckVector(ctx->input(kBQkv), "b_qkv", Q));
    TF_RETURN_IF_ERROR(CheckVector(ctx->input(kBO), "b_o", C));
    TF_RETURN_IF_ERROR(CheckVector(ctx->input(kBFc), "b_fc", F));
    TF_RETURN_IF_ERROR(CheckVector(ctx->input(kBProj), "b_proj", C));
  }
  const Tensor& index = ctx->input(kIndex);
  const Tensor& lens = ctx->input(kKeyLengths);
  TF_RETURN_IF_ERROR(CheckVector(index, "index", B));
  TF_RETURN_IF_ERROR(CheckVector(lens, "key_lengths", B));
  const auto idx = index.flat<int32_t>();
  const auto len = lens.flat<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    KERASLM_REQUIRE(idx(b) >= 0 && idx(b) < S,
                    InvalidArgument("index[", b, "] must be in [0, S=", S, "), got ", idx(b)));
    KERASLM_REQUIRE(len(b) >= 0 && len(b) <= S,
                    InvalidArgument("key_lengths[", b, "] must be in [0, S=", S, "], got ", len(b)));
  }
  p->B = B; p->S = S; p->H = H; p->Hkv = Hkv; p->D = D; p->F = F;
  return Status();
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
  explicit DecoderBlockStepOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    int num_heads = 0;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_heads", &num_heads));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &eps_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_bias", &use_bias_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("in_place", &in_place_));
    OP_REQUIRES(ctx, num_heads >= 1, InvalidArgument("num_heads must be >= 1, got ", num_heads));
    OP_REQUIRES(ctx, std::isfinite(eps_) && eps_ > 0.f,
                InvalidArgument("epsilon must be positive and finite, got ", eps_));
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
    auto in = [&](int i) { return ctx->input(i).flat<float>().data(); };
    auto bias = [&](int i) { return use_bias_ ? in(i) : nullptr; };
    p.x = in(kX);
    p.index = ctx->input(kIndex).flat<int32_t>().data();
    p.key_lengths = ctx->input(kKeyLengths).flat<int32_t>().data();
    p.ln1_gamma = in(kLn1Gamma);  p.ln1_beta = bias(kLn1Beta);
    p.w_qkv = in(kWQkv);          p.b_qkv = bias(kBQkv);
    p.w_o = in(kWO);              p.b_o = bias(kBO);
    p.ln2_gamma = in(kLn2Gamma);  p.ln2_beta = bias(kLn2Beta);
    p.w_fc = in(kWFc);            p.b_fc = bias(kBFc);
    p.w_proj = in(kWProj);        p.b_proj = bias(kBProj);
    p.y = y->flat<float>().data();
    p.scratch = scratch.flat<float>().data();
    if (p.B == 0) return;
    decoder_step_forward(p, tf_parallel(ctx));
  }

 private:
  int64_t H_ = 1;
  float eps_ = 1e-5f;
  bool use_bias_ = false, in_place_ = false;
};

REGISTER_KERNEL_BUILDER(Name("Keraslm>DecoderBlockStep").Device(DEVICE_CPU), DecoderBlockStepOp);

}  // namespace
}  // namespace keraslm

REGISTER_OP("Keraslm>DecoderBlockStep")
    .Input("x: float")
    .Input("k_cache: float")
    .Input("v_cache: float")
    .Input("index: int32")
    .Input("key_lengths: int32")
    .Input("ln_1_gamma: float")
    .Input("ln_1_beta: float")
    .Input("w_qkv: float")
    .Input("b_qkv: float")
    .Input("w_o: float")
    .Input("b_o: float")
    .Input("ln_2_gamma: float")
    .Input("ln_2_beta: float")
    .Input("w_fc: float")
    .Input("b_fc: float")
    .Input("w_proj: float")
    .Input("b_proj: float")
    .Attr("num_heads: int")
    .Attr("epsilon: float")
    .Attr("use_bias: bool = true")
    .Attr("in_place: bool = false")
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
inputs are ignored (pass empty tensors).  float32, no gradient.
)doc");
