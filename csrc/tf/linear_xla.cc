// XLA lowering of Keraslm>Linear: inside jit-compiled functions the
// small-batch dense kernel runs as a typed-FFI custom call (xla_ffi.h) on
// XLA's intra-op threads.  The shapes, known when the op is lowered, are
// checked there with the OpKernel's messages (linear_glue.h), so a bias of
// the wrong shape fails instead of being broadcast.
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tf/linear_glue.h"
#include "tf/xla_ffi.h"
#include "tf/xla_lowering.h"
#include "xla/hlo/builder/xla_builder.h"

namespace keraslm {
namespace {
namespace linear_lowering {  // a namespace per file: the lowerings are compiled as one unit

namespace ffi = xla::ffi;

constexpr char kTarget[] = "keraslm_linear";

ffi::Error LinearFfi(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w,
                     ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> out, bool use_bias, bool transpose_w) {
  const TensorShape xs = shape_of(x.dimensions()), ws = shape_of(w.dimensions()), bs = shape_of(bias.dimensions());
  ffi::Error error = ffi_error(ValidateLinearShapes(xs, ws, bs, use_bias, transpose_w));
  if (error.failure()) return error;
  const bool bf16 = w.element_type() == ffi::DataType::BF16;
  if (!bf16 && w.element_type() != ffi::DataType::F32)
    return ffi::Error::InvalidArgument("linear: w must be float32 or bfloat16");
  LinearParams p = MakeLinearParams(xs, ws, x.typed_data(), w.untyped_data(), use_bias ? bias.typed_data() : nullptr,
                                    transpose_w, bf16);
  p.out = out->typed_data();
  run_linear(p, ffi_parallel(pool));
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(keraslm_linear_ffi, LinearFfi,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x
                                  .Arg<ffi::AnyBuffer>()          // w (float32 or bfloat16)
                                  .Arg<ffi::Buffer<ffi::F32>>()   // bias
                                  .Ret<ffi::Buffer<ffi::F32>>()   // out
                                  .Attr<bool>("use_bias")
                                  .Attr<bool>("transpose_w"));

class LinearXlaOp : public tensorflow::XlaOpKernel {
 public:
  explicit LinearXlaOp(tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_bias", &use_bias_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_w", &transpose_w_));
  }

  void Compile(tensorflow::XlaOpKernelContext* ctx) override {
    const TensorShape x = ctx->InputShape(0), w = ctx->InputShape(1);
    OP_REQUIRES_OK(ctx, ValidateLinearShapes(x, w, ctx->InputShape(2), use_bias_, transpose_w_));
    lower_to_custom_call(ctx, kTarget, {{x.dim_size(0), LinearOutputs(w, transpose_w_)}},
                         std::string("{use_bias = ") + mlir_bool(use_bias_) + ", transpose_w = " +
                             mlir_bool(transpose_w_) + "}");
  }

 private:
  bool use_bias_ = false, transpose_w_ = false;
};

// Direct kernel registration on the XLA JIT device (see matmul_bf16_xla.cc).
REGISTER_KERNEL_BUILDER(Name("Keraslm>Linear").Device(tensorflow::DEVICE_CPU_XLA_JIT), LinearXlaOp);

const bool registered =
    ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), kTarget, "Host", keraslm_linear_ffi) == nullptr;

}  // namespace linear_lowering
}  // namespace

bool linear_xla_lowering_registered() { return linear_lowering::registered; }

}  // namespace keraslm
