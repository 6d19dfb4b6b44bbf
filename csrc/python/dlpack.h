// The DLPack exchange structures (the stable, unversioned C ABI of the DLPack
// specification, as consumed and produced through `__dlpack__` capsules named
// "dltensor"), and keraslm's helpers to borrow and to export tensors.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace keraslm {
namespace dlpack {

// ---- The DLPack ABI.
enum DeviceType : int32_t { kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13 };
enum TypeCode : uint8_t { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4 };
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; nullptr = compact row-major
  uint64_t byte_offset;
};
struct DLManagedTensor {  // capsule name "dltensor"
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};
struct DLPackVersion {
  uint32_t major;
  uint32_t minor;
};
struct DLManagedTensorVersioned {  // capsule name "dltensor_versioned" (DLPack >= 1.0)
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned* self);
  uint64_t flags;  // bit 0: read-only, bit 1: is a copy
  DLTensor dl_tensor;
};

// ---- keraslm's element types.
enum class Kind { kFloat32, kBFloat16, kFloat16, kInt32, kOther };
Kind kind_of(const DLDataType& t);
const char* kind_name(Kind k);

// A tensor borrowed from a producer (`obj.__dlpack__()`), released on scope
// exit.  Strides are always filled in (compact when the producer gave none).
class Borrowed {
 public:
  // stream: the consumer stream handle passed to __dlpack__ for CUDA tensors.
  Borrowed(const pybind11::handle& obj, const char* name, int64_t stream);
  ~Borrowed();
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;

  const char* name() const { return name_; }
  bool on_cuda() const { return device().device_type == kDLCUDA || device().device_type == kDLCUDAManaged; }
  const DLDevice& device() const { return t_->device; }
  Kind kind() const { return kind_of(t_->dtype); }
  std::string dtype_str() const;  // e.g. "float64"
  int ndim() const { return t_->ndim; }
  int64_t dim(int i) const { return t_->shape[i]; }
  int64_t stride(int i) const { return strides_[i]; }
  void* data() const { return static_cast<char*>(t_->data) + t_->byte_offset; }
  std::string shape_str() const;
  // Raises ValueError unless the tensor has this rank, element kind and a
  // contiguous last dimension (and its data is aligned to the element size).
  void require(int ndim, Kind kind, const char* layout) const;

 private:
  const char* name_;
  DLManagedTensor* m_ = nullptr;            // one of these two owns the tensor
  DLManagedTensorVersioned* mv_ = nullptr;
  const DLTensor* t_ = nullptr;
  std::vector<int64_t> strides_;
};

// A tensor keraslm allocated and hands out through __dlpack__ (CPU or CUDA
// memory; CUDA memory is allocated and freed in the order of `stream`).
class Owned {
 public:
  Owned(DLDevice device, Kind kind, std::vector<int64_t> shape, int64_t stream);
  void* data() const { return buffer_->ptr; }
  const std::vector<int64_t>& shape() const { return shape_; }
  Kind kind() const { return kind_; }
  DLDevice device() const { return device_; }
  int64_t stream() const { return stream_; }
  // The capsule for a consumer on `consumer_stream` (waits for our stream
  // when the consumer's differs); versioned (writable) when the consumer
  // accepts DLPack >= 1.0.
  pybind11::capsule export_capsule(const pybind11::object& consumer_stream, bool versioned) const;

 private:
  struct Buffer {
    void* ptr = nullptr;
    DLDevice device{kDLCPU, 0};
    int64_t stream = 0;
    ~Buffer();
  };
  DLDevice device_;
  Kind kind_;
  std::vector<int64_t> shape_;
  int64_t stream_;
  std::shared_ptr<Buffer> buffer_;
};

// Registers keraslm._C.dlpack.Tensor (the Owned handle) on `m`.
void register_tensor(pybind11::module_& m);

}  // namespace dlpack
}  // namespace keraslm
