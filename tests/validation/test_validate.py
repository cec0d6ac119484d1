"""yoso-deploy validate (polygraphy parity) and bench (latency report)."""

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from support.checkpoints import small_config
from transformers import YosoForQuestionAnswering

from yoso_deploy import bench
from yoso_deploy.validation import validate
from yoso_deploy.cli.main import main
from yoso_deploy.workflow import export


@pytest.fixture(scope="module")
def qa_export(tmp_path_factory):
    base = tmp_path_factory.mktemp("validate")
    torch.manual_seed(21)
    YosoForQuestionAnswering(small_config()).save_pretrained(base / "ckpt")
    export(base / "ckpt", base / "good", task="qa", debug_codes=True, validate=False)
    return base


def corrupt_signs(src, dst):
    """Copy an export, flipping one sign of the first FastHash's signs initializer."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.onnx":
            (dst / f.name).write_bytes(f.read_bytes())
    model = onnx.load(str(src / "model.onnx"))
    fh = next(n for n in model.graph.node if n.op_type == "FastHash")
    init = next(i for i in model.graph.initializer if i.name == fh.input[2])
    arr = onnx.numpy_helper.to_array(init).copy()
    arr[0, 0, 0, :] *= -1  # one head's first diagonal: a different hash function for layer 0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(dst / "model.onnx"))


def test_validate_passes_on_good_export(qa_export, tmp_path):
    res = validate.compare(qa_export / "good", backends=["torch", "ort-cpu", "trt"], batches=[1, 3], seq_lens=[9, 70],
                           report_dir=tmp_path / "rep")
    assert res.passed, res.table()
    names = {r.name for r in res.results}
    assert {"start_logits", "end_logits", "layer 0 query", "layer 1 key", "hidden_states.2 (layer 1)",
            "layer 1 value", "layer 0 attention (LSHCumulation output)"} <= names
    codes = [r for r in res.results if r.kind == "codes"]
    assert len(codes) == 2 * 2 * 4 and all(r.codes.compared > 0 and r.codes.non_ties == 0 for r in codes)
    assert all(r.max_abs <= 1e-4 for r in res.results if r.kind != "codes")
    assert len(res.cases) == 4
    data = json.loads((tmp_path / "rep" / "validation.json").read_text())
    assert data["passed"] is True and data["backends"]["trt"]["available"] is False
    assert "tensorrt" in data["backends"]["trt"]["reason"]
    assert len(data["cases"]) == 4  # one entry per (backend, batch, seq)
    assert {c["case"] for c in data["cases"]} == {"1x9", "1x70", "3x9", "3x70"}


def test_validate_fails_on_corrupted_export(qa_export):
    corrupt_signs(qa_export / "good", qa_export / "bad")
    res = validate.compare(qa_export / "bad", backends=["torch", "ort-cpu"], batches=[2], seq_lens=[40])
    assert not res.passed
    failed = {f.name for f in res.failures()}
    assert failed == {"layer 0 query", "layer 0 key"}  # only layer 0 was corrupted; codes injected after it
    assert res.first_failure().layer == 0
    r = CliRunner().invoke(main, ["validate", "--model", str(qa_export / "bad"), "--backends", "torch,ort-cpu",
                                  "--batch", "2", "--seq-len", "40"])
    assert r.exit_code == 1
    assert "validation FAILED for ort-cpu:layer 0 query (input 2x40)" in r.output


def test_validate_uses_polygraphy(qa_export, monkeypatch):
    from polygraphy.backend.base import BaseRunner
    from polygraphy.comparator import Comparator

    calls = []
    real = Comparator.run

    def spy(runners, **kw):
        calls.append([type(r) for r in runners])
        return real(runners, **kw)

    monkeypatch.setattr(Comparator, "run", staticmethod(spy))
    res = validate.compare(qa_export / "good", backends=["torch", "ort-cpu"], batches=[1], seq_lens=[5])
    assert res.passed and len(calls) == 1
    assert all(issubclass(t, BaseRunner) for t in calls[0])
    assert [t.__name__ for t in calls[0]] == ["OnnxrtRunner"]


def test_validate_is_quiet_unless_verbose(qa_export):
    args = ["validate", "--model", str(qa_export / "good"), "--backends", "torch,ort-cpu", "--batch", "1",
            "--seq-len", "5"]
    quiet = CliRunner().invoke(main, args)
    assert quiet.exit_code == 0, quiet.output
    assert not [ln for ln in quiet.output.splitlines() if ln.lstrip().startswith(("[I]", "[W]", "[E]", "[V]"))]
    loud = CliRunner().invoke(main, args + ["--verbose"])
    assert loud.exit_code == 0 and any(ln.lstrip().startswith("[I]") for ln in loud.output.splitlines())


def test_validate_cli_and_inputs_file(qa_export, tmp_path):
    feeds = {"input_ids": [[0, 5, 9, 2, 1]], "attention_mask": [[1, 1, 1, 1, 0]]}
    (tmp_path / "in.json").write_text(json.dumps(feeds))
    r = CliRunner().invoke(main, ["validate", "--model", str(qa_export / "good"), "--inputs", str(tmp_path / "in.json"),
                                  "--atol", "1e-4", "--atol", "start_logits=1e-3", "--report", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert "skipped trt:" in r.output and "skipped ort-cuda:" in r.output and "validation passed" in r.output
    assert (tmp_path / "r" / "validation.md").is_file()
    np.savez(tmp_path / "in.npz", **{k: np.asarray(v, dtype=np.int64) for k, v in feeds.items()})
    res = validate.compare(qa_export / "good", backends=["torch", "ort-cpu"], inputs=tmp_path / "in.npz")
    assert res.passed and res.cases == [{"input_ids": [1, 5], "attention_mask": [1, 5]}]


def test_validate_errors(qa_export, tmp_path):
    with pytest.raises(validate.ValidationError, match="unknown backend"):
        validate.compare(qa_export / "good", backends=["tpu"])
    with pytest.raises(validate.ValidationError, match="need the torch reference"):
        validate.compare(qa_export / "good", backends=["ort-cpu", "trt"])
    with pytest.raises(validate.ValidationError, match="need the torch reference and at least one other"):
        validate.compare(qa_export / "good", backends=["torch"])
    with pytest.raises(FileNotFoundError, match="no yoso_export.json"):
        validate.compare(tmp_path)
    with pytest.raises(validate.ValidationError, match="exceeds the model's maximum"):
        validate.compare(qa_export / "good", backends=["torch", "ort-cpu"], seq_lens=[100000])


def test_bench_report(qa_export, tmp_path):
    res = bench.run(qa_export / "good", backends=["ort-cpu", "torch", "trt"], batches=[1, 2], seq_lens=[16, 64],
                    warmup=1, iterations=3, report_dir=tmp_path)
    assert {(c.backend, c.batch, c.seq_len) for c in res.cases} == {
        (b, n, s) for b in ("ort-cpu", "torch") for n in (1, 2) for s in (16, 64)}
    for c in res.cases:
        lat = c.latency_ms
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
        assert c.iterations == 3 and c.peak_memory_mb > 10
        assert c.tokens_per_s == pytest.approx(c.sequences_per_s * c.seq_len)
        assert c.sequences_per_s == pytest.approx(c.batch * 1000 / lat["mean"], rel=1e-6)
    for name in ("report.json", "report.md", "latency.png"):
        assert (tmp_path / name).stat().st_size > 100
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "report.md").read_text()
    assert "| ort-cpu | 2 | 64 |" in md and "trt:" in md
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["machine"]["cores"] >= 1 and len(data["cases"]) == 8


def test_bench_cli(qa_export, tmp_path):
    r = CliRunner().invoke(main, ["bench", "--model", str(qa_export / "good"), "--seq-len", "8,32", "--iterations", "2",
                                  "--warmup", "0", "--report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "p50 ms" in r.output and (tmp_path / "latency.png").is_file()
    r = CliRunner().invoke(main, ["bench", "--model", str(qa_export / "good"), "--batch", "0"])
    assert r.exit_code == 2 and "positive integers" in r.output


def test_validate_portable_backends(qa_export, tmp_path):
    """Stock ONNX Runtime (the export's function bodies) and OpenVINO, judged like the library."""
    pytest.importorskip("openvino", reason="OpenVINO (pip install openvino) runs the openvino backend")
    res = validate.compare(qa_export / "good", backends=["torch", "ort-portable", "openvino"], batches=[2],
                           seq_lens=[33])
    assert res.passed, res.table()
    assert {c.backend for c in res.results} == {"ort-portable", "openvino"}
    assert all(c.codes.kernel_mismatches == 0 for c in res.results if c.kind == "codes")
    export(qa_export / "ckpt", tmp_path / "off", task="qa", portable="off", validate=False)
    with pytest.raises(validate.ValidationError, match="ort-portable: the export has no function bodies"):
        validate.compare(tmp_path / "off", backends=["torch", "ort-portable"], batches=[1], seq_lens=[8])
