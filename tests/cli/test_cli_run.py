"""``yoso-deploy run`` prints each task's pipeline result (raw outputs only with --raw / --input), its options
reach the pipeline, and ``bench`` times the runtime's own inference path."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from yoso_deploy.cli.main import main
from yoso_deploy.runtime import pipeline

TEXT = "Ada Lovelace moved to Zanzibar in 1999."


def _run(*args):
    r = CliRunner().invoke(main, ["run", *args])
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.parametrize("task,args,call", [
    ("qa", ["--text", "Where did Ada move?", "--text-pair", TEXT, "--top-k", "2", "--max-answer-len", "4"],
     lambda p: p(question="Where did Ada move?", context=TEXT, top_k=2, max_answer_len=4)),
    ("sequence-classification", ["--text", TEXT, "--text", "short", "--top-k", "2"], lambda p: p([TEXT, "short"], top_k=2)),
    ("token-classification", ["--text", TEXT, "--aggregation", "first"], lambda p: p(TEXT, aggregation_strategy="first")),
    ("mlm", ["--text", "Ada moved to [MASK].", "--top-k", "3"], lambda p: p("Ada moved to [MASK].", top_k=3)),
    ("multiple-choice", ["--text", "Ada moved to", "--text", "Oslo.", "--text", "Lima."],
     lambda p: p("Ada moved to", ["Oslo.", "Lima."])),
])
def test_run_prints_the_pipeline_result(task_exports, task, args, call, tmp_path):
    d = str(task_exports[task])
    r = _run("--model", d, *args, "--output-json", str(tmp_path / "r.json"))
    want = json.loads(json.dumps(call(pipeline(d))))
    assert json.loads(r.stdout) == want
    assert json.loads((tmp_path / "r.json").read_text()) == want
    assert "pipeline with ort cpu" in r.stderr


def test_run_feature_extraction_and_raw(task_exports, tmp_path):
    d = str(task_exports["base"])
    r = _run("--model", d, "--text", TEXT, "--pooling", "cls", "--normalize", "--output-json", str(tmp_path / "e.json"))
    assert "embedding[0] [64]" in r.stdout
    v = np.asarray(json.loads((tmp_path / "e.json").read_text()))
    assert np.allclose(v, pipeline(d)(TEXT, pooling="cls", normalize=True), atol=1e-6)
    r = _run("--model", d, "--text", TEXT, "--raw")
    assert "last_hidden_state [1, " in r.stdout
    r = _run("--model", str(task_exports["sequence-classification"]), "--input", '{"input_ids": [0, 5, 2]}')
    assert "logits [1, 3]" in r.stdout  # a missing batch axis is added


@pytest.mark.parametrize("args,message", [
    (["--text", TEXT, "--aggregation", "simple"], "--aggregation applies to the pipelines of token-classification"),
    (["--text", TEXT, "--raw", "--top-k", "2"], "--top-k applies to the pipelines' results, not to raw outputs"),
    (["--text", "q"], "a qa export answers questions about a context — give --text QUESTION --text-pair CONTEXT"),
])
def test_run_option_errors(task_exports, args, message):
    r = CliRunner().invoke(main, ["run", "--model", str(task_exports["qa"]), *args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_run_long_inline_json(task_exports, tmp_path):
    ids = [0] + [5] * 300 + [2]  # longer than a file name may be
    r = _run("--model", str(task_exports["qa"]), "--input", json.dumps({"input_ids": [ids]}))
    assert "start_logits [1, 302]" in r.stdout
    f = tmp_path / "in.json"
    f.write_text(json.dumps({"input_ids": ids}))
    assert "start_logits [1, 302]" in _run("--model", str(task_exports["qa"]), "--input", str(f)).stdout
