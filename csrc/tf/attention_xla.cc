// XLA lowerings of Keraslm>FlashAttention and Keraslm>FlashAttentionGrad:
// inside jit-compiled functions (Keras' jit_compile=True training step) the
// fused CPU attention kernels run as typed-FFI custom calls (xla_ffi.h) on
// XLA's intra-op threads, instead of XLA's unfused softmax(q k^T) v, which
// materialises the [B, H, Tq, Tk] scores.  Shapes are validated when the op
// is lowered (attention_checks.h); per-row key lengths, which are data, are
// validated when the call runs and fail it with an InvalidArgument error.
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tf/attention_checks.h"
#include "tf/matmul_bf16_glue.h"
#include "tf/xla_ffi.h"
#include "tf/xla_lowering.h"
#include "xla/hlo/builder/xla_builder.h"

namespace keraslm {
namespace {
namespace attention_lowering {  // a namespace per file: the lowerings are compiled as one unit

namespace ffi = xla::ffi;

constexpr char kForwardTarget[] = "keraslm_attention_forward";
constexpr char kBackwardTarget[] = "keraslm_attention_backward";

// Sizes, mask and dense strides from q [B, Tq, H, D] and k [B, Tk, Hkv, D].
ffi::Error make_params(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k,
                       const ffi::Buffer<ffi::S32>& key_lengths, bool causal, float scale, bool use_key_lengths,
                       AttentionParams* p) {
  const auto qd = q.dimensions(), kd = k.dimensions();
  if (qd.size() != 4 || kd.size() != 4) return ffi::Error::InvalidArgument("q and k must have rank 4");
  p->B = qd[0];
  p->Tq = qd[1];
  p->H = qd[2];
  p->D = qd[3];
  p->Tk = kd[1];
  p->Hkv = kd[2];
  p->causal = causal;
  p->scale = scale;
  p->q_stride = p->out_stride = dense_strides(p->Tq, p->H, p->D);
  p->k_stride = p->v_stride = dense_strides(p->Tk, p->Hkv, p->D);
  p->key_lengths = nullptr;
  if (use_key_lengths) {
    if (static_cast<int64_t>(key_lengths.element_count()) != p->B)
      return ffi::Error::InvalidArgument("key_lengths must have shape [" + std::to_string(p->B) + "]");
    const int32_t* lens = key_lengths.typed_data();
    for (int64_t b = 0; b < p->B; ++b)
      if (lens[b] < 0 || lens[b] > p->Tk)
        return ffi::Error::InvalidArgument("key_lengths[" + std::to_string(b) + "] must be in [0, Tk=" +
                                           std::to_string(p->Tk) + "], got " + std::to_string(lens[b]));
    p->key_lengths = lens;
  }
  return ffi::Error::Success();
}

ffi::Error ForwardFfi(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                      ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> key_lengths, ffi::ResultBuffer<ffi::F32> out,
                      ffi::ResultBuffer<ffi::F32> lse, bool causal, float scale, bool use_key_lengths) {
  AttentionParams p;
  ffi::Error error = make_params(q, k, key_lengths, causal, scale, use_key_lengths, &p);
  if (error.failure()) return error;
  p.q = q.typed_data();
  p.k = k.typed_data();
  p.v = v.typed_data();
  p.out = out->typed_data();
  p.lse = lse->typed_data();
  attention_forward(p, ffi_parallel(pool));
  return ffi::Error::Success();
}

ffi::Error BackwardFfi(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                       ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> key_lengths, ffi::Buffer<ffi::F32> out,
                       ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> dout, ffi::Buffer<ffi::F32> dlse,
                       ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                       ffi::ResultBuffer<ffi::F32> dv, bool causal, float scale, bool use_key_lengths,
                       bool use_dlse) {
  AttentionGradParams g;
  ffi::Error error = make_params(q, k, key_lengths, causal, scale, use_key_lengths, &g.fwd);
  if (error.failure()) return error;
  g.fwd.q = q.typed_data();
  g.fwd.k = k.typed_data();
  g.fwd.v = v.typed_data();
  g.fwd.out = out.typed_data();  // read only
  g.fwd.lse = lse.typed_data();  // read only
  g.dout = dout.typed_data();
  g.dout_stride = g.fwd.q_stride;
  g.dlse = use_dlse ? dlse.typed_data() : nullptr;
  g.dq = dq->typed_data();
  g.dk = dk->typed_data();
  g.dv = dv->typed_data();
  g.dq_stride = g.fwd.q_stride;
  g.dk_stride = g.dv_stride = g.fwd.k_stride;
  attention_backward(g, ffi_parallel(pool));
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(keraslm_attention_forward_ffi, ForwardFfi,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("causal")
                                  .Attr<float>("scale")
                                  .Attr<bool>("use_key_lengths"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(keraslm_attention_backward_ffi, BackwardFfi,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("causal")
                                  .Attr<float>("scale")
                                  .Attr<bool>("use_key_lengths")
                                  .Attr<bool>("use_dlse"));

std::string attributes(const AttentionAttrs& a, const bool* use_dlse) {
  std::string s = std::string("{causal = ") + mlir_bool(a.causal) + ", scale = " + mlir_f32(a.scale) +
                  ", use_key_lengths = " + mlir_bool(a.use_key_lengths);
  if (use_dlse) s += std::string(", use_dlse = ") + mlir_bool(*use_dlse);
  return s + "}";
}

class FlashAttentionXlaOp : public tensorflow::XlaOpKernel {
 public:
  explicit FlashAttentionXlaOp(tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx), attrs_(ctx) {}

  void Compile(tensorflow::XlaOpKernelContext* ctx) override {
    AttentionShape s;
    OP_REQUIRES_OK(ctx, ValidateShapes(ctx->InputShape(0), ctx->InputShape(1), ctx->InputShape(2),
                                       ctx->InputShape(3), attrs_, &s));
    lower_to_custom_call(ctx, kForwardTarget, {dims_of(ctx->InputShape(0)), {s.B, s.H, s.Tq}},
                         attributes(attrs_, nullptr));
  }

 private:
  AttentionAttrs attrs_;
};

class FlashAttentionGradXlaOp : public tensorflow::XlaOpKernel {
 public:
  explicit FlashAttentionGradXlaOp(tensorflow::OpKernelConstruction* ctx) : XlaOpKernel(ctx), attrs_(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_dlse", &use_dlse_));
  }

  void Compile(tensorflow::XlaOpKernelContext* ctx) override {
    AttentionShape s;
    OP_REQUIRES_OK(ctx, ValidateShapes(ctx->InputShape(0), ctx->InputShape(1), ctx->InputShape(2),
                                       ctx->InputShape(3), attrs_, &s));
    OP_REQUIRES_OK(ctx, ValidateGradShapes(ctx->InputShape(0), ctx->InputShape(4), ctx->InputShape(5),
                                           ctx->InputShape(6), ctx->InputShape(7), s, use_dlse_));
    const auto kv = dims_of(ctx->InputShape(1));
    lower_to_custom_call(ctx, kBackwardTarget, {dims_of(ctx->InputShape(0)), kv, kv}, attributes(attrs_, &use_dlse_));
  }

 private:
  AttentionAttrs attrs_;
  bool use_dlse_ = false;
};

// Direct kernel registrations on the XLA JIT device (see matmul_bf16_xla.cc).
REGISTER_KERNEL_BUILDER(Name("Keraslm>FlashAttention").Device(tensorflow::DEVICE_CPU_XLA_JIT), FlashAttentionXlaOp);
REGISTER_KERNEL_BUILDER(Name("Keraslm>FlashAttentionGrad").Device(tensorflow::DEVICE_CPU_XLA_JIT),
                        FlashAttentionGradXlaOp);

const bool registered =
    ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), kForwardTarget, "Host", keraslm_attention_forward_ffi) == nullptr &&
    ffi::Ffi::RegisterStaticHandler(XLA_FFI_GetApi(), kBackwardTarget, "Host", keraslm_attention_backward_ffi) == nullptr;

}  // namespace attention_lowering
}  // namespace

bool attention_xla_lowering_registered() { return attention_lowering::registered; }

}  // namespace keraslm
