// keraslm._C attention entry points on numpy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/thread_pool.h"
#include "python/attention_args.h"
#include "python/bindings.h"

namespace py = pybind11;

namespace keraslm {
namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks dtype float32 and rank 4 and returns a C-contiguous float32 view.
FloatArray as_float4(const py::handle& obj, const char* name) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::value_error(std::string(name) + " must be a numpy array");
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::value_error(std::string(name) + " must have dtype float32, got " + std::string(py::str(a.dtype())));
  if (a.ndim() != 4)
    throw py::value_error(std::string(name) + " must have rank 4 [B, T, H, D], got shape " + shape_str(a));
  return FloatArray::ensure(a);
}

struct Checked {
  AttentionParams p;
  FloatArray q, k, v;
  py::array_t<int32_t, py::array::c_style | py::array::forcecast> lens;
};

Checked check_inputs(const py::handle& q_obj, const py::handle& k_obj, const py::handle& v_obj, bool causal,
                     const py::object& key_lengths, const py::object& scale) {
  Checked c;
  c.q = as_float4(q_obj, "q");
  c.k = as_float4(k_obj, "k");
  c.v = as_float4(v_obj, "v");
  const int64_t B = c.q.shape(0), Tq = c.q.shape(1), H = c.q.shape(2), D = c.q.shape(3);
  const int64_t Tk = c.k.shape(1), Hkv = c.k.shape(2);
  int64_t qd[4], kd[4], vd[4];
  for (int i = 0; i < 4; ++i) qd[i] = c.q.shape(i), kd[i] = c.k.shape(i), vd[i] = c.v.shape(i);
  attention_args::check_shapes(qd, kd, vd);
  AttentionParams& p = c.p;
  if (!key_lengths.is_none()) {
    c.lens = attention_args::check_key_lengths(key_lengths, B, Tk);
    p.key_lengths = c.lens.data();
  }
  p.scale = attention_args::check_scale(scale, D);
  p.B = B; p.Tq = Tq; p.Tk = Tk; p.H = H; p.Hkv = Hkv; p.D = D;
  p.causal = causal;
  p.q = c.q.data();  p.q_stride = dense_strides(Tq, H, D);
  p.k = c.k.data();  p.k_stride = dense_strides(Tk, Hkv, D);
  p.v = c.v.data();  p.v_stride = dense_strides(Tk, Hkv, D);
  p.out_stride = p.q_stride;
  return c;
}

py::tuple forward(const py::handle& q, const py::handle& k, const py::handle& v, bool causal,
                  const py::object& key_lengths, const py::object& scale, bool reference) {
  Checked c = check_inputs(q, k, v, causal, key_lengths, scale);
  AttentionParams& p = c.p;
  FloatArray out({p.B, p.Tq, p.H, p.D});
  FloatArray lse({p.B, p.H, p.Tq});
  p.out = out.mutable_data();
  p.lse = lse.mutable_data();
  {
    py::gil_scoped_release release;
    if (reference)
      attention_forward_reference(p);
    else
      attention_forward(p, pool_parallel());
  }
  return py::make_tuple(out, lse);
}

