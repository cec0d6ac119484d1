"""int8 quantization (yoso_deploy.quantization.quantize, `yoso-deploy quantize`, `export --quantize int8`) and its
judgement (yoso_deploy.validation.int8_criteria, `validate` on an int8 export): tiny models, plus one yoso-4096-sized check."""

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from support.checkpoints import REPO, tiny_checkpoint
from onnx import numpy_helper

from yoso_deploy import tasks
from yoso_deploy.validation import validate
from yoso_deploy.cli.main import main
from yoso_deploy.export.probes import PROBES_METADATA_KEY, find_probes
from yoso_deploy.validation.int8_criteria import (DEFAULT_THRESHOLDS, TASK_DECISIONS, Int8Thresholds, RunValues, compare_decisions,
                                     cosine, decision_rows, judge_int8, parse_thresholds)
from yoso_deploy.manifest import load_manifest, write_manifest
from yoso_deploy.quantization.quantize import (QuantizationCheckError, QuantizeError, check_against_fp32, dense_nodes, quantize,
                                      select_nodes)
from yoso_deploy.runtime import YosoOrtModel, pipeline


@pytest.fixture(scope="module")
def qa(tmp_path_factory, task_exports):
    """The tiny QA export (fp32) and its default int8 export."""
    base = tmp_path_factory.mktemp("quantize")
    res = quantize(task_exports["qa"], base / "int8")
    return task_exports["qa"], base / "int8", res


def _error_line(r):
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    return lines[0]


# ------------------------------------------------------------------------------------------------
# The int8 export
# ------------------------------------------------------------------------------------------------


