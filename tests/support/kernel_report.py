"""The kernel report of libyoso_ort.so (``YOSO_KERNEL_REPORT``), for tests that must know which code ran.

A CPU kernel of the library that is created (i.e. a session that is created) while the environment
variable ``YOSO_KERNEL_REPORT`` names a file appends one line to that file per op call::

    yoso-kernel op=FastHash node=<node> provider=CPUExecutionProvider kernel=avx2 tasks=1536 B=1 H=12 ...
      ... cpu_avx2_fma=1

``kernel`` is what the dispatch of plugins/cpu/yoso_cpu.cc chose (FastHash: ``avx512`` / ``avx2`` /
``scalar``; LSHCumulation: ``avx512-dense`` / ``avx2-dense`` / ``scalar-dense`` / ``scalar-compact``),
``tasks`` the number of tasks the op handed to ONNX Runtime's intra-op pool, ``cpu_avx2_fma`` what the
library detected. What the CPU has (AVX2+FMA, AVX-512F+BW) is read independently here, from
/proc/cpuinfo, and :func:`active_isa` models the library's choice of path (the CPU's best, or what
``YOSO_CPU_ISA`` / ``YOSO_FORCE_SCALAR`` ask for, capped at what the CPU supports), so that a test can
say which kernel must have run.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ENV = "YOSO_KERNEL_REPORT"


ISA_ENV = "YOSO_CPU_ISA"
FORCE_SCALAR_ENV = "YOSO_FORCE_SCALAR"
ISAS = ("scalar", "avx2", "avx512")  # worst to best


def cpu_flags() -> set[str]:
    """The CPU flags of /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_avx2_fma() -> bool:
    """AVX2 and FMA in the CPU flags of /proc/cpuinfo (False where it cannot be read)."""
    return {"avx2", "fma"} <= cpu_flags()


def cpu_has_avx512() -> bool:
    """What the library's AVX-512 kernels need: AVX-512F and AVX-512BW (and AVX2+FMA) in /proc/cpuinfo."""
    return {"avx2", "fma", "avx512f", "avx512bw"} <= cpu_flags()


def supported_isas() -> list[str]:
    """The paths libyoso_ort.so can run on this CPU, worst to best."""
    return ["scalar"] + (["avx2"] if cpu_has_avx2_fma() else []) + (["avx512"] if cpu_has_avx512() else [])


def best_isa() -> str:
    return supported_isas()[-1]


def active_isa(env=None) -> str:
    """The path the library runs under ``env`` (default os.environ), as plugins/cpu/yoso_cpu.cc decides:
    YOSO_FORCE_SCALAR (non-empty, not "0") -> scalar; else YOSO_CPU_ISA (case-insensitive; unset, empty,
    "auto" or unknown = the best), capped at the best path this CPU supports."""
    env = os.environ if env is None else env
    if env.get(FORCE_SCALAR_ENV, "") not in ("", "0"):
        return "scalar"
    best = best_isa()
    want = env.get(ISA_ENV, "").lower()
    if want not in ISAS:
        return best
    return ISAS[min(ISAS.index(want), ISAS.index(best))]


def fast_hash_kernel(isa: str, d: int) -> str:
    """The FastHash kernel of a path: the AVX2 path runs D < 8 on the scalar kernel."""
    if isa == "avx2" and d < 8:
        return "scalar"
    return isa


def lsh_kernel(isa: str, sk: int = 1, compact: bool = False) -> str:
    """The LSHCumulation kernel of a path: compact tables (large tau) and Sk = 0 are scalar on every path."""
    if compact:
        return "scalar-compact"
    return f"{isa if sk > 0 else 'scalar'}-dense"


NO_AVX2_REASON = ("this CPU has no AVX2+FMA (/proc/cpuinfo flags): libyoso_ort.so runs its scalar kernels only, "
                  "so the AVX2 kernels are NOT tested on this machine")
NO_AVX512_REASON = ("this CPU has no AVX-512F+AVX-512BW (/proc/cpuinfo flags): libyoso_ort.so never selects its "
                    "AVX-512 kernels here (YOSO_CPU_ISA=avx512 falls back to the best supported path), so the "
                    "AVX-512 kernels are NOT tested on this machine")


def parse_line(line: str) -> dict:
    words = line.split()
    assert words and words[0] == "yoso-kernel", f"not a kernel report line: {line!r}"
    out = {}
    for w in words[1:]:
        k, _, v = w.partition("=")
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


@contextlib.contextmanager
def reporting(path: str | Path):
    """Sets YOSO_KERNEL_REPORT=path for the sessions created inside the block (restored afterwards)."""
    old = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    try:
        yield Path(path)
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


class Report:
    """A report file and a read position: ``new()`` returns the lines written since the last call."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.touch()
        self.offset = self.path.stat().st_size

    def new(self) -> list[dict]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        return [parse_line(ln) for ln in data.decode().splitlines() if ln.strip()]
