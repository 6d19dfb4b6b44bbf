// XLA lowerings of Keraslm>LayerNorm and Keraslm>LayerNormGrad: typed-FFI
// custom calls (xla_ffi.h) running the fused kernels on XLA's intra-op
// threads.  XLA's own layer norm takes several passes over the activations
// (and column reductions for the parameter gradients); ours takes one pass
// forward and one backward.
#include <string>
#include <vector>

#include "kernels/layer_norm.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tf/layer_norm_glue.h"
#include "tf/xla_ffi.h"
#include "tf/xla_lowering.h"
#include "xla/hlo/builder/xla_builder.h"

namespace keraslm {
namespace {
namespace layer_norm_lowering {  // a namespace per file: the lowerings are compiled as one unit

namespace ffi = xla::ffi;

constexpr char kForwardTarget[] = "keraslm_layer_norm_forward";
constexpr char kBackwardTarget[] = "keraslm_layer_norm_backward";

// Rows and features of a buffer [..., C].
void rows_cols(const ffi::Buffer<ffi::F32>& x, int64_t* R, int64_t* C) {
  const auto d = x.dimensions();
  *C = d.size() == 0 ? 1 : d[d.size() - 1];
  *R = *C > 0 ? static_cast<int64_t>(x.element_count()) / *C : 0;
}

ffi::Error ForwardFfi(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gamma,
                      ffi::Buffer<ffi::F32> beta, ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean,
                      ffi::ResultBuffer<ffi::F32> rstd, float epsilon, bool use_beta) {
  LayerNormParams p;
  rows_cols(x, &p.R, &p.C);
  p.epsilon = epsilon;
  p.x = x.typed_data();
  p.gamma = gamma.typed_data();
  p.beta = use_beta ? beta.typed_data() : nullptr;
  p.y = y->typed_data();
  p.mean = mean->typed_data();
  p.rstd = rstd->typed_data();
  layer_norm_forward(p, ffi_parallel(pool));
  return ffi::Error::Success();
}

ffi::Error BackwardFfi(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> x,
                       ffi::Buffer<ffi::F32> gamma, ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> rstd,
                       ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dgamma,
                       ffi::ResultBuffer<ffi::F32> dbeta, bool use_beta) {
  LayerNormGradParams g;
  rows_cols(x, &g.R, &g.C);
  g.dy = dy.typed_data();
  g.x = x.typed_data();
  g.gamma = gamma.typed_data();
  g.mean = mean.typed_data();
  g.rstd = rstd.typed_data();
  g.dx = dx->typed_data();
  g.dgamma = dgamma->typed_data();
  g.dbeta = use_beta ? dbeta->typed_data() : nullptr;
  layer_norm_backward(g, ffi_parallel(pool));
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(keraslm_layer_norm_forward_ffi, ForwardFfi,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon")
                                  .Attr<bool>("use_beta"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(keraslm_layer_norm_backward_ffi, BackwardFfi,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("use_beta"));

class LayerNormXlaOp : public tensorflow::XlaOpKernel {
 public:
  explicit LayerNormXlaOp(tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_beta", &use_beta_));
  }

  void Compile(tensorflow::XlaOpKernelContext* ctx) override {
    const auto x = dims_of(ctx->InputShape(0));
    int64_t R = 0, C = 0;
    const std::string error = layer_norm_check(x, dims_of(ctx->InputShape(1)), dims_of(ctx->InputShape(2)),
                                               use_beta_, epsilon_, &R, &C);
    OP_REQUIRES(ctx, error.empty(), tensorflow::errors::InvalidArgument(error));
    const std::vector<int64_t> rows(x.begin(), x.end() - 1);
    lower_to_custom_call(ctx, kForwardTarget, {x, rows, rows},
          "{epsilon = " + mlir_f32(epsilon_) + ", use_beta = " + mlir_bool(use_beta_) + "}");
  }

 private:
  float epsilon_ = 1e-5f;
  bool use_beta_ = true;
};

class LayerNormGradXlaOp : public tensorflow::XlaOpKernel {
 public:
  explicit LayerNormGradXlaOp(tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_beta", &use_beta_));
  }

  void Compile(tensorflow::XlaOpKernelContext* ctx) override {
    const auto x = dims_of(ctx->InputShape(1)), gamma = dims_of(ctx->InputShape(2));
    int64_t R = 0, C = 0;
    std::string error = layer_norm_check(x, gamma, gamma, false, 1.0f, &R, &C);
    if (error.empty())
      error = layer_norm_grad_check(dims_of(ctx->InputShape(0)), x, dims_of(ctx->InputShape(3)),
                                    dims_of(ctx->InputShape(4)));
    OP_REQUIRES(ctx, error.empty(), tensorflow::errors::InvalidArgument(error));
    lower_to_custom_call(ctx, kBackwardTarget, {x, gamma, {use_beta_ ? C : 0}},
          std::string("{use_beta = ") + mlir_bool(use_beta_) + "}");
  }

 private:
  bool use_beta_ = true;
};

// Direct kernel registrations on the XLA JIT device (see matmul_bf16_xla.cc).
REGISTER_KERNEL_BUILDER(Name("Keraslm>LayerNorm").Device(tensorflow::DEVICE_CPU_XLA_JIT), LayerNormXlaOp);
REGISTER_KERNEL_BUILDER(Name("Keraslm>LayerNormGrad").Device(tensorflow::DEVICE_CPU_XLA_JIT), LayerNormGradXlaOp);

const bool registered =
    ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), kForwardTarget, "Host", keraslm_layer_norm_forward_ffi) == nullptr &&
    ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), kBackwardTarget, "Host", keraslm_layer_norm_backward_ffi) == nullptr;

}  // namespace layer_norm_lowering
}  // namespace

bool layer_norm_xla_lowering_registered() { return layer_norm_lowering::registered; }

}  // namespace keraslm
