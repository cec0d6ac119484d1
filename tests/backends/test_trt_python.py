"""yoso_deploy.backends.trt without TensorRT: the clear error, and the pure-Python helpers (shapes, profiles).

``import tensorrt`` is made to fail with ``sys.modules["tensorrt"] = None`` so these tests behave the
same on machines that do have TensorRT.
"""

from __future__ import annotations

import sys

import pytest

from yoso_deploy.backends import trt as ytrt
from yoso_deploy._native import LibraryNotFoundError

pytestmark = pytest.mark.trt

MESSAGE = (
    "TensorRT runtime not installed: pip install tensorrt (needs an NVIDIA GPU with a driver); "
    "libyoso_trt.so must be built with YOSO_BUILD_TRT=ON and a real TENSORRT_ROOT"
)


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError


def test_require_tensorrt_message(no_tensorrt):
    with pytest.raises(ytrt.TensorRTUnavailableError) as e:
        ytrt.require_tensorrt()
    assert str(e.value) == MESSAGE
    assert isinstance(e.value.__cause__, ImportError)


def test_tensorrt_really_missing_here_gives_the_message():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ytrt.TensorRTUnavailableError, match="TensorRT runtime not installed: pip install tensorrt"):
            ytrt.require_tensorrt()
    else:  # pragma: no cover - machines with TensorRT
        pytest.skip("tensorrt is installed on this machine")


@pytest.mark.parametrize(
    "call",
    [
        lambda tmp: ytrt.build_engine(tmp / "model.onnx", tmp / "model.plan"),
        lambda tmp: ytrt.run_engine(tmp / "model.plan", {}),
        lambda tmp: ytrt.make_trt_runner(tmp / "model.plan"),
        lambda tmp: ytrt.load_plugins("auto"),
    ],
    ids=["build_engine", "run_engine", "make_trt_runner", "load_plugins"],
)
def test_entry_points_fail_first_with_the_message(no_tensorrt, tmp_path, call):
    with pytest.raises(ytrt.TensorRTUnavailableError) as e:
        call(tmp_path)
    assert str(e.value) == MESSAGE


def test_load_plugins_none_needs_nothing(no_tensorrt):
    assert ytrt.load_plugins(None) is None
    assert ytrt.load_plugins("none") is None


def test_trt_library_path_explains_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("YOSO_TRT_LIBRARY", str(tmp_path / "missing.so"))
    with pytest.raises(LibraryNotFoundError, match="YOSO_TRT_LIBRARY"):
        ytrt.trt_library_path()
    lib = tmp_path / "libyoso_trt.so"
    lib.write_bytes(b"")
    monkeypatch.setenv("YOSO_TRT_LIBRARY", str(lib))
    assert ytrt.trt_library_path() == lib
    monkeypatch.delenv("YOSO_TRT_LIBRARY")
    # Whether or not this installation has a libyoso_trt.so: where none is installed, the error says
    # how to build one (the candidates are replaced by a directory that holds none).
    import yoso_deploy._native as native

    nowhere = tmp_path / "empty" / "lib"
    monkeypatch.setattr(native, "_candidates", lambda name: iter([nowhere / name]))
    with pytest.raises(LibraryNotFoundError) as e:
        ytrt.trt_library_path()
    msg = str(e.value)
    assert "YOSO_BUILD_TRT=ON" in msg and "TENSORRT_ROOT" in msg and str(nowhere / "libyoso_trt.so") in msg, msg
    assert "YOSO_TRT_LIBRARY" in msg, msg  # and how to point at one built elsewhere


def test_parse_shapes():
    assert ytrt.parse_shapes("input_ids:1x128,attention_mask:1x128") == {
        "input_ids": (1, 128),
        "attention_mask": (1, 128),
    }
    assert ytrt.parse_shapes("x:4X3x2, y:7") == {"x": (4, 3, 2), "y": (7,)}
    assert ytrt.parse_shapes("") == {} and ytrt.parse_shapes(None) == {}
    assert ytrt.parse_shapes("onnx::name:1x2") == {"onnx::name": (1, 2)}  # the last ':' separates
    for bad in ["input_ids", "input_ids:1xa", ":1x2", "x:1x-2"]:
        with pytest.raises(ValueError):
            ytrt.parse_shapes(bad)


def test_profile_from_manifest():
    manifest = {
        "max_sequence_length": 512,
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "dims": ["batch", "sequence"]},
            {"name": "attention_mask", "dtype": "int64", "dims": ["batch", "sequence"]},
        ],
    }
    mins, opts, maxs = ytrt.profile_from_manifest(manifest)
    assert mins == {"input_ids": (1, 1), "attention_mask": (1, 1)}
    assert opts == {"input_ids": (1, 128), "attention_mask": (1, 128)}
    assert maxs == {"input_ids": (8, 512), "attention_mask": (8, 512)}
    mins, opts, maxs = ytrt.profile_from_manifest(manifest, batch=(1, 4, 16), sequence=(8, 1024, 256))
    assert opts["input_ids"] == (4, 256) and maxs["input_ids"] == (16, 256)  # opt clipped to max
    mc = {"max_sequence_length": 64, "inputs": [{"name": "input_ids", "dims": ["batch", "num_choices", "sequence"]}]}
    assert ytrt.profile_from_manifest(mc)[2] == {"input_ids": (8, 4, 64)}
    with pytest.raises(ValueError, match="unknown range"):
        ytrt.profile_from_manifest({"inputs": [{"name": "x", "dims": ["frames"]}]})


def test_profile_triple_rules():
    t = ytrt._profile_triple
    assert t("x", (1, 16), None, None, None) == ((1, 16), (1, 16), (1, 16))  # static input
    with pytest.raises(ValueError, match="dynamic shape"):
        t("x", (-1, 16), None, None, None)
    assert t("x", (-1, -1), None, {"x": (2, 64)}, None) == ((2, 64), (2, 64), (2, 64))
    assert t("x", (-1, -1), {"x": (1, 1)}, {"x": (2, 64)}, {"x": (8, 512)}) == ((1, 1), (2, 64), (8, 512))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        t("x", (-1, -1), {"x": (4, 1)}, {"x": (2, 64)}, {"x": (8, 512)})
    with pytest.raises(ValueError, match="rank"):
        t("x", (-1, -1), None, {"x": (2,)}, None)
    with pytest.raises(ValueError, match="contradicts the static"):
        t("x", (-1, 16), None, {"x": (2, 32)}, None)
