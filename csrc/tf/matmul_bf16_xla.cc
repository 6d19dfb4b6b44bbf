// XLA lowering of Keraslm>MatmulBf16, so that the product also runs inside
// jit-compiled functions (Keras' jit_compile=True training step): the op
// becomes a typed-FFI custom call "keraslm_matmul_bf16" on the host platform
// (xla_ffi.h), which runs the same AMX kernel as the TF kernel on XLA's
// intra-op threads.  Operands are row-major (the layouts are fixed when the
// op is lowered); the sizes come from the buffers, the transposes are
// attributes.
#include <string>
#include <vector>

#include "kernels/gemm_bf16.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tf/matmul_bf16_glue.h"
#include "tf/xla_ffi.h"
#include "tf/xla_lowering.h"
#include "xla/hlo/builder/xla_builder.h"

namespace keraslm {
namespace {
namespace matmul_bf16_lowering {  // a namespace per file: the lowerings are compiled as one unit

namespace ffi = xla::ffi;

constexpr char kTarget[] = "keraslm_matmul_bf16";

std::vector<int64_t> dims_of(const ffi::Buffer<ffi::F32>& b) {
  const auto d = b.dimensions();
  return std::vector<int64_t>(d.begin(), d.end());
}

ffi::Error MatmulBf16Ffi(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                         ffi::ResultBuffer<ffi::F32> c, bool transpose_a, bool transpose_b) {
  MatmulBf16Dims d;
  const std::string error = matmul_bf16_dims(dims_of(a), dims_of(b), transpose_a, transpose_b, &d);
  if (!error.empty()) return ffi::Error::InvalidArgument(error);
  run_matmul_bf16(d, a.typed_data(), b.typed_data(), c->typed_data(), ffi_parallel(pool));
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(keraslm_matmul_bf16_ffi, MatmulBf16Ffi,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));

class MatmulBf16XlaOp : public tensorflow::XlaOpKernel {
 public:
  explicit MatmulBf16XlaOp(tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_a", &ta_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("transpose_b", &tb_));
  }

  void Compile(tensorflow::XlaOpKernelContext* ctx) override {
    const auto as = ctx->InputShape(0).dim_sizes(), bs = ctx->InputShape(1).dim_sizes();
    MatmulBf16Dims d;
    const std::string error = matmul_bf16_dims({as.begin(), as.end()}, {bs.begin(), bs.end()}, ta_, tb_, &d);
    OP_REQUIRES(ctx, error.empty(), tensorflow::errors::InvalidArgument(error));
    const std::string attrs =
        std::string("{transpose_a = ") + mlir_bool(ta_) + ", transpose_b = " + mlir_bool(tb_) + "}";
    lower_to_custom_call(ctx, kTarget, {{d.M, d.N}}, attrs);
  }

 private:
  bool ta_ = false, tb_ = false;
};

// Registered as a kernel of the XLA JIT device directly, not through
// REGISTER_XLA_OP: TF turns the XLA op registry into JIT kernels once, when
// the first XLA device is created, which is usually before this library is
// loaded; a direct kernel registration works whenever the library loads.
REGISTER_KERNEL_BUILDER(Name("Keraslm>MatmulBf16").Device(tensorflow::DEVICE_CPU_XLA_JIT), MatmulBf16XlaOp);

const bool registered =
    ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), kTarget, "Host", keraslm_matmul_bf16_ffi) == nullptr;

}  // namespace matmul_bf16_lowering
}  // namespace

bool matmul_bf16_xla_lowering_registered() { return matmul_bf16_lowering::registered; }

}  // namespace keraslm
