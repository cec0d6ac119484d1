"""The kernel report of libyoso_ort.so (``YOSO_KERNEL_REPORT``), for tests that must know which code ran.

A CPU kernel of the library that is created (i.e. a session that is created) while the environment
variable ``YOSO_KERNEL_REPORT`` names a file appends one line to that file per op call::

    yoso-kernel op=FastHash node=<node> provider=CPUExecutionProvider kernel=avx2 tasks=1536 B=1 H=12 ...
      ... cpu_avx2_fma=1

``kernel`` is what the dispatch of plugins/cpu/yoso_cpu.cc chose (FastHash: ``avx2`` / ``scalar``;
LSHCumulation: ``avx2-dense`` / ``scalar-dense`` / ``scalar-compact``), ``tasks`` the number of tasks the
op handed to ONNX Runtime's intra-op pool, ``cpu_avx2_fma`` what the library detected. Whether the CPU
has AVX2 and FMA is read independently here, from /proc/cpuinfo.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ENV = "YOSO_KERNEL_REPORT"


def cpu_has_avx2_fma() -> bool:
    """AVX2 and FMA in the CPU flags of /proc/cpuinfo (False where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return {"avx2", "fma"} <= flags
    return False


NO_AVX2_REASON = ("this CPU has no AVX2+FMA (/proc/cpuinfo flags): libyoso_ort.so runs its scalar kernels only, "
                  "so the AVX2 kernels are NOT tested on this machine")


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
