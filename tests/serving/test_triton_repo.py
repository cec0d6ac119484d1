"""`yoso-deploy triton-repo`: every task's repository parses with Triton's own ModelConfig schema
(tritonclient.grpc.model_config_pb2), matches the ONNX model it ships (a session opened with the op library the
config names), and bad requests -- a tensorrt repository without an engine, a failed export -- are refused with
one-line errors. No Triton server can be installed here; TensorRT engines cannot be built here."""

import json
import subprocess
import sys

import pytest

from yoso_deploy.serving.triton_repo import TritonRepoError, model_config, to_pbtxt, write_repo

from support.checkpoints import REPO

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                         reason="Triton's ModelConfig schema needs the [triton] extra: pip install 'yoso-deploy[triton]'")
from google.protobuf import text_format  # noqa: E402

NP = {pb.TYPE_INT64: "int64", pb.TYPE_FP32: "float", pb.TYPE_INT32: "int32"}  # ORT type names


def _parse(path):
    return text_format.Parse(path.read_text(), pb.ModelConfig())


@pytest.mark.parametrize("task", ["qa", "sequence-classification", "token-classification", "mlm", "base",
                                  "multiple-choice"])
def test_repository_of_every_task_parses_and_matches_the_model(task_exports, tmp_path, task):
    import onnxruntime as ort

    res = write_repo(task_exports[task], tmp_path / "repo", name="m", instances=2, max_batch_size=4, threads=1)
    assert res["schema_checked"]
    d = tmp_path / "repo" / "m"
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) == \
        ["1/model.onnx", "config.pbtxt", "libyoso_ort.so", "yoso_export.json", "yoso_ort_build.json"]
    cfg = _parse(d / "config.pbtxt")
    assert cfg.name == "m" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 4
    assert cfg.HasField("dynamic_batching") and cfg.instance_group[0].count == 2
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert cfg.parameters["intra_op_thread_count"].string_value == "1"
    lib = cfg.model_operations.op_library_filename[0]
    assert lib == str((d / "libyoso_ort.so").resolve())
    # The config describes the model it ships: open it with the library the config names (as Triton would).
    so = ort.SessionOptions()
    so.register_custom_ops_library(lib)
    sess = ort.InferenceSession(str(d / "1" / "model.onnx"), so, providers=["CPUExecutionProvider"])
    for ours, theirs in ((cfg.input, sess.get_inputs()), (cfg.output, sess.get_outputs())):
        assert [t.name for t in ours] == [t.name for t in theirs]
        for t, s in zip(ours, theirs):
            assert f"tensor({NP[t.data_type]})" == s.type
            assert len(t.dims) == len(s.shape) - 1  # the batch dim is Triton's
            for dim, sdim in zip(t.dims, s.shape[1:]):
                assert dim == (sdim if isinstance(sdim, int) else -1)


