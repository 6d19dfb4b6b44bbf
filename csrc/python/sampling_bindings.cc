// keraslm._C sampling entry points on numpy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/sampling.h"
#include "kernels/sampling_checks.h"
#include "kernels/thread_pool.h"
#include "python/bindings.h"
#include "python/sampling_args.h"

namespace py = pybind11;

namespace keraslm {
namespace {

using namespace sampling_args;

py::tuple sample_numpy(const py::handle& logits_obj, const py::handle& coins_obj, const py::handle& temperature,
                       const py::handle& top_k, const py::handle& top_p, const py::handle& min_p,
                       const py::handle& repetition_penalty, const py::object& previous_ids,
                       const py::handle& pad_id_obj, bool reference) {
  Array<float> logits = as_float(logits_obj, "logits");
  if (logits.ndim() != 2)
    throw py::value_error("logits must be a 2-D array [batch, vocab]; got shape " + shape_str(logits));
  const int64_t B = logits.shape(0), V = logits.shape(1);
  if (V == 0) throw py::value_error("logits must have at least one column (vocabulary size); got shape " + shape_str(logits));
  if (V > INT32_MAX) throw py::value_error("logits has more than 2^31 - 1 columns; ids are int32");
  const HostArgs host = parse_host_args(B, coins_obj, temperature, top_k, top_p, min_p, repetition_penalty,
                                        pad_id_obj);
  Array<int32_t> prev(std::vector<py::ssize_t>{B, 0});
  if (!previous_ids.is_none()) {
    prev = as_int32(previous_ids, "previous_ids", /*clamp=*/false);
    if (prev.ndim() != 2 || prev.shape(0) != B)
      throw py::value_error("previous_ids must have shape (" + std::to_string(B) + ", L); got shape " +
                            shape_str(prev));
  }

  SamplingParams p;
  p.B = B;
  p.V = V;
  p.L = prev.shape(1);
  p.logits = logits.data();
  p.logits_stride = V;
  host.fill(p);
  p.previous_ids = p.L > 0 ? prev.data() : nullptr;
  Array<int32_t> ids(std::vector<py::ssize_t>{B});
  Array<float> logprobs(std::vector<py::ssize_t>{B});
  p.ids = ids.mutable_data();
  p.logprobs = logprobs.mutable_data();
  if (B == 0) return py::make_tuple(ids, logprobs);

  std::string error;
  {
    py::gil_scoped_release release;
    const Parallel par = pool_parallel();
    error = check_sampling_values(p, par);
    if (error.empty()) {
      if (reference)
        sample_reference(p);
      else
        sample(p, par);
    }
  }
  if (!error.empty()) throw py::value_error(error);
  return py::make_tuple(ids, logprobs);
}

}  // namespace

void register_sampling(py::module_& m) {
  const char* doc = R"doc(Fused token sampling on numpy arrays (CPU).

Per row: repetition penalty over the distinct previous ids, temperature
(0 = greedy: the lowest id among the largest logits, logprob 0), then top-k,
top-p and min-p filtering of the ranking by (logit descending, id ascending),
and the inverse CDF of the renormalised kept distribution at the coin, in id
order.  See csrc/kernels/sampling.h for the exact contract.

Args:
    logits: [B, V] real array (converted to float32); -inf bans a token.
    coins: [B] uniform numbers in [0, 1), the randomness.
    temperature: scalar or [B], finite and >= 0.
    top_k: scalar or [B] integers >= 0 (0 = off).
    top_p: scalar or [B] in (0, 1] (1 = off).
    min_p: scalar or [B] in [0, 1] (0 = off).
    repetition_penalty: scalar or [B], finite and > 0 (1 = off).
    previous_ids: optional [B, L] integer ids in [0, V) or equal to pad_id.
    pad_id: the id ignored in previous_ids.

Returns:
    (ids [B] int32, logprobs [B] float32): the sampled ids and their
    log-probabilities under the filtered, renormalised distribution.

Raises:
    ValueError: naming the argument and the offending value, for a bad dtype,
    shape or value (NaN or +inf logits, a row of only -inf, coins outside
    [0, 1), out-of-range parameters or previous ids).
)doc";
  m.def("sample",
        [](const py::handle& logits, const py::handle& coins, const py::handle& temperature, const py::handle& top_k,
           const py::handle& top_p, const py::handle& min_p, const py::handle& repetition_penalty,
           const py::object& previous_ids, const py::handle& pad_id) {
          return sample_numpy(logits, coins, temperature, top_k, top_p, min_p, repetition_penalty, previous_ids,
                              pad_id, false);
        },
        py::arg("logits"), py::arg("coins"), py::arg("temperature") = 1.0, py::arg("top_k") = 0,
        py::arg("top_p") = 1.0, py::arg("min_p") = 0.0, py::arg("repetition_penalty") = 1.0,
        py::arg("previous_ids") = py::none(), py::arg("pad_id") = -1, doc);
  m.def("sample_reference",
        [](const py::handle& logits, const py::handle& coins, const py::handle& temperature, const py::handle& top_k,
           const py::handle& top_p, const py::handle& min_p, const py::handle& repetition_penalty,
           const py::object& previous_ids, const py::handle& pad_id) {
          return sample_numpy(logits, coins, temperature, top_k, top_p, min_p, repetition_penalty, previous_ids,
                              pad_id, true);
        },
        py::arg("logits"), py::arg("coins"), py::arg("temperature") = 1.0, py::arg("top_k") = 0,
        py::arg("top_p") = 1.0, py::arg("min_p") = 0.0, py::arg("repetition_penalty") = 1.0,
        py::arg("previous_ids") = py::none(), py::arg("pad_id") = -1,
        "The naive C++ reference of sample (full sort per row, double arithmetic); same arguments, checks and "
        "results up to float rounding at CDF boundaries.");
}

}  // namespace keraslm
