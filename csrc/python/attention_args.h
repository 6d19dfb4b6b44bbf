// Shape and argument checks of the attention entry points, shared by the
// numpy and the DLPack bindings (messages match the TF op's).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/attention.h"

namespace keraslm {
namespace attention_args {

namespace py = pybind11;

using LengthsArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

inline std::string dims_str(const int64_t* d, int n) {
  std::string s = "(";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (n == 1 ? ",)" : ")");
}

// q [B, Tq, H, D], k and v [B, Tk, Hkv, D]: raises ValueError on a mismatch.
inline void check_shapes(const int64_t* q, const int64_t* k, const int64_t* v) {
  for (int i = 0; i < 4; ++i)
    if (v[i] != k[i]) throw py::value_error("v must have the shape of k " + dims_str(k, 4) + ", got " + dims_str(v, 4));
  if (k[0] != q[0])
    throw py::value_error("k batch size " + std::to_string(k[0]) + " does not match q batch size " +
                          std::to_string(q[0]));
  if (k[3] != q[3])
    throw py::value_error("k head size " + std::to_string(k[3]) + " does not match q head size " +
                          std::to_string(q[3]));
  if (q[3] < 1 || q[3] > kMaxHeadDim)
    throw py::value_error("head size D must be in [1, " + std::to_string(kMaxHeadDim) + "], got " +
                          std::to_string(q[3]));
  if (k[2] < 1 || q[2] < 1 || q[2] % k[2] != 0)
    throw py::value_error("number of query heads H=" + std::to_string(q[2]) +
                          " must be a positive multiple of the key/value heads Hkv=" + std::to_string(k[2]));
}

// key_lengths as int32 [B] with values in [0, Tk] (host memory).
inline LengthsArray check_key_lengths(const py::object& obj, int64_t B, int64_t Tk) {
  LengthsArray lens = LengthsArray::ensure(obj);
  if (!lens || lens.ndim() != 1 || lens.shape(0) != B)
    throw py::value_error("key_lengths must have shape (" + std::to_string(B) + ",)");
  for (int64_t b = 0; b < B; ++b) {
    const int32_t l = lens.at(b);
    if (l < 0 || l > Tk)
      throw py::value_error("key_lengths[" + std::to_string(b) + "] must be in [0, Tk=" + std::to_string(Tk) +
                            "], got " + std::to_string(l));
  }
  return lens;
}

// The score scale: 1/sqrt(D) by default; must be finite.
inline float check_scale(const py::object& scale, int64_t D) {
  const float s = scale.is_none() ? 1.f / std::sqrt(float(D)) : scale.cast<float>();
  if (!std::isfinite(s)) throw py::value_error("scale must be finite, got " + std::string(py::str(scale)));
  return s;
}

}  // namespace attention_args
}  // namespace keraslm
