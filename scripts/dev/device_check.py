#!/usr/bin/env python3
"""The GPU device check (driver of scripts/device_check.sh; see that file for how to run it).

Steps, in order of importance, each in a child process with its own timeout inside one global
wall-clock budget (default 450 s), results written to OUT/device_check.json / .md after every step:

  environment      nvidia-smi, nvcc, cmake, compute-sanitizer, python / torch / CUDA device
  ort_headers      ONNX Runtime headers for the CMake build: ONNXRUNTIME_ROOT, the carried .device/
                   folder, else (on a machine without a GPU) copied / fetched into .device/
  build            CMake, CUDA kernels for sm_90 only (YOSO_CUDA_ARCHITECTURES), -j<cores>: libyoso_kernels.so,
                   libyoso_ort.so (CUDA EP compiled), tests/gpu (parity test, bench), warnings as errors
  gpu_parity       tests/gpu/cuda_parity_test.cu: codes bit-identical to the CPU kernels, LSHCumulation to
                   rounding (fp32, fp16 bound), edge shapes, device-side input errors
  cuda_graph       CUDA-graph capture + replay: the parity test's graph test and the torch ops under
                   torch.cuda.graph
  speed            tests/gpu/cuda_bench.cu at yoso-4096 shapes: ms per op, GB/s, roofline fraction
  torch_ops        tests/plugins/test_native_ops_cuda.py (native ops on CUDA tensors vs the reference)
  torch_model      the yoso-4096 model (2 layers) on CUDA with kernels="native" vs the CPU reference:
                   tie-aware codes per layer, outputs, per-layer op parity on identical inputs, timings
  memcheck / initcheck / racecheck   compute-sanitizer on the small-shape tests (gpu_small_*)

A step that cannot run here (no CUDA device, no compute-sanitizer, ...) is skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVICE_DIR = ROOT / ".device"  # ignored; carried to the GPU machine (carry: [".device"])
ORT_HEADERS_VERSION = "1.21.0+dfsg-1"
LOG_STEP_LIMIT = 200_000  # characters of each step's output kept in device_check.log

STEP_TIMEOUTS = {  # seconds; each is also capped by what is left of the global budget
    "environment": 60, "ort_headers": 120, "build": 300, "gpu_parity": 150, "cuda_graph": 90, "speed": 120,
    "torch_ops": 180, "torch_model": 200, "memcheck": 120, "initcheck": 120, "racecheck": 120,
}
ORDER = list(STEP_TIMEOUTS)


# ------------------------------------------------------------------------------------------------
# Running children under a timeout
# ------------------------------------------------------------------------------------------------


class Checker:
    def __init__(self, out: Path, budget_s: float, jobs: int, build_dir: Path):
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.budget_s = budget_s
        self.jobs = jobs
        self.build_dir = build_dir
        self.log = out / "device_check.log"
        self.log.write_text("")
        self.data = {"version": 1, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     "host": platform.node(), "budget_s": budget_s, "jobs": jobs, "steps": []}
        self.gpu_reason: str | None = "not probed yet"
        self.state: dict = {}
        self.active_pgid: int | None = None
        # Children run in their own process groups (so a timeout kills a whole tree: nvcc, compute-
        # sanitizer, ...): if this driver is stopped (the wrapper's overall timeout), take them along.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stopped)

    def _stopped(self, signum, frame):
        if self.active_pgid is not None:
            try:
                os.killpg(self.active_pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.data["stopped"] = f"signal {signum} after {time.monotonic() - self.t0:.0f}s"
        self.write()
        os._exit(124)

    def remaining(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def run(self, cmd, timeout: float, env: dict | None = None, cwd: Path | None = None, label: str = "") -> dict:
        """Run cmd (list) in its own process group; kill the group at the timeout."""
        t = time.monotonic()
        full_env = dict(os.environ, **(env or {}))
        with open(self.log, "a") as log:
            log.write(f"\n===== {label or cmd[0]}: $ {' '.join(map(str, cmd))}  (timeout {timeout:.0f}s)\n")
        try:
            p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=full_env, cwd=cwd or ROOT, start_new_session=True, errors="replace")
        except OSError as e:
            return {"rc": None, "out": f"cannot start {cmd[0]}: {e}", "seconds": 0.0, "timed_out": False}
        timed_out = False
        self.active_pgid = p.pid
        try:
            out, _ = p.communicate(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, _ = p.communicate()
        self.active_pgid = None
        dt = time.monotonic() - t
        with open(self.log, "a") as log:
            text = out or ""
            if len(text) > LOG_STEP_LIMIT:
                text = text[:LOG_STEP_LIMIT // 2] + "\n[... cut ...]\n" + text[-LOG_STEP_LIMIT // 2:]
            log.write(text + f"\n----- rc={p.returncode} {'TIMED OUT ' if timed_out else ''}{dt:.1f}s\n")
        return {"rc": p.returncode, "out": out or "", "seconds": dt, "timed_out": timed_out}

    def python_child(self, code_args: list, timeout: float, env: dict | None = None, label: str = "") -> dict:
        env = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        return self.run([sys.executable, *code_args], timeout, env=env, label=label)

    def record(self, step: dict) -> None:
        self.data["steps"].append(step)
        self.data["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        self.write()
        mark = {"passed": "ok", "skipped": "SKIP", "failed": "FAIL", "timeout": "TIMEOUT", "error": "ERROR"}[step["status"]]
        why = f" -- {step['reason']}" if step.get("reason") else ""
        print(f"[{mark:7}] {step['name']:12} {step['seconds']:6.1f}s{why}", flush=True)

    def write(self) -> None:
        (self.out / "device_check.json").write_text(json.dumps(self.data, indent=2, default=str))
        (self.out / "device_check.md").write_text(markdown(self.data))


def tail(text: str, n: int = 1500) -> str:
    return text[-n:] if len(text) > n else text


# ------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------

PROBE = r"""
import json, torch
d = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
if d["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    d.update(device=p.name, capability=f"sm_{p.major}{p.minor}", multiprocessors=p.multi_processor_count,
             memory_gib=round(p.total_memory / 2**30, 1), device_count=torch.cuda.device_count())
