// TF glue for the fused attention kernels: op registration, shape functions,
// validation of every input (OP_REQUIRES), and the CPU OpKernels.
#include "kernels/attention.h"
#include "tf/attention_checks.h"
#include "tf/tf_common.h"

namespace keraslm {
namespace {

// Shape function of the forward op: out = q's shape, lse = [B, H, Tq].
Status ForwardShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle q, k, v;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &q));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &k));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &v));
  TF_RETURN_IF_ERROR(c->Merge(k, v, &k));
  c->set_output(0, q);
  c->set_output(1, c->MakeShape({c->Dim(q, 0), c->Dim(q, 2), c->Dim(q, 1)}));
  return Status();
}

Status BackwardShape(shape_inference::InferenceContext* c) {
  for (int i = 0; i < 3; ++i) {
    shape_inference::ShapeHandle s;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 4, &s));
    c->set_output(i, s);
  }
  return Status();
}

}  // namespace
}  // namespace keraslm

REGISTER_OP("Keraslm>FlashAttention")
    .Input("q: float")
    .Input("k: float")
    .Input("v: float")
    .Input("key_lengths: int32")
    .Attr("causal: bool = false")
    .Attr("scale: float")
    .Attr("use_key_lengths: bool = false")
    .Output("out: float")
    .Output("lse: float")
    .SetShapeFn(keraslm::ForwardShape)
    .Doc(R"doc(
Fused scaled dot-product attention (flash-attention style, O(T) memory).
q [B, Tq, H, D], k and v [B, Tk, Hkv, D] with H % Hkv == 0 and 1 <= D <= 256.
causal masks bottom-right: query i sees keys j <= i + (Tk - Tq).  When
use_key_lengths, keys j >= key_lengths[b] are masked (key_lengths [B]).
out [B, Tq, H, D]; lse [B, H, Tq] is the log-sum-exp of each row's scores
(-inf for rows that see no key, whose output is 0).
)doc");

REGISTER_OP("Keraslm>FlashAttentionGrad")
    .Input("q: float")
    .Input("k: float")
    .Input("v: float")
    .Input("key_lengths: int32")
    .Input("out: float")
    .Input("lse: float")
    .Input("dout: float")
    .Input("dlse: float")
    .Attr("causal: bool = false")
    .Attr("scale: float")
    .Attr("use_key_lengths: bool = false")
    .Attr("use_dlse: bool = false")
    .Output("dq: float")
    .Output("dk: float")
    .Output("dv: float")
    .SetShapeFn(keraslm::BackwardShape)
    .Doc("Gradient of Keraslm>FlashAttention with respect to q, k and v.");

namespace keraslm {
namespace {

// Fills the CPU kernel's params from validated inputs.
AttentionParams CpuParams(OpKernelContext* ctx, const AttentionAttrs& a, const AttentionShape& s) {
  AttentionParams p;
  p.B = s.B; p.Tq = s.Tq; p.Tk = s.Tk; p.H = s.H; p.Hkv = s.Hkv; p.D = s.D;
  p.causal = a.causal;
  p.scale = a.scale;
  p.key_lengths = a.use_key_lengths ? ctx->input(3).flat<int32_t>().data() : nullptr;
  p.q = ctx->input(0).flat<float>().data();  p.q_stride = QStrides(s);
  p.k = ctx->input(1).flat<float>().data();  p.k_stride = KStrides(s);
  p.v = ctx->input(2).flat<float>().data();  p.v_stride = KStrides(s);
  p.out_stride = QStrides(s);
  return p;
}

class FlashAttentionOp : public OpKernel {
 public:
  explicit FlashAttentionOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    AttentionShape s;
    OP_REQUIRES_OK(ctx, ValidateInputs(ctx, attrs_, &s));
    AttentionParams p = CpuParams(ctx, attrs_, s);
    Tensor* out = nullptr;
    Tensor* lse = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({p.B, p.H, p.Tq}), &lse));
    p.out = out->flat<float>().data();
    p.lse = lse->flat<float>().data();
    attention_forward(p, tf_parallel(ctx));
  }

 private:
  AttentionAttrs attrs_;
};

class FlashAttentionGradOp : public OpKernel {
 public:
  explicit FlashAttentionGradOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_dlse", &use_dlse_));
  }

  void Compute(OpKernelContext* ctx) override {
    AttentionShape s;
    OP_REQUIRES_OK(ctx, ValidateInputs(ctx, attrs_, &s));
    OP_REQUIRES_OK(ctx, ValidateGradInputs(ctx, s, use_dlse_));
    AttentionGradParams g;
    g.fwd = CpuParams(ctx, attrs_, s);
    const Tensor& out = ctx->input(4);
    const Tensor& lse = ctx->input(5);
    const Tensor& dout = ctx->input(6);
    const Tensor& dlse = ctx->input(7);
    const TensorShape& qs = ctx->input(0).shape();
    Tensor *dq = nullptr, *dk = nullptr, *dv = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, qs, &dq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &dk));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &dv));
    g.fwd.out = const_cast<float*>(out.flat<float>().data());
    g.fwd.lse = const_cast<float*>(lse.flat<float>().data());
    g.dout = dout.flat<float>().data();
    g.dout_stride = g.fwd.out_stride;
    g.dlse = use_dlse_ ? dlse.flat<float>().data() : nullptr;
    g.dq = dq->flat<float>().data();  g.dq_stride = g.fwd.q_stride;
    g.dk = dk->flat<float>().data();  g.dk_stride = g.fwd.k_stride;
    g.dv = dv->flat<float>().data();  g.dv_stride = g.fwd.v_stride;
    attention_backward(g, tf_parallel(ctx));
  }

 private:
  AttentionAttrs attrs_;
  bool use_dlse_ = false;
};

REGISTER_KERNEL_BUILDER(Name("Keraslm>FlashAttention").Device(DEVICE_CPU), FlashAttentionOp);
REGISTER_KERNEL_BUILDER(Name("Keraslm>FlashAttentionGrad").Device(DEVICE_CPU), FlashAttentionGradOp);

}  // namespace
}  // namespace keraslm
