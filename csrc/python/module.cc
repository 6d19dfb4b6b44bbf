// keraslm._C: the framework-free kernels on numpy arrays (no TensorFlow).
#include <pybind11/pybind11.h>

#include "kernels/attention.h"
#include "kernels/thread_pool.h"
#include "python/bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "keraslm kernels: fused attention and token sampling on numpy arrays (CPU) and on DLPack tensors (CPU, CUDA).";
  m.def("cpu_isa", &keraslm::cpu_isa,
        "Instruction-set variant the fast kernels run with: 'avx512', 'avx2' or 'generic'.");
  m.def("num_threads", &keraslm::default_num_threads,
        "Threads used by the _C kernels (KERASLM_NUM_THREADS or the hardware concurrency).");
  pybind11::dict info;
  info["cuda_option"] = KERASLM_CUDA_OPTION;
#ifdef KERASLM_WITH_CUDA
  info["cuda"] = true;
  info["cuda_architectures"] = KERASLM_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_architectures"] = "";
#endif
  m.attr("build_info") = info;
  keraslm::register_attention(m);
  keraslm::register_sampling(m);
  keraslm::register_dlpack(m);
}
