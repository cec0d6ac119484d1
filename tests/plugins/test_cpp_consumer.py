"""examples/cpp_consumer: an export run from C++ (ONNX Runtime C++ API) matches Python.

CMake builds ``yoso_ort_consumer`` (``-DYOSO_BUILD_CPP_CONSUMER=ON``) against the ONNX Runtime
headers libyoso_ort.so uses and the libonnxruntime of this Python's onnxruntime wheel; the program
registers libyoso_ort.so with ``RegisterCustomOpsLibrary``, reads token ids from a file and prints
every output, which must equal the Python session's (same runtime, same library, one thread).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from support.checkpoints import small_config
from support.native_build import ROOT, configure_and_build, run

import yoso_deploy
from yoso_deploy.workflow import export
from yoso_deploy.modeling import TASK_CLASSES
from yoso_deploy.runtime import create_session

pytestmark = [pytest.mark.slow, pytest.mark.native]  # builds the C++ example with CMake

BUILD = ROOT / "build" / "cpp-consumer"
EXE = BUILD / "examples" / "cpp_consumer" / "yoso_ort_consumer"


@pytest.fixture(scope="module")
def consumer():
    configure_and_build(BUILD, {"YOSO_BUILD_CPP_CONSUMER": "ON", "Python3_EXECUTABLE": sys.executable},
                        ["yoso_ort_consumer"])
    assert EXE.is_file()
    return EXE


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("cpp")
    torch.manual_seed(3)
    TASK_CLASSES["qa"](small_config()).save_pretrained(base / "ckpt")
    functions = export(base / "ckpt", base / "functions", task="qa", debug_codes=True, validate=False)
    off = export(base / "ckpt", base / "off", task="qa", debug_codes=True, validate=False, portable="off")
    return functions, off


ROWS = [[5, 17, 33, 8, 61, 2, 40, 9, 11], [7, 21, 3], [88, 4, 4, 19, 50, 6]]


def parse_outputs(text: str) -> dict[str, np.ndarray]:
    lines = text.strip().splitlines()
    out = {}
    for head, values in zip(lines[::2], lines[1::2]):
        tag, name, dtype, dims = head.split(" ")
        assert tag == "output", head
        shape = [int(d) for d in dims.strip("[]").split(",") if d]
        # %.9g is exact for float32 once parsed back into float32.
        arr = np.array(values.split(), dtype=np.float64).astype(np.float32) if dtype.startswith("float") else \
            np.array(values.split(), dtype=np.int64)
        out[name] = arr.reshape(shape)
    return out


def python_outputs(model_path, pad_id: int, names: list[str]) -> dict[str, np.ndarray]:
    seq = max(map(len, ROWS))
    ids = np.full((len(ROWS), seq), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(ROWS):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    sess = create_session(model_path, intra_op_threads=1)
    return dict(zip(names, sess.run(names, {"input_ids": ids, "attention_mask": mask})))


def _ids_file(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("# token ids, one sequence per line\n" + "\n".join(" ".join(map(str, r)) for r in ROWS) + "\n")
    return path


@pytest.mark.parametrize("library", [True, False], ids=["libyoso_ort", "function-bodies"])
def test_cpp_consumer_matches_python(consumer, exported, tmp_path, library):
    functions, _ = exported
    pad = small_config().pad_token_id
    cmd = [consumer, "--model", functions.onnx_path, "--input", _ids_file(tmp_path), "--threads", "1",
           "--pad-id", str(pad)]
    cmd += ["--library", yoso_deploy.ort_library_path()] if library else ["--no-library"]
    r = run(cmd, timeout=300)
    assert r.returncode == 0, r.stderr
    got = parse_outputs(r.stdout)
    names = [t["name"] for t in functions.manifest["outputs"] + functions.manifest["debug_outputs"]]
    want = python_outputs(functions.onnx_path, pad, names)
    assert list(got) == names
    for name in names:
        assert got[name].shape == want[name].shape, name
        if np.issubdtype(want[name].dtype, np.integer):
            assert np.array_equal(got[name], want[name]), name  # hash codes: identical
        else:
            # The library path is the same computation as Python's (bit for bit); the bodies agree to 1e-5.
            tol = 0.0 if library else 1e-5
            assert float(np.abs(got[name].astype(np.float64) - want[name]).max()) <= tol, name


def test_cpp_consumer_errors(consumer, exported, tmp_path):
    functions, off = exported
    ids = _ids_file(tmp_path)
    r = run([consumer, "--model", tmp_path / "missing.onnx", "--library", yoso_deploy.ort_library_path(),
             "--input", ids], timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("error:") and "missing.onnx" in r.stderr
    r = run([consumer, "--model", off.onnx_path, "--no-library", "--input", ids], timeout=60)
    assert r.returncode == 1 and "FastHash" in r.stderr  # --portable off: no bodies, needs the library
    (tmp_path / "bad.txt").write_text("5 six 7\n")
    r = run([consumer, "--model", functions.onnx_path, "--no-library", "--input", tmp_path / "bad.txt"], timeout=60)
    assert r.returncode == 1 and "bad.txt:1: 'six' is not a token id" in r.stderr
    r = run([consumer, "--model", functions.onnx_path, "--input", ids], timeout=60)
    assert r.returncode == 1 and "--library is required" in r.stderr
