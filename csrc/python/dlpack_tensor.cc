// Borrowing DLPack tensors from other frameworks and exporting our own.
#include <Python.h>

#include <cstdlib>
#include <string>
#include <type_traits>

#include "python/dlpack.h"
#ifdef KERASLM_WITH_CUDA
#include "kernels/cuda_device.h"
#endif

namespace py = pybind11;

namespace keraslm {
namespace dlpack {

Kind kind_of(const DLDataType& t) {
  if (t.lanes != 1) return Kind::kOther;
  if (t.code == kDLFloat && t.bits == 32) return Kind::kFloat32;
  if (t.code == kDLBfloat && t.bits == 16) return Kind::kBFloat16;
  if (t.code == kDLFloat && t.bits == 16) return Kind::kFloat16;
  if (t.code == kDLInt && t.bits == 32) return Kind::kInt32;
  return Kind::kOther;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kFloat32: return "float32";
    case Kind::kBFloat16: return "bfloat16";
    case Kind::kFloat16: return "float16";
    case Kind::kInt32: return "int32";
    default: return "an unsupported dtype";
  }
}

namespace {

DLDataType dl_type(Kind k) {
  switch (k) {
    case Kind::kBFloat16: return {kDLBfloat, 16, 1};
    case Kind::kFloat16: return {kDLFloat, 16, 1};
    case Kind::kInt32: return {kDLInt, 32, 1};
    default: return {kDLFloat, 32, 1};
  }
}
int64_t kind_size(Kind k) { return (k == Kind::kBFloat16 || k == Kind::kFloat16) ? 2 : 4; }
bool is_cuda(const DLDevice& d) { return d.device_type == kDLCUDA || d.device_type == kDLCUDAManaged; }

}  // namespace

// ---------------------------------------------------------------------------
Borrowed::Borrowed(const py::handle& obj, const char* name, int64_t stream) : name_(name) {
  py::object capsule;
  if (PyCapsule_CheckExact(obj.ptr())) {
    capsule = py::reinterpret_borrow<py::object>(obj);
  } else {
    if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__"))
      throw py::value_error(std::string(name) + " must be a DLPack tensor (with __dlpack__), got " +
                            std::string(py::str(py::type::of(obj))));
    const py::tuple dev = obj.attr("__dlpack_device__")();
    const int type = dev[0].cast<int>();
#ifndef KERASLM_WITH_CUDA
    if (type == kDLCUDA || type == kDLCUDAManaged)
      throw py::value_error(std::string(name) + " is a CUDA tensor, but keraslm was built without CUDA (no nvcc at "
                            "install time); reinstall with a CUDA toolkit on PATH");
#endif
    py::dict kwargs;
    if (type == kDLCUDA || type == kDLCUDAManaged) kwargs["stream"] = stream == 0 ? 1 : stream;  // 1: legacy default
    kwargs["max_version"] = py::make_tuple(1, 0);
    try {
      capsule = obj.attr("__dlpack__")(**kwargs);
    } catch (py::error_already_set& e) {  // a producer older than DLPack 1.0
      if (!e.matches(PyExc_TypeError)) throw;
      kwargs.attr("pop")("max_version");
      capsule = obj.attr("__dlpack__")(**kwargs);
    }
  }
  if (PyCapsule_IsValid(capsule.ptr(), "dltensor_versioned")) {
    mv_ = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor_versioned"));
    PyCapsule_SetName(capsule.ptr(), "used_dltensor_versioned");  // ours now; released in the destructor
    const uint32_t major = mv_->version.major;
    if (major != 1) {
      mv_->deleter(mv_);
      mv_ = nullptr;
      throw py::value_error(std::string(name) + ": unsupported DLPack major version " + std::to_string(major));
    }
    t_ = &mv_->dl_tensor;
  } else if (PyCapsule_IsValid(capsule.ptr(), "dltensor")) {
    m_ = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
    PyCapsule_SetName(capsule.ptr(), "used_dltensor");
    t_ = &m_->dl_tensor;
  } else {
    PyErr_Clear();
    throw py::value_error(std::string(name) + ": expected an unconsumed DLPack capsule");
  }
  strides_.resize(t_->ndim);
  int64_t step = 1;
  for (int i = t_->ndim - 1; i >= 0; --i) {
    strides_[i] = t_->strides ? t_->strides[i] : step;
    step *= t_->shape[i];
  }
}

Borrowed::~Borrowed() {
  if (m_ && m_->deleter) m_->deleter(m_);
  if (mv_ && mv_->deleter) mv_->deleter(mv_);
}

std::string Borrowed::shape_str() const {
  std::string s = "(";
  for (int i = 0; i < ndim(); ++i) s += (i ? ", " : "") + std::to_string(dim(i));
  return s + (ndim() == 1 ? ",)" : ")");
}

std::string Borrowed::dtype_str() const {
  const DLDataType& t = t_->dtype;
  const Kind k = kind_of(t);
  if (k != Kind::kOther) return kind_name(k);
  const char* base = t.code == kDLInt ? "int" : t.code == kDLUInt ? "uint" : t.code == kDLFloat ? "float"
                     : t.code == kDLBfloat ? "bfloat" : "type-code-";
  std::string s = std::string(base) + (t.code > kDLBfloat ? std::to_string(t.code) + "/" : "") + std::to_string(t.bits);
  return t.lanes == 1 ? s : s + "x" + std::to_string(t.lanes);
}

void Borrowed::require(int rank, Kind kind, const char* layout) const {
  if (ndim() != rank)
    throw py::value_error(std::string(name_) + " must have rank " + std::to_string(rank) + " " + layout +
                          ", got shape " + shape_str());
  if (this->kind() != kind)
    throw py::value_error(std::string(name_) + " must have dtype " + kind_name(kind) + ", got " + dtype_str());
  if (rank > 0 && dim(rank - 1) > 1 && stride(rank - 1) != 1)
    throw py::value_error(std::string(name_) + " must be contiguous in its last dimension (stride 1), got stride " +
                          std::to_string(stride(rank - 1)));
  if (reinterpret_cast<uintptr_t>(data()) % kind_size(kind) != 0)
    throw py::value_error(std::string(name_) + " data must be aligned to its element size");
}

// ---------------------------------------------------------------------------
Owned::Buffer::~Buffer() {
  if (!ptr) return;
#ifdef KERASLM_WITH_CUDA
  if (is_cuda(device)) {
    cuda::set_device(device.device_id);
    cuda::device_free(ptr, reinterpret_cast<void*>(stream));
    return;
  }
#endif
  std::free(ptr);
}

Owned::Owned(DLDevice device, Kind kind, std::vector<int64_t> shape, int64_t stream)
    : device_(device), kind_(kind), shape_(std::move(shape)), stream_(stream), buffer_(std::make_shared<Buffer>()) {
  int64_t bytes = kind_size(kind);
  for (int64_t d : shape_) bytes *= d;
  buffer_->device = device;
  buffer_->stream = stream;
  if (is_cuda(device)) {
#ifdef KERASLM_WITH_CUDA
    if (const char* e = cuda::device_alloc(&buffer_->ptr, size_t(bytes), reinterpret_cast<void*>(stream)))
      throw std::runtime_error(std::string("keraslm: CUDA allocation of ") + std::to_string(bytes) +
                               " bytes failed: " + e);
#else
    throw py::value_error("keraslm was built without CUDA");
#endif
  } else {
    const size_t rounded = size_t((bytes + 63) / 64 * 64);
    buffer_->ptr = std::aligned_alloc(64, rounded > 0 ? rounded : 64);
    if (!buffer_->ptr) throw std::bad_alloc();
  }
}

namespace {

struct ExportCtx {
  std::shared_ptr<void> keep;  // the buffer
  std::vector<int64_t> shape;
};

template <class M>
void delete_managed(M* m) {
  delete static_cast<ExportCtx*>(m->manager_ctx);
  delete m;
}

template <class M>
void capsule_destructor(PyObject* capsule) {
  // Only a capsule nobody consumed still owns its tensor.
  const char* name = std::is_same<M, DLManagedTensor>::value ? "dltensor" : "dltensor_versioned";
  if (PyCapsule_IsValid(capsule, name)) {
    auto* m = static_cast<M*>(PyCapsule_GetPointer(capsule, name));
    m->deleter(m);
  } else {
    PyErr_Clear();
  }
}

// Stream handles 0 and 1 both name the legacy default stream.
bool same_stream(int64_t a, int64_t b) { return a == b || (a <= 1 && b <= 1); }

template <class M>
py::capsule make_capsule(M* m, ExportCtx* ctx, void* data, DLDevice device, DLDataType dtype, const char* name) {
  m->dl_tensor.data = data;
  m->dl_tensor.device = device;
  m->dl_tensor.ndim = int32_t(ctx->shape.size());
  m->dl_tensor.dtype = dtype;
  m->dl_tensor.shape = ctx->shape.data();
  m->dl_tensor.strides = nullptr;  // compact row-major
  m->dl_tensor.byte_offset = 0;
  m->manager_ctx = ctx;
  m->deleter = delete_managed<M>;
  PyObject* capsule = PyCapsule_New(m, name, capsule_destructor<M>);
  if (!capsule) {
    delete_managed(m);
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::capsule>(capsule);
}

}  // namespace

py::capsule Owned::export_capsule(const py::object& consumer_stream, bool versioned) const {
#ifdef KERASLM_WITH_CUDA
  if (is_cuda(device_)) {
    const int64_t consumer = consumer_stream.is_none() ? 1 : consumer_stream.cast<int64_t>();
    if (consumer != -1 && !same_stream(consumer, stream_)) {
      py::gil_scoped_release release;
      cuda::set_device(device_.device_id);
      if (const char* e = cuda::synchronize(reinterpret_cast<void*>(stream_)))
        throw std::runtime_error(std::string("keraslm: CUDA synchronize failed: ") + e);
    }
  }
#else
  (void)consumer_stream;
#endif
  auto* ctx = new ExportCtx{std::shared_ptr<void>(buffer_, buffer_->ptr), shape_};
  if (versioned) {
    auto* m = new DLManagedTensorVersioned{};
    m->version = {1, 0};
    m->flags = 0;  // writable, not a copy
    return make_capsule(m, ctx, buffer_->ptr, device_, dl_type(kind_), "dltensor_versioned");
  }
  return make_capsule(new DLManagedTensor{}, ctx, buffer_->ptr, device_, dl_type(kind_), "dltensor");
}

void register_tensor(py::module_& m) {
  py::class_<Owned>(m, "Tensor",
                    "A tensor produced by keraslm's DLPack entry points (CPU or CUDA memory).  Pass it to "
                    "torch.from_dlpack, cupy.from_dlpack or numpy.from_dlpack (CPU) to use it.")
      .def("__dlpack__",
           [](const Owned& t, const py::object& stream, const py::object& max_version, const py::object&,
              const py::object&) {
             const bool versioned = !max_version.is_none() && max_version.cast<py::tuple>()[0].cast<int>() >= 1;
             return t.export_capsule(stream, versioned);
           },
           py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
           py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
      .def("__dlpack_device__", [](const Owned& t) { return py::make_tuple(t.device().device_type, t.device().device_id); })
      .def_property_readonly("shape", [](const Owned& t) {
        py::tuple shape(t.shape().size());
        for (size_t i = 0; i < t.shape().size(); ++i) shape[i] = py::int_(t.shape()[i]);
        return shape;
      })
      .def_property_readonly("dtype", [](const Owned& t) { return std::string(kind_name(t.kind())); })
      .def_property_readonly("device", [](const Owned& t) {
        return std::string(is_cuda(t.device()) ? "cuda:" + std::to_string(t.device().device_id) : "cpu");
      })
      .def("__repr__", [](const Owned& t) {
        std::string s = "keraslm._C.dlpack.Tensor(shape=(";
        for (size_t i = 0; i < t.shape().size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape()[i]);
        return s + "), dtype=" + kind_name(t.kind()) + ", device=" +
               (is_cuda(t.device()) ? "cuda:" + std::to_string(t.device().device_id) : std::string("cpu")) + ")";
      });
}

}  // namespace dlpack
}  // namespace keraslm
