"""OpenVINO's inference precision: f32 by default (bf16 flips LSH hash bits), read back and reported by validate."""

import pytest
from click.testing import CliRunner
from support.checkpoints import random_checkpoint

from yoso_deploy.workflow import export

BF16 = {"INFERENCE_PRECISION_HINT": "bf16"}


def _openvino():
    try:
        import openvino
    except ImportError as e:
        print(f"skipping: openvino is not importable ({e})")
        pytest.skip(f"OpenVINO (pip install openvino) is needed for the openvino backend: {e}")
    return openvino


def _require_bf16():
    """Skip (with the reason printed) unless this CPU has bf16 instructions and OpenVINO's CPU plugin offers BF16."""
    ov = _openvino()
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        flags = set()
    if not flags & {"avx512_bf16", "amx_bf16"}:
        why = "this CPU has neither avx512_bf16 nor amx_bf16, so OpenVINO cannot run bf16"
        print(f"skipping: {why}")
        pytest.skip(why)
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        why = f"OpenVINO's CPU plugin does not offer BF16 here (capabilities {caps})"
        print(f"skipping: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def inline_export(tmp_path_factory):
    """A tiny QA checkpoint and its ``--portable inline`` export (no post-export check)."""
    base = tmp_path_factory.mktemp("ov-precision")
    ckpt = random_checkpoint(base / "ckpt", "qa")
    return export(ckpt, base / "inline", task="qa", validate=False, portable="inline")


def test_default_precision_is_f32(inline_export):
    _openvino()
    from yoso_deploy.backends.portable import compile_openvino, openvino_precision

    assert inline_export.manifest["portable"] == "inline"
    compiled = compile_openvino(inline_export.onnx_path, threads=1)
    assert openvino_precision(compiled) == "f32"


def test_precision_unknown_when_unreadable():
    from yoso_deploy.backends.portable import openvino_precision

    class NoProperty:
        def get_property(self, name):
            raise RuntimeError(f"no property {name}")

    assert openvino_precision(NoProperty()) == "unknown"
    assert openvino_precision(object()) == "unknown"


def test_bf16_is_read_back_and_validate_warns(inline_export, monkeypatch):
    _require_bf16()
    from yoso_deploy.backends import portable
    from yoso_deploy.cli.main import main
    from yoso_deploy.validation.backends import make_openvino_runner
    from yoso_deploy.validation.validate import precision_notes

    assert portable.openvino_precision(portable.compile_openvino(inline_export.onnx_path, threads=1,
                                                                 config=BF16)) == "bf16"

    # The runner records what it ran at; validate's notes name it and warn for anything but f32.
    with make_openvino_runner(inline_export.onnx_path, threads=1) as f32_runner:
        assert f32_runner.precision == "f32"
    assert precision_notes([f32_runner]) == ["openvino: inference precision f32"]
    with make_openvino_runner(inline_export.onnx_path, threads=1, config=BF16) as bf16_runner:
        assert bf16_runner.precision == "bf16"
    notes = precision_notes([bf16_runner])
    assert notes[0] == "openvino: inference precision bf16"
    assert notes[1].startswith("warning: openvino ran at inference precision bf16")
    assert "flips LSH hash bits" in notes[1]

    # The smallest validate run, with OpenVINO made to pick bf16: the warning is printed (pass or fail).
    real = portable.compile_openvino
    monkeypatch.setattr(portable, "compile_openvino",
                        lambda path, device="CPU", threads=None, config=None: real(path, device, threads, BF16))
    r = CliRunner().invoke(main, ["validate", "--model", str(inline_export.output_dir), "--backends", "torch,openvino",
                                  "--batch", "1", "--seq-len", "16", "--threads", "1"])
    assert r.exit_code in (0, 1), r.output
    assert "openvino: inference precision bf16" in r.output, r.output
    assert "warning: openvino ran at inference precision bf16" in r.output and "parity is expected to fail" in r.output
