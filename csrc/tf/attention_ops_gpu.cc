// GPU OpKernels of Keraslm>FlashAttention and Keraslm>FlashAttentionGrad
// (built only with KERASLM_WITH_CUDA).  key_lengths stays in host memory so
// that it is validated like on the CPU; it is copied into the scratch buffer.
#include "kernels/attention_cuda.h"
#include "tf/attention_checks.h"
#include "tf/tf_gpu.h"

namespace keraslm {
namespace {

// Fills the CUDA params from validated inputs and reserves the scratch:
// [key_lengths (int32 [B]) | kernel workspace], each region 256-aligned.
cuda::AttentionParams GpuParams(OpKernelContext* ctx, const AttentionAttrs& a, const AttentionShape& s) {
  cuda::AttentionParams p;
  p.B = s.B; p.Tq = s.Tq; p.Tk = s.Tk; p.H = s.H; p.Hkv = s.Hkv; p.D = s.D;
  p.causal = a.causal;
  p.scale = a.scale;
  p.dtype = cuda::DType::kFloat32;
  p.q = ctx->input(0).flat<float>().data();  p.q_stride = QStrides(s);
  p.k = ctx->input(1).flat<float>().data();  p.k_stride = KStrides(s);
  p.v = ctx->input(2).flat<float>().data();  p.v_stride = KStrides(s);
  p.out_stride = QStrides(s);
  return p;
}

// Copies the validated key lengths (host) into the front of `scratch`.
Status PlaceKeyLengths(OpKernelContext* ctx, const AttentionAttrs& a, const AttentionShape& s, char* scratch,
                       const int32_t** device_lengths) {
  *device_lengths = nullptr;
  if (!a.use_key_lengths) return Status();
  const int32_t* host = ctx->input(3).flat<int32_t>().data();
  TF_RETURN_IF_ERROR(
      CudaStatus(cuda::copy_to_device(scratch, host, sizeof(int32_t) * s.B, GpuStream(ctx)), "key_lengths copy"));
  *device_lengths = reinterpret_cast<const int32_t*>(scratch);
  return Status();
}

size_t LengthsBytes(const AttentionAttrs& a, const AttentionShape& s) {
  return a.use_key_lengths ? cuda::align256(sizeof(int32_t) * s.B) : 0;
}

class FlashAttentionGpuOp : public OpKernel {
 public:
  explicit FlashAttentionGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    AttentionShape s;
    OP_REQUIRES_OK(ctx, ValidateInputs(ctx, attrs_, &s));
    cuda::AttentionParams p = GpuParams(ctx, attrs_, s);
    Tensor *out = nullptr, *lse = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({s.B, s.H, s.Tq}), &lse));
    p.out = out->flat<float>().data();
    p.lse = lse->flat<float>().data();
    const size_t head = LengthsBytes(attrs_, s);
    Tensor scratch;
    char* base = nullptr;
    OP_REQUIRES_OK(ctx, AllocateScratch(ctx, head + cuda::attention_forward_workspace(p), &scratch, &base));
    OP_REQUIRES_OK(ctx, PlaceKeyLengths(ctx, attrs_, s, base, &p.key_lengths));
    OP_REQUIRES_OK(ctx, CudaStatus(cuda::attention_forward(p, base + head, GpuStream(ctx)), "attention forward"));
  }

 private:
  AttentionAttrs attrs_;
};

class FlashAttentionGradGpuOp : public OpKernel {
 public:
  explicit FlashAttentionGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_dlse", &use_dlse_));
  }

  void Compute(OpKernelContext* ctx) override {
    AttentionShape s;
    OP_REQUIRES_OK(ctx, ValidateInputs(ctx, attrs_, &s));
    OP_REQUIRES_OK(ctx, ValidateGradInputs(ctx, s, use_dlse_));
    cuda::AttentionGradParams g;
    g.fwd = GpuParams(ctx, attrs_, s);
    g.fwd.out = const_cast<float*>(ctx->input(4).flat<float>().data());
    g.fwd.lse = const_cast<float*>(ctx->input(5).flat<float>().data());
    g.dout = ctx->input(6).flat<float>().data();
    g.dout_stride = QStrides(s);
    g.dlse = use_dlse_ ? ctx->input(7).flat<float>().data() : nullptr;
    Tensor *dq = nullptr, *dk = nullptr, *dv = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &dq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &dk));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &dv));
    g.dq = dq->flat<float>().data();  g.dq_stride = QStrides(s);
    g.dk = dk->flat<float>().data();  g.dk_stride = KStrides(s);
    g.dv = dv->flat<float>().data();  g.dv_stride = KStrides(s);
    const size_t head = LengthsBytes(attrs_, s);
    Tensor scratch;
    char* base = nullptr;
    OP_REQUIRES_OK(ctx, AllocateScratch(ctx, head + cuda::attention_backward_workspace(g), &scratch, &base));
    OP_REQUIRES_OK(ctx, PlaceKeyLengths(ctx, attrs_, s, base, &g.fwd.key_lengths));
    OP_REQUIRES_OK(ctx, CudaStatus(cuda::attention_backward(g, base + head, GpuStream(ctx)), "attention backward"));
  }

 private:
  AttentionAttrs attrs_;
  bool use_dlse_ = false;
};

REGISTER_KERNEL_BUILDER(Name("Keraslm>FlashAttention").Device(DEVICE_GPU).HostMemory("key_lengths"),
                        FlashAttentionGpuOp);
REGISTER_KERNEL_BUILDER(Name("Keraslm>FlashAttentionGrad").Device(DEVICE_GPU).HostMemory("key_lengths"),
                        FlashAttentionGradGpuOp);

}  // namespace
}  // namespace keraslm
