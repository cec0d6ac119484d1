"""The command line answers ``--help`` and argument errors before it imports anything heavy: start-up and
parsing import click and the light shared modules only; a misspelled command or option gets a suggestion."""

import json
import subprocess
import sys
import time

import pytest
from support import REPO

HEAVY = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "polygraphy", "ray")

PROBE = """
import atexit, json, sys
def _report():
    sys.stderr.write('\\nLOADED=' + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))) + '\\n')
atexit.register(_report)
from yoso_deploy.cli import main
main(%r, prog_name="yoso-deploy")
"""


def _cli(args):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PROBE % (HEAVY, args)], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    seconds = time.perf_counter() - t0
    loaded = json.loads([ln for ln in r.stderr.splitlines() if ln.startswith("LOADED=")][-1][len("LOADED="):])
    print(f"yoso-deploy {' '.join(args)}: exit {r.returncode} in {seconds:.2f}s, heavy modules loaded: {loaded}")
    return r, loaded


@pytest.mark.parametrize("args,code,words", [
    (["--help"], 0, ["export", "serve", "Exit codes"]),
    (["export", "--help"], 0, ["--output", "--task"]),
    (["serve", "--help"], 0, ["--max-inflight-tokens", "--engine [asgi|ray]"]),
    (["exprot"], 2, ["No such command 'exprot'. Did you mean 'export'?"]),
    (["export", "--tsak", "qa"], 2, ["No such option '--tsak'. Did you mean '--task'?"]),
    (["run", "--threads", "-1", "--text", "x"], 2, ["-1 is not in the range x>=0"]),
    (["export", "--task", "questionanswering"], 2, ["unknown task 'questionanswering' (did you mean "]),
    (["export", "--model", "/nonexistent/ckpt"], 2, ["error: model directory '/nonexistent/ckpt' does not exist"]),
    (["export", "--task", "token-classification"], 2, ["error: --task token-classification needs a "
                                                        "YosoForTokenClassification head"]),
    (["qa", "--model", "/nonexistent/export", "--question", "q", "--context", "c"], 2,
     ["error: export directory '/nonexistent/export' does not exist"]),
])
def test_answers_before_heavy_imports(args, code, words):
    r, loaded = _cli(args)
    out = r.stdout + r.stderr
    assert r.returncode == code, out
    for w in words:
        assert w in out, out
    assert "Traceback" not in out
    assert loaded == [], f"{args} imported {loaded} before answering"


def test_the_probe_sees_heavy_imports():
    """Control: a command that does its work loads what it needs, and the probe reports it."""
    r, loaded = _cli(["validate", "--model", "/nonexistent/export"])  # validate needs the PyTorch reference
    assert r.returncode == 2 and "torch" in loaded, r.stderr
