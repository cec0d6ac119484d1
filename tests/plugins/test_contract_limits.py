"""The op contract's limits live in one place, plugins/common/yoso_limits.h, and every implementation
agrees with it: the C++ that includes it (compiled here and printed), the Python side that parses it
(yoso_deploy.modeling.ops), the installed copy the package reads, ONNX Runtime's kernels and OPS.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from yoso_deploy.modeling import ops

REPO = Path(__file__).resolve().parents[2]
HEADER = REPO / "plugins" / "common" / "yoso_limits.h"
NAMES = {"kMaxHashDim": "MAX_HASH_DIM", "kMaxHashCodeLen": "MAX_HASH_CODE_LEN",
         "kMaxCudaHashCodeLen": "MAX_CUDA_HASH_CODE_LEN"}


def _compiled_limits(tmp_path) -> dict:
    """The values the native code compiles: a program built against plugins/common and plugins/cuda
    (yoso_core.h, yoso_validate.h and the CUDA plan use the constants) prints them."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    assert cxx, "a C++ compiler (g++ or $CXX) is required to read the compiled limits"
    src = tmp_path / "limits.cc"
    src.write_text('#include <cstdio>\n#include "yoso_core.h"\n#include "yoso_validate.h"\n'
                   "int main() { std::printf(\"%d %d %d\\n\", yoso::kMaxHashDim, yoso::kMaxHashCodeLen, "
                   "yoso::kMaxCudaHashCodeLen); }\n")
    exe = tmp_path / "limits"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    r = subprocess.run([cxx, "-std=c++17", f"-I{REPO / 'plugins' / 'common'}", str(src), "-o", str(exe)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    values = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30, env=env).stdout.split()
    return dict(zip(NAMES, map(int, values)))


def test_python_limits_are_the_compiled_ones(tmp_path):
    compiled = _compiled_limits(tmp_path)
    assert compiled == {"kMaxHashDim": 1024, "kMaxHashCodeLen": 30, "kMaxCudaHashCodeLen": 16}, compiled
    for cname, pyname in NAMES.items():
        assert getattr(ops, pyname) == compiled[cname], (pyname, getattr(ops, pyname), compiled[cname])


def test_limits_are_defined_only_in_yoso_limits_h():
    """No other native file or Python module restates a limit as a literal definition."""
    for path in [*(REPO / "plugins").rglob("*.h"), *(REPO / "plugins").rglob("*.cc"), *(REPO / "plugins").rglob("*.cu")]:
        if path == HEADER:
            continue
        text = path.read_text()
        for cname in NAMES:
            assert f"int {cname} =" not in text, f"{path.relative_to(REPO)} defines {cname} again"
    for path in (REPO / "yoso_deploy").rglob("*.py"):
        text = path.read_text()
        for pyname in NAMES.values():
            assert f"{pyname} = 1" not in text and f"{pyname} = 3" not in text, f"{path} hard-codes {pyname}"


def test_installed_copy_matches_the_source():
    """The wheel ships the header next to ops.py (plugins/CMakeLists.txt installs it); an installed
    package must carry the same limits as the checkout it was built from."""
    import sysconfig

    copies = {Path(sysconfig.get_paths()[k]) / "yoso_deploy" / "modeling" / "yoso_limits.h" for k in ("purelib", "platlib")}
    copies = [p for p in copies if p.is_file()]
    if not copies:
        pytest.skip("no installed yoso_deploy next to this interpreter (running from the checkout only): "
                    "nothing to compare")
    for copy in copies:
        assert copy.read_text() == HEADER.read_text(), f"{copy} differs from {HEADER}"


def test_ort_kernels_enforce_the_limits(tmp_path):
    """ONNX Runtime's kernels accept hash_code_len = kMaxHashCodeLen and refuse one more, naming the limit."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from yoso_deploy import ort_library_path

    def session(tau):
        node = helper.make_node("LSHCumulation", ["qc", "kc", "qm", "km", "v"], ["out"], domain=ops.OP_DOMAIN,
                                hash_code_len=tau)
        vi = helper.make_tensor_value_info
        g = helper.make_graph([node], "g", [vi(n, TensorProto.INT32, None) for n in ("qc", "kc", "qm", "km")]
                              + [vi("v", TensorProto.FLOAT, None)], [vi("out", TensorProto.FLOAT, None)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.OP_DOMAIN, 1)])
        m.ir_version = 8
        so = ort.SessionOptions()
        so.register_custom_ops_library(str(ort_library_path()))
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    session(ops.MAX_HASH_CODE_LEN)
    with pytest.raises(Exception) as info:
        session(ops.MAX_HASH_CODE_LEN + 1)
    msg = str(info.value)
    assert f"must be in [1, {ops.MAX_HASH_CODE_LEN}]; got {ops.MAX_HASH_CODE_LEN + 1}" in msg, msg
    assert "kMaxHashCodeLen" in msg and f"CUDA backend's LSHCumulation allows at most {ops.MAX_CUDA_HASH_CODE_LEN}" in msg


def test_ops_md_states_the_limits():
    text = (REPO / "plugins" / "OPS.md").read_text()
    assert "yoso_limits.h" in text
    assert f"{ops.MAX_HASH_DIM}" in text and f"[1, {ops.MAX_HASH_CODE_LEN}]" in text
    assert f"{ops.MAX_CUDA_HASH_CODE_LEN}" in text and "kMaxCudaHashCodeLen" in text
