"""The planted mutants of scripts/dev/mutants.py: every one must be killed by its targeted tests.

scripts/dev/mutants.py applies each mutant (a small named source edit) to a temporary copy of the
repository, rebuilds libyoso_ort.so for native ones, runs only the tests that should catch it and
exits non-zero if one survives. The first two tests are quick checks of the list itself (every edit
still applies exactly once, every targeted test exists); the last runs them all (CI budget: 10
minutes; a mutant that is equivalent on this CPU, e.g. AVX2 ones without AVX2, is skipped with a
printed reason).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.native]  # ~6 min: every planted mutant against its tests

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "dev" / "mutants.py"


def _load():
    spec = importlib.util.spec_from_file_location("yoso_mutants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("yoso_mutants", module)
    spec.loader.exec_module(module)
    return module


mutants = _load()


def test_every_mutant_applies_exactly_once():
    r = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mutant_list_covers_the_checks_and_its_tests_exist():
    ms = mutants.MUTANTS
    assert len(ms) >= 15 and len({m.name for m in ms}) == len(ms)
    files = {m.file for m in ms}
    for must in ("plugins/cpu/yoso_cpu.cc", "plugins/cpu/yoso_cpu_scalar.cc",
                 "plugins/cpu/yoso_cpu_avx2.cc", "plugins/ort/yoso_ort_common.h", "plugins/common/yoso_validate.h",
                 "yoso_deploy/runtime/qa.py", "yoso_deploy/export/exporter.py", "yoso_deploy/cli/main.py",
                 "yoso_deploy/runtime/session.py"):
        assert must in files, f"no mutant in {must}"
    for m in ms:
        assert m.why and m.tests, m.name
        for arg in m.tests:
            if arg.startswith("tests/"):
                path, _, func = arg.partition("::")
                func = func.split("[", 1)[0]
                assert (ROOT / path).is_file(), f"{m.name}: {path} does not exist"
                if func:
                    assert re.search(rf"^def {re.escape(func)}\(", (ROOT / path).read_text(), re.M), \
                        f"{m.name}: no test {func} in {path}"


def test_planted_mutants_are_killed():
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    out = r.stdout + r.stderr
    print(out[-8000:])
    print(f"scripts/dev/mutants.py: {time.perf_counter() - t0:.0f}s")
    assert r.returncode == 0, f"scripts/dev/mutants.py exit {r.returncode}:\n{out[-8000:]}"
    summary = re.search(r"mutants: (\d+) killed, (\d+) survived, (\d+) skipped, (\d+) errors, of (\d+)", out)
    assert summary, out[-3000:]
    killed, survived, skipped, errors, total = map(int, summary.groups())
    assert survived == errors == 0 and killed + skipped == total == len(mutants.MUTANTS)
