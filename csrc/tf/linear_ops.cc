// TF glue of the small-batch dense kernel (kernels/linear.h): the op
// Keraslm>Linear, its shape function and the validating CPU OpKernel.  The
// XLA lowering is in linear_xla.cc (same checks: linear_glue.h).
#include "kernels/linear.h"
#include "tf/linear_glue.h"
#include "tf/tf_common.h"

namespace keraslm {
namespace {

Status LinearShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x, w;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &w));
  bool transpose_w = false;
  TF_RETURN_IF_ERROR(c->GetAttr("transpose_w", &transpose_w));
  shape_inference::DimensionHandle k;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 1), c->Dim(w, transpose_w ? 1 : 0), &k));
  c->set_output(0, c->Matrix(c->Dim(x, 0), c->Dim(w, transpose_w ? 0 : 1)));
  return Status();
}

class LinearOp : public OpKernel {
 public:
  // Run inline on the thread that schedules it, not handed to another inter-op thread: the op
  // spreads its own work over the intra-op pool, and in a decoding loop (one small op after another)
  // each hand-off was a thread wake-up (about 0.5 ms of a 2.6 ms gpt-mini step on a 2-core machine).
  bool IsExpensive() override { return false; }

  explicit LinearOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_bias", &use_bias_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_w", &transpose_w_));
    tensorflow::DataType w_type;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tw", &w_type));
    bf16_w_ = w_type == tensorflow::DT_BFLOAT16;
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    const Tensor& bias = ctx->input(2);
    OP_REQUIRES_OK(ctx, ValidateLinearShapes(x.shape(), w.shape(), bias.shape(), use_bias_, transpose_w_));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({x.dim_size(0), LinearOutputs(w.shape(), transpose_w_)}),
                                             &out));
    LinearParams p = MakeLinearParams(x.shape(), w.shape(), x.flat<float>().data(), w.tensor_data().data(),
                                      use_bias_ ? bias.flat<float>().data() : nullptr, transpose_w_, bf16_w_);
    p.out = out->flat<float>().data();
    run_linear(p, tf_parallel(ctx));
  }

 private:
  bool use_bias_ = false, transpose_w_ = false, bf16_w_ = false;
};

REGISTER_KERNEL_BUILDER(Name("Keraslm>Linear").Device(DEVICE_CPU), LinearOp);

}  // namespace

#ifndef KERASLM_HAVE_XLA_GLUE
bool linear_xla_lowering_registered() { return false; }
#endif

}  // namespace keraslm

REGISTER_OP("Keraslm>Linear")
    .Input("x: float")
    .Input("w: Tw")
    .Input("bias: float")
    .Attr("use_bias: bool = false")
    .Attr("transpose_w: bool = false")
    .Attr("Tw: {float, bfloat16} = DT_FLOAT")
    .Output("out: float")
    .SetShapeFn(keraslm::LinearShape)
    .Doc(R"doc(
Small-batch dense layer: out [M, N] = x [M, K] @ w [K, N] (+ bias [N] when
use_bias).  Streams w once per 6 rows of x: the matrix-vector products of a
decoding step.  With transpose_w, w is [N, K] (an embedding table used as the
output layer).  float32, except that w may be bfloat16 (Tw; the products
accumulate in float32).
)doc");
