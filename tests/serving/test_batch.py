"""`yoso-deploy batch` locally: one output record per input id, error records for bad records (never a crash),
results equal to the pipeline's, resumable after a crash mid-write, and no torch in the process. (`--ray` is
tested on the 2-node cluster in tests/serving/test_serving_cluster.py.)"""

import json
import subprocess
import sys

import pytest

from yoso_deploy.serving.batch import done_ids, run_batch
from yoso_deploy.runtime import pipeline
from yoso_deploy.runtime.records import run_record

from support.checkpoints import REPO

CLS = [{"id": "a", "text": "a fine day"}, {"id": "b", "text": "a bad day", "top_k": None},
       {"id": "c", "text": "another fine day"}, {"id": "d", "text": ""}, {"id": "e", "texts": "typo"},
       {"id": "f", "text": "word " * 700}, {"id": "g", "text": "fine", "text_pair": "day"}, {"id": 7, "text": "seven"}]


def _write(path, records, extra_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(ln + "\n" for ln in extra_lines))


def _read(path):
    return {json.dumps(r["id"]): r for r in map(json.loads, path.read_text().splitlines())}


def test_records_results_and_errors(task_exports, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, CLS, ["{broken", "[1, 2]", '{"text": "no id: the line number is the id"}', "", '{"id": "a", "text": "dup"}'])
    res = run_batch(task_exports["sequence-classification"], src, out, batch_size=3, progress=False)
    got = _read(out)
    assert res.written == len(got) == 11 and res.duplicates == 1
    errors = {k: v["error"] for k, v in got.items() if "error" in v}
    assert set(errors) == {'"d"', '"e"', '"f"', "9", "10"} and res.errors == 5
    assert "empty" in errors['"d"'] and "unknown field 'texts'" in errors['"e"'] and "tokens long" in errors['"f"']
    assert "malformed JSON in line" in errors["9"] and "not an object" in errors["10"]
    assert "11" in got and "result" in got["11"]  # no id: its line number
    pipe = pipeline(task_exports["sequence-classification"], intra_op_threads=1)
    for rec in CLS:
        key = json.dumps(rec["id"])
        if key in errors:
            continue
        want = run_record(pipe, "sequence-classification", {k: v for k, v in rec.items() if k != "id"})
        for w, g in zip(want, got[key]["result"]):
            assert w["label"] == g["label"] and w["score"] == pytest.approx(g["score"], rel=1e-5, abs=1e-7)


def test_resume_skips_done_ids_and_drops_a_torn_last_line(task_exports, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    records = [{"id": i, "question": f"Where did P{i} move?", "context": f"P{i} moved to City{i} in {1900 + i}."}
               for i in range(6)]
    _write(src, records)
    full = tmp_path / "full.jsonl"
    run_batch(task_exports["qa"], src, full, batch_size=2, progress=False)
    lines = full.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:25])  # a crash in the middle of writing record 3
    assert done_ids(out) == {"0", "1", "2"} and out.read_text() == "".join(lines[:3])
    res = run_batch(task_exports["qa"], src, out, batch_size=2, progress=False)
    assert res.skipped == 3 and res.written == 3 and _read(out) == _read(full)
    again = run_batch(task_exports["qa"], src, out, batch_size=2, progress=False)
    assert again.written == 0 and again.skipped == 6 and _read(out) == _read(full)


@pytest.mark.parametrize("task,record", [
    ("token-classification", {"text": "Ada Lovelace lives in London", "aggregation_strategy": "simple"}),
    ("mlm", {"text": "Ada moved to [MASK].", "top_k": 2}),
    ("base", {"text": "some text", "pooling": "cls"}),
    ("multiple-choice", {"prompt": "Ada moved to", "choices": ["Oslo.", "Lima."]}),
])
def test_every_task_through_the_cli(task_exports, tmp_path, task, record):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"id": i, **record} for i in range(3)] + [{"id": "bad", "nope": 1}])
    code = ("import atexit, json, sys\n"
            "atexit.register(lambda: sys.stderr.write('HEAVY=' + json.dumps(sorted({m.split('.')[0] for m in "
            "sys.modules} & {'torch', 'transformers', 'ray'})) + '\\n'))\n"
            "from yoso_deploy.cli.main import main\nmain(sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-c", code, "batch", "--model", str(task_exports[task]), "--input", str(src),
                        "--output", str(out), "--batch-size", "2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "4 record(s) written (1 error(s))" in r.stderr and "HEAVY=[]" in r.stderr, r.stderr[-2000:]
    got = _read(out)
    assert "unknown field 'nope'" in got['"bad"']["error"]
    assert got["0"]["result"] == got["1"]["result"] == got["2"]["result"]


def test_bad_arguments(task_exports, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("{}\n")
    for args, words in ((["--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")], "does not exist"),
                        (["--input", str(src), "--output", str(src)], "must differ"),
                        (["--input", str(src), "--output", str(tmp_path)], "is a directory")):
        r = subprocess.run([sys.executable, "-m", "yoso_deploy.cli", "batch", "--model", str(task_exports["qa"]), *args],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and words in r.stderr, r.stderr
        assert len([ln for ln in r.stderr.splitlines() if ln.lower().startswith("error:")]) == 1  # ours or click's


def test_bad_lines_become_error_records_and_the_job_goes_on(task_exports, tmp_path):
    """Invalid JSON, JSON nested deeper than any record (also deeper than Python's recursion), a record over a
    limit: each is its line's error record; the good lines around them are answered, the summary counts both."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [json.dumps({"id": "good-1", "question": "Where did Ada move?", "context": "Ada moved to Oslo."}),
             "{not json",
             "[" * 100_000 + "]" * 100_000,
             json.dumps({"id": "deep", "question": {"a": json.loads("[" * 40 + "1" + "]" * 40)}}),
             json.dumps({"id": "huge-k", "question": "Where?", "context": "Ada moved to Oslo.", "top_k": 10**6}),
             json.dumps({"id": "good-2", "question": "Where did Otto move?", "context": "Otto moved to Lima."})]
    src.write_text("\n".join(lines) + "\n")
    res = run_batch(task_exports["qa"], src, dst, progress=False)
    got = {r["id"]: r for r in map(json.loads, dst.read_text().splitlines())}
    assert set(got) == {"good-1", 2, 3, 4, "huge-k", "good-2"}
    assert got["good-1"]["result"][0]["answer"] and got["good-2"]["result"][0]["answer"]
    assert "malformed JSON in line 2" in got[2]["error"]
    assert "line 3 is nested more deeply" in got[3]["error"] and "--max-json-depth" in got[3]["error"]
    assert "line 4 is nested more than 32 levels deep" in got[4]["error"]
    assert "top_k is 1,000,000, over the limit of 100" in got["huge-k"]["error"] and "--max-top-k" in got["huge-k"]["error"]
    assert (res.written, res.errors) == (6, 4)
