"""The CLI's error contract for every way its inputs or environment can be broken (issue 8).

For each case: exit code 2, exactly one ``error:`` line that names the problem *and the fix*, no
traceback; with ``--debug`` the exception itself propagates (CliRunner) or its traceback is printed
(real ``yoso-deploy`` process). Cases: missing / non-directory / config-less / invalid-JSON /
non-YOSO / weightless / corrupt-weights model dirs, unknown task, unsupported opsets, unwritable
outputs (a path under a regular file: fails for root too), non-empty output dirs, missing or
corrupt export dirs and manifests, a corrupt model.onnx (garbage bytes), the library missing
(``YOSO_ORT_LIBRARY=/nonexistent``) or not loadable, onnxruntime too old (``__version__`` patched
to 1.0.0), a bad thread count, an unwritable ``--output-json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
from click.testing import CliRunner

from yoso_deploy.cli.main import main

SMALL = dict(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=64, num_hash=4, hash_code_len=4, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0, pad_token_id=1)
FEED = '{"input_ids": [[0, 5, 6, 2]]}'


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A tiny checkpoint, its export, and broken variants of both."""
    import torch
    from transformers import YosoConfig, YosoForQuestionAnswering

    from yoso_deploy.workflow import export

    root = tmp_path_factory.mktemp("cli-errors")
    ckpt = root / "ckpt"
    torch.manual_seed(0)
    YosoForQuestionAnswering(YosoConfig(**SMALL)).save_pretrained(str(ckpt))
    exp = root / "export"
    export(ckpt, exp, task="qa", validate=False)
    d = {"root": root, "ckpt": ckpt, "export": exp}

    d["file"] = root / "regular-file"
    d["file"].write_text("not a directory\n")
    d["no_config"] = root / "no-config"
    d["no_config"].mkdir()
    (d["no_config"] / "model.safetensors").write_bytes(b"")
    for name, config in (("bad_json", "{not json"), ("bert", '{"model_type": "bert"}')):
        d[name] = root / name
        d[name].mkdir()
        (d[name] / "config.json").write_text(config)
    d["no_weights"] = root / "no-weights"
    d["no_weights"].mkdir()
    shutil.copy(ckpt / "config.json", d["no_weights"])
    d["bad_weights"] = root / "bad-weights"
    d["bad_weights"].mkdir()
    shutil.copy(ckpt / "config.json", d["bad_weights"])
    (d["bad_weights"] / "model.safetensors").write_bytes(os.urandom(64) + b"\xff" * 64)
    d["busy"] = root / "busy-output"
    d["busy"].mkdir()
    (d["busy"] / "keep.txt").write_text("someone's file\n")

    def broken_export(name, fn):
        p = root / name
        shutil.copytree(exp, p)
        fn(p)
        d[name] = p

    broken_export("garbage_onnx", lambda p: (p / "model.onnx").write_bytes(bytes(range(256)) * 8))
    broken_export("no_onnx", lambda p: (p / "model.onnx").unlink())
    broken_export("garbage_manifest", lambda p: (p / "yoso_export.json").write_bytes(b"\x00\x01garbage"))
    broken_export("manifest_no_keys", lambda p: (p / "yoso_export.json").write_text('{"format_version": 1}'))
    broken_export("manifest_list", lambda p: (p / "yoso_export.json").write_text("[]"))
    d["not_a_lib"] = root / "libyoso_ort.so"
    d["not_a_lib"].write_bytes(b"\x7fELF but not really")
    return d


