#!/usr/bin/env python
"""FastHash and LSHCumulation alone, once per CPU instruction-set path of libyoso_ort.so, side by side.

libyoso_ort.so picks its CPU kernels at run time (plugins/cpu/yoso_cpu_kernels.h): AVX-512 (F+BW)
where the CPU has it, AVX2+FMA otherwise, the portable scalar kernels last. The environment variable
``YOSO_CPU_ISA=scalar|avx2|avx512`` (read on every op call) forces a path; this script times each
path the CPU supports in the same process, on the same one-node ONNX Runtime sessions and inputs,
interleaving the paths round by round so that a change of machine load hits them alike, and reports
the minimum wall-clock time of each (the median alongside). Every timed call is checked against
the library's kernel report (``YOSO_KERNEL_REPORT``): the table names the kernel that actually ran,
and the outputs of all paths must be bit-identical (the contract's FastHash is exact; the CPU
LSHCumulation kernels add in the same order).

Defaults are one yoso-4096 attention layer (yoso_deploy.modeling.yoso_4096_config: 12 heads of
head dim 64, num_hash 64, hash_code_len 9) at B=1, S=4096: FastHash on [1, 12, 4096, 64] (called
twice per layer: queries and keys) and LSHCumulation with Dv=64.

    python scripts/bench/bench_kernels_isa.py                       # 1 and 2 intra-op threads
    python scripts/bench/bench_kernels_isa.py --threads 1 --repeat 20
    python scripts/bench/bench_kernels_isa.py --lib /tmp/isa-build/plugins/libyoso_ort.so --json out/isa.json

The CPU model (``lscpu`` "Model name", else /proc/cpuinfo) and its SIMD flags are printed with the
table. The library is ``--lib`` if given, else ``yoso_deploy.ort_library_path()`` ($YOSO_ORT_LIBRARY
first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(ROOT / "scripts" / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import onnxruntime as ort  # noqa: E402
from bench_ops import fast_hash_model, lsh_model, make_inputs, make_session, time_fn  # noqa: E402

ISAS = ("scalar", "avx2", "avx512")
FASTHASH_KERNEL = {"scalar": "scalar", "avx2": "avx2", "avx512": "avx512"}
LSH_KERNEL = {"scalar": "scalar-dense", "avx2": "avx2-dense", "avx512": "avx512-dense"}
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx512_vnni",
              "avx512_bf16", "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_bitalg", "avx512_vpopcntdq",
              "avx512_fp16", "amx_tile")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """lscpu's "Model name" (else /proc/cpuinfo's "model name", else platform.processor())."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def supported_isas(flags: set[str]) -> list[str]:
    """The paths the library selects on this CPU (its own detection: plugins/cpu/yoso_cpu.cc)."""
    out = ["scalar"]
    if {"avx2", "fma"} <= flags:
        out.append("avx2")
        if {"avx512f", "avx512bw"} <= flags:
            out.append("avx512")
    return out


def read_report(path: Path, offset: int) -> tuple[list[dict], int]:
    data = path.read_bytes()[offset:]
    lines = []
    for ln in data.decode().splitlines():
        words = ln.split()
        if words and words[0] == "yoso-kernel":
            lines.append(dict(w.partition("=")[::2] for w in words[1:]))
    return lines, offset + len(data)


def run(lib: str, threads_list, b: int, s: int, h: int, d: int, m: int, tau: int, dv: int,
        repeat: int, warmup: int, rounds: int, isas: list[str], seed: int = 0) -> list[dict]:
    inp = make_inputs(b, h, s, d, m, tau, dv, seed, pad=0.0)
    feeds = {
        "FastHash": {"x": inp["x"], "mask": inp["mask"], "signs": inp["signs"]},
        "LSHCumulation": {"query_codes": inp["qc"], "key_codes": inp["kc"], "query_mask": inp["mask"],
                          "key_mask": inp["mask"], "value": inp["v"]},
    }
    models = {"FastHash": fast_hash_model(m, tau), "LSHCumulation": lsh_model(tau)}
    want = {"FastHash": FASTHASH_KERNEL, "LSHCumulation": LSH_KERNEL}
    report = Path(tempfile.mkdtemp(prefix="yoso-isa-")) / "kernels.txt"
    report.touch()
    offset = 0
    saved = {k: os.environ.get(k) for k in ("YOSO_CPU_ISA", "YOSO_FORCE_SCALAR", "YOSO_KERNEL_REPORT")}
    os.environ.pop("YOSO_FORCE_SCALAR", None)
    rows = []
    try:
        for threads in threads_list:
            os.environ["YOSO_KERNEL_REPORT"] = str(report)  # read when the kernels are created
            sessions = {op: make_session(lib, models[op], threads) for op in models}
            os.environ.pop("YOSO_KERNEL_REPORT", None)
            for op, sess in sessions.items():
                walls: dict[str, list[float]] = {isa: [] for isa in isas}
                outs: dict[str, np.ndarray] = {}
                kernels: dict[str, set] = {isa: set() for isa in isas}
                for r in range(rounds):
                    for isa in isas:
                        os.environ["YOSO_CPU_ISA"] = isa
                        out = sess.run(None, feeds[op])[0]  # warm this path's scratch and caches
                        outs.setdefault(isa, out)
                        wall, _ = time_fn(lambda: sess.run(None, feeds[op]), repeat, warmup if r == 0 else 0)
                        walls[isa] += wall
                        lines, offset = read_report(report, offset)
                        kernels[isa] |= {ln["kernel"] for ln in lines}
                for isa in isas:
                    if kernels[isa] != {want[op][isa]}:
                        raise SystemExit(f"{op} with YOSO_CPU_ISA={isa} ran {sorted(kernels[isa])}, "
                                         f"expected {want[op][isa]!r}: is {lib} built with the AVX-512 kernels?")
                    if not np.array_equal(outs[isa], outs[isas[0]]):
                        raise SystemExit(f"{op}: the {isa} path's output differs from the {isas[0]} path's")
                for isa in isas:
                    rows.append({"op": op, "threads": threads, "isa": isa, "kernel": want[op][isa],
                                 "min_ms": min(walls[isa]), "median_ms": statistics.median(walls[isa]),
                                 "runs": len(walls[isa])})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rows