try:
    import transformers; d["transformers"] = transformers.__version__
except Exception as e:
    d["transformers"] = f"unavailable: {e}"
try:
    import onnxruntime; d["onnxruntime"] = onnxruntime.__version__
except Exception as e:
    d["onnxruntime"] = f"unavailable: {e}"
print("PROBE " + json.dumps(d))
"""


def step_environment(c: Checker, timeout: float) -> dict:
    info = {"python": sys.version.split()[0], "executable": sys.executable, "cores": os.cpu_count(),
            "load": Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else None}
    tools = {}
    for name, args in (("nvidia-smi", ["--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem",
                                       "--format=csv,noheader"]),
                       ("nvcc", ["--version"]), ("cmake", ["--version"]), ("compute-sanitizer", ["--version"])):
        exe = find_tool(name)
        if exe is None:
            tools[name] = None
            continue
        r = c.run([exe, *args], min(20.0, timeout), label=name)
        tools[name] = {"path": exe, "rc": r["rc"], "output": tail(r["out"].strip(), 400)}
    info["tools"] = tools
    r = c.python_child(["-c", PROBE], min(45.0, timeout), label="torch probe")
    probe = next((json.loads(ln[6:]) for ln in r["out"].splitlines() if ln.startswith("PROBE ")), None)
    info["torch"] = probe or {"error": tail(r["out"], 600)}
    if probe and probe.get("cuda_available"):
        c.gpu_reason = None
    elif probe:
        c.gpu_reason = f"no CUDA device (torch {probe['torch']}: torch.cuda.is_available() is False)"
    else:
        c.gpu_reason = "no CUDA device (the torch probe failed: see device_check.log)"
    missing = [n for n in ("nvcc", "cmake", "nvidia-smi", "compute-sanitizer") if tools.get(n) is None]
    if probe is None:
        return {"status": "failed", "reason": "the torch probe failed (see device_check.log)", "details": info}
    return {"status": "passed", "reason": ("not found: " + ", ".join(missing)) if missing else None, "details": info}


def find_tool(name: str) -> str | None:
    exe = shutil.which(name)
    if exe:
        return exe
    for cand in sorted(Path("/usr/local").glob(f"cuda*/bin/{name}"), reverse=True):
        return str(cand)
    if name == "compute-sanitizer":
        for cand in sorted(Path("/usr/local").glob("cuda*/compute-sanitizer/compute-sanitizer"), reverse=True):
            return str(cand)
    return None


def step_ort_headers(c: Checker, timeout: float) -> dict:
    carried = DEVICE_DIR / f"onnxruntime-headers-{ORT_HEADERS_VERSION}"
    env_root = os.environ.get("ONNXRUNTIME_ROOT")
    if env_root:
        c.state["ort_root"] = env_root
        return {"status": "passed", "details": {"source": "ONNXRUNTIME_ROOT", "path": env_root}}
    if (carried / "include" / "onnxruntime" / "onnxruntime_c_api.h").is_file():
        c.state["ort_root"] = str(carried)
        return {"status": "passed", "details": {"source": "carried .device folder", "path": str(carried),
                                                "kib": du_kib(DEVICE_DIR)}}
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yoso-deploy" / carried.name
    if (cache / "include" / "onnxruntime" / "onnxruntime_c_api.h").is_file():
        DEVICE_DIR.mkdir(exist_ok=True)
        shutil.copytree(cache, carried, dirs_exist_ok=True)
        c.state["ort_root"] = str(carried)
        return {"status": "passed", "details": {"source": f"copied from {cache}", "path": str(carried), "kib": du_kib(DEVICE_DIR)}}
    if c.gpu_reason is None:
        return {"status": "failed", "reason": "ONNX Runtime headers were not carried: run scripts/device_check.sh once on the "
                "development machine (it fetches them into .device/), then carry .device", "details": {}}
    r = c.run(["bash", ROOT / "scripts" / "dev" / "fetch_ort_headers.sh", DEVICE_DIR], timeout, label="fetch_ort_headers")
    if r["rc"] == 0 and (carried / "include" / "onnxruntime" / "onnxruntime_c_api.h").is_file():
        c.state["ort_root"] = str(carried)
        return {"status": "passed", "details": {"source": "scripts/dev/fetch_ort_headers.sh", "path": str(carried),
                                                "kib": du_kib(DEVICE_DIR)}}
    return {"status": "failed", "reason": "could not fetch the ONNX Runtime headers: " + tail(r["out"], 300), "details": {}}


def du_kib(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) // 1024


def step_build(c: Checker, timeout: float) -> dict:
    if "ort_root" not in c.state:
        return {"status": "skipped", "reason": "no ONNX Runtime headers (step ort_headers)"}
    nvcc = find_tool("nvcc")
    cmake = find_tool("cmake")
    if nvcc is None or cmake is None:
        return {"status": "skipped", "reason": "nvcc or cmake not found"}
    archs = os.environ.get("YOSO_CUDA_ARCHITECTURES", "90")
    b = c.build_dir
    t = time.monotonic()
    cfg = [cmake, "-S", ROOT, "-B", b, "-DCMAKE_BUILD_TYPE=Release", "-DYOSO_WARNINGS_AS_ERRORS=ON",
           "-DYOSO_BUILD_CUDA=ON", f"-DYOSO_CUDA_ARCHITECTURES={archs}", f"-DCMAKE_CUDA_COMPILER={nvcc}",
           "-DYOSO_BUILD_TESTS=ON", "-DYOSO_TEST_SANITIZE=OFF", f"-DONNXRUNTIME_ROOT={c.state['ort_root']}"]
    if shutil.which("ninja") and not (b / "CMakeCache.txt").exists():
        cfg += ["-G", "Ninja"]
    # PIP_NO_INDEX: the configure of tests/cpp looks for TensorRT headers (scripts/dev/fetch_trt_headers.sh,
    # pip) -- not needed for these targets; on a machine without network it fails at once instead of retrying.
    r = c.run(cfg, min(120.0, timeout), env={"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
              label="cmake configure")
    if r["rc"] != 0:
        return {"status": "timeout" if r["timed_out"] else "failed", "reason": "cmake configure failed",
                "details": {"output": tail(r["out"], 2500)}}
    targets = ["yoso_kernels", "yoso_cuda_parity_test", "yoso_cuda_bench", "yoso_ort"]
    left = timeout - (time.monotonic() - t)
    r = c.run([cmake, "--build", b, "-j", str(c.jobs), "--target", *targets], left, label="cmake build")
    details = {"architectures": archs, "jobs": c.jobs, "targets": targets, "seconds": round(time.monotonic() - t, 1)}
    if r["rc"] != 0:
        details["output"] = tail(r["out"], 3000)
        return {"status": "timeout" if r["timed_out"] else "failed", "reason": "build failed", "details": details}
    libk = b / "plugins" / "libyoso_kernels.so"
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, "-D", "--defined-only", str(libk)], capture_output=True, text=True).stdout.split()
        details["libyoso_kernels_exports"] = sorted(s for s in syms if s.startswith("yoso_"))
    cuobjdump = find_tool("cuobjdump")
    if cuobjdump:
        rr = c.run([cuobjdump, "--list-elf", libk], 30, label="cuobjdump")
        details["sass"] = sorted({w for w in rr["out"].replace(".", " ").split() if w.startswith("sm_")})
    c.state["built"] = True
    return {"status": "passed", "details": details}


def _bin(c: Checker, name: str) -> Path:
    return c.build_dir / "tests" / "gpu" / name


def _summary(out: str):
    import re

    m = re.search(r"yoso-test summary: (\d+) tests, (\d+) failed", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _native_test(c: Checker, timeout: float, args: list, prefix: list | None = None, label: str = "") -> dict:
    if not c.state.get("built"):
        return {"status": "skipped", "reason": "not built (step build)"}
    r = c.run([*(prefix or []), _bin(c, "yoso_cuda_parity_test"), *args], timeout, label=label)
    n, failed = _summary(r["out"])
    fails = [ln.strip() for ln in r["out"].splitlines() if ln.startswith("[ FAIL ]")]
    details = {"tests": n, "failed": failed, "failures": fails[:20], "rc": r["rc"]}
    if r["rc"] == 77:
        return {"status": "skipped", "reason": (r["out"].strip().splitlines() or ["no CUDA device"])[-1], "details": details}
    if r["timed_out"]:
        return {"status": "timeout", "reason": f"ran past {timeout:.0f}s", "details": {**details, "output": tail(r["out"])}}
    ok = r["rc"] == 0 and failed == 0 and n > 0
    if not ok:
        details["output"] = tail(r["out"], 3000)
    return {"status": "passed" if ok else "failed", "reason": None if ok else f"{failed} of {n} tests failed (rc {r['rc']})",
            "details": details}


def step_gpu_parity(c: Checker, timeout: float) -> dict:
    return _native_test(c, timeout, [], label="cuda_parity_test")


def _pytest(c: Checker, timeout: float, args: list, label: str) -> dict:
    if not c.state.get("built"):
        return {"status": "skipped", "reason": "not built (step build)"}
    if c.gpu_reason:  # the tests would only skip (the normal suite collects them everywhere)
        return {"status": "skipped", "reason": c.gpu_reason}
    junit = c.out / f".{label}.xml"
    env = {"YOSO_KERNELS_LIBRARY": str(c.build_dir / "plugins" / "libyoso_kernels.so"),
           "YOSO_ORT_LIBRARY": str(c.build_dir / "plugins" / "libyoso_ort.so")}
    r = c.python_child(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={junit}", *args], timeout,
                       env=env, label=label)
    counts = junit_counts(junit)
    junit.unlink(missing_ok=True)
    details = {**counts, "rc": r["rc"]}
    if r["timed_out"]:
        return {"status": "timeout", "reason": f"ran past {timeout:.0f}s", "details": {**details, "output": tail(r["out"])}}
    if counts.get("tests", 0) and counts.get("skipped") == counts.get("tests"):
        skips = [ln for ln in r["out"].splitlines() if ln.startswith("SKIPPED")]
        return {"status": "skipped", "reason": skips[0].split(": ", 1)[-1] if skips else "all tests skipped", "details": details}
    ok = r["rc"] == 0 and counts.get("tests", 0) > 0
    if not ok:
        details["output"] = tail(r["out"], 3500)
    return {"status": "passed" if ok else "failed",
            "reason": None if ok else f"{counts.get('failures', 0) + counts.get('errors', 0)} failed (rc {r['rc']})",
            "details": details}


def junit_counts(path: Path) -> dict:
    try:
        import xml.etree.ElementTree as ET

        root = ET.parse(path).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        keys = ("tests", "failures", "errors", "skipped")
        counts = {k: int(suite.get(k, 0)) for k in keys}
        counts["failed_tests"] = [f"{tc.get('classname')}::{tc.get('name')}" for tc in suite.iter("testcase")
                                  if tc.find("failure") is not None or tc.find("error") is not None][:20]
        return counts
    except Exception as e:  # noqa: BLE001
        return {"junit_error": str(e)}


def step_cuda_graph(c: Checker, timeout: float) -> dict:
    native = _native_test(c, timeout / 2, ["gpu_graph_capture"], label="cuda_parity_test graph")
    torch_part = _pytest(c, timeout / 2, ["tests/plugins/test_native_ops_cuda.py", "-k", "graph"], label="pytest graph")
    statuses = {native["status"], torch_part["status"]}
    status = "failed" if statuses & {"failed", "timeout", "error"} else ("skipped" if statuses == {"skipped"} else "passed")
    reason = "; ".join(f"{n}: {p['reason']}" for n, p in (("C++", native), ("torch", torch_part)) if p.get("reason"))
    return {"status": status, "reason": reason or None, "details": {"cpp": native, "torch": torch_part}}


def step_speed(c: Checker, timeout: float) -> dict:
    if not c.state.get("built"):
        return {"status": "skipped", "reason": "not built (step build)"}
    r = c.run([_bin(c, "yoso_cuda_bench")], timeout, label="cuda_bench")
    text = r["out"]
    start = text.find("{")
    try:
        data = json.loads(text[start:text.rfind("}") + 1]) if start >= 0 else None
    except json.JSONDecodeError:
        data = None
    if r["rc"] == 77:
        return {"status": "skipped", "reason": (data or {}).get("skipped", "no CUDA device")}
    if r["timed_out"] or r["rc"] != 0 or not data:
        return {"status": "timeout" if r["timed_out"] else "failed", "reason": f"bench rc {r['rc']}",
                "details": {"output": tail(text, 3000)}}
    lsh = [x for x in data["results"] if x["op"] == "LSHCumulation" and x["dtype"] == "float32"]
    best = max((x["roofline_fraction_measured"] for x in lsh), default=0.0)
    data["goal"] = "LSHCumulation >= 50% of the HBM roofline (compulsory bytes vs measured copy bandwidth)"
    data["goal_met"] = {f"B{x['B']} S{x['S']}": x["roofline_fraction_measured"] >= 0.5 for x in lsh}
    return {"status": "passed", "reason": None if best >= 0.5 else "speed goal not met (reported, not a failure)",
            "details": data}


def step_torch_ops(c: Checker, timeout: float) -> dict:
    return _pytest(c, timeout, ["tests/plugins/test_native_ops_cuda.py", "-k", "not graph"], label="pytest native ops cuda")


def step_torch_model(c: Checker, timeout: float) -> dict:
    if not c.state.get("built"):
        return {"status": "skipped", "reason": "not built (step build)"}
    if c.gpu_reason:
        return {"status": "skipped", "reason": c.gpu_reason}
    result = c.out / ".torch_model.json"
    env = {"YOSO_KERNELS_LIBRARY": str(c.build_dir / "plugins" / "libyoso_kernels.so")}
    r = c.python_child([Path(__file__), "--child-model", result], timeout, env=env, label="torch model")
    details = json.loads(result.read_text()) if result.is_file() else {}
    result.unlink(missing_ok=True)
    if r["timed_out"]:
        return {"status": "timeout", "reason": f"ran past {timeout:.0f}s", "details": {**details, "output": tail(r["out"])}}
    if r["rc"] != 0 or not details:
        return {"status": "failed", "reason": f"rc {r['rc']}", "details": {**details, "output": tail(r["out"], 3000)}}
    return {"status": "passed" if details.get("ok") else "failed", "reason": details.get("reason"), "details": details}


def _sanitizer(tool: str):
    def step(c: Checker, timeout: float) -> dict:
        if not c.state.get("built"):
            return {"status": "skipped", "reason": "not built (step build)"}
        if c.gpu_reason:
            return {"status": "skipped", "reason": c.gpu_reason}
        exe = find_tool("compute-sanitizer")
        if exe is None:
            return {"status": "skipped", "reason": "compute-sanitizer is not installed"}
        prefix = [exe, "--tool", tool, "--error-exitcode", "3"]
        if tool == "memcheck":
            prefix += ["--leak-check", "full"]
        if tool == "racecheck":
            prefix += ["--racecheck-report", "all"]
        res = _native_test(c, timeout, ["gpu_small"], prefix=prefix, label=f"compute-sanitizer {tool}")
        if res["status"] == "failed":
            res["reason"] = f"{tool} found errors or a test failed (rc {res['details'].get('rc')})"
        return res
    return step


STEPS = {"environment": step_environment, "ort_headers": step_ort_headers, "build": step_build,
         "gpu_parity": step_gpu_parity, "cuda_graph": step_cuda_graph, "speed": step_speed, "torch_ops": step_torch_ops,
         "torch_model": step_torch_model, "memcheck": _sanitizer("memcheck"), "initcheck": _sanitizer("initcheck"),
         "racecheck": _sanitizer("racecheck")}
MIN_START_S = 15  # a step is not started with less than this left of the budget


# ------------------------------------------------------------------------------------------------
# The PyTorch model on CUDA with the native kernels vs the CPU path (child process)
# ------------------------------------------------------------------------------------------------


def child_model(result_path: Path) -> int:
    import copy

    import torch
    from transformers import YosoModel
    from transformers.utils import logging as hf_logging

    from yoso_deploy.validation import parity
    from yoso_deploy.export import io_spec
    from yoso_deploy.modeling import convert_model, native_ops, ops, yoso_4096_config

    hf_logging.set_verbosity_error()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 GEMMs on both sides (the default, made explicit)
    torch.set_num_threads(os.cpu_count() or 1)
    out: dict = {"kernels_library": native_ops.build_info(), "tf32": False, "threads": torch.get_num_threads()}

    def save():
        result_path.write_text(json.dumps(out, indent=2, default=str))

    cfg = yoso_4096_config(num_hidden_layers=2, vocab_size=1000)
    torch.manual_seed(0)
    hf = YosoModel(cfg).eval()
    cpu_ref = convert_model(copy.deepcopy(hf), kernels="torch")
    cuda_nat = convert_model(copy.deepcopy(hf), kernels="native").cuda()
    cuda_ref = convert_model(copy.deepcopy(hf), kernels="torch").cuda()
    B, S = 2, 4096
    ids = torch.randint(3, 1000, (B, S), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 3500:] = 0
    out["shape"] = {"B": B, "S": S, "layers": 2, "padding": "row 1 padded from 3500", "config": "yoso-4096 sizes"}

    def forward(model, device):
        with torch.inference_mode():
            return model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state

    # 1. End to end, judged as an export is (yoso_deploy.validation.parity, plugins/OPS.md section 5): the CUDA run's
    #    codes tie-aware against the CPU reference's, then injected into the reference; every layer
    #    tensor, hidden state and output within fp32 tolerances.
    spec = io_spec(cfg, "base")
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    forward(cuda_nat, "cuda")  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    _, values = parity.capture_torch_backend(cuda_nat, spec, feeds)
    torch.cuda.synchronize()
    out["cuda_native_capture_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    report = parity.ParityReport(parity.judge_backend(cpu_ref, spec, parity.torch_probes(cfg.num_hidden_layers),
                                                      "cuda-native", feeds, values))
    out["cpu_reference_judge_s"] = round(time.perf_counter() - t, 2)
    out["parity_cuda_native_vs_cpu_reference"] = report.to_json()
    save()

    # 2. Per layer, identical inputs (the CUDA run's activations): FastHash bit-identical to the
    #    reference on the CPU and on the GPU; LSHCumulation within the fp32 bound.
    op_checks = []
    mk = mask.to(torch.int32)
    for i, att in enumerate(cuda_nat.encoder.layer):
        att = att.attention.self
        signs, m, tau = att.signs, att.num_hash, att.hash_code_len
        layer = {k: torch.from_numpy(values[f"layer.{i}.{k}"]) for k in
                 ("query_input", "key_input", "query_codes", "key_codes", "value")}
        for w in ("query", "key"):
            x = layer[f"{w}_input"].cuda()
            want = ops.fast_hash(x.cpu(), mk, signs.cpu(), m, tau)
            got = native_ops.fast_hash(x, mk.cuda(), signs, m, tau).cpu()
            ref_gpu = ops.fast_hash(x, mk.cuda(), signs, m, tau).cpu()
            op_checks.append({"layer": i, "op": f"FastHash({w})", "identical_to_cpu_reference": bool(torch.equal(got, want)),
                              "identical_to_gpu_reference": bool(torch.equal(got, ref_gpu)),
                              "differing_codes": int((got != want).sum())})
        qc, kc, v = layer["query_codes"], layer["key_codes"], layer["value"]
        got = native_ops.lsh_cumulation(qc.cuda(), kc.cuda(), mk.cuda(), mk.cuda(), v.cuda(), tau).cpu()
        want = ops.lsh_cumulation(qc, kc, mk, mk, v, tau)
        bound = 2e-6 * ops.lsh_cumulation(qc, kc, mk, mk, v.abs(), tau) + 1e-7
        err = (got - want).abs()
        op_checks.append({"layer": i, "op": "LSHCumulation", "max_abs": float(err.max()),
                          "within_bound": bool((err <= bound).all()), "worst_err_over_bound": float((err / bound).max())})
    out["ops_on_identical_inputs"] = op_checks
    save()

    # 3. Timings on the GPU: the 2-layer model forward, native vs the pure-PyTorch ops on CUDA.
    def time_gpu(model, reps=5):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        forward(model, "cuda")
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(reps):
            ev[0].record()
            forward(model, "cuda")
            ev[1].record()
            torch.cuda.synchronize()
            best = min(best, ev[0].elapsed_time(ev[1]))
        return round(best, 2)

    out["gpu_forward_ms"] = {"native": time_gpu(cuda_nat), "torch_ops": time_gpu(cuda_ref, reps=3)}
    out["gpu_forward_ms"]["speedup"] = round(out["gpu_forward_ms"]["torch_ops"] / out["gpu_forward_ms"]["native"], 2)

    ops_ok = all(x.get("identical_to_cpu_reference", x.get("within_bound")) and x.get("identical_to_gpu_reference", True)
                 for x in op_checks)
    out["ok"] = bool(report.passed and ops_ok)
    first = report.first_failure()
    bad = ([f"parity: {first.name}: {first.error}"] if first else []) + ([] if ops_ok else ["ops on identical inputs"])
    out["reason"] = ("failed: " + "; ".join(bad)) if bad else None
    out["summary"] = report.table().splitlines()
    save()
    return 0


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def markdown(data: dict) -> str:
    lines = [f"# Device check ({data['started']}, {data.get('elapsed_s', 0)} s of a {data['budget_s']:.0f} s budget)", "",
             "| step | status | seconds | note |", "|---|---|---:|---|"]
    for s in data["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {(s.get('reason') or '').replace('|', '/')[:300]} |")
    by = {s["name"]: s for s in data["steps"]}
    env = by.get("environment", {}).get("details", {})
    if env:
        t = env.get("torch") or {}
        smi = (env.get("tools", {}).get("nvidia-smi") or {}).get("output")
        lines += ["", f"Environment: python {env.get('python')}, {env.get('cores')} cores, load {env.get('load')}; "
                      f"torch {t.get('torch')} (CUDA {t.get('torch_cuda')}), device {t.get('device', 'none')} "
                      f"{t.get('capability', '')}; nvidia-smi: {smi or 'absent'}"]
    speed = by.get("speed", {}).get("details", {})
    if speed.get("results"):
        lines += ["", f"Speed ({speed['device']}, measured copy bandwidth {speed['copy_gbs']:.0f} GB/s, nominal "
                      f"{speed['peak_gbs']:.0f} GB/s); compulsory bytes = inputs read once + outputs written once:", "",
                  "| op | dtype | B | S | ms | GB/s | of copy BW | of nominal |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for x in speed["results"]:
            lines.append(f"| {x['op']} | {x['dtype']} | {x['B']} | {x['S']} | {x['ms']:.3f} | {x['gbs']:.0f} | "
                         f"{100 * x['roofline_fraction_measured']:.1f}% | {100 * x['roofline_fraction_nominal']:.1f}% |")
    model = by.get("torch_model", {}).get("details", {})
    if model.get("summary"):
        lines += ["", "PyTorch model on CUDA (kernels=native) vs the CPU reference:", ""] + [f"- {s}" for s in model["summary"]]
        if model.get("gpu_forward_ms"):
            g = model["gpu_forward_ms"]
            lines.append(f"- GPU forward (2 layers, B 2, S 4096): native {g['native']} ms, pure-PyTorch ops {g['torch_ops']} ms "
                         f"({g['speedup']}x); CPU reference {model.get('cpu_reference_s')} s")
    for s in data["steps"]:
        if s["status"] in ("failed", "timeout", "error") and s.get("details", {}).get("output"):
            lines += ["", f"## {s['name']} output (tail)", "", "```", s["details"]["output"][-2500:], "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "build" / "device-check-out"))
    ap.add_argument("--budget-s", type=float, default=float(os.environ.get("YOSO_DEVICE_BUDGET_S", 450)))
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("YOSO_JOBS", os.cpu_count() or 2)))
    ap.add_argument("--build-dir", type=Path, default=ROOT / "build" / "device-check")
    ap.add_argument("--steps", default=",".join(ORDER), help="comma-separated subset of: " + ", ".join(ORDER))
    ap.add_argument("--child-model", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_model:
        return child_model(args.child_model)
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STEPS]
    if unknown:
        print(f"device_check: unknown step(s) {unknown}; choose from {', '.join(ORDER)}", file=sys.stderr)
        return 2
    c = Checker(args.out, args.budget_s, args.jobs, args.build_dir)
    print(f"device_check: out {args.out}, budget {args.budget_s:.0f}s, {args.jobs} jobs, build {args.build_dir}", flush=True)
    for name in ORDER:
        if name not in wanted and name != "environment":
            continue
        # The environment probe always runs (it decides what else can); the rest fits the budget.
        left = STEP_TIMEOUTS[name] if name == "environment" else c.remaining() - 5
        t = time.monotonic()
        if left < MIN_START_S:
            res = {"status": "skipped", "reason": f"global budget: {max(0.0, left):.0f}s left of {args.budget_s:.0f}s"}
        else:
            try:
                res = STEPS[name](c, min(STEP_TIMEOUTS[name], left))
            except Exception as e:  # noqa: BLE001 - one broken step must not lose the others' results
                import traceback

                res = {"status": "error", "reason": f"{type(e).__name__}: {e}", "details": {"traceback": traceback.format_exc()[-3000:]}}
        res = {"name": name, "seconds": round(time.monotonic() - t, 1), "timeout_s": round(min(STEP_TIMEOUTS[name], max(0, left))),
               **res}
        res.setdefault("reason", None)
        c.record(res)
    statuses = [s["status"] for s in c.data["steps"]]
    c.data["summary"] = {k: statuses.count(k) for k in ("passed", "failed", "timeout", "error", "skipped")}
    c.data["gpu"] = c.gpu_reason is None
    c.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    c.write()
    bad = [s["name"] for s in c.data["steps"] if s["status"] in ("failed", "timeout", "error")]
    print(f"device_check: {c.data['summary']} in {c.data['elapsed_s']}s; wrote {args.out}/device_check.json, .md, .log")
    if bad:
        print(f"device_check: FAILED steps: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
