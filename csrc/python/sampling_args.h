// Conversion and checking of the host-side arguments of the sampling entry
// points (numpy arrays and Python numbers), shared by the numpy and the
// DLPack bindings.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/sampling.h"

namespace keraslm {
namespace sampling_args {

namespace py = pybind11;

template <class T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// obj as a numpy array whose dtype kind is one of `kinds` ('f' floating,
// 'i'/'u' integer); anything else (bool, object, strings) is a ValueError.
inline py::array as_array(const py::handle& obj, const char* name, const char* kinds, const char* what) {
  py::array a;
  try {
    a = py::array::ensure(obj);
  } catch (const py::error_already_set&) {
  }
  if (!a) throw py::value_error(std::string(name) + " must be " + what + " (a number or a numpy array)");
  if (std::string(kinds).find(a.dtype().kind()) == std::string::npos)
    throw py::value_error(std::string(name) + " must be " + what + "; got dtype " + std::string(py::str(a.dtype())));
  return a;
}

// float32 values; float64 values below 1 that round up to 1 are kept below 1
// (coins from numpy's random() must stay valid coins).
inline Array<float> as_float(const py::handle& obj, const char* name, bool keep_below_one = false) {
  py::array a = as_array(obj, name, "fiu", "a real number or array");
  Array<float> f = Array<float>::ensure(a);
  if (keep_below_one && a.dtype().kind() == 'f' && a.itemsize() > 4) {
    Array<double> d = Array<double>::ensure(a);
    float* out = f.mutable_data();  // a converted copy, since the input is not float32
    for (py::ssize_t i = 0; i < d.size(); ++i)
      if (d.data()[i] < 1 && out[i] >= 1) out[i] = std::nextafter(1.f, 0.f);
  }
  return f;
}

// A per-row parameter: a scalar (stride 0) or one value per row (stride 1).
template <class T>
struct Param {
  Array<T> values;
  int64_t stride = 0;
};
template <class T>
Param<T> as_param(Array<T> a, const char* name, int64_t B) {
  if (a.ndim() == 0) return {a, 0};
  if (a.ndim() == 1 && a.shape(0) == B) return {a, 1};
  throw py::value_error(std::string(name) + " must be a scalar or have shape (" + std::to_string(B) +
                        ",) (one per row of logits); got shape " + shape_str(a));
}

// Integers as int32 without wrapping around: out-of-range values are clamped
// (top_k: a huge k keeps all, a negative one stays negative and is rejected) or
// refused (previous_ids).
inline Array<int32_t> as_int32(const py::handle& obj, const char* name, bool clamp) {
  py::array a = as_array(obj, name, "iu", "an integer or integer array");
  Array<int64_t> w = Array<int64_t>::ensure(a);  // uint64 beyond int64 wraps negative: still rejected
  Array<int32_t> out(std::vector<py::ssize_t>(w.shape(), w.shape() + w.ndim()));
  for (py::ssize_t i = 0; i < w.size(); ++i) {
    int64_t v = w.data()[i];
    if (v < INT32_MIN || v > INT32_MAX) {
      if (!clamp)
        throw py::value_error(std::string(name) + " values must fit in int32; got " + std::to_string(v));
      v = v < 0 ? INT32_MIN : INT32_MAX;
    }
    out.mutable_data()[i] = int32_t(v);
  }
  return out;
}

inline int32_t as_pad_id(const py::handle& obj) {
  PyObject* index = PyNumber_Index(obj.ptr());  // Python and numpy integers
  if (!index) {
    PyErr_Clear();
    throw py::value_error("pad_id must be an integer; got " + std::string(py::repr(obj)));
  }
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
  Py_DECREF(index);
  if (overflow || v < INT32_MIN || v > INT32_MAX)
    throw py::value_error("pad_id must fit in int32; got " + std::string(py::repr(obj)));
  return int32_t(v);
}

// The coins, the five per-row parameters and pad_id of a call with B rows.
struct HostArgs {
  Array<float> coins;
  Param<float> temperature, top_p, min_p, repetition_penalty;
  Param<int32_t> top_k;
  int32_t pad_id = -1;

  // Points p's host-side fields at these arrays.
  void fill(SamplingParams& p) const {
    p.coins = coins.data();
    p.temperature = temperature.values.data();
    p.temperature_stride = temperature.stride;
    p.top_k = top_k.values.data();
    p.top_k_stride = top_k.stride;
    p.top_p = top_p.values.data();
    p.top_p_stride = top_p.stride;
    p.min_p = min_p.values.data();
    p.min_p_stride = min_p.stride;
    p.repetition_penalty = repetition_penalty.values.data();
    p.repetition_penalty_stride = repetition_penalty.stride;
    p.pad_id = pad_id;
  }
};

inline HostArgs parse_host_args(int64_t B, const py::handle& coins_obj, const py::handle& temperature,
                                const py::handle& top_k, const py::handle& top_p, const py::handle& min_p,
                                const py::handle& repetition_penalty, const py::handle& pad_id) {
  HostArgs h;
  h.coins = as_float(coins_obj, "coins", /*keep_below_one=*/true);
  if (h.coins.ndim() != 1 || h.coins.shape(0) != B)
    throw py::value_error("coins must have shape (" + std::to_string(B) + ",) (one per row of logits); got shape " +
                          shape_str(h.coins));
  h.temperature = as_param(as_float(temperature, "temperature"), "temperature", B);
  h.top_k = as_param(as_int32(top_k, "top_k", /*clamp=*/true), "top_k", B);
  h.top_p = as_param(as_float(top_p, "top_p"), "top_p", B);
  h.min_p = as_param(as_float(min_p, "min_p"), "min_p", B);
  h.repetition_penalty = as_param(as_float(repetition_penalty, "repetition_penalty"), "repetition_penalty", B);
  h.pad_id = as_pad_id(pad_id);
  return h;
}

}  // namespace sampling_args
}  // namespace keraslm
