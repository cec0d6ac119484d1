"""The yoso-deploy command line: help, version, export + run of the default model, one-line errors."""

import json

import pytest
from click.testing import CliRunner

from yoso_deploy import __version__
from yoso_deploy.cli.main import main

COMMANDS = [name for name in main.commands]


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "qa"
    result = CliRunner().invoke(main, ["export", "--task", "question-answering", "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_version_and_help():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    top = CliRunner().invoke(main, ["--help"])
    assert top.exit_code == 0
    assert set(COMMANDS) >= {"export", "run", "validate", "bench", "qa"}
    for name in COMMANDS:
        assert name in top.output
        r = CliRunner().invoke(main, [name, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output and "Show this message" in r.output
    r = CliRunner().invoke(main, ["export", "--help"])
    for opt in ("--model", "--task", "--output", "--attention", "--opset", "--seed", "--atol"):
        assert opt in r.output


def test_export_default_model_prints_parity(default_export):
    out, output = default_export
    assert "post-export check: passed" in output and "FAIL" not in output  # quiet: one summary line
    assert len(output.splitlines()) <= 8, output
    table = json.loads((out / "yoso_export.json").read_text())["parity"]["table"]  # the details are kept
    assert any("start_logits" in line for line in table)
    assert (out / "model.onnx").is_file() and (out / "tokenizer.json").is_file()


def test_run_text_and_json(default_export, tmp_path):
    out, _ = default_export
    r = CliRunner().invoke(main, ["run", "--model", str(out), "--text", "Where did Ada move?",
                                  "--text-pair", "Ada moved to Oslo in 1999."])
    assert r.exit_code == 0, r.output
    answer = json.loads(r.stdout)  # stdout is the pipeline's result, the timing line goes to stderr
    assert answer["answer"] == "Oslo" and 0 < answer["score"] <= 1
    assert "Ada moved to Oslo in 1999."[answer["start"]:answer["end"]] == "Oslo"
    r = CliRunner().invoke(main, ["run", "--model", str(out), "--text", "Where did Ada move?",
                                  "--text-pair", "Ada moved to Oslo in 1999.", "--raw"])
    assert r.exit_code == 0, r.output
    assert "start_logits [1," in r.output and "end_logits [1," in r.output
    dump = tmp_path / "o.json"
    r = CliRunner().invoke(main, ["run", "--model", str(out), "--input", '{"input_ids": [[0, 7, 9, 2], [0, 5, 2, 1]], '
                                  '"attention_mask": [[1, 1, 1, 1], [1, 1, 1, 0]]}', "--output-json", str(dump)])
    assert r.exit_code == 0, r.output
    data = json.loads(dump.read_text())
    assert len(data["start_logits"]) == 2 and len(data["start_logits"][0]) == 4


@pytest.mark.parametrize(
    "args,message",
    [
        (["export", "--model", "/nonexistent/dir", "--output", "{tmp}/a"], "does not exist"),
        (["export", "--task", "summarization", "--output", "{tmp}/b"], "unknown task"),
        (["export", "--opset", "7", "--output", "{tmp}/c"], "unsupported opset 7"),
        (["export", "--output", "/proc/yoso-cannot-write"], "cannot write"),
        (["run", "--model", "{tmp}", "--text", "x"], "has no yoso_export.json"),
    ],
)
def test_errors_are_one_line(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output
    assert r.output.lower().count("error:") == 1  # ours ("error: ..."), or click's for what is refused while parsing
    parse_time = r.output.startswith("Usage:")  # refused by click while parsing: nothing ran, no traceback to show
    r = CliRunner().invoke(main, ["--debug"] + args)
    if parse_time:
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    else:
        assert r.exit_code != 0 and r.exception is not None and not isinstance(r.exception, SystemExit)


def test_run_rejects_bad_inputs(default_export):
    out, _ = default_export
    r = CliRunner().invoke(main, ["run", "--model", str(out), "--input", "{not json"])
    assert r.exit_code == 2 and "neither a JSON file nor valid JSON" in r.output
    r = CliRunner().invoke(main, ["run", "--model", str(out)])
    assert r.exit_code == 2 and "exactly one of" in r.output
    r = CliRunner().invoke(main, ["run", "--model", str(out), "--input", '{"attention_mask": [[1]]}'])
    assert r.exit_code == 2 and "lacks 'input_ids'" in r.output
