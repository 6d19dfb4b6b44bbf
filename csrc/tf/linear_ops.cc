// TF glue of the small-batch dense kernel (kernels/linear.h): the op
// Keraslm>Linear, its shape function and the validating CPU OpKernel.
#include "kernels/linear.h"
#include "tf/tf_common.h"

namespace keraslm {
namespace {

Status LinearShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x, w;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &w));
  shape_inference::DimensionHandle k;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 1), c->Dim(w, 0), &k));
  c->set_output(0, c->Matrix(c->Dim(x, 0), c->Dim(w, 1)));
  return Status();
}

class LinearOp : public OpKernel {
 public:
  explicit LinearOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_bias", &use_bias_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    const Tensor& bias = ctx->input(2);
    OP_REQUIRES(ctx, x.dims() == 2,
                InvalidArgument("x must have rank 2 [M, K], got shape ", x.shape().DebugString()));
    OP_REQUIRES(ctx, w.dims() == 2,
                InvalidArgument("w must have rank 2 [K, N], got shape ", w.shape().DebugString()));
    OP_REQUIRES(ctx, x.dim_size(1) == w.dim_size(0),
                InvalidArgument("x has ", x.dim_size(1), " columns but w has ", w.dim_size(0), " rows"));
    if (use_bias_)
      OP_REQUIRES(ctx, bias.dims() == 1 && bias.dim_size(0) == w.dim_size(1),
                  InvalidArgument("bias must have shape [", w.dim_size(1), "], got ", bias.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({x.dim_size(0), w.dim_size(1)}), &out));
    LinearParams p;
    p.M = x.dim_size(0);
    p.K = x.dim_size(1);
    p.N = w.dim_size(1);
    p.x = x.flat<float>().data();
    p.w = w.flat<float>().data();
    p.bias = use_bias_ ? bias.flat<float>().data() : nullptr;
    p.out = out->flat<float>().data();
    if (p.K == 0) {  // an empty sum: out = bias (or 0)
      for (int64_t m = 0; m < p.M; ++m)
        for (int64_t n = 0; n < p.N; ++n) p.out[m * p.N + n] = p.bias ? p.bias[n] : 0.f;
      return;
    }
    linear_forward(p, tf_parallel(ctx));
  }

 private:
  bool use_bias_ = false;
};

REGISTER_KERNEL_BUILDER(Name("Keraslm>Linear").Device(DEVICE_CPU), LinearOp);

}  // namespace
}  // namespace keraslm

REGISTER_OP("Keraslm>Linear")
    .Input("x: float")
    .Input("w: float")
    .Input("bias: float")
    .Attr("use_bias: bool = false")
    .Output("out: float")
    .SetShapeFn(keraslm::LinearShape)
    .Doc(R"doc(
Small-batch dense layer: out [M, N] = x [M, K] @ w [K, N] (+ bias [N] when
use_bias).  Streams w once per 6 rows of x: the matrix-vector products of a
decoding step.  float32.
)doc");
