"""The op tests under AddressSanitizer + UndefinedBehaviorSanitizer (issue 8).

1. Configures and builds the CPU library from this checkout with ``-DYOSO_SANITIZE=address,undefined``
   (``cmake -S <repo> -B <dir>``; the build finds or fetches the ONNX Runtime headers itself). The
   build directory is cached in ``~/.cache/yoso-deploy/asan-build/<key>``, keyed by the SHA-256 of
   everything the build reads (plugins/, CMakeLists.txt, the header fetch script) plus compiler and
   CMake versions, so an unchanged tree reuses it (a cold build takes ~15 s on 2 cores).
2. Checks the setup can see a sanitizer report at all: a tiny sanitized library with a heap overflow
   and a signed overflow, called from python with the same environment, must be caught.
3. Runs the op tests (``OP_TESTS``: tests/plugins/test_ort_ops.py, test_op_validation_extra.py, the SIMD kernels'
   edge shapes in test_ort_ops_simd.py, and the fuzzers of test_fuzz_ops.py) in a subprocess with
   ``YOSO_ORT_LIBRARY=<asan lib>``, ``LD_PRELOAD="libasan.so libstdc++.so"`` (python itself is not
   instrumented, so the runtime must be loaded first; libstdc++ so that ASan's operator new/delete
   interceptors see the same C++ runtime as ONNX Runtime), ``ASAN_OPTIONS=detect_leaks=0:abort_on_error=1``
   (python's own allocations at exit are not ours; test_leaks.py checks leaks) and
   ``UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1``, and asserts it passes with no sanitizer
   report in its output. The two ``*allocation_failure*`` tests are deselected there: they request
   2-256 TiB outputs, which ONNX Runtime allocates with operator new; the plain run checks that this
   fails cleanly (std::bad_alloc -> ORT error), while ASan's operator new reports and aborts instead
   of throwing (allocator_may_return_null does not apply to throwing new); for the same reason the
   malformed-input fuzzer runs without its huge-output mutations there (``YOSO_FUZZ_NO_HUGE=1``:
   ``fuzz_ops.py --no-huge``). ``test_a_crashing_worker_is_reported`` (a control of the fuzz harness
   itself, whose deliberate SIGSEGV ASan turns into SIGABRT) is deselected too.

cmake and g++ are required: their absence is a failure, not a skip.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.native]  # ASan/UBSan builds

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yoso-deploy" / "asan-build"
SANITIZE = "address,undefined"
# Any of these in the output is a sanitizer finding (ASan, UBSan, LSan, deadly signals under ASan).
REPORT = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|AddressSanitizer:DEADLYSIGNAL|"
    r"runtime error:|SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer"
)
OP_TESTS = ["tests/plugins/test_ort_ops.py", "tests/plugins/test_op_validation_extra.py", "tests/plugins/test_ort_ops_simd.py",
            "tests/plugins/test_fuzz_ops.py"]
DESELECT = "not allocation_failure and not test_a_crashing_worker_is_reported"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is required for the sanitizer build (install it; CI images have it)"
    return path


def _clean_env() -> dict:
    env = dict(os.environ)
    for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "YOSO_ORT_LIBRARY"):
        env.pop(k, None)
    return env


def _runtime_lib(cxx: str, name: str) -> str:
    out = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout.strip()
    assert os.path.isabs(out) and os.path.isfile(out), f"{cxx} does not ship {name} (got {out!r}); install libasan"
    return os.path.realpath(out)


def _build_key(cxx: str, cmake: str) -> str:
    h = hashlib.sha256()
    files = [REPO / "CMakeLists.txt", REPO / "scripts" / "dev" / "fetch_ort_headers.sh"]
    files += sorted(p for p in (REPO / "plugins").rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    for tool in (cxx, cmake):
        h.update(subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.encode())
    h.update(f"{SANITIZE}|{os.environ.get('ONNXRUNTIME_ROOT', '')}".encode())
    return h.hexdigest()[:20]


@pytest.fixture(scope="module")
def toolchain():
    cxx, cmake = _tool(os.environ.get("CXX", "g++")), _tool("cmake")
    return {"cxx": cxx, "cmake": cmake, "libasan": _runtime_lib(cxx, "libasan.so"),
            "libstdcxx": _runtime_lib(cxx, "libstdc++.so")}


@pytest.fixture(scope="module")
def asan_lib(toolchain) -> Path:
    key = _build_key(toolchain["cxx"], toolchain["cmake"])
    build = CACHE / key
    lib = build / "plugins" / "libyoso_ort.so"
    if (build / ".complete").is_file() and lib.is_file():
        print(f"ASan build: cached {build}")
        return lib
    t0 = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f".{key}.{os.getpid()}.tmp"  # built in place, then renamed (CMake caches absolute paths,
    shutil.rmtree(work, ignore_errors=True)     # but nothing reconfigures a published build)
    env = _clean_env()
    env["CXX"] = toolchain["cxx"]
    try:
        cfg = subprocess.run(
            [toolchain["cmake"], "-S", str(REPO), "-B", str(work), f"-DYOSO_SANITIZE={SANITIZE}",
             "-DCMAKE_BUILD_TYPE=Release", "-DYOSO_BUILD_CUDA=OFF", "-DYOSO_BUILD_TRT=OFF"],  # the CPU library
            capture_output=True, text=True, env=env, timeout=600,
        )
        assert cfg.returncode == 0, f"cmake configure failed:\n{cfg.stdout[-3000:]}\n{cfg.stderr[-3000:]}"
        bld = subprocess.run([toolchain["cmake"], "--build", str(work), "-j2"], capture_output=True, text=True,
                             env=env, timeout=900)
        assert bld.returncode == 0, f"cmake --build failed:\n{bld.stdout[-3000:]}\n{bld.stderr[-3000:]}"
        assert (work / "plugins" / "libyoso_ort.so").is_file(), "the build produced no plugins/libyoso_ort.so"
        (work / ".complete").write_text(f"built in {time.perf_counter() - t0:.1f}s\n")
        if build.exists() and not (build / ".complete").is_file():
            shutil.rmtree(build, ignore_errors=True)  # a broken earlier attempt
        try:
            os.rename(work, build)
        except OSError:
            pass  # a concurrent run published the same key first: use theirs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert (build / ".complete").is_file() and lib.is_file(), f"no usable build in {build}"
    for old in sorted((p for p in CACHE.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime)[:-3]:
        shutil.rmtree(old, ignore_errors=True)  # keep the newest three source states
    print(f"ASan build: {time.perf_counter() - t0:.1f}s -> {build}")
    return lib


@pytest.fixture(scope="module")
def sanitizer_env(toolchain):
    env = _clean_env()
    env["LD_PRELOAD"] = f"{toolchain['libasan']} {toolchain['libstdcxx']}"
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    env["PYTHONFAULTHANDLER"] = "1"
    env["YOSO_FUZZ_NO_HUGE"] = "1"
    return env


def test_asan_library_is_instrumented(asan_lib):
    und = subprocess.run(["nm", "-D", "--undefined-only", str(asan_lib)], capture_output=True, text=True,
                         check=True).stdout
    assert "__asan_report_" in und or "__asan_init" in und, "the YOSO_SANITIZE build has no ASan instrumentation"
    assert "__ubsan_handle_" in und, "the YOSO_SANITIZE build has no UBSan instrumentation"


CANARY = r"""
#include <cstdlib>
#include <climits>
extern "C" int canary(int mode) {
  if (mode == 1) {
    int* p = static_cast<int*>(std::malloc(4 * sizeof(int)));
    volatile int i = 4;
    p[i] = 1;                      // heap-buffer-overflow
    int r = p[0];
    std::free(p);
    return r;
  }
  volatile int big = INT_MAX;
  return big + mode;               // signed integer overflow (UB)
}
"""


@pytest.mark.parametrize("mode,expect", [(1, "heap-buffer-overflow"), (2, "signed integer overflow")])
def test_sanitizer_reports_are_detected(toolchain, sanitizer_env, tmp_path, mode, expect):
    """Control: in exactly the environment used below, a real bug produces a report we detect."""
    src = tmp_path / "canary.cc"
    src.write_text(CANARY)
    so = tmp_path / "libcanary.so"
    subprocess.run([toolchain["cxx"], "-shared", "-fPIC", "-g", f"-fsanitize={SANITIZE}", "-fno-sanitize-recover=all",
                    str(src), "-o", str(so)], check=True, env=_clean_env(), timeout=300)
    r = subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(so)!r}).canary({mode})"],
                       capture_output=True, text=True, env=sanitizer_env, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and REPORT.search(out) and expect in out, f"rc={r.returncode}\n{out[-3000:]}"


def test_op_tests_pass_under_asan_ubsan(asan_lib, sanitizer_env):
    env = dict(sanitizer_env, YOSO_ORT_LIBRARY=str(asan_lib))
    cmd = [sys.executable, "-m", "pytest", *OP_TESTS, "-q", "-p", "no:cacheprovider", "-k", DESELECT]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=1200)
    seconds = time.perf_counter() - t0
    out = r.stdout + r.stderr
    reports = [m.group(0) for m in REPORT.finditer(out)]
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    print(f"sanitizer run: {' '.join(cmd[3:])}: {summary} in {seconds:.1f}s; sanitizer reports: {len(reports)}")
    assert not reports, f"sanitizer reports ({len(reports)}):\n{out[-8000:]}"
    assert r.returncode == 0, f"op tests failed under ASan/UBSan (rc {r.returncode}):\n{out[-8000:]}"
    m = re.search(r"(\d+) passed", summary)
    assert m and int(m.group(1)) >= 300, f"too few tests ran under the sanitizers: {summary}"
    assert " failed" not in summary and " error" not in summary, summary
    # The library the subprocess loaded really was the sanitized one.
    probe = subprocess.run([sys.executable, "-c", "import yoso_deploy; print(yoso_deploy.ort_library_path())"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert probe.stdout.strip() == str(asan_lib), probe.stdout + probe.stderr
