"""``yoso-deploy optimize`` / ``export --optimize`` and ONNX Runtime's own transformer optimizer on our exports.

ONNX Runtime's ``optimize_model(model_type="bert")`` gets through its symbolic shape inference on a default export
and fuses SkipLayerNormalization (it did not while the exporter wrote ReduceL2: the control puts ReduceL2 back).
O1 keeps the function of the default export bit for bit in the outputs' tolerance, O2 fuses SkipLayerNormalization
and bias-GELU, O3 approximates GELU; each keeps the probes, passes its check (O1/O2 against the PyTorch reference,
O3 by the int8 criteria against its source), runs in the pipelines and quantizes; what cannot be optimized is
refused with one line."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from yoso_deploy.cli import main
from yoso_deploy.errors import UsageError
from yoso_deploy.optimization import OptimizeError, optimize
from yoso_deploy.runtime import create_session, pipeline
from yoso_deploy.workflow import export
from yoso_deploy.workflow import optimize as optimize_job

QUESTION, CONTEXT = "Where did Ada move?", "Ada Lovelace moved to Oslo in 1999. Otto moved to Lima."


def _layers(export_dir) -> int:
    return json.loads((export_dir / "config.json").read_text())["num_hidden_layers"]


def _counts(path) -> dict:
    out: dict = {}
    for n in onnx.load(str(path)).graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def _ort_transformer_optimizer(path):
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    opts = FusionOptions("bert")
    opts.enable_attention = False
    return optimize_model(str(path), model_type="bert", num_heads=0, hidden_size=0, optimization_options=opts,
                          opt_level=0, use_gpu=False).get_fused_operator_statistics()


def test_ort_transformer_optimizer_fuses_a_default_export(task_exports, tmp_path):
    exp = task_exports["qa"]
    layers = _layers(exp)
    assert "ReduceL2" not in _counts(exp / "model.onnx")
    stats = _ort_transformer_optimizer(exp / "model.onnx")
    assert stats["SkipLayerNormalization"] == 2 * layers and stats["BiasGelu"] == layers, stats
    # control: the graph as the exporter wrote it before (Sqrt(ReduceSum(x*x)) back to one ReduceL2)
    m = onnx.load(str(exp / "model.onnx"))
    nodes, skip = [], set()
    for n in m.graph.node:
        if n.op_type == "Sqrt" and n.name.endswith("__sqrt"):
            total = next(p for p in m.graph.node if p.output[0] == n.input[0])
            square = next(p for p in m.graph.node if p.output[0] == total.input[0])
            l2 = onnx.helper.make_node("ReduceL2", [square.input[0], *total.input[1:]], [n.output[0]], name=n.name[:-6])
            l2.attribute.extend(total.attribute)
            nodes.append(l2)
            skip |= {total.name, square.name}
        else:
            nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend([n for n in nodes if n.name not in skip])
    onnx.save(m, str(tmp_path / "reduce_l2.onnx"))
    assert _counts(tmp_path / "reduce_l2.onnx")["ReduceL2"] == layers
    assert _ort_transformer_optimizer(tmp_path / "reduce_l2.onnx")["SkipLayerNormalization"] == 0


def _outputs(path, feeds):
    sess = create_session(path, intra_op_threads=1)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@pytest.fixture(scope="module")
def levels(task_exports, tmp_path_factory):
    base = tmp_path_factory.mktemp("levels")
    return {lv: optimize(task_exports["qa"], base / lv, level=lv) for lv in ("O1", "O2", "O3")}


def test_levels_fuse_and_keep_the_function(task_exports, levels):
    exp = task_exports["qa"]
    layers = _layers(exp)
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(3, 90, (2, 40)).astype(np.int64), "attention_mask": np.ones((2, 40), np.int64)}
    feeds["attention_mask"][1, 30:] = 0
    want = _outputs(exp / "model.onnx", feeds)
    for lv, res in levels.items():
        m = res.manifest
        assert m["optimization"]["level"] == lv and m["optimization"]["probes_kept"] is True
        assert m["parity"]["status"] == "skipped" and m["task"] == "qa"
        counts = _counts(res.onnx_path)
        assert counts.get("FastHash") == 2 * layers and counts.get("LSHCumulation") == layers
        if lv in ("O2", "O3"):
            assert counts["SkipLayerNormalization"] == 2 * layers, counts
            assert counts.get("Erf", 0) == 0  # no unfused GELU left
            assert counts.get("BiasGelu" if lv == "O2" else "FastGelu") == layers
        got = _outputs(res.onnx_path, feeds)
        for name, ref in want.items():
            err = float(np.abs(got[name] - ref).max())
            assert err < (1e-2 if lv == "O3" else 1e-4), (lv, name, err)
        ans = pipeline(res.output_dir)(question=QUESTION, context=CONTEXT)
        assert CONTEXT[ans["start"]:ans["end"]] == ans["answer"]
    assert (levels["O2"].output_dir / "tokenizer.json").is_file()


def test_checks_record_their_verdict(task_exports, tmp_path):
    o2 = optimize_job(task_exports["qa"], tmp_path / "o2", level="O2", check_shapes=((2, 16), (1, 64)))
    assert o2.ok and o2.optimized.manifest["parity"]["status"] == "passed"
    assert "PyTorch reference" in o2.optimized.manifest["parity"]["kind"]
    o3 = optimize_job(task_exports["qa"], tmp_path / "o3", level="O3", check_shapes=((2, 16),))
    assert o3.ok and "int8 criteria" in o3.optimized.manifest["parity"]["kind"]
    # yoso-deploy validate judges O3 (an approximation) like int8: against its exact source export
    from yoso_deploy.validation.validate import validate

    res = validate(tmp_path / "o3", batches=[2], seq_lens=[16])
    assert res.passed and any("approximate export: optimization O3" in n for n in res.report.notes)
    card = (tmp_path / "o2" / "README.md").read_text()
    assert "passed" in card and "| graph optimization | O2:" in card
    # the optimized export quantizes, and its int8 check passes
    from yoso_deploy.quantization import quantize

    q = quantize(tmp_path / "o2", tmp_path / "o2-int8", check_shapes=((2, 16),))
    assert q.ok and q.manifest["optimization"]["level"] == "O2"


def test_refusals(task_exports, levels, tmp_path):
    exp = task_exports["qa"]
    with pytest.raises(OptimizeError, match="already optimized"):
        optimize(levels["O2"].output_dir, tmp_path / "x", level="O2")
    with pytest.raises(OptimizeError, match="unknown optimization level 'O4'.*O1, O2, O3"):
        optimize(exp, tmp_path / "x", level="O4")
    with pytest.raises(OptimizeError, match="the source export itself"):
        optimize(exp, exp, level="O1")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(OptimizeError, match="not empty and holds no previous export"):
        optimize(exp, tmp_path / "full", level="O1")
    assert not (tmp_path / "x").exists()


def test_cli_optimize_and_export_optimize(task_exports, tmp_path):
    r = CliRunner().invoke(main, ["optimize", "--model", str(task_exports["qa"]), "--output", str(tmp_path / "o1"),
                                  "--level", "O1", "--check-shapes", "2x16"])
    assert r.exit_code == 0, r.output
    assert "optimized at O1" in r.output and "parity check (2x16): passed" in r.output
    r = CliRunner().invoke(main, ["optimize", "--model", str(task_exports["qa"]), "--output", str(tmp_path / "o9"),
                                  "--level", "O9"])
    assert r.exit_code == 2 and "O9" in r.output
    from support.checkpoints import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "ckpt", "qa")
    res = export(ckpt, tmp_path / "both", task="qa", optimize_level="O2", quantize="int8", check_shapes=((2, 16),))
    both = tmp_path / "both"
    assert json.loads((both / "fp32" / "yoso_export.json").read_text())["parity"]["status"] == "passed"
    o2 = json.loads((both / "o2" / "yoso_export.json").read_text())
    assert o2["optimization"]["level"] == "O2" and o2["parity"]["status"] == "passed"
    top = json.loads((both / "yoso_export.json").read_text())
    assert top["quantization"] and top["optimization"]["level"] == "O2" and res.quantized.ok
    with pytest.raises(UsageError, match="unknown optimization level"):
        export(ckpt, tmp_path / "bad", task="qa", optimize_level="O7")
