"""What an export promises: the task the checkpoint was trained for, the opset asked for, the
checkpoint's parameter names, a post-export check of the sizes users run, a manifest that says
when that check failed (and commands that then refuse the export), and a source checkpoint that is
still found when the export is moved."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from support.checkpoints import small_config
from onnx import numpy_helper
from transformers import YosoForQuestionAnswering, YosoForSequenceClassification

from yoso_deploy.validation import validate
from yoso_deploy.cli.main import main
from yoso_deploy import iospec
from yoso_deploy.export import ExportError, exporter
from yoso_deploy.workflow import ParityError, export
from yoso_deploy.iospec import parse_shapes
from yoso_deploy.manifest import ExportNotUsableError, check_usable, require_source_model_dir, source_model_dir
from yoso_deploy.export.opset import downgrade_opset
from yoso_deploy.modeling import TaskHeadError
from yoso_deploy.validation.parity import Tolerances


def checkpoint(path, cls=YosoForSequenceClassification, **cfg):
    torch.manual_seed(3)
    cls(small_config(**cfg)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cls_ckpt(tmp_path_factory):
    return checkpoint(tmp_path_factory.mktemp("cls") / "ckpt")


def test_task_defaults_to_the_checkpoint_architecture(cls_ckpt, tmp_path):
    res = export(cls_ckpt, tmp_path / "out", validate=False)
    assert res.manifest["task"] == "sequence-classification"
    assert [t["name"] for t in res.manifest["outputs"]] == ["logits"]


def test_task_whose_head_the_checkpoint_lacks_is_refused(cls_ckpt, tmp_path):
    with pytest.raises(TaskHeadError) as e:
        export(cls_ckpt, tmp_path / "qa", task="qa", validate=False)
    msg = str(e.value)
    assert "YosoForQuestionAnswering" in msg and "YosoForSequenceClassification" in msg
    assert "--task sequence-classification" in msg and "qa_outputs" in msg
    assert not (tmp_path / "qa" / "yoso_export.json").exists()
    r = CliRunner().invoke(main, ["export", "--model", str(cls_ckpt), "--task", "ner", "--output", str(tmp_path / "ner")])
    assert r.exit_code == 2 and r.output.startswith("error: --task token-classification needs a YosoForTokenClassification")
    # base (the encoder alone) is always allowed
    assert export(cls_ckpt, tmp_path / "base", task="base", validate=False).manifest["task"] == "base"
    # config.json naming a head whose weights are not there: the loaded weights are checked too
    lying = tmp_path / "lying"
    shutil.copytree(cls_ckpt, lying)
    cfg = json.loads((lying / "config.json").read_text())
    cfg["architectures"] = ["YosoForQuestionAnswering"]
    (lying / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TaskHeadError, match="needs a YosoForQuestionAnswering head.*qa_outputs"):
        export(lying, tmp_path / "lying-qa", task="qa", validate=False)
    assert not (tmp_path / "lying-qa").exists()


def test_task_is_required_when_the_checkpoint_names_no_architecture(cls_ckpt, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(cls_ckpt, bare)
    cfg = json.loads((bare / "config.json").read_text())
    cfg.pop("architectures")
    (bare / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TaskHeadError, match="names no YOSO architecture.*pass --task"):
        export(bare, tmp_path / "o1", validate=False)
    assert export(bare, tmp_path / "o2", task="sequence-classification", validate=False).manifest["task"] == \
        "sequence-classification"


@pytest.mark.parametrize("opset", [17, 18, 21])
def test_opset_asked_is_the_opset_written(cls_ckpt, tmp_path, opset):
    res = export(cls_ckpt, tmp_path / "out", opset=opset, validate=False)
    model = onnx.load(str(res.onnx_path))
    assert {o.domain: o.version for o in model.opset_import}[""] == opset == res.manifest["opset"]
    onnx.checker.check_model(model)


def test_opset_the_exporter_cannot_make_is_refused(cls_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "model_opset", lambda m: 18)  # an exporter that ignores the request
    with pytest.raises(ExportError, match="produced opset 18, not the requested 20.*--opset 18"):
        export(cls_ckpt, tmp_path / "out", opset=20, validate=False)
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_opset_downgrade_refuses_what_opset_17_cannot_express():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [5, 4])
    ys = [onnx.helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, [5, 1]) for i in range(2)]
    split = onnx.helper.make_node("Split", ["x"], ["y0", "y1"], axis=0, num_outputs=2)  # 5 rows into 2: uneven
    m = onnx.helper.make_model(onnx.helper.make_graph([split], "g", [x], ys), opset_imports=[onnx.helper.make_opsetid("", 18)])
    with pytest.raises(ValueError, match="uneven"):
        downgrade_opset(m, 17)
    axes = onnx.helper.make_tensor("axes", onnx.TensorProto.INT64, [1], [1])
    red = onnx.helper.make_node("ReduceL2", ["x", "axes"], ["y0"], keepdims=1)
    m = onnx.helper.make_model(onnx.helper.make_graph([red], "g", [x], ys[:1], initializer=[axes]),
                               opset_imports=[onnx.helper.make_opsetid("", 18)])
    down = downgrade_opset(m, 17)
    node = down.graph.node[0]
    assert list(node.input) == ["x"] and onnx.helper.get_attribute_value(node.attribute[-1]) == [1]
    onnx.checker.check_model(down)
    bits = onnx.helper.make_node("BitwiseNot", ["i"], ["o"])
    i = onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT32, [2])
    o = onnx.helper.make_tensor_value_info("o", onnx.TensorProto.INT32, [2])
    m = onnx.helper.make_model(onnx.helper.make_graph([bits], "g", [i], [o]), opset_imports=[onnx.helper.make_opsetid("", 18)])
    with pytest.raises(ValueError, match="BitwiseNot .* needs opset 18"):
        downgrade_opset(m, 17)


def test_initializers_keep_the_checkpoint_parameter_names(cls_ckpt, tmp_path):
    res = export(cls_ckpt, tmp_path / "out", validate=False)
    model = onnx.load(str(res.onnx_path))
    state = YosoForSequenceClassification.from_pretrained(str(cls_ckpt)).state_dict()
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits}
    assert weights and all(w.endswith(".weight.T") for w in weights)
    for w in weights:  # the stored tensor is the named parameter, transposed
        np.testing.assert_array_equal(inits[w], state[w[: -len(".T")]].numpy().T)
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    # A random checkpoint's LayerNorms are all ones/zeros; each still reads its own, named weight.
    assert len({n.input[1] for n in norms}) == len(norms) == 1 + 2 * 2
    for n in norms:
        for name in n.input[1:]:
            np.testing.assert_array_equal(inits[name], state[name].numpy())
    assert "yoso.encoder.layer.1.attention.self.signs" in inits


def test_check_shapes_are_printed_and_settable(cls_ckpt, tmp_path):
    r = CliRunner().invoke(main, ["export", "--model", str(cls_ckpt), "--output", str(tmp_path / "a"),
                                  "--check-shapes", "1x8,2x20"])
    assert r.exit_code == 0, r.output
    assert "post-export check: passed -- " in r.output and " checks on 1x8, 2x20 in " in r.output  # one line
    assert "layer 0 query" not in r.output  # the table only with --verbose
    r = CliRunner().invoke(main, ["export", "--model", str(cls_ckpt), "--output", str(tmp_path / "a"),
                                  "--check-shapes", "1x8,2x20", "--verbose"])
    assert r.exit_code == 0, r.output
    assert "post-export check on 1x8, 2x20 (batch x sequence, padded)" in r.output and "layer 0 query" in r.output
    assert json.loads((tmp_path / "a" / "yoso_export.json").read_text())["parity"]["shapes"] == ["1x8", "2x20"]
    assert iospec.default_check_shapes(4096) == ((2, 16), (3, 77), (2, 512))
    assert iospec.default_check_shapes(100) == ((2, 16), (3, 77), (2, 100))
    for bad in ("2x", "x3", "0x5", "2*16", ""):
        with pytest.raises(ValueError, match="BATCHxSEQ"):
            parse_shapes(bad)
    r = CliRunner().invoke(main, ["export", "--model", str(cls_ckpt), "--output", str(tmp_path / "b"),
                                  "--check-shapes", "2by16"])
    assert r.exit_code == 2 and "bad shape '2by16'" in r.output


def test_use_expectation_checkpoint_exported_as_lsh_says_so(tmp_path):
    ckpt = checkpoint(tmp_path / "ckpt", YosoForQuestionAnswering, use_expectation=True)
    r = CliRunner().invoke(main, ["export", "--model", str(ckpt), "--output", str(tmp_path / "o"), "--no-validate"])
    assert r.exit_code == 0 and "note: the checkpoint's config says use_expectation: true" in r.output
    r = CliRunner().invoke(main, ["export", "--model", str(ckpt), "--output", str(tmp_path / "e"), "--no-validate",
                                  "--attention", "expectation"])
    assert r.exit_code == 0 and "config says use_expectation" not in r.output


@pytest.fixture(scope="module")
def failed_export(tmp_path_factory):
    base = tmp_path_factory.mktemp("failed")
    ckpt = checkpoint(base / "ckpt", YosoForQuestionAnswering)
    with pytest.raises(ParityError) as e:  # zero tolerance: rounding differences fail the check
        export(ckpt, base / "out", check_shapes=((2, 12),), tolerances=Tolerances(atol=0.0, rtol=0.0, hidden_rtol=0.0))
    assert not e.value.result.ok
    return base / "out"


def test_failed_check_marks_the_manifest(failed_export):
    manifest = json.loads((failed_export / "yoso_export.json").read_text())
    assert manifest["parity"]["status"] == "failed"
    assert manifest["parity"]["first_failure"].startswith("ort-cpu 2x12 ")
    assert any("FAIL" in line for line in manifest["parity"]["table"])
    assert (failed_export / "model.onnx").is_file()  # kept, for inspection
    with pytest.raises(ExportNotUsableError, match="failed its post-export parity check.*--allow-failed-export"):
        check_usable(manifest, model_dir=failed_export)
    assert check_usable(manifest, allow_failed=True) == "failed"


@pytest.mark.parametrize("command", [
    ["run", "--input", '{"input_ids": [[0, 5, 9, 2]]}'],
    ["qa", "--question", "Who?", "--context", "Ada moved."],
    ["bench", "--seq-len", "8", "--iterations", "1", "--warmup", "0"],
    ["validate", "--batch", "1", "--seq-len", "8", "--backends", "torch,ort-cpu"],
])
def test_commands_refuse_a_failed_export(failed_export, command):
    args = [command[0], "--model", str(failed_export), *command[1:]]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "failed its post-export parity check" in r.output and "--allow-failed-export" in r.output
    if command[0] in ("run", "bench"):  # (qa needs a tokenizer; validate would fail the same check again)
        r = CliRunner().invoke(main, args + ["--allow-failed-export"])
        assert r.exit_code == 0, r.output


def test_runtime_refuses_a_failed_export(failed_export):
    from yoso_deploy.runtime.models import YosoOrtForQuestionAnswering

    with pytest.raises(ExportNotUsableError):
        YosoOrtForQuestionAnswering.from_pretrained(failed_export)
    assert YosoOrtForQuestionAnswering.from_pretrained(failed_export, allow_failed_export=True).session


def test_a_moved_export_still_finds_its_checkpoint(tmp_path):
    ckpt = checkpoint(tmp_path / "a" / "ckpt", YosoForQuestionAnswering)
    res = export(ckpt, tmp_path / "a" / "qa", validate=False)
    assert res.manifest["source_model"] == "../ckpt"  # inside the export's parent: relative
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    moved = tmp_path / "b" / "qa"
    manifest = json.loads((moved / "yoso_export.json").read_text())
    assert source_model_dir(manifest, moved) == (tmp_path / "b" / "ckpt").resolve()
    assert validate.compare(moved, backends=["torch", "ort-cpu"], batches=[1], seq_lens=[6]).passed
    shutil.rmtree(tmp_path / "b" / "ckpt")
    assert source_model_dir(manifest, moved) is None
    with pytest.raises(FileNotFoundError, match="source checkpoint .* is gone.*--reference"):
        require_source_model_dir(manifest, moved)
    with pytest.raises(validate.ValidationError, match="torch: the source checkpoint"):
        validate.compare(moved, backends=["torch", "ort-cpu"], batches=[1], seq_lens=[6])
    # A checkpoint outside the export's parent is recorded absolute.
    other = export(checkpoint(tmp_path / "x" / "ckpt"), tmp_path / "y" / "exp", validate=False)
    assert other.manifest["source_model"] == str((tmp_path / "x" / "ckpt").resolve())
