#!/usr/bin/env python
"""Micro-benchmark of the two com.yoso ops in ONNX Runtime (libyoso_ort.so, CPU execution provider).

Each op runs alone in a one-node ONNX graph; inputs are drawn from a fixed seed. Every case is
timed ``--repeat`` times after ``--warmup`` untimed runs and the *minimum* wall-clock time is
reported (the machine may be shared: the minimum is the least noisy statistic), with the median
alongside. For 1-thread runs the table also gives the minimum CPU time of the calling thread (ONNX
Runtime then runs the kernel on that thread), which a loaded machine does not inflate.

Defaults are the yoso-4096 attention shapes: H=12, D=64 (head dim), m=64, tau=9, Dv=64,
S in {512, 1024, 2048, 4096}, B in {1, 8}, 2 intra-op threads. One "layer" of YOSO-LSH attention
calls FastHash twice (queries and keys) and LSHCumulation once; the summary table adds them up.

    python scripts/bench/bench_ops.py                              # the default grid
    python scripts/bench/bench_ops.py --seq 512 4096 --batch 1 --threads 1 2
    python scripts/bench/bench_ops.py --compare-reference          # also time yoso_deploy.modeling.ops
    python scripts/bench/bench_ops.py --json out/bench_ops.json    # machine-readable results

The library is ``--lib`` if given, else ``yoso_deploy.ort_library_path()`` ($YOSO_ORT_LIBRARY
first). ``YOSO_FORCE_SCALAR=1`` in the environment makes the library use its portable scalar
kernels (to measure the fallback). Other code can import :func:`run_benchmark` and get the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from yoso_deploy.modeling import ops  # noqa: E402

F32, I32 = TensorProto.FLOAT, TensorProto.INT32


# ------------------------------------------------------------------------------------------------
# Graphs, sessions, inputs
# ------------------------------------------------------------------------------------------------


def _vi(name: str, elem: int, rank: int):
    return helper.make_tensor_value_info(name, elem, [f"{name}_{i}" for i in range(rank)])


def _one_node_model(op: str, inputs, out_elem: int, **attrs) -> bytes:
    node = helper.make_node(op, [n for n, _, _ in inputs], ["out"], domain=ops.OP_DOMAIN, **attrs)
    graph = helper.make_graph(
        [node], f"bench_{op}", [_vi(n, t, r) for n, t, r in inputs], [_vi("out", out_elem, 4)]
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.OP_DOMAIN, ops.OP_VERSION)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def fast_hash_model(num_hash: int, tau: int) -> bytes:
    inputs = [("x", F32, 4), ("mask", I32, 2), ("signs", F32, 4)]
    return _one_node_model("FastHash", inputs, I32, num_hash=num_hash, hash_code_len=tau)


def lsh_model(tau: int) -> bytes:
    inputs = [("query_codes", I32, 4), ("key_codes", I32, 4), ("query_mask", I32, 2),
              ("key_mask", I32, 2), ("value", F32, 4)]
    return _one_node_model("LSHCumulation", inputs, F32, hash_code_len=tau)


def make_session(lib: str, model: bytes, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.register_custom_ops_library(lib)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def make_inputs(b: int, h: int, s: int, d: int, m: int, tau: int, dv: int, seed: int, pad: float):
    """Fixed-seed inputs of one case. ``pad``: fraction of padding at the end of rows 1.. of the batch."""
    import torch

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, h, s, d)).astype(np.float32)
    mask = np.ones((b, s), np.int32)
    if pad > 0:
        keep = max(1, int(round(s * (1.0 - pad))))
        mask[1:, keep:] = 0
    signs = ops.draw_signs(h, m, tau, d, generator=torch.Generator().manual_seed(seed)).numpy()
    # LSHCumulation codes: the FastHash codes of random queries and keys are close to uniform.
    qc = rng.integers(0, 1 << tau, size=(b, h, s, m), dtype=np.int32)
    kc = rng.integers(0, 1 << tau, size=(b, h, s, m), dtype=np.int32)
    v = rng.standard_normal((b, h, s, dv)).astype(np.float32)
    return {"x": x, "mask": mask, "signs": signs, "qc": qc, "kc": kc, "v": v}


def time_fn(fn, repeat: int, warmup: int, cpu_clock=time.thread_time) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of `repeat` calls of fn (after `warmup` untimed calls).

    The CPU time (``cpu_clock``) is robust to a loaded machine: with 1 intra-op thread ONNX Runtime
    runs the kernel on the calling thread, so ``time.thread_time`` measures exactly the op.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = cpu_clock(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), cpu_clock()
        wall.append((t1 - t0) * 1e3)
        cpu.append((c1 - c0) * 1e3)
    return wall, cpu


# ------------------------------------------------------------------------------------------------
# Work counts (for the throughput column)
# ------------------------------------------------------------------------------------------------


def fast_hash_flops(b, h, s, d, m, tau) -> float:
    """Adds/subtracts of FastHash: 3 sign products + 3 WHTs of D log2 D per part and token."""
    p = ops.num_parts(m, d, tau)
    return float(b * h * s * p * 3 * (d + d * max(1, int(math.log2(d)))))


def lsh_flops(b, h, sq, sk, m, dv) -> float:
    """Adds of LSHCumulation: one Dv-row add per (key, f) into the table and per (query, f) out."""
    return float(b * h * m * (sq + sk) * dv)


# ------------------------------------------------------------------------------------------------
# Benchmark
# ------------------------------------------------------------------------------------------------


def _row(op, impl, threads, b, s, times, flops, tokens):
    wall, cpu = times
    best = min(wall)
    return {
        "op": op, "impl": impl, "threads": threads, "batch": b, "seq_len": s,
        "min_ms": best, "median_ms": statistics.median(wall), "repeat": len(wall),
        # CPU time of the calling thread (threads=1: the op itself; threads>1: only the caller's
        # share, so not comparable) -- a load-independent figure for single-thread runs.
        "cpu_min_ms": min(cpu),
        "gflops": flops / (best * 1e-3) / 1e9, "tokens_per_s": tokens / (best * 1e-3),
    }


def _reference_bytes(b, h, s, d, m, tau, dv) -> float:
    """Rough peak memory of the PyTorch reference (FastHash materialises [B,H,P,S,D] several times)."""
    p = ops.num_parts(m, d, tau)
    return max(6.0 * b * h * p * s * d * 4, 4.0 * b * h * s * m * dv * 4)


def run_benchmark(lib: str, seqs, batches, threads_list, heads=12, dim=64, num_hash=64, tau=9, dv=64,
                  repeat=10, warmup=2, seed=0, pad=0.0, which=("fast_hash", "lsh"),
                  compare_reference=False, reference_repeat=3, reference_max_gb=4.0,
                  log=print) -> list[dict]:
    """Times the ops over the grid; returns one dict per (op, impl, threads, batch, seq)."""
    ops.check_hash_params(num_hash, tau, dim)
    rows: list[dict] = []
    fh_model, l_model = fast_hash_model(num_hash, tau), lsh_model(tau)
    for threads in threads_list:
        fh_sess = make_session(lib, fh_model, threads) if "fast_hash" in which else None
        l_sess = make_session(lib, l_model, threads) if "lsh" in which else None
        for b in batches:
            for s in seqs:
                inp = make_inputs(b, heads, s, dim, num_hash, tau, dv, seed, pad)
                tokens = b * s
                if fh_sess is not None:
                    feeds = {"x": inp["x"], "mask": inp["mask"], "signs": inp["signs"]}
                    t = time_fn(lambda: fh_sess.run(None, feeds), repeat, warmup)
                    rows.append(_row("FastHash", "ort", threads, b, s, t,
                                     fast_hash_flops(b, heads, s, dim, num_hash, tau), tokens))
                    log(_fmt(rows[-1]))
                if l_sess is not None:
                    feeds = {"query_codes": inp["qc"], "key_codes": inp["kc"], "query_mask": inp["mask"],
                             "key_mask": inp["mask"], "value": inp["v"]}
                    t = time_fn(lambda: l_sess.run(None, feeds), repeat, warmup)
                    rows.append(_row("LSHCumulation", "ort", threads, b, s, t,
                                     lsh_flops(b, heads, s, s, num_hash, dv), tokens))
                    log(_fmt(rows[-1]))
                if compare_reference:
                    rows.extend(_time_reference(inp, b, heads, s, dim, num_hash, tau, dv, threads, which,
                                                reference_repeat, reference_max_gb, log))
    return rows


def _time_reference(inp, b, h, s, d, m, tau, dv, threads, which, repeat, max_gb, log) -> list[dict]:
    import torch

    if _reference_bytes(b, h, s, d, m, tau, dv) > max_gb * 2**30:
        log(f"  reference skipped for B={b} S={s} (needs > {max_gb:g} GB; raise --reference-max-gb)")
        return []
    torch.set_num_threads(threads)
    t = {k: torch.from_numpy(v) for k, v in inp.items()}
    out = []
    with torch.inference_mode():
        if "fast_hash" in which:
            times = time_fn(lambda: ops.fast_hash(t["x"], t["mask"], t["signs"], m, tau), repeat, 1)
            out.append(_row("FastHash", "reference", threads, b, s, times,
                            fast_hash_flops(b, h, s, d, m, tau), b * s))
            log(_fmt(out[-1]))
        if "lsh" in which:
            times = time_fn(lambda: ops.lsh_cumulation(t["qc"], t["kc"], t["mask"], t["mask"], t["v"], tau),
                            repeat, 1)
            out.append(_row("LSHCumulation", "reference", threads, b, s, times,
                            lsh_flops(b, h, s, s, m, dv), b * s))
            log(_fmt(out[-1]))
    return out


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def _fmt(r: dict) -> str:
    cpu = f"  (thread cpu {r['cpu_min_ms']:.3f} ms)" if r["threads"] == 1 else ""
    return (f"  {r['op']:<13} {r['impl']:<9} thr={r['threads']} B={r['batch']:<2} S={r['seq_len']:<5} "
            f"min {r['min_ms']:9.3f} ms  median {r['median_ms']:9.3f} ms{cpu}")


def format_table(headers, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def tables(rows: list[dict]) -> str:
    per_op = format_table(
        ["op", "impl", "threads", "B", "S", "min ms", "median ms", "cpu ms (1 thr)", "GFLOP/s", "Mtok/s"],
        [[r["op"], r["impl"], r["threads"], r["batch"], r["seq_len"], f"{r['min_ms']:.3f}",
          f"{r['median_ms']:.3f}", f"{r['cpu_min_ms']:.3f}" if r["threads"] == 1 else "-",
          f"{r['gflops']:.2f}", f"{r['tokens_per_s'] / 1e6:.3f}"] for r in rows],
    )
    # Per attention layer: 2 x FastHash (queries, keys) + 1 x LSHCumulation.
    layer = []
    keys = sorted({(r["impl"], r["threads"], r["batch"], r["seq_len"]) for r in rows})
    for impl, thr, b, s in keys:
        get = {r["op"]: r["min_ms"] for r in rows
               if (r["impl"], r["threads"], r["batch"], r["seq_len"]) == (impl, thr, b, s)}
        if "FastHash" in get and "LSHCumulation" in get:
            total = 2 * get["FastHash"] + get["LSHCumulation"]
            layer.append([impl, thr, b, s, f"{get['FastHash']:.3f}", f"{get['LSHCumulation']:.3f}",
                          f"{total:.3f}"])
    out = per_op
    if layer:
        out += "\n\nper layer (2 x FastHash + 1 x LSHCumulation, min times):\n"
        out += format_table(["impl", "threads", "B", "S", "FastHash ms", "LSHCum ms", "layer ms"], layer)
    return out


def main(argv=None) -> int:
    head, _, rest = __doc__.partition("\n\n")
    ap = argparse.ArgumentParser(description=head, epilog=rest,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", help="path of libyoso_ort.so (default: the installed one / $YOSO_ORT_LIBRARY)")
    ap.add_argument("--seq", type=int, nargs="+", default=[512, 1024, 2048, 4096], help="sequence lengths S")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes B")
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="ORT intra-op thread counts")
    ap.add_argument("--heads", type=int, default=12, help="H")
    ap.add_argument("--dim", type=int, default=64, help="hashed width D (power of two)")
    ap.add_argument("--num-hash", type=int, default=64, help="m")
    ap.add_argument("--tau", type=int, default=9, help="hash_code_len")
    ap.add_argument("--dv", type=int, default=64, help="value width Dv")
    ap.add_argument("--repeat", type=int, default=10, help="timed runs per case (min is reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pad", type=float, default=0.0,
                    help="fraction of padding tokens in batch rows 1.. (row 0 is always full)")
    ap.add_argument("--ops", nargs="+", choices=["fast_hash", "lsh"], default=["fast_hash", "lsh"])
    ap.add_argument("--compare-reference", action="store_true",
                    help="also time the PyTorch reference (yoso_deploy.modeling.ops) with the same threads")
    ap.add_argument("--reference-repeat", type=int, default=3)
    ap.add_argument("--reference-max-gb", type=float, default=4.0,
                    help="skip reference cases whose rough peak memory exceeds this")
    ap.add_argument("--json", type=Path, help="write the rows (and the machine) as JSON here")
    args = ap.parse_args(argv)

    if args.lib:
        lib = args.lib
    else:
        from yoso_deploy import ort_library_path

        lib = str(ort_library_path())
    print(f"library: {lib}")
    print(f"onnxruntime {ort.__version__}; H={args.heads} D={args.dim} m={args.num_hash} tau={args.tau} "
          f"Dv={args.dv}; min of {args.repeat} (warmup {args.warmup})"
          + ("; YOSO_FORCE_SCALAR=" + os.environ["YOSO_FORCE_SCALAR"] if os.environ.get("YOSO_FORCE_SCALAR") else ""))
    rows = run_benchmark(lib, args.seq, args.batch, args.threads, heads=args.heads, dim=args.dim,
                         num_hash=args.num_hash, tau=args.tau, dv=args.dv, repeat=args.repeat,
                         warmup=args.warmup, seed=args.seed, pad=args.pad, which=tuple(args.ops),
                         compare_reference=args.compare_reference, reference_repeat=args.reference_repeat,
                         reference_max_gb=args.reference_max_gb)
    print()
    print(tables(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"library": lib, "onnxruntime": ort.__version__, "cpu_count": os.cpu_count(),
                "load_avg": os.getloadavg(), "force_scalar": os.environ.get("YOSO_FORCE_SCALAR", ""),
                "config": {"heads": args.heads, "dim": args.dim, "num_hash": args.num_hash, "tau": args.tau,
                           "dv": args.dv, "repeat": args.repeat, "pad": args.pad}}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
