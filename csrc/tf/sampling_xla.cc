// XLA lowering of Keraslm>Sample: inside jit-compiled functions the op
// becomes a typed-FFI custom call (xla_ffi.h) that runs the CPU OpKernel's
// checks and kernel on XLA's intra-op threads.  Shapes are checked when the
// op is lowered and again by the handler (sampling_glue.h); the values (NaN
// or +inf logits, rows without a finite logit, parameters out of range,
// coins outside [0, 1), previous ids outside [0, V)) are data, so the
// handler checks them when the call runs (kernels/sampling_checks.h) and
// fails it with an InvalidArgument error naming the value.  Ids are never
// outside [0, V).
#include <string>
#include <vector>

#include "kernels/sampling.h"
#include "kernels/sampling_checks.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tf/sampling_glue.h"
#include "tf/xla_ffi.h"
#include "tf/xla_lowering.h"
#include "xla/hlo/builder/xla_builder.h"

namespace keraslm {
namespace {
namespace sampling_lowering {  // a namespace per file: the lowerings are compiled as one unit

namespace ffi = xla::ffi;

constexpr char kTarget[] = "keraslm_sample";

ffi::Error SampleFfi(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> logits, ffi::Buffer<ffi::F32> coins,
                     ffi::Buffer<ffi::F32> temperature, ffi::Buffer<ffi::S32> top_k, ffi::Buffer<ffi::F32> top_p,
                     ffi::Buffer<ffi::F32> min_p, ffi::Buffer<ffi::F32> repetition_penalty,
                     ffi::Buffer<ffi::S32> previous_ids, ffi::ResultBuffer<ffi::S32> ids,
                     ffi::ResultBuffer<ffi::F32> logprobs, int64_t pad_id) {
  const std::vector<TensorShape> shapes = {
      shape_of(logits.dimensions()), shape_of(coins.dimensions()), shape_of(temperature.dimensions()),
      shape_of(top_k.dimensions()),  shape_of(top_p.dimensions()), shape_of(min_p.dimensions()),
      shape_of(repetition_penalty.dimensions()), shape_of(previous_ids.dimensions())};
  ffi::Error error = ffi_error(ValidateSampleShapes(shapes));
  if (error.failure()) return error;
  const int64_t B = shapes[0].dim_size(0);
  if (B == 0) return ffi::Error::Success();
  const void* data[kSampleInputs] = {logits.untyped_data(), coins.untyped_data(),
                                     temperature.untyped_data(), top_k.untyped_data(),
                                     top_p.untyped_data(), min_p.untyped_data(),
                                     repetition_penalty.untyped_data(), previous_ids.untyped_data()};
  int rank[kSampleInputs];
  for (int i = 0; i < kSampleInputs; ++i) rank[i] = shapes[i].dims();
  const SamplingParams p = MakeSampleParams(B, shapes[0].dim_size(1), shapes[7].dim_size(1), data, rank,
                                            static_cast<int32_t>(pad_id), ids->typed_data(), logprobs->typed_data());
  const Parallel par = ffi_parallel(pool);
  const std::string message = check_sampling_values(p, par);
  if (!message.empty()) return ffi::Error(ffi::ErrorCode::kInvalidArgument, message);
  sample(p, par);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(keraslm_sample_ffi, SampleFfi,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // logits
                                  .Arg<ffi::Buffer<ffi::F32>>()   // coins
                                  .Arg<ffi::Buffer<ffi::F32>>()   // temperature
                                  .Arg<ffi::Buffer<ffi::S32>>()   // top_k
                                  .Arg<ffi::Buffer<ffi::F32>>()   // top_p
                                  .Arg<ffi::Buffer<ffi::F32>>()   // min_p
                                  .Arg<ffi::Buffer<ffi::F32>>()   // repetition_penalty
                                  .Arg<ffi::Buffer<ffi::S32>>()   // previous_ids
                                  .Ret<ffi::Buffer<ffi::S32>>()   // ids
                                  .Ret<ffi::Buffer<ffi::F32>>()   // logprobs
                                  .Attr<int64_t>("pad_id"));

class SampleXlaOp : public tensorflow::XlaOpKernel {
 public:
  explicit SampleXlaOp(tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_id", &pad_id_));
  }

  void Compile(tensorflow::XlaOpKernelContext* ctx) override {
    std::vector<TensorShape> shapes;
    for (int i = 0; i < kSampleInputs; ++i) shapes.push_back(ctx->InputShape(i));
    OP_REQUIRES_OK(ctx, ValidateSampleShapes(shapes));
    const int64_t B = shapes[0].dim_size(0);
    lower_to_custom_call_with(ctx, kTarget, {{xla::S32, {B}}, {xla::F32, {B}}},
                              "{pad_id = " + mlir_i64(pad_id_) + "}");
  }

 private:
  int32_t pad_id_ = -1;
};

// Direct kernel registration on the XLA JIT device (see matmul_bf16_xla.cc).
REGISTER_KERNEL_BUILDER(Name("Keraslm>Sample").Device(tensorflow::DEVICE_CPU_XLA_JIT), SampleXlaOp);

const bool registered =
    ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), kTarget, "Host", keraslm_sample_ffi) == nullptr;

}  // namespace sampling_lowering
}  // namespace

bool sample_xla_lowering_registered() { return sampling_lowering::registered; }

}  // namespace keraslm
