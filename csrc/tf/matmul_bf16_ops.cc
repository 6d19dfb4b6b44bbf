// TF glue of the bfloat16-precision matrix product (kernels/gemm_bf16.h):
// the op Keraslm>MatmulBf16, its shape function and the validating CPU
// OpKernel; and Keraslm>BuildInfo, which tells Python what this build and
// this CPU can do (AMX, which ops have XLA lowerings).  The XLA lowering of
// MatmulBf16 is in matmul_bf16_xla.cc.
#include <string>

#include "kernels/gemm_bf16.h"
#include "tf/decoder_step_glue.h"
#include "tf/layer_norm_glue.h"
#include "tf/linear_glue.h"
#include "tf/matmul_bf16_glue.h"
#include "tf/sampling_glue.h"
#include "tf/tf_common.h"

namespace keraslm {
namespace {

Status MatmulBf16Shape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle a, b;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &a));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &b));
  bool ta = false, tb = false;
  TF_RETURN_IF_ERROR(c->GetAttr("transpose_a", &ta));
  TF_RETURN_IF_ERROR(c->GetAttr("transpose_b", &tb));
  shape_inference::DimensionHandle k;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(a, ta ? 0 : 1), c->Dim(b, tb ? 1 : 0), &k));
  c->set_output(0, c->Matrix(c->Dim(a, ta ? 1 : 0), c->Dim(b, tb ? 0 : 1)));
  return Status();
}

class MatmulBf16Op : public OpKernel {
 public:
  explicit MatmulBf16Op(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_a", &ta_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_b", &tb_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& a = ctx->input(0);
    const Tensor& b = ctx->input(1);
    MatmulBf16Dims d;
    const auto as = a.shape().dim_sizes(), bs = b.shape().dim_sizes();
    const std::string error = matmul_bf16_dims({as.begin(), as.end()}, {bs.begin(), bs.end()}, ta_, tb_, &d);
    OP_REQUIRES(ctx, error.empty(), InvalidArgument(error));
    Tensor* c = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({d.M, d.N}), &c));
    run_matmul_bf16(d, a.flat<float>().data(), b.flat<float>().data(), c->flat<float>().data(),
                    tf_parallel(ctx));
  }

 private:
  bool ta_ = false, tb_ = false;
};

class BuildInfoOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    std::string info = "amx_bf16=";
    info += amx_bf16_available() ? "1" : "0";
    info += ";amx_bf16_reason=";
    info += amx_bf16_unavailable_reason();
    info += ";xla_matmul_bf16=";
    info += matmul_bf16_xla_lowering_registered() ? "1" : "0";
    info += ";xla_attention=";
    info += attention_xla_lowering_registered() ? "1" : "0";
    info += ";xla_layer_norm=";
    info += layer_norm_xla_lowering_registered() ? "1" : "0";
    info += ";xla_sample=";
    info += sample_xla_lowering_registered() ? "1" : "0";
    info += ";xla_linear=";
    info += linear_xla_lowering_registered() ? "1" : "0";
    info += ";xla_decoder_block_step=";
    info += decoder_block_step_xla_lowering_registered() ? "1" : "0";
    out->scalar<tensorflow::tstring>()() = info;
  }
};

}  // namespace

std::string matmul_bf16_dims(const std::vector<int64_t>& a_shape, const std::vector<int64_t>& b_shape, bool ta,
                             bool tb, MatmulBf16Dims* d) {
  auto show = [](const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  };
  if (a_shape.size() != 2) return "a must have rank 2, got shape " + show(a_shape);
  if (b_shape.size() != 2) return "b must have rank 2, got shape " + show(b_shape);
  d->M = ta ? a_shape[1] : a_shape[0];
  d->K = ta ? a_shape[0] : a_shape[1];
  d->N = tb ? b_shape[0] : b_shape[1];
  const int64_t kb = tb ? b_shape[1] : b_shape[0];
  if (kb != d->K)
    return "inner dimensions differ: a " + show(a_shape) + (ta ? " (transposed)" : "") + " has " +
           std::to_string(d->K) + " columns but b " + show(b_shape) + (tb ? " (transposed)" : "") + " has " +
           std::to_string(kb) + " rows";
  d->trans_a = ta;
  d->trans_b = tb;
  return "";
}

void run_matmul_bf16(const MatmulBf16Dims& d, const float* a, const float* b, float* c, const Parallel& par) {
  GemmBf16Params p;
  p.M = d.M;
  p.N = d.N;
  p.K = d.K;
  p.a = a;
  p.lda = d.trans_a ? d.M : d.K;
  p.trans_a = d.trans_a;
  p.b = b;
  p.ldb = d.trans_b ? d.K : d.N;
  p.trans_b = d.trans_b;
  p.c = c;
  p.ldc = d.N;
  if (amx_bf16_available())
    gemm_bf16(p, par);
  else
    gemm_bf16_reference(p);  // same values, slowly; Python only routes here with AMX
}

#ifndef KERASLM_HAVE_XLA_GLUE
bool matmul_bf16_xla_lowering_registered() { return false; }
bool attention_xla_lowering_registered() { return false; }
#endif

REGISTER_KERNEL_BUILDER(Name("Keraslm>MatmulBf16").Device(DEVICE_CPU), MatmulBf16Op);
REGISTER_KERNEL_BUILDER(Name("Keraslm>BuildInfo").Device(DEVICE_CPU), BuildInfoOp);

}  // namespace keraslm

REGISTER_OP("Keraslm>MatmulBf16")
    .Input("a: float")
    .Input("b: float")
    .Output("c: float")
    .Attr("transpose_a: bool = false")
    .Attr("transpose_b: bool = false")
    .SetShapeFn(keraslm::MatmulBf16Shape)
    .Doc(R"doc(
c = op(a) @ op(b) with the inputs rounded to bfloat16 and float32 sums (AMX).
)doc");

REGISTER_OP("Keraslm>BuildInfo")
    .Output("info: string")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return ::tensorflow::Status();
    })
    .Doc(R"doc(
"key=value;..." facts about this build and CPU (AMX, XLA lowerings).
)doc");
