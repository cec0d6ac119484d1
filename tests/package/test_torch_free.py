"""The commands people run in production need neither torch nor transformers nor onnxscript: ``run``, ``qa``,
``quantize``, ``optimize``, ``triton-repo``, ``batch`` and ``serve`` on an existing export, each in a subprocess where those
packages cannot be imported (a directory on PYTHONPATH shadows them with modules that raise ImportError), each
checked by its real output against the same work done in this process."""

import json
import signal
import subprocess
import sys

import pytest
from support import REPO
from support import venvs
from support.servers import free_port, request, wait_ready

BLOCKED = venvs.BLOCKED
QUESTION, CONTEXT = "Where did Ada move?", "Ada Lovelace moved to Oslo in 1999. Otto moved to Lima."

pytestmark = pytest.mark.slow  # six commands in subprocesses, a server among them


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory):
    return venvs.blocked_env(tmp_path_factory.mktemp("shadow"), BLOCKED)


def _cli(env, *args, timeout=300):
    r = subprocess.run([sys.executable, "-m", "yoso_deploy.cli", *map(str, args)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"yoso-deploy {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr[-3000:]}"
    return r


def test_run_and_qa(blocked_env, task_exports):
    from yoso_deploy.runtime import pipeline

    qa = task_exports["qa"]
    want = pipeline(qa)(question=QUESTION, context=CONTEXT)
    got = json.loads(_cli(blocked_env, "run", "--model", qa, "--text", QUESTION, "--text-pair", CONTEXT).stdout)
    assert got == json.loads(json.dumps(want))
    got = json.loads(_cli(blocked_env, "qa", "--model", qa, "--question", QUESTION, "--context", CONTEXT, "--json").stdout)
    assert (got[0]["answer"], got[0]["start"]) == (want["answer"], want["start"])


def test_quantize(blocked_env, task_exports, tmp_path):
    out = tmp_path / "int8"
    r = _cli(blocked_env, "quantize", "--model", task_exports["qa"], "--output", out)
    assert "post-quantization check: passed" in r.stdout, r.stdout
    manifest = json.loads((out / "yoso_export.json").read_text())
    assert manifest["quantization"]["method"] == "dynamic" and manifest["parity"]["status"] == "passed"


def test_optimize(blocked_env, task_exports, tmp_path):
    """O2 is written and says why its reference check did not run; O3's check (int8 criteria against its source
    export) needs no torch and runs."""
    r = _cli(blocked_env, "optimize", "--model", task_exports["qa"], "--output", tmp_path / "o2", "--level", "O2")
    assert "optimized at O2" in r.stdout and "parity check skipped: not checked: the PyTorch reference needs" in r.stdout
    assert json.loads((tmp_path / "o2" / "yoso_export.json").read_text())["parity"]["status"] == "skipped"
    r = _cli(blocked_env, "optimize", "--model", task_exports["qa"], "--output", tmp_path / "o3", "--level", "O3",
             "--check-shapes", "2x16")
    assert "parity check (2x16): passed" in r.stdout, r.stdout


def test_triton_repo(blocked_env, task_exports, tmp_path):
    r = _cli(blocked_env, "triton-repo", "--model", task_exports["qa"], "--output", tmp_path / "repo", "--name", "qa")
    config = (tmp_path / "repo" / "qa" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config or 'backend: "onnxruntime"' in config, config
    assert (tmp_path / "repo" / "qa" / "1" / "model.onnx").is_file() and "tritonserver" in r.stdout


def test_batch(blocked_env, task_exports, tmp_path):
    from yoso_deploy.runtime import pipeline

    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    texts = ["Ada Lovelace lives in London", "Otto moved to Lima", "Clara works in Oslo"]
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    _cli(blocked_env, "batch", "--model", task_exports["token-classification"], "--input", src, "--output", dst)
    got = {r["id"]: r["result"] for r in map(json.loads, dst.read_text().splitlines())}
    pipe = pipeline(task_exports["token-classification"])
    assert got == {i: json.loads(json.dumps(pipe(t))) for i, t in enumerate(texts)}


def test_serve(blocked_env, task_exports):
    from yoso_deploy.runtime import pipeline

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "yoso_deploy.cli", "serve", "--model", str(task_exports["qa"]),
                             "--port", str(port), "--threads", "1", "--name", "qa"], cwd=REPO, env=blocked_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, "/v2/models/qa/ready", timeout=240, proc=proc)
        status, _, body = request(port, "POST", "/v1/qa/qa", {"question": QUESTION, "context": CONTEXT})
        assert status == 200, body
        want = pipeline(task_exports["qa"]).answer(QUESTION, CONTEXT)[0]
        got = json.loads(body)["result"][0]
        assert (got["answer"], got["start"], got["end"]) == (want.answer, want.start, want.end)
        status, _, body = request(port, "GET", "/v1/qa/stats")
        assert json.loads(body)["heavy_modules"] == []
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "stopped" in err, err[-3000:]
