"""Fuzzing the com.yoso ops of libyoso_ort.so (issue 8), briefly enough for CI.

The fuzzers live in ``scripts/dev/fuzz_ops.py`` (run it for longer: ``--iterations``, ``--seed``):

* valid cases (hypothesis, ``derandomize=True`` so CI is reproducible, ``deadline=None``): B 0-3,
  H 1-3, Sq/Sk 0-40, D a power of two 1-128, tau 1..min(D, 16), m 1-40, Dv 1-70, random masks and
  data; FastHash codes bit-identical to ``yoso_deploy.modeling.ops``, LSHCumulation within
  ``1e-5 * max|value|``. Sessions are cached per attribute set.
* malformed cases (random ranks, dims, element types, attributes, NaN/inf, bad signs, masks and
  codes, empty-but-huge and unallocatable shapes) in a *subprocess* with a fixed seed, so that a
  crash (a signal) is a test failure rather than the end of the test run. Every case must end in an
  ONNX Runtime error naming the op or input, or in a result equal to the reference.

The last two tests check that these checks can fail: a wrong reference is noticed, and a crashing
worker is reported as a crash.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.native

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "dev" / "fuzz_ops.py"
VALID_EXAMPLES = 100
MALFORMED_ITERATIONS = 300
MALFORMED_SEED = 0


def _load_fuzz_ops():
    spec = importlib.util.spec_from_file_location("fuzz_ops", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_ops", module)
    spec.loader.exec_module(module)
    return module


fuzz_ops = _load_fuzz_ops()


@pytest.fixture(scope="module")
def sessions():
    return fuzz_ops.Sessions()  # the library from yoso_deploy.ort_library_path() ($YOSO_ORT_LIBRARY first)


@pytest.fixture
def one_torch_thread():
    # The reference's index_add_ is ~15x slower with contended intra-op threads; restore afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_valid_cases_match_reference(sessions, one_torch_thread):
    stats = fuzz_ops.run_valid(VALID_EXAMPLES, None, sessions)  # hypothesis, derandomize=True
    assert stats["cases"] >= 0.9 * VALID_EXAMPLES, stats
    assert 0 < stats["empty"] < stats["cases"], stats  # both empty and non-empty shapes were drawn
    assert stats["worst_rel_err"] <= fuzz_ops.LSH_REL_TOL


def _run_worker(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout)


def _assert_clean_exit(r: subprocess.CompletedProcess) -> str:
    out = r.stdout + r.stderr
    if r.returncode < 0:
        name = signal.Signals(-r.returncode).name
        raise AssertionError(f"the fuzz worker crashed with {name}:\n{out[-6000:]}")
    assert r.returncode == 0, f"the fuzz worker failed (exit {r.returncode}):\n{out[-6000:]}"
    return out


@pytest.mark.slow  # thousands of malformed op calls
def test_malformed_inputs_never_crash():
    cmd = [sys.executable, str(SCRIPT), "--mode", "malformed", "--iterations", str(MALFORMED_ITERATIONS),
           "--seed", str(MALFORMED_SEED)]
    if os.environ.get("YOSO_FUZZ_NO_HUGE") == "1":  # under ASan (tests/plugins/test_sanitizers.py): see fuzz_ops.py
        print("YOSO_FUZZ_NO_HUGE=1: without the > 1 TiB output mutations (ASan aborts on them)")
        cmd.append("--no-huge")
    out = _assert_clean_exit(_run_worker(cmd))
    m = re.search(r"fuzz_ops malformed: (\d+) cases .*?, (\d+) refused \((\d+) at session creation, (\d+) at run\), "
                  r"(\d+) accepted", out)
    assert m, f"no summary line in the worker output:\n{out[-3000:]}"
    print(m.group(0))
    cases, refused, at_session, at_run, accepted = map(int, m.groups())
    assert cases == MALFORMED_ITERATIONS and refused + accepted == cases
    # The mutations reach every outcome: refused by ORT/kernel creation, refused by Compute, computed.
    assert at_session > 0 and at_run > 0 and accepted > 0, m.group(0)


def test_fuzzer_notices_a_wrong_result(sessions, one_torch_thread, monkeypatch):
    case = fuzz_ops.ValidCase(b=2, h=2, sq=9, sk=7, d=16, tau=4, m=6, dv=5, kind="normal", masks="ones", seed=1)
    fuzz_ops.check_valid(case, sessions)  # passes as is
    real = fuzz_ops.ops.fast_hash
    monkeypatch.setattr(fuzz_ops.ops, "fast_hash", lambda *a: (real(*a) + 1) % 16)
    with pytest.raises(AssertionError, match="FastHash codes differ"):
        fuzz_ops.check_valid(case, sessions)
    monkeypatch.setattr(fuzz_ops.ops, "fast_hash", real)
    real_lsh = fuzz_ops.ops.lsh_cumulation
    monkeypatch.setattr(fuzz_ops.ops, "lsh_cumulation", lambda *a: real_lsh(*a) * 1.001)
    with pytest.raises(AssertionError, match="LSHCumulation max abs err"):
        fuzz_ops.check_valid(case, sessions)
    # The malformed oracle refuses to call a contract violation "accepted".
    bad = fuzz_ops.Case("FastHash", {"num_hash": 6, "hash_code_len": 4},
                        {"x": np.zeros((1, 1, 2, 16), np.float32), "mask": np.array([[1, 2]], np.int32),
                         "signs": np.ones((1, 3, 2, 16), np.float32)}, dict(fuzz_ops.FH_INPUTS), [])
    assert fuzz_ops._contract_allows(bad) == "values"


def test_a_crashing_worker_is_reported():
    r = _run_worker([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"], timeout=60)
    with pytest.raises(AssertionError, match="crashed with SIGSEGV"):
        _assert_clean_exit(r)