py::tuple backward(const py::handle& q, const py::handle& k, const py::handle& v, const py::handle& out_obj,
                   const py::handle& lse_obj, const py::handle& dout_obj, bool causal, const py::object& key_lengths,
                   const py::object& scale, const py::object& dlse_obj, bool reference) {
  Checked c = check_inputs(q, k, v, causal, key_lengths, scale);
  AttentionGradParams g;
  g.fwd = c.p;
  FloatArray out = as_float4(out_obj, "out"), dout = as_float4(dout_obj, "dout");
  auto same = [&](const FloatArray& a, const char* name) {
    for (int i = 0; i < 4; ++i)
      if (a.shape(i) != c.q.shape(i))
        throw py::value_error(std::string(name) + " must have the shape of q " + shape_str(c.q) + ", got " +
                              shape_str(a));
  };
  same(out, "out");
  same(dout, "dout");
  auto check_lse = [&](const py::handle& obj, const char* name) {
    py::array a = py::array::ensure(obj);
    if (!a || !a.dtype().is(py::dtype::of<float>()) || a.ndim() != 3 || a.shape(0) != g.fwd.B ||
        a.shape(1) != g.fwd.H || a.shape(2) != g.fwd.Tq)
      throw py::value_error(std::string(name) + " must be float32 with shape (" + std::to_string(g.fwd.B) + ", " +
                            std::to_string(g.fwd.H) + ", " + std::to_string(g.fwd.Tq) + ")");
    return FloatArray::ensure(a);
  };
  FloatArray lse = check_lse(lse_obj, "lse");
  FloatArray dlse;
  if (!dlse_obj.is_none()) dlse = check_lse(dlse_obj, "dlse");
  FloatArray dq({g.fwd.B, g.fwd.Tq, g.fwd.H, g.fwd.D});
  FloatArray dk({g.fwd.B, g.fwd.Tk, g.fwd.Hkv, g.fwd.D});
  FloatArray dv({g.fwd.B, g.fwd.Tk, g.fwd.Hkv, g.fwd.D});
  g.fwd.out = const_cast<float*>(out.data());
  g.fwd.lse = const_cast<float*>(lse.data());
  g.dout = dout.data();
  g.dout_stride = g.fwd.out_stride;
  g.dlse = dlse_obj.is_none() ? nullptr : dlse.data();
  g.dq = dq.mutable_data();  g.dq_stride = g.fwd.q_stride;
  g.dk = dk.mutable_data();  g.dk_stride = g.fwd.k_stride;
  g.dv = dv.mutable_data();  g.dv_stride = g.fwd.v_stride;
  {
    py::gil_scoped_release release;
    if (reference)
      attention_backward_reference(g);
    else
      attention_backward(g, pool_parallel());
  }
  return py::make_tuple(dq, dk, dv);
}

}  // namespace

void register_attention(py::module_& m) {
  const char* fwd_doc = R"doc(Fused attention forward on float32 numpy arrays.

Args:
    q: [B, Tq, H, D] float32.
    k, v: [B, Tk, Hkv, D] float32, H % Hkv == 0, 1 <= D <= 256.
    causal: bottom-right aligned causal mask (query i sees keys j <= i + Tk - Tq).
    key_lengths: optional [B] int, keys j >= key_lengths[b] are masked.
    scale: score scale, default 1/sqrt(D).

Returns:
    (out [B, Tq, H, D] float32, lse [B, H, Tq] float32); rows with no visible
    key give out = 0 and lse = -inf.

Raises:
    ValueError: on a bad dtype, rank, shape, head count or key length.
)doc";
  m.def("attention_forward",
        [](const py::handle& q, const py::handle& k, const py::handle& v, bool causal, const py::object& key_lengths,
           const py::object& scale) { return forward(q, k, v, causal, key_lengths, scale, false); },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("causal") = false, py::arg("key_lengths") = py::none(),
        py::arg("scale") = py::none(), fwd_doc);
  m.def("attention_forward_reference",
        [](const py::handle& q, const py::handle& k, const py::handle& v, bool causal, const py::object& key_lengths,
           const py::object& scale) { return forward(q, k, v, causal, key_lengths, scale, true); },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("causal") = false, py::arg("key_lengths") = py::none(),
        py::arg("scale") = py::none(), "The naive C++ reference of attention_forward (same contract).");
  m.def("attention_backward",
        [](const py::handle& q, const py::handle& k, const py::handle& v, const py::handle& out, const py::handle& lse,
           const py::handle& dout, bool causal, const py::object& key_lengths, const py::object& scale,
           const py::object& dlse) {
          return backward(q, k, v, out, lse, dout, causal, key_lengths, scale, dlse, false);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"),
        py::arg("causal") = false, py::arg("key_lengths") = py::none(), py::arg("scale") = py::none(),
        py::arg("dlse") = py::none(),
        "Gradients (dq, dk, dv) of attention_forward given dout (and optionally dlse).");
  m.def("attention_backward_reference",
        [](const py::handle& q, const py::handle& k, const py::handle& v, const py::handle& out, const py::handle& lse,
           const py::handle& dout, bool causal, const py::object& key_lengths, const py::object& scale,
           const py::object& dlse) {
          return backward(q, k, v, out, lse, dout, causal, key_lengths, scale, dlse, true);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dout"),
        py::arg("causal") = false, py::arg("key_lengths") = py::none(), py::arg("scale") = py::none(),
        py::arg("dlse") = py::none(), "The naive C++ reference of attention_backward (same contract).");
}

}  // namespace keraslm
