"""`yoso-deploy serve --engine ray` as users run it: a subprocess that starts its own Ray, answers on 127.0.0.1, imports
neither torch nor transformers, and on SIGTERM (and Ctrl-C) exits 0 leaving no Ray process behind; bad
arguments are one-line errors before Ray starts."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support.serving import REPO, free_port, request, require_ray_serve, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.ray]

PROBE = """
import atexit, json, sys
def _report():
    heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'})
    sys.stderr.write('\\nHEAVY=' + json.dumps(heavy) + '\\n')
atexit.register(_report)
from yoso_deploy.cli.main import main
main(sys.argv[1:])
"""


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTEST"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def _serve(args):
    # A RAY_ADDRESS (or another cluster on the machine) must not be joined without --address: the command's
    # shutdown would stop that cluster's Serve. Nothing listens on port 1, so joining it would fail.
    env = {**_env(), "RAY_ADDRESS": "127.0.0.1:1"}
    return subprocess.Popen([sys.executable, "-c", PROBE, "serve", "--engine", "ray", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_command_answers_and_stops_cleanly(task_exports, sig):
    require_ray_serve()
    from support import procs

    port = free_port()
    proc = _serve(["--model", str(task_exports["mlm"]), "--port", str(port), "--threads", "1", "--name", "fill"])
    try:
        wait_ready(port, "/v2/models/fill/ready", timeout=240, proc=proc)
        status, _, body = request(port, "POST", "/v1/fill/fill-mask", {"text": "Ada moved to [MASK].", "top_k": 2})
        assert status == 200 and len(json.loads(body)["result"]) == 2
        status, _, body = request(port, "GET", "/v1/fill/stats")
        assert json.loads(body)["heavy_modules"] == []
        tree = procs.snapshot(proc.pid)
        assert len(tree) >= 3, tree  # gcs, raylet, workers ...
        outside = {a: p for a, p in procs.listening([proc.pid, *tree]).items() if not procs.is_loopback(a)}
        assert not outside, outside
        t0 = time.perf_counter()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        took = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "stopped" in err
    heavy = [ln for ln in err.splitlines() if ln.startswith("HEAVY=")]
    assert heavy and json.loads(heavy[-1][6:]) == [], heavy
    left = procs.wait_gone(tree, timeout=30)
    assert not left, [procs.cmdline(p)[:80] for p in left]
    print(f"\n{sig.name}: stopped in {took:.1f}s, {len(tree)} Ray processes gone")


@pytest.mark.parametrize("args,words", [
    (["--model", "/nonexistent/export"], ["does not exist", "yoso-deploy export"]),
    (["--model", "{tmp}", "--port", "0"], ["--port"]),
    (["--model", "{tmp}", "--replicas", "0"], ["--replicas"]),
])
def test_serve_bad_arguments_are_one_line_errors(tmp_path, args, words):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run([sys.executable, "-m", "yoso_deploy.cli", "serve", *args], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.parametrize("blocked,engine,extra", [(("uvicorn",), "asgi", "serve"),
                                                   (("ray", "ray.serve"), "ray", "ray")])
def test_serve_names_the_missing_extra(task_exports, blocked, engine, extra):
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked) +
            "from yoso_deploy.cli.main import main\n"
            f"main(['serve', '--engine', {engine!r}, '--model', {str(task_exports['qa'])!r}])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and f"pip install 'yoso-deploy[{extra}]'" in r.stderr, r.stderr[-2000:]
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1
