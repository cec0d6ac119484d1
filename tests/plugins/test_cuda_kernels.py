"""The CUDA kernels of FastHash / LSHCumulation (plugins/cuda).

Three levels, from "runs everywhere" to "needs a GPU":

1. ``test_cuda_kernels_emulated_on_cpu`` -- the kernels' per-thread bodies and launch sequences
   (``yoso_cuda_kernels.h``) executed on the CPU (tests/cpp/cuda_emulation_test.cc, under ASan/UBSan)
   and compared with the CPU kernels: bit-exact FastHash, LSHCumulation to rounding, validation.
2. ``test_gpu_code_compiles`` -- ``scripts/dev/build_gpu_code.sh``: the CUDA kernels for sm_80/86/89/90,
   libyoso_ort.so with the CUDA execution provider, the TensorRT plugins and the GPU test, all with
   warnings as errors, plus symbol checks. Needs nvcc (skipped without).
3. ``test_cuda_kernels_on_gpu`` / ``..._compute_sanitizer`` -- tests/gpu/cuda_parity_test.cu on a real
   GPU (random shapes incl. S = 1, 13, 4099, mask patterns, float16, invalid inputs, CUDA graphs),
   and under compute-sanitizer memcheck / racecheck when installed. Skipped without a CUDA device.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.native_build import ROOT, configure_and_build, nvcc, run, run_test_binary

pytestmark = [pytest.mark.slow, pytest.mark.native, pytest.mark.gpu]  # CUDA builds; the GPU runs skip without one

CPU_BUILD = ROOT / "build" / "native-tests"
GPU_BUILD = ROOT / "build" / "gpu-code"  # the build tree of scripts/dev/build_gpu_code.sh


def test_cuda_kernels_emulated_on_cpu():
    configure_and_build(CPU_BUILD, {"YOSO_BUILD_TESTS": "ON", "YOSO_BUILD_CUDA": "OFF"}, ["yoso_cuda_emulation_test"])
    rc, out, (n, failed) = run_test_binary(CPU_BUILD / "tests" / "cpp" / "yoso_cuda_emulation_test", timeout=900)
    assert rc == 0 and failed == 0, out[-6000:]
    assert n >= 13, f"expected the full emulation suite, ran {n} tests"


def _require_nvcc() -> str:
    exe = nvcc()
    if exe is None:
        pytest.skip("nvcc not found (set CUDACXX or install a CUDA toolkit): cannot compile the CUDA code")
    return exe


def test_gpu_code_compiles():
    exe = _require_nvcc()
    env = dict(os.environ, CUDACXX=exe)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "dev" / "build_gpu_code.sh"), str(GPU_BUILD)],
                       capture_output=True, text=True, timeout=1800, env=env)
    out = r.stdout + r.stderr
    print(out[-3000:])
    if r.returncode != 0 and "Fetching headers for compile checks failed" in out:
        pytest.skip("no TensorRT headers: TENSORRT_ROOT unset and scripts/dev/fetch_trt_headers.sh could not fetch them")
    assert r.returncode == 0, out[-8000:]
    assert "build_gpu_code: OK" in out


def _gpu_available() -> str | None:
    """None if a CUDA device seems present, else the reason why not."""
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except Exception:  # noqa: BLE001 - torch is only a hint here
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi, "-L"], capture_output=True, text=True)
        if r.returncode == 0 and "GPU" in r.stdout:
            return None
        return f"nvidia-smi found no GPU ({(r.stdout + r.stderr).strip()[:200]})"
    return "torch.cuda.is_available() is False and nvidia-smi is not installed"


@pytest.fixture(scope="module")
def parity_binary() -> Path:
    reason = _gpu_available()
    if reason:
        pytest.skip(f"no CUDA device: {reason}")
    exe = _require_nvcc()
    configure_and_build(GPU_BUILD, {"YOSO_BUILD_TESTS": "ON", "YOSO_BUILD_CUDA": "ON", "CMAKE_CUDA_COMPILER": exe},
                        ["yoso_cuda_parity_test"])
    return GPU_BUILD / "tests" / "gpu" / "yoso_cuda_parity_test"


def test_cuda_kernels_on_gpu(parity_binary):
    rc, out, (n, failed) = run_test_binary(parity_binary, timeout=1200)
    if rc == 77:
        pytest.skip(out.strip().splitlines()[-1])  # "no CUDA device: ..."
    assert rc == 0 and failed == 0, out[-8000:]
    assert n >= 7


@pytest.mark.parametrize("tool", ["memcheck", "racecheck"])
def test_cuda_kernels_compute_sanitizer(parity_binary, tool):
    sanitizer = shutil.which("compute-sanitizer") or next(
        (str(p) for p in sorted(Path("/usr/local").glob("cuda*/bin/compute-sanitizer"), reverse=True)), None)
    if sanitizer is None:
        pytest.skip("compute-sanitizer is not installed")
    # Smaller subsets keep the sanitizer runs short; the graph test is skipped under racecheck.
    tests = {"memcheck": ["gpu_invalid_inputs", "gpu_fast_hash_sequence", "gpu_lsh_sequence"],
             "racecheck": ["gpu_fast_hash_bit_exact", "gpu_lsh_random"]}[tool]
    for name in tests:
        rc, out, (n, failed) = run_test_binary(
            parity_binary, timeout=3600, args=[name],
            prefix=[sanitizer, "--tool", tool, "--error-exitcode", "3"]
            + (["--leak-check", "full"] if tool == "memcheck" else []))
        if rc == 77:
            pytest.skip(out.strip().splitlines()[-1])
        assert rc == 0 and failed == 0 and n >= 1, f"{tool} {name}:\n{out[-8000:]}"


def test_ort_library_builds_with_cuda_and_still_serves_the_cpu(tmp_path):
    """The CUDA build of libyoso_ort.so on a machine without a GPU: loads, and the CPU ops still work."""
    _require_nvcc()
    lib = GPU_BUILD / "plugins" / "libyoso_ort.so"
    if not lib.is_file():
        configure_and_build(GPU_BUILD, {"YOSO_BUILD_TESTS": "ON", "YOSO_BUILD_CUDA": "ON", "CMAKE_CUDA_COMPILER": nvcc()},
                            ["yoso_ort"])
    import json

    assert json.loads((lib.parent / "yoso_ort_build.json").read_text())["cuda"] is True
    code = f"""
import numpy as np, onnxruntime as ort, torch
from onnx import TensorProto, helper
from yoso_deploy.modeling import ops
x = torch.randn(1, 2, 5, 8); mask = torch.ones(1, 5, dtype=torch.int32)
signs = ops.draw_signs(2, 4, 3, 8, generator=torch.Generator().manual_seed(0))
node = helper.make_node("FastHash", ["x", "mask", "signs"], ["codes"], domain="com.yoso", num_hash=4, hash_code_len=3)
g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
    helper.make_tensor_value_info("mask", TensorProto.INT32, None), helper.make_tensor_value_info("signs", TensorProto.FLOAT, None)],
    [helper.make_tensor_value_info("codes", TensorProto.INT32, None)])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.yoso", 1)]); m.ir_version = 8
so = ort.SessionOptions(); so.register_custom_ops_library({str(lib)!r})
s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
got = s.run(None, {{"x": x.numpy(), "mask": mask.numpy(), "signs": signs.numpy()}})[0]
want = ops.fast_hash(x, mask, signs, 4, 3).numpy()
assert (got == want).all(), (got, want)
print("ok")
"""
    r = run([sys.executable, "-c", code], timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