def test_int8_export_is_an_export_every_consumer_accepts(qa):
    fp32, int8, res = qa
    m = load_manifest(int8)
    q = m["quantization"]
    assert q["method"] == "dynamic" and q["qk"] == "int8" and q["weight_type"] == "int8"
    assert q["activation_type"] == "uint8" and q["per_channel"] is False and q["reduce_range"] is False
    assert len(q["quantized_nodes"]) == 2 * 6 + 1 and q["excluded_nodes"] == []
    assert (int8 / q["source_export"]).resolve() == fp32.resolve()
    assert m["parity"]["status"] == "passed" and m["parity"]["kind"] == "int8"
    assert m["source_model"] and (int8 / m["source_model"] / "config.json").is_file()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (int8 / f).is_file()
    g = onnx.load(str(int8 / "model.onnx"))
    ops = [n.op_type for n in g.graph.node]
    assert ops.count("MatMulInteger") == 13 and "MatMul" not in ops
    assert ops.count("FastHash") == 4 and ops.count("LSHCumulation") == 2  # the com.yoso nodes are untouched
    assert {f.name for f in g.functions} == {"FastHash", "LSHCumulation"}  # and their portable bodies kept
    # the probe record names values that still feed and leave every com.yoso node
    probes = find_probes(g)
    assert probes.names() == find_probes(onnx.load(str(fp32 / "model.onnx"))).names()
    meta = {p.key for p in g.metadata_props}
    assert PROBES_METADATA_KEY in meta and "yoso.quantization" in meta
    # runtime model classes, pipelines and the CLI run it
    ids = np.array([[0, 5, 6, 7, 2]], dtype=np.int64)
    out = YosoOrtModel.from_pretrained(int8)(input_ids=ids)
    ref = YosoOrtModel.from_pretrained(fp32)(input_ids=ids)
    assert cosine(out.start_logits, ref.start_logits) > 0.99
    answer = pipeline(str(int8))(question="Where did Ada move?", context="Ada moved to Oslo in 1999.")
    assert set(answer) >= {"answer", "score", "start", "end"}
    r = CliRunner().invoke(main, ["qa", "--model", str(int8), "--question", "Where?", "--context", "Ada moved to Oslo."])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["run", "--model", str(int8), "--text", "Where?", "--text-pair", "Ada moved to Oslo."])
    assert r.exit_code == 0 and '"answer"' in r.output, r.output
    r = CliRunner().invoke(main, ["bench", "--model", str(int8), "--seq-len", "16", "--iterations", "2", "--warmup", "1"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("task", sorted(tasks.TASKS))
def test_every_task_quantizes_and_runs(task_exports, tmp_path, task):
    res = quantize(task_exports[task], tmp_path / "int8", check_shapes=((2, 16), (1, 40)))
    assert res.ok and res.manifest["parity"]["status"] == "passed", res.table()
    model = YosoOrtModel.from_pretrained(tmp_path / "int8")
    shape = (1, 2, 6) if task == "multiple-choice" else (1, 6)
    outs = model.run({"input_ids": np.full(shape, 5, dtype=np.int64)})
    assert all(np.isfinite(v).all() for v in outs.values())
    assert task in TASK_DECISIONS


def test_static_qdq_calibrates_on_text_with_progress(task_exports, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text("Where did Ada move?\tAda moved to Oslo in 1999.\nWho bought a lamp?\tOtto bought a red lamp.\n")
    msgs = []
    res = quantize(task_exports["qa"], tmp_path / "static", method="static", calibration=text, progress=msgs.append)
    q = res.manifest["quantization"]
    assert q["method"] == "static" and q["format"] == "QDQ"
    assert q["calibration"]["source"] == "text" and q["calibration"]["samples"] == 2
    assert any("calibration 2/2 inputs" in m for m in msgs) and any(m.startswith("calibrating") for m in msgs)
    g = onnx.load(str(res.onnx_path))
    quantized = set(q["quantized_nodes"])
    dq_out = {n.output[0] for n in g.graph.node if n.op_type == "DequantizeLinear"}
    q_out = {n.output[0] for n in g.graph.node if n.op_type == "QuantizeLinear"}
    assert q_out and dq_out
    # activation Q/DQ pairs feed the quantized projections only: residual adds etc. read the fp32 tensors
    act_dq = {n.output[0] for n in g.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in q_out}
    for n in g.graph.node:
        if n.name not in quantized and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            assert not set(n.input) & act_dq, n.name
    assert res.ok, res.table()
    # generated calibration inputs
    res2 = quantize(task_exports["qa"], tmp_path / "static2", method="static", calibration_samples=3,
                    calibration_seq_len=24)
    assert res2.manifest["quantization"]["calibration"] == {
        "source": "generated", "samples": 3, "seq_len": 24,
        "note": "random token ids; calibrate on real text (--calibration FILE) for real traffic"}


def test_qk_fp32_and_exclude_keep_projections_fp32(task_exports, tmp_path):
    src = task_exports["qa"]
    res = quantize(src, tmp_path / "qk", qk="fp32", exclude=["qa_outputs", "*.layer.1.output.dense"])
    q = res.manifest["quantization"]
    assert sorted(q["excluded_modules"]) == sorted(
        [f"yoso.encoder.layer.{i}.attention.self.{r}" for i in (0, 1) for r in ("query", "key")]
        + ["qa_outputs", "yoso.encoder.layer.1.output.dense"])
    g = onnx.load(str(res.onnx_path))
    kept = {n.name for n in g.graph.node if n.op_type == "MatMul"}
    assert kept == set(q["excluded_nodes"])
    # with the first layer's Q/K projections fp32 and nothing quantized before them, its codes are the fp32 export's
    codes = {c.name: c for c in res.report.comparisons if c.kind == "codes"}
    assert codes["layer 0 query codes"].value == 1.0 and codes["layer 0 key codes"].value == 1.0
    dense = dense_nodes(onnx.load(str(src / "model.onnx")))
    with pytest.raises(QuantizeError, match="--exclude 'nothing.like.this' matches no dense projection"):
        select_nodes(dense, "int8", ["nothing.like.this"])
    with pytest.raises(QuantizeError, match="nothing would be quantized"):
        select_nodes(dense, "int8", ["*"])


def test_quantize_runs_without_torch(task_exports, tmp_path):
    """Quantization is torch-free (onnx + onnxruntime.quantization): a fresh interpreter with torch unimportable."""
    code = ("import sys\nsys.modules['torch'] = None\nsys.modules['transformers'] = None\n"
            "from yoso_deploy.quantization.quantize import quantize\n"
            f"r = quantize({str(task_exports['sequence-classification'])!r}, {str(tmp_path / 'q')!r})\n"
            "print('OK', r.ok)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK True" in r.stdout, r.stderr[-3000:]


# ------------------------------------------------------------------------------------------------
# Bad inputs: one line naming the fix, nothing written
# ------------------------------------------------------------------------------------------------


def _copy_export(src, dst, edit_manifest):
    shutil.copytree(src, dst)
    m = load_manifest(dst)
    edit_manifest(m)
    write_manifest(dst, m)
    return dst


def test_bad_inputs_are_one_line_errors(qa, tmp_path):
    fp32, int8, _ = qa
    failed = _copy_export(fp32, tmp_path / "failed", lambda m: m.update(
        parity={"status": "failed", "first_failure": "ort-cpu 2x16 layer 0 query"}))
    fp16 = _copy_export(fp32, tmp_path / "fp16", lambda m: m.update(dtype="fp16"))
    out = tmp_path / "out"
    cases = [
        (["--model", str(int8)], "is already an int8 export", f"--model {fp32.resolve()}"),
        (["--model", str(fp16)], "is a fp16 export", "re-export with 'yoso-deploy export --dtype fp32'"),
        (["--model", str(failed)], "failed its post-export parity check (first failure: ort-cpu 2x16 layer 0 query)",
         "fix and re-export it"),
        (["--model", str(tmp_path / "missing")], "does not exist", "make it with 'yoso-deploy export --output"),
        (["--model", str(fp32), "--preset", "avx3"], "unknown preset 'avx3'", "avx2, avx512-vnni, arm64, auto"),
        (["--model", str(fp32), "--calibration-samples", "4"], "dynamic quantization takes no calibration data",
         "--method static"),
        (["--model", str(fp32), "--method", "static", "--calibration", str(tmp_path / "none.txt")],
         "does not exist", "one example per line"),
        (["--model", str(fp32), "--exclude", "typo.dense"], "matches no dense projection", "node names or checkpoint"),
        (["--model", str(fp32), "--output", str(fp32 / "tokenizer.json")], "exists and is not a directory", "choose"),
        (["--model", str(fp32), "--output", str(fp32)], "is the source export itself", "choose another directory"),
    ]
    for args, problem, fix in cases:
        full = ["quantize", *args] + ([] if "--output" in args else ["--output", str(out)])
        line = _error_line(CliRunner().invoke(main, full))
        assert problem in line and fix in line, line
        assert not out.exists(), args
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    line = _error_line(CliRunner().invoke(main, ["quantize", "--model", str(fp32), "--output", str(tmp_path / "busy")]))
    assert "not empty and holds no previous export" in line and (tmp_path / "busy" / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------
# The judgement: a wrong scale fails, and validate uses it for int8 exports
# ------------------------------------------------------------------------------------------------


def wrong_scale(src, dst, weight, factor):
    """Copy an int8 export with the scale of one quantized weight multiplied by ``factor`` (a broken quantization)."""
    shutil.copytree(src, dst)
    g = onnx.load(str(dst / "model.onnx"))
    init = next(i for i in g.graph.initializer if i.name == weight + "_scale")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(g, str(dst / "model.onnx"))
    m = load_manifest(dst)  # the copy still names the same fp32 export and checkpoint
    m["quantization"]["source_export"] = str((src / m["quantization"]["source_export"]).resolve())
    m["source_model"] = str((src / m["source_model"]).resolve())
    write_manifest(dst, m)
    return dst


def test_validate_judges_int8_against_fp32_and_torch(qa, tmp_path):
    fp32, int8, _ = qa
    r = CliRunner().invoke(main, ["validate", "--model", str(int8), "--batch", "1,4", "--seq-len", "16,128",
                                  "--report", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert "ort-cpu int8 vs fp32 export, input 4x128 (int8 criteria): ok" in r.output
    assert "ort-cpu int8 vs torch, all inputs (int8 criteria): ok" in r.output
    assert "layer 1 key codes" in r.output and "code agreement" in r.output and "validation passed" in r.output
    data = json.loads((tmp_path / "rep" / "validation.json").read_text())
    assert data["passed"] and {c["against"] for c in data["cases"]} == {"fp32 export", "torch"}
    # without the fp32 export, the reference alone (with a note)
    moved = tmp_path / "alone"
    shutil.copytree(int8, moved)
    m = load_manifest(moved)
    m["quantization"]["source_export"] = "../gone"
    m["source_model"] = str((int8 / load_manifest(int8)["source_model"]).resolve())
    write_manifest(moved, m)
    res = validate.compare(moved, batches=[2], seq_lens=[32])
    assert res.passed and {c.against for c in res.results} == {"torch"}
    assert any("not compared with the fp32 export" in n for n in res.report.notes)


@pytest.fixture(scope="module")
def default_int8(tmp_path_factory):
    """The embedded default (trained) model: fp32 export and default int8 export."""
    from yoso_deploy.workflow import export

    base = tmp_path_factory.mktemp("default-int8")
    export(REPO / "model", base / "fp32", task="qa", validate=False)
    quantize(base / "fp32", base / "int8")
    return base / "fp32", base / "int8"


def test_a_wrong_scale_fails_validation(default_int8, tmp_path):
    """A deliberately wrong scale -- layer 1's FFN output projection x 2 in the trained default model -- fails the
    default thresholds against the fp32 export and against the reference, named at layer 1; the correct int8
    export passes. (In tiny random-weight models such a scale barely matters: YOSO normalises attention outputs
    and small FFN outputs vanish in the residual; the trained model is where it shows.)"""
    fp32, int8 = default_int8
    good = validate.compare(int8, batches=[1, 4], seq_lens=[16, 128])
    assert good.passed, good.table()
    bad = wrong_scale(int8, tmp_path / "bad", "yoso.encoder.layer.1.output.dense.weight.T", 2.0)
    res = validate.compare(bad, batches=[1, 4], seq_lens=[16, 128])
    assert not res.passed
    failed = {(f.against, f.name) for f in res.failures()}
    assert ("fp32 export", "hidden_states.2 (layer 1)") in failed and ("torch", "hidden_states.2 (layer 1)") in failed
    assert ("fp32 export", "layer 2 query codes") in failed  # the codes of the next layer move
    assert all(f.layer is None or f.layer >= 1 for f in res.failures())  # layer 0 is still right
    assert res.first_failure().layer == 1
    r = CliRunner().invoke(main, ["validate", "--model", str(bad), "--batch", "1,4", "--seq-len", "16,128"])
    assert r.exit_code == 1 and "validation FAILED for ort-cpu int8:hidden_states.2 (layer 1)" in r.output, r.output
    # the post-quantization check's judgement catches it as well
    m = load_manifest(bad)
    rep = check_against_fp32(bad, m, fp32, load_manifest(fp32), ((2, 16), (3, 77), (2, 512)))
    assert not rep.passed and rep.first_failure().layer == 1
    # loosening the thresholds is explicit
    r = CliRunner().invoke(main, ["validate", "--model", str(bad), "--batch", "1,4", "--seq-len", "16,128",
                                  "--int8-threshold", "min_hidden_cosine=0.9", "--int8-threshold",
                                  "min_code_agreement=0.1"])
    assert r.exit_code == 0, r.output


def test_failed_quantization_is_marked_and_refused(qa, tmp_path, monkeypatch):
    """A quantization that fails its check keeps the files, marks the manifest failed, and is refused."""
    fp32, _, _ = qa
    strict = Int8Thresholds(min_output_cosine=1.01)  # unattainable: every output fails
    with pytest.raises(QuantizationCheckError, match="marked failed"):
        quantize(fp32, tmp_path / "q", thresholds=strict)
    m = load_manifest(tmp_path / "q")
    assert m["parity"]["status"] == "failed" and m["parity"]["kind"] == "int8"
    with pytest.raises(RuntimeError, match="failed its post-quantization check"):
        YosoOrtModel.from_pretrained(tmp_path / "q")
    assert YosoOrtModel.from_pretrained(tmp_path / "q", allow_failed_export=True) is not None


def test_export_quantize_shortcut(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "ckpt", "sequence-classification", seed=3)
    r = CliRunner().invoke(main, ["export", "--model", str(ckpt), "--output", str(tmp_path / "cls"), "--quantize", "int8"])
    assert r.exit_code == 0, r.output
    assert "post-export check: passed" in r.output and "post-quantization check: passed" in r.output
    m = load_manifest(tmp_path / "cls")
    assert m["quantization"]["source_export"] == "fp32" and load_manifest(tmp_path / "cls" / "fp32")["parity"]["status"] == "passed"
    assert pipeline(str(tmp_path / "cls"))("a fine film")[0]["label"] in ("negative", "neutral", "positive")


# ------------------------------------------------------------------------------------------------
# The criteria themselves
# ------------------------------------------------------------------------------------------------


def test_criteria_units():
    assert cosine(np.ones(3), np.ones(3)) == pytest.approx(1.0) and cosine(np.zeros(2), np.zeros(2)) == 1.0
    assert cosine(np.array([1.0, 0]), np.array([0, 1.0])) == 0.0
    mask = np.array([[True, True, True, False]])
    rows = decision_rows("qa", "start_logits", np.array([[1.0, 5.0, 4.99, 9.0]]), mask)
    assert rows[0].shape == (1, 4) and rows[1].tolist() == mask.tolist()  # the masked 9.0 is not a choice
    # int8 picks token 2: the reference preferred token 1 by 0.01 of a 4.0 range -> a near-tie, not a disagreement
    got = decision_rows("qa", "start_logits", np.array([[1.0, 4.9, 5.0, 0.0]]), mask)
    assert compare_decisions(rows, got, 0.05) == (0, 1, 1)
    assert compare_decisions(rows, got, 0.001) == (0, 0, 1)
    assert decision_rows("base", "last_hidden_state", np.zeros((1, 4, 3)), mask) is None
    assert set(TASK_DECISIONS) == set(tasks.TASKS)
    assert parse_thresholds(["min_code_agreement=0.5"]).min_code_agreement == 0.5
    assert parse_thresholds([]) == DEFAULT_THRESHOLDS
    with pytest.raises(ValueError, match="NAME one of"):
        parse_thresholds(["cosine=0.5"])
    # token-level agreement over many decisions, and a missing output fails
    feeds = {"input_ids": np.zeros((2, 30), dtype=np.int64), "attention_mask": np.ones((2, 30), dtype=np.int64)}
    r = np.random.default_rng(0).standard_normal((2, 30, 5)).astype(np.float32)
    flipped = r.copy()
    flipped[0] = -flipped[0]  # every decision of row 0 changes
    checks = judge_int8("token-classification", [(feeds, RunValues({"logits": flipped}), RunValues({"logits": r}))],
                        "b", "ref")
    task = next(c for c in checks if c.kind == "task")
    assert not task.ok and task.total + task.near_ties == 60 and task.agree <= 35
    checks = judge_int8("token-classification", [(feeds, RunValues({"logits": None}), RunValues({"logits": r}))], "b", "ref")
    assert not next(c for c in checks if c.kind == "output").ok


@pytest.mark.slow  # a yoso-4096 layer at 4096 tokens
def test_yoso4096_layer_quantizes_and_passes_at_4096_tokens(yoso4096_export, tmp_path):
    """The realistic size: a 2-layer yoso-4096-sized export, default int8, judged against fp32 at S 4096."""
    res = quantize(yoso4096_export, tmp_path / "int8", check_shapes=((1, 64),))
    assert res.ok, res.table()
    from yoso_deploy.iospec import make_inputs
    from yoso_deploy.manifest import manifest_spec

    m32 = load_manifest(yoso4096_export)
    case = make_inputs(manifest_spec(m32), 1, 4096, 50265, seed=1)
    rep = check_against_fp32(tmp_path / "int8", res.manifest, yoso4096_export, m32, None, cases=[case])
    print("\n" + rep.table())
    assert rep.passed, rep.table()
    codes = [c for c in rep.comparisons if c.kind == "codes"]
    assert len(codes) == 4 and all(c.total == 12 * 4096 * 64 for c in codes)
    assert all(0.9 < c.value < 1.0 for c in codes)  # int8 Q/K projections move some codes, most stay
    # The subtlest wrong scale measured (scripts/train/int8_criteria_yoso4096.py): layer 0's attention output x 1.5.
    # In random weights the residual dwarfs it (output cosine 0.995, hidden cosine 0.9993 pass), but the next
    # layer's codes move beyond what int8 rounding moves them (0.89 < 0.90; correct: 0.95).
    bad = wrong_scale(tmp_path / "int8", tmp_path / "bad", "yoso.encoder.layer.0.attention.output.dense.weight.T", 1.5)
    rep = check_against_fp32(bad, load_manifest(bad), yoso4096_export, m32, None, cases=[case])
    failed = {f.name for f in rep.failures()}
    assert not rep.passed and rep.first_failure().layer == 1, rep.table()
    assert {"layer 1 query codes", "layer 1 key codes"} <= failed, rep.table()
    assert "layer 0 query codes" not in failed  # computed before the wrong scale: still int8-close


def test_auto_preset_follows_the_cpu():
    """--preset auto: ORT's guidance per CPU -- VNNI: full-range weights; AVX2 without VNNI: 7-bit weights; ARM64."""
    from yoso_deploy.quantization.quantize import cpu_preset, resolve_options

    assert cpu_preset("x86_64", {"avx2", "avx512f", "avx512_vnni"}) == "avx512-vnni"
    assert cpu_preset("x86_64", {"avx2", "avx_vnni"}) == "avx512-vnni"
    assert cpu_preset("x86_64", {"avx2", "fma"}) == "avx2"
    assert cpu_preset("aarch64", set()) == "arm64"
    flags = set(open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0].split(":")[1].split())
    here = cpu_preset(flags=flags)
    print(f"\nthis CPU's preset: {here}")
    assert resolve_options("dynamic", "auto", None, None, None)["reduce_range"] is (here == "avx2")
