"""The TensorRT plugins' host logic (plugins/trt/yoso_trt_plugin.cc), tested without TensorRT or a GPU.

Builds ``tests/cpp/trt_host_test.cc`` (CMake, YOSO_BUILD_TESTS=ON) against TensorRT's public headers
(``TENSORRT_ROOT``, a system install, or the compile-only headers of scripts/dev/fetch_trt_headers.sh)
and the CUDA runtime headers, links it with test stubs of the CUDA launch functions (no libnvinfer,
no CUDA runtime), and runs it: field parsing and validation, serialize/deserialize, output types and
shapes through a fake IExprBuilder, format combinations, workspace sizes, configure/onShapeChange
checks, and enqueue's dispatch to the kernels.
"""

from __future__ import annotations

import pytest

from support.native_build import ROOT, configure_and_build, run_test_binary

pytestmark = [pytest.mark.slow, pytest.mark.native, pytest.mark.trt]

BUILD = ROOT / "build" / "native-tests"


@pytest.fixture(scope="module")
def host_test_binary():
    options = {"YOSO_BUILD_TESTS": "ON", "YOSO_BUILD_CUDA": "OFF"}
    log = configure_and_build(BUILD, options, [])
    if "yoso_trt_host_test skipped" in log:
        pytest.skip("TensorRT or CUDA runtime headers unavailable: " +
                    next(line for line in log.splitlines() if "yoso_trt_host_test skipped" in line))
    configure_and_build(BUILD, options, ["yoso_trt_host_test"])
    return BUILD / "tests" / "cpp" / "yoso_trt_host_test"


def test_trt_plugin_host_logic(host_test_binary):
    rc, out, (n, failed) = run_test_binary(host_test_binary, timeout=300)
    assert rc == 0 and failed == 0, out[-6000:]
    assert n >= 10, f"expected the full host-logic suite, ran {n} tests"


def test_trt_host_binary_needs_no_tensorrt_or_cuda_runtime(host_test_binary):
    """The point of the design: the plugin classes link without libnvinfer and libcudart."""
    import subprocess

    deps = subprocess.run(["ldd", str(host_test_binary)], capture_output=True, text=True).stdout
    assert "libnvinfer" not in deps and "libcudart" not in deps, deps