# (args, substrings of the error line: what is wrong ... how to fix it)
CASES = {
    "model_missing": (["export", "--model", "{root}/nope", "--output", "{root}/o1"],
                      ["'{root}/nope' does not exist", "pass a Hugging Face YOSO checkpoint directory"]),
    "model_is_file": (["export", "--model", "{file}", "--output", "{root}/o2"],
                      ["is not a directory", "pass the checkpoint *directory*"]),
    "model_no_config": (["export", "--model", "{no_config}", "--output", "{root}/o3"],
                        ["has no config.json", "not a Hugging Face checkpoint directory"]),
    "model_bad_json": (["export", "--model", "{bad_json}", "--output", "{root}/o4"],
                       ["config.json is not valid JSON", "re-save the checkpoint with save_pretrained"]),
    "model_not_yoso": (["export", "--model", "{bert}", "--output", "{root}/o5"],
                       ["model_type='bert'", "handles only 'yoso' models"]),
    "model_no_weights": (["export", "--model", "{no_weights}", "--output", "{root}/o6"],
                         ["has no weights", "model.safetensors or pytorch_model.bin"]),
    "model_corrupt_weights": (["export", "--model", "{bad_weights}", "--output", "{root}/o7", "--no-validate"],
                              ["cannot load the weights", "re-save the checkpoint with save_pretrained"]),
    "unknown_task": (["export", "--model", "{ckpt}", "--task", "summarization", "--output", "{root}/o8"],
                     ["unknown task 'summarization'", "choose one of: base, mlm"]),
    "opset_too_old": (["export", "--model", "{ckpt}", "--opset", "16", "--output", "{root}/o9"],
                      ["unsupported opset 16", "choose 17.."]),
    "opset_too_new": (["export", "--model", "{ckpt}", "--opset", "99", "--output", "{root}/o10"],
                      ["unsupported opset 99", "choose 17.."]),
    "output_under_file": (["export", "--model", "{ckpt}", "--output", "{file}/sub"],
                          ["cannot write to output directory", "Not a directory", "choose a writable directory"]),
    "output_is_file": (["export", "--model", "{ckpt}", "--output", "{file}"],
                       ["exists and is not a directory", "choose a directory path"]),
    "output_not_empty": (["export", "--model", "{ckpt}", "--output", "{busy}"],
                         ["is not empty and holds no previous export", "choose an empty or new directory"]),
    "run_missing_dir": (["run", "--model", "{root}/nope", "--input", FEED],
                        ["export directory", "does not exist", "make it with 'yoso-deploy export --output {root}/nope'"]),
    "run_not_export": (["run", "--model", "{ckpt}", "--input", FEED],
                       ["has no yoso_export.json: it is a checkpoint, not an export",
                        "make an export with 'yoso-deploy export --model CHECKPOINT --output {ckpt}'"]),
    "run_garbage_manifest": (["run", "--model", "{garbage_manifest}", "--input", FEED],
                             ["yoso_export.json' is corrupt", "re-export the model with 'yoso-deploy export"]),
    "run_manifest_no_keys": (["run", "--model", "{manifest_no_keys}", "--input", FEED],
                             ["not a yoso-deploy export manifest", "lacks task, attention, inputs", "re-export"]),
    "run_manifest_list": (["run", "--model", "{manifest_list}", "--input", FEED],
                          ["not a yoso-deploy export manifest", "re-export"]),
    "run_corrupt_onnx": (["run", "--model", "{garbage_onnx}", "--input", FEED],
                         ["model.onnx' is not a valid ONNX model", "corrupt or truncated",
                          "re-export it with 'yoso-deploy export'"]),
    "run_missing_onnx": (["run", "--model", "{no_onnx}", "--input", FEED],
                         ["'{no_onnx}' has a manifest but no model.onnx", "re-export it: yoso-deploy export --output {no_onnx}"]),
    "run_output_json_unwritable": (["run", "--model", "{export}", "--input", FEED, "--output-json", "{file}/o.json"],
                                   ["cannot write --output-json", "Not a directory", "choose a writable file path"]),
}


def _fmt(items, dirs):
    out = []
    for s in items:
        for k, v in dirs.items():
            s = s.replace("{" + k + "}", str(v))
        out.append(s)
    return out


def _check_one_line_error(output: str, needles: list[str]):
    lines = output.splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one 'error:' line:\n{output}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    assert "Traceback" not in output, output
    assert len(errors[0]) < 600, f"error line too long ({len(errors[0])} chars): {errors[0]}"


def _invoke(args, env=None):
    return CliRunner().invoke(main, args, env=env)


