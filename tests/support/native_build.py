"""Configure/build helpers for the pytest wrappers of the native tests (tests/cpp, tests/gpu).

Build trees live under ``build/`` in the checkout (git-ignored) and are reused between runs, so only
the first run compiles everything (about a minute on two cores).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = os.environ.get("YOSO_JOBS", "2")


def cmake() -> str:
    # A prerequisite of the project (README: CMake >= 3.18 builds libyoso_ort.so), so its absence is a
    # failure, as in tests/plugins/test_sanitizers.py, never a skip that hides the native tests.
    exe = shutil.which("cmake")
    if exe is None:
        pytest.fail("cmake is not installed: the native tests need CMake >= 3.18 and a C++17 compiler "
                    "(install cmake, e.g. 'apt-get install cmake' or 'pip install cmake')")
    return exe


def nvcc() -> str | None:
    for cand in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc",
                 *sorted(Path("/usr/local").glob("cuda-*/bin/nvcc"), reverse=True)):
        if cand and Path(cand).is_file():
            return str(cand)
    return None


def run(cmd: list, timeout: int, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def configure_and_build(build_dir: Path, options: dict, targets: list[str], timeout: int = 1200) -> str:
    """Configure ``build_dir`` (if needed) and build ``targets``; returns the configure log."""
    exe = cmake()
    args = [exe, "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release", "-DYOSO_WARNINGS_AS_ERRORS=ON"]
    args += [f"-D{k}={v}" for k, v in options.items()]
    r = run(args, timeout)
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"cmake configure failed:\n{log[-4000:]}"
    (build_dir / "yoso-configure.log").write_text(log)
    for target in targets:
        b = run([exe, "--build", build_dir, "-j", JOBS, "--target", target], timeout)
        assert b.returncode == 0, f"building {target} failed:\n{(b.stdout + b.stderr)[-6000:]}"
    return log


SUMMARY = re.compile(r"yoso-test summary: (\d+) tests, (\d+) failed")


def run_test_binary(exe: Path, timeout: int = 900, args: list | None = None, prefix: list | None = None):
    """Run a yoso_test binary; returns (returncode, stdout, (tests, failed))."""
    r = run([*(prefix or []), exe, *(args or [])], timeout)
    out = r.stdout + r.stderr
    print(out)
    m = SUMMARY.search(out)
    counts = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return r.returncode, out, counts
