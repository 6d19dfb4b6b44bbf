// GPU OpKernel of Keraslm>Sample (built only with KERASLM_WITH_CUDA).  The
// coins and per-row parameters stay in host memory and are checked there;
// logits and previous_ids are checked on the device by the kernel.  The op
// waits for its stream to read the per-row status back.
#include <string>

#include "kernels/cuda_sample_launch.h"
#include "tf/sampling_glue.h"
#include "tf/tf_gpu.h"

namespace keraslm {
namespace {

class SampleGpuOp : public OpKernel {
 public:
  explicit SampleGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_id", &pad_id_));
  }

  void Compute(OpKernelContext* ctx) override {
    Tensor *ids = nullptr, *logprobs = nullptr;
    bool run = false;
    OP_REQUIRES_OK(ctx, PrepareSample(ctx, &ids, &logprobs, &run));
    if (!run) return;
    cuda::SampleLaunch launch(SampleParams(ctx, pad_id_, ids, logprobs));
    Tensor scratch;
    char* base = nullptr;
    OP_REQUIRES_OK(ctx, AllocateScratch(ctx, launch.scratch_bytes(), &scratch, &base));
    bool input_error = false;
    const std::string error = launch.run(base, GpuStream(ctx), &input_error);
    OP_REQUIRES(ctx, error.empty(),
                input_error ? InvalidArgument(error) : CudaStatus(error.c_str(), "sampling"));
  }

 private:
  int32_t pad_id_ = -1;
};

REGISTER_KERNEL_BUILDER(Name("Keraslm>Sample")
                            .Device(DEVICE_GPU)
                            .HostMemory("coins")
                            .HostMemory("temperature")
                            .HostMemory("top_k")
                            .HostMemory("top_p")
                            .HostMemory("min_p")
                            .HostMemory("repetition_penalty"),
                        SampleGpuOp);

}  // namespace
}  // namespace keraslm