def _expect_cli_error(args, needles, env=None):
    r = _invoke(args, env)
    assert r.exit_code == 2, f"exit {r.exit_code}:\n{r.output}"
    _check_one_line_error(r.output, needles)
    d = _invoke(["--debug", *args], env)
    assert d.exit_code != 0 and d.exception is not None and not isinstance(d.exception, SystemExit), d.output
    assert all(n in str(d.exception) for n in needles), repr(d.exception)  # the exception itself, unabridged
    return r


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_line_error(dirs, case):
    args, needles = CASES[case]
    _expect_cli_error(_fmt(args, dirs), _fmt(needles, dirs))


def test_library_not_found(dirs, monkeypatch):
    monkeypatch.setenv("YOSO_ORT_LIBRARY", "/nonexistent/libyoso_ort.so")
    _expect_cli_error(["run", "--model", str(dirs["export"]), "--input", FEED],
                      ["YOSO_ORT_LIBRARY='/nonexistent/libyoso_ort.so' does not name a file",
                       "unset it or point it at libyoso_ort.so"])


def test_library_not_loadable(dirs, monkeypatch):
    monkeypatch.setenv("YOSO_ORT_LIBRARY", str(dirs["not_a_lib"]))
    _expect_cli_error(["run", "--model", str(dirs["export"]), "--input", FEED],
                      ["cannot load the custom-op library", "rebuild it with 'pip install -e .'"])


def test_onnxruntime_too_old(dirs, monkeypatch):
    monkeypatch.setattr(onnxruntime, "__version__", "1.0.0")
    _expect_cli_error(["run", "--model", str(dirs["export"]), "--input", FEED],
                      ["onnxruntime 1.0.0 is older than", "upgrade with 'pip install -U \"onnxruntime>="])


def test_run_still_works(dirs, tmp_path):
    """Control: the same fixtures minus the breakage succeed (so the failures above are specific)."""
    out = tmp_path / "o.json"
    r = _invoke(["run", "--model", str(dirs["export"]), "--input", FEED, "--output-json", str(out)])
    assert r.exit_code == 0, r.output
    assert len(json.loads(out.read_text())["start_logits"][0]) == 4


def _cli_process(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    cli = Path(sys.executable).with_name("yoso-deploy")
    cmd = [str(cli)] if cli.is_file() else [sys.executable, "-m", "yoso_deploy.cli"]
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=300)


def test_real_process_corrupt_onnx(dirs):
    """The installed ``yoso-deploy`` entry point: exit 1, stderr one error line; --debug: traceback."""
    args = ["run", "--model", str(dirs["garbage_onnx"]), "--input", FEED]
    r = _cli_process(args)
    assert r.returncode == 2, r.stdout + r.stderr
    _check_one_line_error(r.stdout + r.stderr, ["is not a valid ONNX model", "re-export it with 'yoso-deploy export'"])
    assert r.stderr.startswith("error: ") and r.stdout == "", (r.stdout, r.stderr)
    d = _cli_process(["--debug", *args])
    assert d.returncode == 1, d.stderr
    assert "Traceback (most recent call last)" in d.stderr and "ModelLoadError" in d.stderr, d.stderr[-3000:]
    assert "InvalidProtobuf" in d.stderr  # the underlying ONNX Runtime error is chained


def _path_options():
    import click

    from yoso_deploy.cli.options import ExpandedPath
    groups = [(main, "")]
    while groups:
        group, prefix = groups.pop()
        for name, cmd in sorted(group.commands.items()):
            if isinstance(cmd, click.Group):
                groups.append((cmd, f"{prefix}{name} "))
                continue
            for p in cmd.params:
                if isinstance(p.type, click.Path):
                    yield f"{prefix}{name} {p.opts[0]}", isinstance(p.type, ExpandedPath)


def test_every_path_option_expands_home():
    """``--model=~/x`` reaches click unexpanded (the shell expands ``~`` only at the start of a word)."""
    options = list(_path_options())
    assert len(options) >= 15, options  # export, run, qa, validate, bench, build-engine... all have paths
    assert [o for o, expanded in options if not expanded] == []


def test_home_relative_export_dir(dirs, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(dirs["export"], home / "exp")
    monkeypatch.setenv("HOME", str(home))
    out = home / "o.json"
    r = _invoke(["run", "--model=~/exp", "--input", FEED, "--output-json=~/o.json"])
    assert r.exit_code == 0, r.output
    assert "start_logits" in json.loads(out.read_text())
