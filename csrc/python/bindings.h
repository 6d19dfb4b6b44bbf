// Registration functions for the pieces of the keraslm._C module.
#pragma once

#include <pybind11/pybind11.h>

namespace keraslm {

void register_attention(pybind11::module_& m);
void register_sampling(pybind11::module_& m);
void register_dlpack(pybind11::module_& m);

}  // namespace keraslm
