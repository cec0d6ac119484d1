"""``yoso-deploy bench`` / :func:`yoso_deploy.bench.run`: it times the runtime's own inference path, every case."""

import json

import numpy as np
from click.testing import CliRunner

from yoso_deploy import bench
from yoso_deploy.cli.main import main
from yoso_deploy.runtime.models import YosoOrtModel


def test_bench_times_the_runtime_path(task_exports, monkeypatch):
    calls = []
    real = YosoOrtModel.run

    def counting(self, feeds, *a, **k):
        calls.append(tuple(np.shape(feeds["input_ids"])))
        return real(self, feeds, *a, **k)

    monkeypatch.setattr(YosoOrtModel, "run", counting)
    res = bench.run(task_exports["qa"], backends=["ort-cpu"], batches=[1, 2], seq_lens=[8, 16], warmup=2, iterations=3)
    assert len(res.cases) == 4 and all(c.iterations == 3 for c in res.cases)
    assert sorted(set(calls)) == [(1, 8), (1, 16), (2, 8), (2, 16)] and len(calls) == 4 * (2 + 3)
    assert res.machine["torch"]  # reported from the installed metadata, torch not imported for it


def test_bench_command_and_report(task_exports, tmp_path):
    r = CliRunner().invoke(main, ["bench", "--model", str(task_exports["mlm"]), "--seq-len", "8,16", "--iterations", "2",
                                  "--warmup", "1", "--report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "cores), onnxruntime" in r.output and "ort-cpu" in r.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [c["seq_len"] for c in report["cases"]] == [8, 16] and (tmp_path / "report.md").is_file()


def test_profile_shares_per_op_type(task_exports, tmp_path):
    """bench --profile: ONNX Runtime's profiler summed per op type; the shares add up to 1, the custom ops and the
    MatMuls are there, and a profile with fewer model runs than asked is refused."""
    import pytest

    from yoso_deploy.bench.profile import profile_export, summarize
    from yoso_deploy.errors import UsageError

    prof = profile_export(task_exports["qa"], batch=2, seq_len=64, runs=2)
    ops = {op: share for op, _, share, _ in prof.shares()}
    assert {"FastHash", "LSHCumulation", "MatMul"} <= set(ops)
    assert abs(sum(ops.values()) - 1.0) < 1e-9 and 0.0 < prof.small_ops_share < 1.0
    assert dict((op, n) for op, _, _, n in prof.shares())["FastHash"] == 4  # 2 layers x (query, key)
    trace = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 10}]
    with pytest.raises(UsageError, match="holds 1 model runs, expected 3"):
        summarize(trace, runs=2, skip_runs=1)
    r = CliRunner().invoke(main, ["bench", "--model", str(task_exports["qa"]), "--profile", "--batch", "1",
                                  "--seq-len", "32", "--iterations", "2", "--report", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert "small ops" in r.output and "LSHCumulation" in r.output
    saved = json.loads((tmp_path / "rep" / "profile.json").read_text())
    assert saved["profiles"][0]["seq_len"] == 32 and saved["machine"]["cpu"]
