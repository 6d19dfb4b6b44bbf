"""The CUDA kernels of csrc/kernels, run on the CPU (no GPU or nvcc needed).

Builds csrc/tests/cuda_emulation with cmake (-DKERASLM_BUILD_CUDA_EMULATION=ON:
the .cu sources are rewritten at build time and compiled as host C++ against
an emulation of the CUDA built-ins, warp collectives, ldmatrix, mma.sync and
cp.async) and runs its programs on random shapes: the attention kernels
against attention_forward_reference / attention_backward_reference, the
sampling kernel against the fast CPU sampler and sample_reference.  Each
program exits non-zero on a mismatch, and every kernel launch site of the
.cu files must have run.  About a minute and a half on two cores, so it is
part of the default suite (CI has the CUDA toolkit but no GPU).  For a longer
soak, run the programs by hand with more cases and other seeds (see their
usage lines).
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "csrc" / "kernels"


def _cuda_include():
    """Directory of the CUDA toolkit headers (cuda_bf16.h), or None."""
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    for root in filter(None, roots):
        if (Path(root) / "include" / "cuda_bf16.h").exists():
            return Path(root) / "include"
    return None


pytestmark = [
    pytest.mark.skipif(not (REPO / "CMakeLists.txt").exists() or shutil.which("cmake") is None,
                       reason="needs the source tree and cmake"),
    pytest.mark.skipif(_cuda_include() is None, reason="needs the CUDA toolkit headers (cuda_bf16.h)"),
]


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """Configures and builds the emulation programs once; returns their directory."""
    build = tmp_path_factory.mktemp("cuda_emulation")
    cfg = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-DKERASLM_PYTHON=OFF", "-DKERASLM_CUDA=OFF",
                          "-DKERASLM_BUILD_CUDA_EMULATION=ON", f"-DKERASLM_CUDA_INCLUDE_DIR={_cuda_include()}",
                          "-DCMAKE_BUILD_TYPE=Release"],
                         capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stdout[-2000:] + cfg.stderr[-2000:]
    bld = subprocess.run(["cmake", "--build", str(build), "-j", "2", "--target", "keraslm_emulated_attention",
                          "keraslm_emulated_sampling", "keraslm_emulated_sampling_sm70"],
                         capture_output=True, text=True, timeout=900)
    assert bld.returncode == 0, bld.stdout[-3000:] + bld.stderr[-3000:]
    return build


def _run(program, *args):
    """Runs an emulation program; returns its output after checking that it passed."""
    run = subprocess.run([str(program), *map(str, args)], capture_output=True, text=True, timeout=600)
    failures = "\n".join(line for line in run.stdout.splitlines() if line.startswith("FAIL"))
    assert run.returncode == 0, \
        f"{program.name} failed:\n{failures[-3000:]}\n{run.stdout[-1500:]}\n{run.stderr[-3000:]}"
    return run.stdout


def _launch_sites(pattern):
    """file:line of every kernel launch (<<<) in the .cu files matching pattern."""
    return {f"{path.resolve()}:{n}" for path in KERNELS.glob(pattern)
            for n, line in enumerate(path.read_text().splitlines(), 1) if "<<<" in line}


def _assert_every_launch_ran(out, pattern):
    ran = set(re.findall(r"^launch-site (\S+) launches [1-9]", out, re.M))
    expected = _launch_sites(pattern)
    assert expected, f"no kernel launches found in {pattern}"
    assert expected <= ran, f"launch sites never exercised: {sorted(expected - ran)}"


def test_attention_kernels_match_reference(programs):
    """Forward (tensor-core, FMA and split-key decode paths) and backward, float32 / bfloat16 /
    float16, against the double-precision reference on 9 edge cases + 300 random shapes."""
    out = _run(programs / "keraslm_emulated_attention", 300, 1)
    assert re.search(r"^attention: 309 cases, 0 failed", out, re.M), out[-2000:]
    _assert_every_launch_ran(out, "attention_cuda_*.cu")


def test_sampling_kernel_matches_cpu_sampler(programs):
    """Every status code, ties, +-0, -inf, extreme values, V from 1 to 70000, all filters and
    penalties: the ids of the fast CPU sampler, logprobs to float rounding."""
    out = _run(programs / "keraslm_emulated_sampling", 300, 1, 70000)
    assert re.search(r"^sampling \(sm_80\): \d+ rows, 0 failed", out, re.M), out[-2000:]
    _assert_every_launch_ran(out, "sampling_cuda*.cu")


def test_sampling_kernel_pre_sm80_histogram_path(programs):
    """The same kernel compiled for sm_70 (per-lane atomics instead of __reduce_add_sync)."""
    out = _run(programs / "keraslm_emulated_sampling_sm70", 100, 2, 30000)
    assert re.search(r"^sampling \(sm_70\): \d+ rows, 0 failed", out, re.M), out[-2000:]
