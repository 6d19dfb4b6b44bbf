// The lowering side shared by our XLA op kernels (matmul_bf16_xla.cc,
// attention_xla.cc, layer_norm_xla.cc, sampling_xla.cc, linear_xla.cc,
// decoder_step_xla.cc): every op becomes one typed-FFI custom call on
// row-major operands returning a tuple of row-major results.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "xla/hlo/builder/xla_builder.h"

namespace keraslm {

inline std::vector<int64_t> dims_of(const tensorflow::TensorShape& s) {
  const auto d = s.dim_sizes();
  return std::vector<int64_t>(d.begin(), d.end());
}

// A TensorShape of the dimensions of a typed-FFI buffer (for the glue's shape checks).
template <typename Dims>
inline tensorflow::TensorShape shape_of(const Dims& d) {
  return tensorflow::TensorShape(std::vector<int64_t>(d.begin(), d.end()));
}

// One result of a custom call: its element type and dimensions.
struct XlaResult {
  xla::PrimitiveType type = xla::F32;
  std::vector<int64_t> dims;
};

// Calls `target` on all the op's inputs and sets output i to result i; attrs
// is the MLIR dictionary of the handler's attributes.  Each (result, operand)
// pair of `aliases` makes the result share the operand's buffer (XLA copies
// the operand first when it is still needed elsewhere), so the handler
// updates it in place.
inline void lower_to_custom_call_with(tensorflow::XlaOpKernelContext* ctx, const char* target,
                                      const std::vector<XlaResult>& results, const std::string& attrs,
                                      const std::vector<std::pair<int64_t, int64_t>>& aliases = {}) {
  std::vector<xla::XlaOp> operands;
  std::vector<xla::Shape> operand_shapes;
  for (int i = 0; i < ctx->num_inputs(); ++i) {
    operands.push_back(ctx->Input(i));
    operand_shapes.push_back(
        xla::ShapeUtil::MakeShapeWithDescendingLayout(ctx->input_xla_type(i), dims_of(ctx->InputShape(i))));
  }
  std::vector<xla::Shape> result_shapes;
  for (const auto& r : results) result_shapes.push_back(xla::ShapeUtil::MakeShapeWithDescendingLayout(r.type, r.dims));
  std::vector<std::pair<xla::ShapeIndex, std::pair<int64_t, xla::ShapeIndex>>> aliasing;
  for (const auto& a : aliases) aliasing.push_back({xla::ShapeIndex({a.first}), {a.second, xla::ShapeIndex()}});
  // A call with an empty result would be folded away by XLA, and with it the handler's checks of the
  // operands (e.g. key lengths with Tq = 0); marked as having a side effect it always runs.
  bool empty_result = false;
  for (const auto& r : results)
    for (int64_t d : r.dims) empty_result |= d == 0;
  xla::XlaOp call = xla::CustomCallWithLayout(
      ctx->builder(), target, operands, xla::ShapeUtil::MakeTupleShape(result_shapes), operand_shapes, attrs,
      /*has_side_effect=*/empty_result, aliasing, /*literal=*/nullptr, xla::CustomCallSchedule::SCHEDULE_NONE,
      xla::CustomCallApiVersion::API_VERSION_TYPED_FFI);
  for (size_t i = 0; i < results.size(); ++i) ctx->SetOutput(static_cast<int>(i), xla::GetTupleElement(call, i));
}

// The same with float32 results of the given dimensions.
inline void lower_to_custom_call(tensorflow::XlaOpKernelContext* ctx, const char* target,
                                 const std::vector<std::vector<int64_t>>& results, const std::string& attrs) {
  std::vector<XlaResult> typed;
  for (const auto& d : results) typed.push_back({xla::F32, d});
  lower_to_custom_call_with(ctx, target, typed, attrs);
}

}  // namespace keraslm
