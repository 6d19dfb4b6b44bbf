// TF glue for the fused sampling kernel: op registration, shape function,
// validation of every input (OP_REQUIRES) and the CPU OpKernel.  The XLA
// lowering (sampling_xla.cc) runs the same checks and kernel.
#include <string>

#include "kernels/sampling.h"
#include "kernels/sampling_checks.h"
#include "tf/sampling_glue.h"
#include "tf/tf_common.h"

namespace keraslm {
namespace {

// ids and logprobs are [B]; B is merged from every input that carries it.
Status SampleShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle logits, coins, prev, param;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &logits));
  shape_inference::DimensionHandle batch = c->Dim(logits, 0);
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &coins));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(coins, 0), &batch));
  for (int i = 2; i < 7; ++i) {
    TF_RETURN_IF_ERROR(c->WithRankAtMost(c->input(i), 1, &param));
    if (c->RankKnown(param) && c->Rank(param) == 1) TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(param, 0), &batch));
  }
  TF_RETURN_IF_ERROR(c->WithRank(c->input(7), 2, &prev));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(prev, 0), &batch));
  c->set_output(0, c->Vector(batch));
  c->set_output(1, c->Vector(batch));
  return Status();
}

class SampleOp : public OpKernel {
 public:
  // Run inline on the thread that schedules it, not handed to another inter-op thread: the op
  // spreads its own work over the intra-op pool, and in a decoding loop (one small op after another)
  // each hand-off was a thread wake-up (about 0.5 ms of a 2.6 ms gpt-mini step on a 2-core machine).
  bool IsExpensive() override { return false; }

  explicit SampleOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_id", &pad_id_));
  }

  void Compute(OpKernelContext* ctx) override {
    Tensor *ids = nullptr, *logprobs = nullptr;
    bool run = false;
    OP_REQUIRES_OK(ctx, PrepareSample(ctx, &ids, &logprobs, &run));
    if (!run) return;
    SamplingParams p = SampleParams(ctx, pad_id_, ids, logprobs);
    const Parallel par = tf_parallel(ctx);
    const std::string error = check_sampling_values(p, par);
    OP_REQUIRES(ctx, error.empty(), InvalidArgument(error));
    sample(p, par);
  }

 private:
  int32_t pad_id_ = -1;
};

REGISTER_KERNEL_BUILDER(Name("Keraslm>Sample").Device(DEVICE_CPU), SampleOp);

}  // namespace

#ifndef KERASLM_HAVE_XLA_GLUE
bool sample_xla_lowering_registered() { return false; }
#endif

}  // namespace keraslm

REGISTER_OP("Keraslm>Sample")
    .Input("logits: float")
    .Input("coins: float")
    .Input("temperature: float")
    .Input("top_k: int32")
    .Input("top_p: float")
    .Input("min_p: float")
    .Input("repetition_penalty: float")
    .Input("previous_ids: int32")
    .Attr("pad_id: int = -1")
    .Output("ids: int32")
    .Output("logprobs: float")
    .SetShapeFn(keraslm::SampleShape)
    .Doc(R"doc(
Fused token sampling with repetition penalty, temperature, top-k, top-p and
min-p; the randomness comes in as data (coins), so the op is deterministic.
logits [B, V]; coins [B] in [0, 1); temperature (>= 0, 0 = greedy), top_k
(>= 0, 0 = off), top_p (in (0, 1], 1 = off), min_p (in [0, 1], 0 = off) and
repetition_penalty (> 0, 1 = off) are scalars or [B]; previous_ids [B, L]
(entries equal to pad_id are ignored).  ids [B] are the sampled tokens and
logprobs [B] their log-probabilities under the final filtered distribution
(0 for greedy rows).  See csrc/kernels/sampling.h for the exact semantics.
)doc");