def test_server_repo_path_and_cli(task_exports, tmp_path):
    r = subprocess.run([sys.executable, "-m", "yoso_deploy.cli", "triton-repo", "--model", str(task_exports["qa"]),
                        "--output", str(tmp_path / "repo"), "--server-repo", "/models"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "parsed with Triton's ModelConfig schema" in r.stdout and "tritonserver --model-repository=/models" in r.stdout
    cfg = _parse(tmp_path / "repo" / "qa" / "config.pbtxt")
    assert list(cfg.model_operations.op_library_filename) == ["/models/qa/libyoso_ort.so"]
    # re-running replaces the model directory
    r = subprocess.run([sys.executable, "-m", "yoso_deploy.cli", "triton-repo", "--model", str(task_exports["qa"]),
                        "--output", str(tmp_path / "repo"), "--max-batch-size", "2"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and _parse(tmp_path / "repo" / "qa" / "config.pbtxt").max_batch_size == 2


def test_tensorrt_repository_from_a_given_plan(task_exports, tmp_path):
    """TensorRT is not available here: the layout and config are written from a given engine file and plugin
    library (stand-in bytes here), and docs/serving.md's tritonserver command names the plugins."""
    plan, plugins = tmp_path / "engine.plan", tmp_path / "libyoso_trt.so"
    plan.write_bytes(b"engine")
    plugins.write_bytes(b"plugins")
    with pytest.raises(TritonRepoError, match="no TensorRT engine.*build-engine.*--plan"):
        write_repo(task_exports["qa"], tmp_path / "repo", backend="tensorrt")
    with pytest.raises(TritonRepoError, match="does not exist"):
        write_repo(task_exports["qa"], tmp_path / "repo", backend="tensorrt", plan=plan, plugins=str(tmp_path / "nope.so"))
    res = write_repo(task_exports["qa"], tmp_path / "repo", backend="tensorrt", plan=plan, plugins=str(plugins))
    d = tmp_path / "repo" / "qa"
    assert (d / "1" / "model.plan").read_bytes() == b"engine" and (d / "libyoso_trt.so").is_file()
    cfg = _parse(d / "config.pbtxt")
    assert cfg.backend == "tensorrt" and cfg.default_model_filename == "model.plan"
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU and not cfg.HasField("model_operations")
    from yoso_deploy.serving.triton_repo import server_command

    assert "--backend-config=tensorrt,plugins=" in server_command(res, "tensorrt")


def test_schema_check_fails_on_broken_configs(task_exports):
    """The schema check can fail: a misspelled field and a bad enum are refused by Triton's parser."""
    from yoso_deploy.manifest import load_manifest

    good = to_pbtxt(model_config(load_manifest(task_exports["qa"]), "qa"))
    text_format.Parse(good, pb.ModelConfig())
    for broken in (good.replace("max_batch_size", "max_batchsize"), good.replace("TYPE_INT64", "TYPE_INT65"),
                   good.replace("KIND_CPU", "KIND_TPU"), good.replace("dims: [ -1 ]", "dims: [ x ]")):
        with pytest.raises(text_format.ParseError):
            text_format.Parse(broken, pb.ModelConfig())


def test_refusals(task_exports, tmp_path):
    import shutil

    failed = tmp_path / "failed"
    shutil.copytree(task_exports["qa"], failed)
    m = json.loads((failed / "yoso_export.json").read_text())
    m["parity"] = {"status": "failed", "first_failure": "layer 0 query codes"}
    (failed / "yoso_export.json").write_text(json.dumps(m))
    r = subprocess.run([sys.executable, "-m", "yoso_deploy.cli", "triton-repo", "--model", str(failed), "--output",
                        str(tmp_path / "repo")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "parity check" in r.stderr and "--allow-failed-export" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1
    (tmp_path / "repo" / "qa").mkdir(parents=True)
    (tmp_path / "repo" / "qa" / "notes.txt").write_text("mine")
    with pytest.raises(TritonRepoError, match="not a model of a Triton repository"):
        write_repo(task_exports["qa"], tmp_path / "repo")
    (tmp_path / "file").write_text("x")
    with pytest.raises(TritonRepoError, match="is a file"):
        write_repo(task_exports["qa"], tmp_path / "file")
    with pytest.raises(TritonRepoError, match="max_batch_size"):
        model_config({"inputs": [], "outputs": []}, "x", max_batch_size=0)


def test_a_refused_output_leaves_nothing_behind(task_exports, tmp_path):
    """A symlinked model directory (or a file in its place) is refused before anything is written: no temporary
    directory is left in the repository, and the link's target is untouched."""
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    (repo / "qa").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(TritonRepoError, match="is a symbolic link"):
        write_repo(task_exports["qa"], repo, name="qa")
    (repo / "cls").write_text("a file where the model directory would go")
    with pytest.raises(TritonRepoError, match="is a file, not a model directory"):
        write_repo(task_exports["qa"], repo, name="cls")
    assert sorted(p.name for p in repo.iterdir()) == ["cls", "qa"]
    assert [p.name for p in elsewhere.iterdir()] == ["precious.txt"]
    assert write_repo(task_exports["qa"], repo, name="ok")["model_dir"] == repo / "ok"
    assert sorted(p.name for p in repo.iterdir()) == ["cls", "ok", "qa"]
