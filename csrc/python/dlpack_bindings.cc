// keraslm._C.dlpack: the kernels on DLPack tensors from any framework (torch,
// CuPy, JAX, numpy).  CPU tensors (float32) run the fast CPU kernels; CUDA
// tensors (float32, bfloat16, float16) run the CUDA kernels when the package
// was built with CUDA.  Outputs are keraslm._C.dlpack.Tensor objects on the
// inputs' device; CUDA work is queued on `stream` (default: the legacy
// default stream) and consumers on another stream wait for it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "kernels/attention.h"
#include "kernels/sampling.h"
#include "kernels/sampling_checks.h"
#include "kernels/thread_pool.h"
#include "python/attention_args.h"
#include "python/bindings.h"
#include "python/dlpack.h"
#include "python/sampling_args.h"
#ifdef KERASLM_WITH_CUDA
#include "kernels/attention_cuda.h"
#include "kernels/cuda_device.h"
#include "kernels/cuda_sample_launch.h"
#endif

namespace py = pybind11;

namespace keraslm {
namespace {

using dlpack::Borrowed;
using dlpack::Kind;
using dlpack::Owned;

int64_t stream_handle(const py::object& s) {
  if (s.is_none()) return 0;
  const int64_t v = s.cast<int64_t>();
  if (v < 0) throw py::value_error("stream must be a CUDA stream handle (an integer >= 0), got " + std::to_string(v));
  return v;
}

// All tensors on one device; returns it.
dlpack::DLDevice same_device(std::initializer_list<const Borrowed*> ts) {
  const Borrowed* first = *ts.begin();
  for (const Borrowed* t : ts)
    if (t->device().device_type != first->device().device_type || t->device().device_id != first->device().device_id)
      throw py::value_error(std::string(t->name()) + " is on a different device than " + first->name());
  const int type = first->device().device_type;
  if (type != dlpack::kDLCPU && !first->on_cuda())
    throw py::value_error(std::string(first->name()) + " is on an unsupported device (DLPack device type " +
                          std::to_string(type) + "); use CPU or CUDA memory");
#ifndef KERASLM_WITH_CUDA
  if (first->on_cuda())
    throw py::value_error("keraslm was built without CUDA (no nvcc at install time), so CUDA tensors are not "
                          "supported; reinstall with a CUDA toolkit on PATH");
#endif
  return first->device();
}

Strides3 strides3(const Borrowed& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

void check_float_kind(const Borrowed& q, bool cuda) {
  const Kind k = q.kind();
  if (!cuda && k != Kind::kFloat32)
    throw py::value_error(std::string("CPU tensors must be float32; ") + q.name() + " is " + q.dtype_str());
  if (k != Kind::kFloat32 && k != Kind::kBFloat16 && k != Kind::kFloat16)
    throw py::value_error(std::string(q.name()) + " must be float32, bfloat16 or float16, got " + q.dtype_str());
}

#ifdef KERASLM_WITH_CUDA
cuda::DType cuda_dtype(Kind k) {
  return k == Kind::kBFloat16 ? cuda::DType::kBFloat16 : k == Kind::kFloat16 ? cuda::DType::kFloat16
                                                                           : cuda::DType::kFloat32;
}

// Device scratch [key_lengths | workspace] for one call, freed in stream order.
struct Scratch {
  char* base = nullptr;
  void* stream;
  Scratch(size_t bytes, void* s) : stream(s) {
    void* p = nullptr;
    if (const char* e = cuda::device_alloc(&p, bytes, s)) throw std::runtime_error(std::string("keraslm CUDA: ") + e);
    base = static_cast<char*>(p);
  }
  ~Scratch() { cuda::device_free(base, stream); }
};

void cuda_check(const char* error, const char* what) {
  if (error) throw std::runtime_error(std::string("keraslm CUDA ") + what + " failed: " + error);
}
#endif

struct AttentionCall {
  Borrowed q, k, v;
  dlpack::DLDevice device;
  int64_t stream;
  attention_args::LengthsArray lens;
  int64_t B, Tq, Tk, H, Hkv, D;
  float scale;
  AttentionCall(const py::handle& qo, const py::handle& ko, const py::handle& vo, const py::object& key_lengths,
                const py::object& scale_obj, const py::object& stream_obj)
      : q(qo, "q", stream_handle(stream_obj)), k(ko, "k", stream_handle(stream_obj)),
        v(vo, "v", stream_handle(stream_obj)), stream(stream_handle(stream_obj)) {
    device = same_device({&q, &k, &v});
    check_float_kind(q, q.on_cuda());
    q.require(4, q.kind(), "[B, Tq, H, D]");
    k.require(4, q.kind(), "[B, Tk, Hkv, D]");
    v.require(4, q.kind(), "[B, Tk, Hkv, D]");
    int64_t qd[4], kd[4], vd[4];
    for (int i = 0; i < 4; ++i) qd[i] = q.dim(i), kd[i] = k.dim(i), vd[i] = v.dim(i);
    attention_args::check_shapes(qd, kd, vd);
    B = qd[0]; Tq = qd[1]; H = qd[2]; D = qd[3]; Tk = kd[1]; Hkv = kd[2];
    if (!key_lengths.is_none()) lens = attention_args::check_key_lengths(key_lengths, B, Tk);
    scale = attention_args::check_scale(scale_obj, D);
  }
  bool cuda() const { return q.on_cuda(); }
  template <class P>
  void fill(P& p) const {
    p.B = B; p.Tq = Tq; p.Tk = Tk; p.H = H; p.Hkv = Hkv; p.D = D;
    p.scale = scale;
    p.q_stride = strides3(q);  p.k_stride = strides3(k);  p.v_stride = strides3(v);
    p.out_stride = dense_strides(Tq, H, D);
  }
};

#ifdef KERASLM_WITH_CUDA
// Runs launch(workspace, device key lengths or nullptr, stream) on the call's
// device and stream, without the GIL, with device scratch laid out as
// [key_lengths (int32 [B]) | workspace bytes], freed in stream order.
template <class Launch>
void with_cuda_scratch(const AttentionCall& c, bool has_lengths, size_t workspace, Launch launch) {
  void* s = reinterpret_cast<void*>(c.stream);
  const size_t head = has_lengths ? cuda::align256(4 * c.B) : 0;
  py::gil_scoped_release release;
  cuda_check(cuda::set_device(c.device.device_id), "set_device");
  Scratch scratch(head + workspace, s);
  const int32_t* lens = nullptr;
  if (has_lengths) {
    cuda_check(cuda::copy_to_device(scratch.base, c.lens.data(), 4 * c.B, s), "copy");
    lens = reinterpret_cast<const int32_t*>(scratch.base);
  }
  launch(scratch.base + head, lens, s);
}
#endif

py::tuple forward(const py::handle& qo, const py::handle& ko, const py::handle& vo, bool causal,
                  const py::object& key_lengths, const py::object& scale, const py::object& stream_obj) {
  AttentionCall c(qo, ko, vo, key_lengths, scale, stream_obj);
  Owned out(c.device, c.q.kind(), {c.B, c.Tq, c.H, c.D}, c.stream);
  Owned lse(c.device, Kind::kFloat32, {c.B, c.H, c.Tq}, c.stream);
  if (!c.cuda()) {
    AttentionParams p;
    c.fill(p);
    p.causal = causal;
    p.key_lengths = key_lengths.is_none() ? nullptr : c.lens.data();
    p.q = static_cast<const float*>(c.q.data());
    p.k = static_cast<const float*>(c.k.data());
    p.v = static_cast<const float*>(c.v.data());
    p.out = static_cast<float*>(out.data());
    p.lse = static_cast<float*>(lse.data());
    {
      py::gil_scoped_release release;
      attention_forward(p, pool_parallel());
    }
    return py::make_tuple(out, lse);
  }
#ifdef KERASLM_WITH_CUDA
  cuda::AttentionParams p;
  c.fill(p);
  p.causal = causal;
  p.dtype = cuda_dtype(c.q.kind());
  p.q = c.q.data(); p.k = c.k.data(); p.v = c.v.data();
  p.out = out.data();
  p.lse = static_cast<float*>(lse.data());
  with_cuda_scratch(c, !key_lengths.is_none(), cuda::attention_forward_workspace(p),
                    [&](char* workspace, const int32_t* lens, void* s) {
                      p.key_lengths = lens;
                      cuda_check(cuda::attention_forward(p, workspace, s), "attention forward");
                    });
#endif
  return py::make_tuple(out, lse);
}

// lse / dlse: float32 [B, H, Tq], dense.
void check_lse(const Borrowed& t, const AttentionCall& c) {
  t.require(3, Kind::kFloat32, "[B, H, Tq]");
  if (t.dim(0) != c.B || t.dim(1) != c.H || t.dim(2) != c.Tq || t.stride(1) != c.Tq || t.stride(0) != c.H * c.Tq)
    throw py::value_error(std::string(t.name()) + " must be a dense float32 tensor of shape (" + std::to_string(c.B) +
                          ", " + std::to_string(c.H) + ", " + std::to_string(c.Tq) + "), got shape " + t.shape_str());
}

void check_like_q(const Borrowed& t, const AttentionCall& c) {
  t.require(4, c.q.kind(), "[B, Tq, H, D]");
  for (int i = 0; i < 4; ++i)
    if (t.dim(i) != c.q.dim(i))
      throw py::value_error(std::string(t.name()) + " must have the shape of q " + c.q.shape_str() + ", got " +
                            t.shape_str());
}

py::tuple backward(const py::handle& qo, const py::handle& ko, const py::handle& vo, const py::handle& out_obj,
                   const py::handle& lse_obj, const py::handle& dout_obj, bool causal, const py::object& key_lengths,
                   const py::object& scale, const py::object& dlse_obj, const py::object& stream_obj) {
  AttentionCall c(qo, ko, vo, key_lengths, scale, stream_obj);
  Borrowed out(out_obj, "out", c.stream), lse(lse_obj, "lse", c.stream), dout(dout_obj, "dout", c.stream);
  std::unique_ptr<Borrowed> dlse;
  if (!dlse_obj.is_none()) dlse = std::make_unique<Borrowed>(dlse_obj, "dlse", c.stream);
  same_device({&c.q, &out, &lse, &dout});
  if (dlse) same_device({&c.q, dlse.get()});
  check_like_q(out, c);
  check_like_q(dout, c);
  check_lse(lse, c);
  if (dlse) check_lse(*dlse, c);
  Owned dq(c.device, c.q.kind(), {c.B, c.Tq, c.H, c.D}, c.stream);
  Owned dk(c.device, c.q.kind(), {c.B, c.Tk, c.Hkv, c.D}, c.stream);
  Owned dv(c.device, c.q.kind(), {c.B, c.Tk, c.Hkv, c.D}, c.stream);
  const Strides3 qs = dense_strides(c.Tq, c.H, c.D), ks = dense_strides(c.Tk, c.Hkv, c.D);
  if (!c.cuda()) {
    AttentionGradParams g;
    c.fill(g.fwd);
    g.fwd.causal = causal;
    g.fwd.key_lengths = key_lengths.is_none() ? nullptr : c.lens.data();
    g.fwd.q = static_cast<const float*>(c.q.data());
    g.fwd.k = static_cast<const float*>(c.k.data());
    g.fwd.v = static_cast<const float*>(c.v.data());
    g.fwd.out = static_cast<float*>(out.data());
    g.fwd.out_stride = strides3(out);
    g.fwd.lse = static_cast<float*>(lse.data());
    g.dout = static_cast<const float*>(dout.data());
    g.dout_stride = strides3(dout);
    g.dlse = dlse ? static_cast<const float*>(dlse->data()) : nullptr;
    g.dq = static_cast<float*>(dq.data());  g.dq_stride = qs;
    g.dk = static_cast<float*>(dk.data());  g.dk_stride = ks;
    g.dv = static_cast<float*>(dv.data());  g.dv_stride = ks;
    {
      py::gil_scoped_release release;
      attention_backward(g, pool_parallel());
    }
    return py::make_tuple(dq, dk, dv);
  }
#ifdef KERASLM_WITH_CUDA
  cuda::AttentionGradParams g;
  c.fill(g.fwd);
  g.fwd.causal = causal;
  g.fwd.dtype = cuda_dtype(c.q.kind());
  g.fwd.q = c.q.data(); g.fwd.k = c.k.data(); g.fwd.v = c.v.data();
  g.fwd.out = out.data();
  g.fwd.out_stride = strides3(out);
  g.fwd.lse = static_cast<float*>(lse.data());
  g.dout = dout.data();
  g.dout_stride = strides3(dout);
  g.dlse = dlse ? static_cast<const float*>(dlse->data()) : nullptr;
  g.dq = dq.data();  g.dq_stride = qs;
  g.dk = dk.data();  g.dk_stride = ks;
  g.dv = dv.data();  g.dv_stride = ks;
  with_cuda_scratch(c, !key_lengths.is_none(), cuda::attention_backward_workspace(g),
                    [&](char* workspace, const int32_t* lens, void* s) {
                      g.fwd.key_lengths = lens;
                      cuda_check(cuda::attention_backward(g, workspace, s), "attention backward");
                    });
#endif
  return py::make_tuple(dq, dk, dv);
}

py::tuple sample_dlpack(const py::handle& logits_obj, const py::handle& coins, const py::handle& temperature,
                        const py::handle& top_k, const py::handle& top_p, const py::handle& min_p,
                        const py::handle& repetition_penalty, const py::object& previous_ids,
                        const py::handle& pad_id, const py::object& stream_obj) {
  const int64_t stream = stream_handle(stream_obj);
  Borrowed logits(logits_obj, "logits", stream);
  logits.require(2, Kind::kFloat32, "[batch, vocab]");
  const int64_t B = logits.dim(0), V = logits.dim(1);
  if (V == 0) throw py::value_error("logits must have at least one column (vocabulary size); got shape " +
                                    logits.shape_str());
  if (V > INT32_MAX) throw py::value_error("logits has more than 2^31 - 1 columns; ids are int32");
  const auto host = sampling_args::parse_host_args(B, coins, temperature, top_k, top_p, min_p, repetition_penalty,
                                                   pad_id);
  std::unique_ptr<Borrowed> prev;
  if (!previous_ids.is_none()) {
    prev = std::make_unique<Borrowed>(previous_ids, "previous_ids", stream);
    prev->require(2, Kind::kInt32, "[B, L]");
    if (prev->dim(0) != B || (B > 1 && prev->dim(1) > 0 && prev->stride(0) != prev->dim(1)))
      throw py::value_error("previous_ids must be a dense int32 tensor of shape (" + std::to_string(B) +
                            ", L); got shape " + prev->shape_str());
    same_device({&logits, prev.get()});
  }
  const dlpack::DLDevice device = same_device({&logits});
  SamplingParams p;
  p.B = B;
  p.V = V;
  p.L = prev ? prev->dim(1) : 0;
  p.logits = static_cast<const float*>(logits.data());
  p.logits_stride = B > 1 ? logits.stride(0) : V;
  host.fill(p);
  p.previous_ids = p.L > 0 ? static_cast<const int32_t*>(prev->data()) : nullptr;
  Owned ids(device, Kind::kInt32, {B}, stream), logprobs(device, Kind::kFloat32, {B}, stream);
  p.ids = static_cast<int32_t*>(ids.data());
  p.logprobs = static_cast<float*>(logprobs.data());
  if (B == 0) return py::make_tuple(ids, logprobs);
  std::string error;
  bool input_error = true;
  if (!logits.on_cuda()) {
    py::gil_scoped_release release;
    const Parallel par = pool_parallel();
    error = check_sampling_values(p, par);
    if (error.empty()) sample(p, par);
  } else {
#ifdef KERASLM_WITH_CUDA
    py::gil_scoped_release release;
    void* s = reinterpret_cast<void*>(stream);
    cuda_check(cuda::set_device(device.device_id), "set_device");
    cuda::SampleLaunch launch(p);
    Scratch scratch(launch.scratch_bytes(), s);
    error = launch.run(scratch.base, s, &input_error);
#endif
  }
  if (!error.empty()) {
    if (input_error) throw py::value_error(error);
    throw std::runtime_error("keraslm CUDA sampling failed: " + error);
  }
  return py::make_tuple(ids, logprobs);
}

}  // namespace

void register_dlpack(py::module_& parent) {
  py::module_ m = parent.def_submodule(
      "dlpack",
      "The kernels on DLPack tensors (torch, CuPy, JAX, numpy): CPU float32 tensors run the CPU kernels, CUDA "
      "tensors (float32, bfloat16, float16) the CUDA kernels.  Results are keraslm._C.dlpack.Tensor objects on the "
      "inputs' device (use torch.from_dlpack / cupy.from_dlpack / numpy.from_dlpack).  `stream` is a CUDA stream "
      "handle (default: the legacy default stream); key_lengths, coins and the sampling parameters are host values.");
  dlpack::register_tensor(m);
#ifdef KERASLM_WITH_CUDA
  m.attr("cuda_built") = true;
  m.def("cuda_device_count", &cuda::device_count, "Number of CUDA devices the runtime sees (0 without a GPU).");
#else
  m.attr("cuda_built") = false;
  m.def("cuda_device_count", []() { return 0; }, "Number of CUDA devices the runtime sees (0 without a GPU).");
#endif
  m.def("attention_forward", &forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("causal") = false,
        py::arg("key_lengths") = py::none(), py::arg("scale") = py::none(), py::arg("stream") = py::none(),
        "Fused attention forward on DLPack tensors: returns (out [B, Tq, H, D] in q's dtype, lse [B, H, Tq] "
        "float32).  Same contract as keraslm._C.attention_forward.");
  m.def("attention_backward", &backward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"),
        py::arg("dout"), py::arg("causal") = false, py::arg("key_lengths") = py::none(),
        py::arg("scale") = py::none(), py::arg("dlse") = py::none(), py::arg("stream") = py::none(),
        "Gradients (dq, dk, dv) of attention_forward on DLPack tensors, in q's dtype.");
  m.def("sample", &sample_dlpack, py::arg("logits"), py::arg("coins"), py::arg("temperature") = 1.0,
        py::arg("top_k") = 0, py::arg("top_p") = 1.0, py::arg("min_p") = 0.0, py::arg("repetition_penalty") = 1.0,
        py::arg("previous_ids") = py::none(), py::arg("pad_id") = -1, py::arg("stream") = py::none(),
        "Token sampling on DLPack logits [B, V] float32 (and previous_ids [B, L] int32 on the same device); coins "
        "and parameters are host numbers or numpy arrays.  Returns (ids [B] int32, logprobs [B] float32).  Same "
        "contract and errors as keraslm._C.sample.");
}

}  // namespace keraslm
