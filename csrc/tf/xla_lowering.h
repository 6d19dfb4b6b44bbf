// The lowering side shared by our XLA op kernels (matmul_bf16_xla.cc,
// attention_xla.cc, layer_norm_xla.cc): every op becomes one typed-FFI custom
// call on row-major operands returning a tuple of row-major results.
#pragma once

#include <string>
#include <vector>

#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "xla/hlo/builder/xla_builder.h"

namespace keraslm {

inline std::vector<int64_t> dims_of(const tensorflow::TensorShape& s) {
  const auto d = s.dim_sizes();
  return std::vector<int64_t>(d.begin(), d.end());
}

// Calls `target` on all the op's inputs and sets output i to result i
// (float32 results of the given dimensions); attrs is the MLIR dictionary of
// the handler's attributes.
inline void lower_to_custom_call(tensorflow::XlaOpKernelContext* ctx, const char* target,
                                 const std::vector<std::vector<int64_t>>& results, const std::string& attrs) {
  std::vector<xla::XlaOp> operands;
  std::vector<xla::Shape> operand_shapes;
  for (int i = 0; i < ctx->num_inputs(); ++i) {
    operands.push_back(ctx->Input(i));
    operand_shapes.push_back(
        xla::ShapeUtil::MakeShapeWithDescendingLayout(ctx->input_xla_type(i), dims_of(ctx->InputShape(i))));
  }
  std::vector<xla::Shape> result_shapes;
  for (const auto& d : results) result_shapes.push_back(xla::ShapeUtil::MakeShapeWithDescendingLayout(xla::F32, d));
  xla::XlaOp call = xla::CustomCallWithLayout(
      ctx->builder(), target, operands, xla::ShapeUtil::MakeTupleShape(result_shapes), operand_shapes, attrs,
      /*has_side_effect=*/false, /*output_operand_aliasing=*/{}, /*literal=*/nullptr,
      xla::CustomCallSchedule::SCHEDULE_NONE, xla::CustomCallApiVersion::API_VERSION_TYPED_FFI);
  for (size_t i = 0; i < results.size(); ++i) ctx->SetOutput(static_cast<int>(i), xla::GetTupleElement(call, i));
}

}  // namespace keraslm