def table(rows: list[dict], isas: list[str]) -> str:
    head = ["op", "threads"] + [f"{isa} ms (median)" for isa in isas]
    if "scalar" in isas:
        head += [f"{isa} vs scalar" for isa in isas if isa != "scalar"]
    if {"avx2", "avx512"} <= set(isas):
        head.append("avx512 vs avx2")
    out_rows = []
    keys = sorted({(r["op"], r["threads"]) for r in rows}, key=lambda k: (k[0] != "FastHash", k[1]))
    for op, threads in keys:
        by = {r["isa"]: r for r in rows if r["op"] == op and r["threads"] == threads}
        cells = [op, str(threads)] + [f"{by[i]['min_ms']:.2f} ({by[i]['median_ms']:.2f})" for i in isas]
        if "scalar" in isas:
            cells += [f"{by['scalar']['min_ms'] / by[i]['min_ms']:.2f}x" for i in isas if i != "scalar"]
        if {"avx2", "avx512"} <= set(isas):
            cells.append(f"{by['avx2']['min_ms'] / by['avx512']['min_ms']:.2f}x")
        out_rows.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *out_rows)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(c) for c in out_rows])


def main(argv=None) -> int:
    head, _, rest = __doc__.partition("\n\n")
    ap = argparse.ArgumentParser(description=head, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", help="path of libyoso_ort.so (default: the installed one / $YOSO_ORT_LIBRARY)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="ORT intra-op thread counts")
    ap.add_argument("--batch", type=int, default=1, help="B")
    ap.add_argument("--seq", type=int, default=4096, help="S (queries = keys)")
    ap.add_argument("--heads", type=int, default=12, help="H")
    ap.add_argument("--dim", type=int, default=64, help="hashed width D (power of two)")
    ap.add_argument("--num-hash", type=int, default=64, help="m")
    ap.add_argument("--tau", type=int, default=9, help="hash_code_len")
    ap.add_argument("--dv", type=int, default=64, help="value width Dv")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per path and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (each times every path in turn)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per path before the first round")
    ap.add_argument("--isa", nargs="+", choices=ISAS, help="paths to time (default: all this CPU supports)")
    ap.add_argument("--json", type=Path, help="write the machine and the rows as JSON here")
    args = ap.parse_args(argv)

    if args.lib:
        lib = args.lib
    else:
        from yoso_deploy import ort_library_path

        lib = str(ort_library_path())
    flags = cpu_flags()
    avail = supported_isas(flags)
    isas = [i for i in ISAS if i in (args.isa or avail)]
    skipped = [i for i in isas if i not in avail]
    if skipped:
        print(f"skipping {', '.join(skipped)}: not supported by this CPU (/proc/cpuinfo flags)")
        isas = [i for i in isas if i in avail]
    model = cpu_model()
    simd = [f for f in SIMD_FLAGS if f in flags]
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    print(f"CPU: {model}; {os.cpu_count()} logical CPUs")
    print(f"SIMD flags: {' '.join(simd) or '(none)'}")
    print(f"avx512 flags: {' '.join(avx512) or '(none)'}")
    print(f"paths: {' '.join(isas)} (supported here: {' '.join(avail)})")
    print(f"library: {lib}; onnxruntime {ort.__version__}")
    print(f"B={args.batch} H={args.heads} S={args.seq} D={args.dim} m={args.num_hash} tau={args.tau} Dv={args.dv}; "
          f"min (median) of {args.rounds} rounds x {args.repeat} runs per path; load average {os.getloadavg()[0]:.2f}")
    rows = run(lib, args.threads, args.batch, args.seq, args.heads, args.dim, args.num_hash, args.tau, args.dv,
               args.repeat, args.warmup, args.rounds, isas)
    print()
    print(table(rows, isas))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"cpu_model": model, "simd_flags": simd, "avx512_flags": avx512, "paths": isas,
                "library": lib, "onnxruntime": ort.__version__, "cpu_count": os.cpu_count(),
                "load_avg": os.getloadavg(),
                "config": {"batch": args.batch, "seq": args.seq, "heads": args.heads, "dim": args.dim,
                           "num_hash": args.num_hash, "tau": args.tau, "dv": args.dv, "repeat": args.repeat,
                           "rounds": args.rounds}}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
