// TF glue of the layer normalisation kernels (kernels/layer_norm.h): the ops
// Keraslm>LayerNorm and Keraslm>LayerNormGrad, their shape functions and
// validating CPU kernels.  The XLA lowerings are in layer_norm_xla.cc.
#include <string>
#include <vector>

#include "kernels/layer_norm.h"
#include "tf/layer_norm_glue.h"
#include "tf/tf_common.h"

namespace keraslm {
namespace {

std::vector<int64_t> dims(const Tensor& t) {
  const auto d = t.shape().dim_sizes();
  return std::vector<int64_t>(d.begin(), d.end());
}

Status LayerNormShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x, rows;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
  TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &rows));
  c->set_output(0, x);
  c->set_output(1, rows);
  c->set_output(2, rows);
  return Status();
}

Status LayerNormGradShape(shape_inference::InferenceContext* c) {
  bool use_beta = false;
  TF_RETURN_IF_ERROR(c->GetAttr("use_beta", &use_beta));
  c->set_output(0, c->input(1));
  c->set_output(1, c->input(2));
  c->set_output(2, use_beta ? c->input(2) : c->Vector(0));
  return Status();
}

class LayerNormOp : public OpKernel {
 public:
  // Run inline on the thread that schedules it, not handed to another inter-op thread: the op
  // spreads its own work over the intra-op pool, and in a decoding loop (one small op after another)
  // each hand-off was a thread wake-up (about 0.5 ms of a 2.6 ms gpt-mini step on a 2-core machine).
  bool IsExpensive() override { return false; }

  explicit LayerNormOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_beta", &use_beta_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& gamma = ctx->input(1);
    const Tensor& beta = ctx->input(2);
    int64_t R = 0, C = 0;
    const std::string error = layer_norm_check(dims(x), dims(gamma), dims(beta), use_beta_, epsilon_, &R, &C);
    OP_REQUIRES(ctx, error.empty(), InvalidArgument(error));
    TensorShape rows = x.shape();
    rows.RemoveLastDims(1);
    Tensor *y = nullptr, *mean = nullptr, *rstd = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, rows, &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, rows, &rstd));
    LayerNormParams p;
    p.R = R;
    p.C = C;
    p.epsilon = epsilon_;
    p.x = x.flat<float>().data();
    p.gamma = gamma.flat<float>().data();
    p.beta = use_beta_ ? beta.flat<float>().data() : nullptr;
    p.y = y->flat<float>().data();
    p.mean = mean->flat<float>().data();
    p.rstd = rstd->flat<float>().data();
    layer_norm_forward(p, tf_parallel(ctx));
  }

 private:
  float epsilon_ = 1e-5f;
  bool use_beta_ = true;
};

class LayerNormGradOp : public OpKernel {
 public:
  explicit LayerNormGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_beta", &use_beta_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& gamma = ctx->input(2);
    const Tensor& mean = ctx->input(3);
    const Tensor& rstd = ctx->input(4);
    int64_t R = 0, C = 0;
    std::string error = layer_norm_check(dims(x), dims(gamma), dims(gamma), false, 1.0f, &R, &C);
    if (error.empty()) error = layer_norm_grad_check(dims(dy), dims(x), dims(mean), dims(rstd));
    OP_REQUIRES(ctx, error.empty(), InvalidArgument(error));
    Tensor *dx = nullptr, *dgamma = nullptr, *dbeta = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({use_beta_ ? C : 0}), &dbeta));
    LayerNormGradParams g;
    g.R = R;
    g.C = C;
    g.dy = dy.flat<float>().data();
    g.x = x.flat<float>().data();
    g.gamma = gamma.flat<float>().data();
    g.mean = mean.flat<float>().data();
    g.rstd = rstd.flat<float>().data();
    g.dx = dx->flat<float>().data();
    g.dgamma = dgamma->flat<float>().data();
    g.dbeta = use_beta_ ? dbeta->flat<float>().data() : nullptr;
    layer_norm_backward(g, tf_parallel(ctx));
  }

 private:
  bool use_beta_ = true;
};

}  // namespace

#ifndef KERASLM_HAVE_XLA_GLUE
bool layer_norm_xla_lowering_registered() { return false; }
#endif

REGISTER_KERNEL_BUILDER(Name("Keraslm>LayerNorm").Device(DEVICE_CPU), LayerNormOp);
REGISTER_KERNEL_BUILDER(Name("Keraslm>LayerNormGrad").Device(DEVICE_CPU), LayerNormGradOp);

}  // namespace keraslm

REGISTER_OP("Keraslm>LayerNorm")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: float")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("epsilon: float")
    .Attr("use_beta: bool = true")
    .SetShapeFn(keraslm::LayerNormShape)
    .Doc(R"doc(
Layer normalisation over the last axis; also returns each row's mean and 1/std.
)doc");

REGISTER_OP("Keraslm>LayerNormGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("gamma: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dx: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("use_beta: bool = true")
    .SetShapeFn(keraslm::LayerNormGradShape)
    .Doc(R"doc(
Gradient of Keraslm>LayerNorm with respect to x, gamma and (with use_beta) beta.
)doc");
