"""scripts/device_check.sh, the GPU device check, dry-run on this machine (no GPU).

The full dry run builds the CUDA code for sm_90 (when nvcc is installed), runs the binaries that report
"no device", skips every step that needs a GPU with its reason, exits 0 and writes the JSON and
Markdown reports. The driver's guards are tested too: a step's timeout kills the whole process tree,
and the global budget skips what no longer fits.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the device check's dry run builds and times out its steps

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "device_check.sh"


def _driver():
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "scripts" / "dev" / "device_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _gpu_present() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def test_dry_run_without_gpu(tmp_path):
    if _gpu_present():
        pytest.skip("a CUDA device is present: run scripts/device_check.sh itself (this test is its dry run)")
    drv = _driver()
    t = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, timeout=1200)
    wall = time.monotonic() - t
    print(r.stdout[-4000:], r.stderr[-2000:], f"wall {wall:.0f}s", sep="\n")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    data = json.loads((tmp_path / "device_check.json").read_text())
    md = (tmp_path / "device_check.md").read_text()
    assert (tmp_path / "device_check.log").is_file()
    steps = {s["name"]: s for s in data["steps"]}
    assert list(steps) == drv.ORDER
    for s in data["steps"]:
        assert s["status"] in ("passed", "skipped"), s
        assert s["seconds"] <= s["timeout_s"] + 10, s
        assert f"| {s['name']} | {s['status']} |" in md
        if s["status"] == "skipped":
            assert s["reason"], f"step {s['name']} skipped without a reason"
            assert s["reason"][:40] in r.stdout, "the reason is printed"
    for name in ("gpu_parity", "speed", "torch_ops", "torch_model", "memcheck", "initcheck", "racecheck"):
        assert steps[name]["status"] == "skipped" and "no CUDA device" in steps[name]["reason"], steps[name]
    assert data["gpu"] is False
    from support.native_build import nvcc

    if nvcc() is not None:  # the sm_90 build is a step that runs here
        build = steps["build"]
        assert build["status"] == "passed", build
        assert build["details"]["architectures"] == "90"
        assert build["details"]["libyoso_kernels_exports"] == sorted(
            ["yoso_fast_hash", "yoso_fast_hash_workspace_size", "yoso_kernels_abi_version", "yoso_kernels_build_info",
             "yoso_kernels_has_cuda", "yoso_lsh_cumulation", "yoso_lsh_cumulation_workspace_size"])
        assert (ROOT / ".device").is_dir(), "the ONNX Runtime headers to carry are in .device/"
    else:
        assert steps["build"]["status"] == "skipped"


def test_a_step_timeout_kills_the_process_tree(tmp_path):
    drv = _driver()
    c = drv.Checker(tmp_path, budget_s=60, jobs=1, build_dir=tmp_path / "b")
    marker = tmp_path / "survived"
    t = time.monotonic()
    res = c.run(["bash", "-c", f"(sleep 3; touch {marker}) & sleep 30"], timeout=1, label="hang")
    assert res["timed_out"] and time.monotonic() - t < 10
    time.sleep(4)
    assert not marker.exists(), "a grandchild outlived the step's timeout"
    assert "TIMED OUT" in (tmp_path / "device_check.log").read_text()


def test_global_budget_skips_what_does_not_fit(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "dev" / "device_check.py"), "--out", str(tmp_path),
                        "--budget-s", "12", "--steps", "build,speed"], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    steps = json.loads((tmp_path / "device_check.json").read_text())["steps"]
    assert [s["name"] for s in steps] == ["environment", "build", "speed"]
    assert all(s["status"] == "skipped" and "global budget" in s["reason"] for s in steps[1:]), steps


def test_unknown_step_is_refused(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "dev" / "device_check.py"), "--out", str(tmp_path),
                        "--steps", "warp-drive"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown step(s) ['warp-drive']" in r.stderr
