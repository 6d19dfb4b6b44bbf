// XLA lowering of Keraslm>DecoderBlockStep: inside jit-compiled functions
// (a compiled decoding loop) the fused block step runs as a typed-FFI custom
// call (xla_ffi.h) on XLA's intra-op threads, with the OpKernel's checks
// (decoder_step_glue.h): shapes when the op is lowered, index and
// key_lengths (data) when the call runs, failing it with an InvalidArgument
// error naming the value; an index outside the cache is never skipped
// silently.  The cache results alias the cache operands, so the new key and
// value are written into the cache buffers in place (XLA copies an operand
// first when something else still needs it); the in_place attribute is not
// needed here.
#include <cstring>
#include <string>
#include <vector>

#include "kernels/decoder_step.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tf/decoder_step_glue.h"
#include "tf/xla_ffi.h"
#include "tf/xla_lowering.h"
#include "xla/hlo/builder/xla_builder.h"

namespace keraslm {
namespace {
namespace decoder_step_lowering {  // a namespace per file: the lowerings are compiled as one unit

namespace ffi = xla::ffi;

constexpr char kTarget[] = "keraslm_decoder_block_step";
constexpr int kWeights = kNumStepInputs - kLn1Gamma;  // the 12 parameter inputs after key_lengths

// The cache result: the operand's buffer when XLA aliased them (always, with
// the aliasing the lowering declares), else a copy of the operand.
float* cache_result(const ffi::Buffer<ffi::F32>& in, ffi::Result<ffi::Buffer<ffi::F32>>& out) {
  float* dst = out->typed_data();
  if (dst != in.typed_data() && in.element_count() > 0)
    std::memcpy(dst, in.typed_data(), in.element_count() * sizeof(float));
  return dst;
}

ffi::Error StepFfi(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k_cache,
                   ffi::Buffer<ffi::F32> v_cache, ffi::Buffer<ffi::S32> index, ffi::Buffer<ffi::S32> key_lengths,
                   ffi::RemainingArgs weights, ffi::Result<ffi::Buffer<ffi::F32>> y,
                   ffi::Result<ffi::Buffer<ffi::F32>> k_out, ffi::Result<ffi::Buffer<ffi::F32>> v_out,
                   int64_t num_heads, float epsilon, bool use_bias) {
  ffi::Error error = ffi_error(ValidateStepAttrs(num_heads, epsilon));
  if (error.failure()) return error;
  if (weights.size() != kWeights) return ffi::Error::InvalidArgument("decoder_block_step: expected 17 operands");
  std::vector<TensorShape> shapes = {shape_of(x.dimensions()), shape_of(k_cache.dimensions()),
                                     shape_of(v_cache.dimensions()), shape_of(index.dimensions()),
                                     shape_of(key_lengths.dimensions())};
  const void* data[kNumStepInputs] = {x.untyped_data(), k_cache.untyped_data(), v_cache.untyped_data(),
                                      index.untyped_data(), key_lengths.untyped_data()};
  bool bf16_weights = false;
  for (size_t i = 0; i < kWeights; ++i) {
    ffi::ErrorOr<ffi::AnyBuffer> w = weights.get<ffi::AnyBuffer>(i);
    if (!w.has_value()) return w.error();
    const int input = kLn1Gamma + static_cast<int>(i);
    const bool matrix = input == kWQkv || input == kWO || input == kWFc || input == kWProj;
    const ffi::DataType type = w->element_type();
    if (matrix && type == ffi::DataType::BF16) bf16_weights = true;
    if (type != ffi::DataType::F32 && !(matrix && type == ffi::DataType::BF16))
      return ffi::Error::InvalidArgument("decoder_block_step: operand " + std::to_string(input) +
                                         " must be float32" + (matrix ? " or bfloat16" : ""));
    shapes.push_back(shape_of(w->dimensions()));
    data[input] = w->untyped_data();
  }
  DecoderStepParams p;
  error = ffi_error(ValidateStepShapes(shapes, num_heads, use_bias, &p));
  if (error.failure()) return error;
  error = ffi_error(ValidateStepValues(index.typed_data(), key_lengths.typed_data(), p.B, p.S));
  if (error.failure()) return error;
  p.eps = epsilon;
  p.k_cache = cache_result(k_cache, k_out);
  p.v_cache = cache_result(v_cache, v_out);
  if (p.B == 0) return ffi::Error::Success();
  SetStepInputs(data, use_bias, bf16_weights, &p);
  p.y = y->typed_data();
  std::vector<float> scratch(static_cast<size_t>(decoder_step_scratch_floats(p)));
  p.scratch = scratch.data();
  decoder_step_forward(p, ffi_parallel(pool));
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(keraslm_decoder_block_step_ffi, StepFfi,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k_cache
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v_cache
                                  .Arg<ffi::Buffer<ffi::S32>>()   // index
                                  .Arg<ffi::Buffer<ffi::S32>>()   // key_lengths
                                  .RemainingArgs()                // ln_1 gamma / beta ... w_proj / b_proj (the matrices float32 or bfloat16)
                                  .Ret<ffi::Buffer<ffi::F32>>()   // y
                                  .Ret<ffi::Buffer<ffi::F32>>()   // k_cache (aliases operand 1)
                                  .Ret<ffi::Buffer<ffi::F32>>()   // v_cache (aliases operand 2)
                                  .Attr<int64_t>("num_heads")
                                  .Attr<float>("epsilon")
                                  .Attr<bool>("use_bias"));

class DecoderBlockStepXlaOp : public tensorflow::XlaOpKernel {
 public:
  explicit DecoderBlockStepXlaOp(tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    int num_heads = 0;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_heads", &num_heads));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &eps_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_bias", &use_bias_));
    OP_REQUIRES_OK(ctx, ValidateStepAttrs(num_heads, eps_));
    H_ = num_heads;
  }

  void Compile(tensorflow::XlaOpKernelContext* ctx) override {
    std::vector<TensorShape> shapes;
    for (int i = 0; i < kNumStepInputs; ++i) shapes.push_back(ctx->InputShape(i));
    DecoderStepParams p;
    OP_REQUIRES_OK(ctx, ValidateStepShapes(shapes, H_, use_bias_, &p));
    const auto cache = dims_of(shapes[kKCache]);
    lower_to_custom_call_with(ctx, kTarget, {{xla::F32, dims_of(shapes[kX])}, {xla::F32, cache}, {xla::F32, cache}},
                              "{num_heads = " + mlir_i64(H_) + ", epsilon = " + mlir_f32(eps_) +
                                  ", use_bias = " + mlir_bool(use_bias_) + "}",
                              /*aliases=*/{{1, kKCache}, {2, kVCache}});
  }

 private:
  int64_t H_ = 1;
  float eps_ = 1e-5f;
  bool use_bias_ = true;
};

// Direct kernel registration on the XLA JIT device (see matmul_bf16_xla.cc).
REGISTER_KERNEL_BUILDER(Name("Keraslm>DecoderBlockStep").Device(tensorflow::DEVICE_CPU_XLA_JIT),
                        DecoderBlockStepXlaOp);

const bool registered = ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), kTarget, "Host",
                                                        keraslm_decoder_block_step_ffi) == nullptr;

}  // namespace decoder_step_lowering
}  // namespace

bool decoder_block_step_xla_lowering_registered() { return decoder_step_lowering::registered; }

}  // namespace keraslm
