"""yoso_deploy.manifest: read, write, check; extra keys survive; an export whose parity check failed is
refused by the runtime, run, qa and bench unless explicitly allowed."""

import json
import shutil

import pytest
from click.testing import CliRunner

from yoso_deploy import bench
from yoso_deploy import manifest as mf
from yoso_deploy.cli.main import main
from yoso_deploy.runtime import YosoOrtModel, pipeline


@pytest.fixture()
def qa_copy(task_exports, tmp_path):
    d = tmp_path / "qa"
    shutil.copytree(task_exports["qa"], d)
    return d


def _edit(d, **changes):
    m = json.loads((d / mf.MANIFEST).read_text())
    m.update(changes)
    (d / mf.MANIFEST).write_text(json.dumps(m))
    return m


def test_round_trip_keeps_unknown_keys(qa_copy, tmp_path):
    m = mf.load_manifest(qa_copy)
    m["parity"] = {"status": "passed", "shapes": ["2x16"], "first_failure": None, "table": ["..."]}
    m["parity_table"] = [{"output": "start_logits", "max_abs": 1e-6, "status": "ok"}]
    m["something_new"] = {"from": "a newer exporter"}
    out = tmp_path / "new"
    out.mkdir()
    mf.write_manifest(out, m)
    back = mf.load_manifest(out)
    assert back["something_new"] == {"from": "a newer exporter"} and back["parity_table"] == m["parity_table"]
    assert not list(out.glob(".*tmp"))  # written atomically, no leftovers
    assert mf.manifest_spec(back).input_names == ["input_ids", "attention_mask"]
    assert mf.manifest_spec(back).output_names == ["start_logits", "end_logits"]
    assert mf.check_usable(back) == "passed"


@pytest.mark.parametrize("changes,needle", [
    ({"task": "summarization"}, "unknown task 'summarization'"),
    ({"inputs": "input_ids"}, "'inputs' must be a list of {name, dtype, dims}"),
    ({"outputs": []}, "lists no inputs or no outputs"),
    ({"max_sequence_length": 0}, "max_sequence_length must be a positive integer"),
    ({"format": "other-tool"}, "has format 'other-tool'"),
    ({"format_version": 99}, "format_version 99, newer than this yoso-deploy reads"),
    ({"parity": {"status": "maybe"}}, "parity must be an object whose status is one of passed, failed, skipped"),
    ({"parity": "passed"}, "parity must be an object whose status is one of passed, failed, skipped"),
])
def test_bad_manifests_name_the_problem(qa_copy, changes, needle):
    _edit(qa_copy, **changes)
    with pytest.raises(mf.ManifestError, match="re-export") as e:
        mf.load_manifest(qa_copy)
    assert needle in str(e.value)


def test_task_alias_is_canonicalised(qa_copy):
    _edit(qa_copy, task="question-answering")
    assert mf.load_manifest(qa_copy)["task"] == "qa"


def test_failed_parity_is_refused_unless_allowed(qa_copy):
    _edit(qa_copy, parity={"status": "failed", "first_failure": "ort-cpu 2x16 start_logits"})
    with pytest.raises(mf.ExportNotUsableError,
                       match="failed its post-export parity check .first failure: ort-cpu 2x16 start_logits.*--allow-failed-export"):
        mf.check_usable(mf.load_manifest(qa_copy))
    assert mf.check_usable(mf.load_manifest(qa_copy), allow_failed=True) == "failed"
    with pytest.raises(mf.ExportNotUsableError):
        YosoOrtModel.from_pretrained(qa_copy)
    with pytest.raises(mf.ExportNotUsableError):
        pipeline(qa_copy)
    with pytest.raises(mf.ExportNotUsableError):
        bench.run(qa_copy, seq_lens=[8], iterations=1, warmup=0)
    assert YosoOrtModel.from_pretrained(qa_copy, allow_failed_export=True).run({"input_ids": [[0, 5, 2]]})
    assert bench.run(qa_copy, seq_lens=[8], iterations=1, warmup=0, allow_failed_export=True).cases
    for args in (["qa", "--question", "q?", "--context", "Ada moved."], ["run", "--text", "q?", "--text-pair", "c"],
                 ["bench", "--seq-len", "8", "--iterations", "1", "--warmup", "0"]):
        r = CliRunner().invoke(main, [args[0], "--model", str(qa_copy), *args[1:]])
        assert r.exit_code == 2 and "failed its post-export parity check" in r.output and "--allow-failed-export" in r.output, r.output
        r = CliRunner().invoke(main, [args[0], "--model", str(qa_copy), *args[1:], "--allow-failed-export"])
        assert r.exit_code == 0, r.output
    _edit(qa_copy, parity={"status": "skipped", "reason": "--no-validate"})
    assert mf.check_usable(mf.load_manifest(qa_copy)) == "skipped"


def test_source_model_relative_to_the_export_dir(qa_copy, task_exports, tmp_path):
    ckpt = task_exports["qa"].parent / "ckpt-qa"
    shutil.copytree(ckpt, tmp_path / "ckpt")
    assert qa_copy.parent == tmp_path
    assert mf.source_model_entry(tmp_path / "ckpt", qa_copy) == "../ckpt"  # inside the export's parent: relative
    m = _edit(qa_copy, source_model="../ckpt")
    assert mf.source_model_dir(m, qa_copy) == tmp_path / "ckpt"
    m = _edit(qa_copy, source_model=str(ckpt))
    assert mf.source_model_dir(m, qa_copy) == ckpt
    m = _edit(qa_copy, source_model="nowhere")
    assert mf.source_model_dir(m, qa_copy) is None
    with pytest.raises(FileNotFoundError, match="is gone.*--reference DIR"):
        mf.require_source_model_dir(m, qa_copy)


def test_old_import_path_still_works():
    from yoso_deploy.manifest import MANIFEST, load_manifest

    assert load_manifest is mf.load_manifest and MANIFEST == "yoso_export.json"
