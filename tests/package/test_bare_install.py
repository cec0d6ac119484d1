"""The bare package -- ``pip install yoso-deploy`` without extras, what a serving image installs -- in a fresh
venv: it answers a question and runs a pipeline with no torch, transformers, onnx or polygraphy installed,
names the extra to install for export/validate, and its size is reported next to the full venv's.

The wheel is the one scripts/setup.sh built (build/wheel/, so scripts/test.sh checks the sources it just
installed); without one it is built here (compiles libyoso_ort.so). The exports are made by this (full)
environment: the bare one cannot export.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yoso_deploy.workflow import export
from yoso_deploy.runtime import pipeline

pytestmark = pytest.mark.slow  # a fresh venv with the bare wheel

REPO = Path(__file__).resolve().parents[2]
QUESTION = "Where did Clara move?"
CONTEXT = "Clara moved to Oslo in 1999 and bought a red lamp. Otto moved to Lima in 2004."


def _wheel(tmp: Path) -> Path:
    found = sorted((REPO / "build" / "wheel").glob("yoso_deploy-*.whl"))
    if found:
        return found[-1]
    print("no wheel in build/wheel (scripts/setup.sh builds one): building it now")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), str(REPO)], check=True,
                   timeout=1800)
    return sorted(tmp.glob("yoso_deploy-*.whl"))[-1]


def _mb(path: Path) -> float:
    r = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(r.stdout.split()[0]) / 1024


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "YOSO_"))}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_bare_venv_answers_a_question(tmp_path, task_exports, capsys):
    qa_dir = export(None, tmp_path / "qa", task="qa", validate=False).output_dir
    want = pipeline(qa_dir)(question=QUESTION, context=CONTEXT)
    wheel = _wheel(tmp_path / "wheel")
    venv = tmp_path / "bare"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(wheel)], capture_output=True, text=True, timeout=1200, env=_env())
    install_s = time.perf_counter() - t0
    assert pip.returncode == 0, pip.stderr[-3000:]
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                               capture_output=True, text=True, check=True, env=_env())
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert {"yoso-deploy", "onnxruntime", "numpy", "tokenizers", "click"} <= names
    assert not names & {"torch", "transformers", "onnx", "onnxscript", "polygraphy", "matplotlib"}, sorted(names)

    cli = str(venv / "bin" / "yoso-deploy")
    t1 = time.perf_counter()
    r = subprocess.run([cli, "qa", "--model", str(qa_dir), "--question", QUESTION, "--context", CONTEXT, "--json"],
                       capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path)
    qa_s = time.perf_counter() - t1
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)[0]
    assert (got["answer"], got["start"], got["end"]) == ("Oslo", want["start"], want["end"]) == (want["answer"], 15, 19)
    assert got["score"] == pytest.approx(want["score"], rel=1e-6)

    r = subprocess.run([cli, "run", "--model", str(task_exports["token-classification"]), "--text",
                        "Ada Lovelace lives in London", "--aggregation", "simple"],
                       capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == json.loads(json.dumps(
        pipeline(task_exports["token-classification"])("Ada Lovelace lives in London", aggregation_strategy="simple")))

    for args, extra in ((["export", "--output", str(tmp_path / "never")], "export"),
                        (["validate", "--model", str(qa_dir)], "export,validate")):
        r = subprocess.run([cli, *args], capture_output=True, text=True, timeout=300, env=_env(), cwd=tmp_path)
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert r.returncode == 2 and len(errors) == 1, r.stderr[-3000:]
        assert f"pip install 'yoso-deploy[{extra}]'" in errors[0], errors[0]
        assert "Traceback" not in r.stderr

    bare_mb, full_mb = _mb(venv), _mb(Path(sys.prefix))
    assert bare_mb < full_mb / 3
    with capsys.disabled():
        print(f"\nbare install: venv {bare_mb:.0f} MB (full venv {full_mb:.0f} MB); pip install of the wheel "
              f"{install_s:.1f} s; 'yoso-deploy qa' {qa_s:.2f} s -> {got['answer']!r}")
    shutil.rmtree(venv)
