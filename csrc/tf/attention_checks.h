// Validation shared by the CPU and GPU kernels of the attention ops: every
// attribute and input is checked here, with messages naming the bad value.
#pragma once

#include <cmath>
#include <string>

#include "kernels/attention.h"
#include "tf/tf_common.h"

namespace keraslm {

inline std::string ShapeStr(const Tensor& t) { return t.shape().DebugString(); }

// Reads the attributes shared by the forward and backward ops.
struct AttentionAttrs {
  bool causal = false, use_key_lengths = false;
  float scale = 0.f;
  explicit AttentionAttrs(OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("causal", &causal));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_key_lengths", &use_key_lengths));
    OP_REQUIRES(ctx, std::isfinite(scale), InvalidArgument("scale must be finite, got ", scale));
  }
};

// Sizes of a validated call.
struct AttentionShape {
  int64_t B = 0, Tq = 0, Tk = 0, H = 0, Hkv = 0, D = 0;
};

// Returns `error` from the enclosing Status function unless `cond` holds.
#define KERASLM_REQUIRE(cond, error) \
  do {                               \
    if (!(cond)) return (error);     \
  } while (0)

// Validates the shapes of q, k, v and key_lengths (inputs 0-3).
inline Status ValidateShapes(const TensorShape& q, const TensorShape& k, const TensorShape& v,
                             const TensorShape& lens, const AttentionAttrs& a, AttentionShape* s) {
  KERASLM_REQUIRE(q.dims() == 4,
              InvalidArgument("q must have rank 4 [B, Tq, H, D], got shape ", q.DebugString()));
  KERASLM_REQUIRE(k.dims() == 4,
              InvalidArgument("k must have rank 4 [B, Tk, Hkv, D], got shape ", k.DebugString()));
  KERASLM_REQUIRE(v == k,
              InvalidArgument("v must have the shape of k ", k.DebugString(), ", got ", v.DebugString()));
  const int64_t B = q.dim_size(0), Tq = q.dim_size(1), H = q.dim_size(2), D = q.dim_size(3);
  const int64_t Tk = k.dim_size(1), Hkv = k.dim_size(2);
  KERASLM_REQUIRE(k.dim_size(0) == B,
              InvalidArgument("k batch size ", k.dim_size(0), " does not match q batch size ", B));
  KERASLM_REQUIRE(k.dim_size(3) == D,
              InvalidArgument("k head size ", k.dim_size(3), " does not match q head size ", D));
  KERASLM_REQUIRE(D >= 1 && D <= kMaxHeadDim,
              InvalidArgument("head size D must be in [1, ", kMaxHeadDim, "], got ", D));
  KERASLM_REQUIRE(Hkv >= 1 && H >= 1 && H % Hkv == 0,
              InvalidArgument("number of query heads H=", H, " must be a positive multiple of the key/value ",
                              "heads Hkv=", Hkv));
  if (a.use_key_lengths)
    KERASLM_REQUIRE(lens.dims() == 1 && lens.dim_size(0) == B,
                InvalidArgument("key_lengths must have shape [", B, "], got ", lens.DebugString()));
  *s = AttentionShape{B, Tq, Tk, H, Hkv, D};
  return Status();
}

// Validates q, k, v and key_lengths (inputs 0-3; key_lengths in host memory).
inline Status ValidateInputs(OpKernelContext* ctx, const AttentionAttrs& a, AttentionShape* s) {
  const Tensor& lens = ctx->input(3);
  TF_RETURN_IF_ERROR(ValidateShapes(ctx->input(0).shape(), ctx->input(1).shape(), ctx->input(2).shape(),
                                    lens.shape(), a, s));
  if (a.use_key_lengths) {
    auto l = lens.flat<int32_t>();
    for (int64_t b = 0; b < s->B; ++b)
      KERASLM_REQUIRE(l(b) >= 0 && l(b) <= s->Tk,
                  InvalidArgument("key_lengths[", b, "] must be in [0, Tk=", s->Tk, "], got ", l(b)));
  }
  return Status();
}

// Validates the shapes of the extra inputs of the gradient op (4-7: out, lse, dout, dlse).
inline Status ValidateGradShapes(const TensorShape& qs, const TensorShape& out, const TensorShape& lse,
                                 const TensorShape& dout, const TensorShape& dlse, const AttentionShape& s,
                                 bool use_dlse) {
  const TensorShape lse_shape({s.B, s.H, s.Tq});
  KERASLM_REQUIRE(out == qs,
              InvalidArgument("out must have the shape of q ", qs.DebugString(), ", got ", out.DebugString()));
  KERASLM_REQUIRE(dout == qs,
              InvalidArgument("dout must have the shape of q ", qs.DebugString(), ", got ", dout.DebugString()));
  KERASLM_REQUIRE(lse == lse_shape,
              InvalidArgument("lse must have shape ", lse_shape.DebugString(), ", got ", lse.DebugString()));
  if (use_dlse)
    KERASLM_REQUIRE(dlse == lse_shape,
                InvalidArgument("dlse must have shape ", lse_shape.DebugString(), ", got ", dlse.DebugString()));
  return Status();
}

// Validates the extra inputs of the gradient op (4-7: out, lse, dout, dlse).
inline Status ValidateGradInputs(OpKernelContext* ctx, const AttentionShape& s, bool use_dlse) {
  return ValidateGradShapes(ctx->input(0).shape(), ctx->input(4).shape(), ctx->input(5).shape(),
                            ctx->input(6).shape(), ctx->input(7).shape(), s, use_dlse);
}

// Dense strides of a validated call's q/out ([B, Tq, H, D]) and k/v ([B, Tk, Hkv, D]).
inline Strides3 QStrides(const AttentionShape& s) { return dense_strides(s.Tq, s.H, s.D); }
inline Strides3 KStrides(const AttentionShape& s) { return dense_strides(s.Tk, s.Hkv, s.D); }

}  // namespace keraslm
