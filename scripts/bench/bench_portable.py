#!/usr/bin/env python3
"""What the portable path costs: the com.yoso function bodies next to libyoso_ort.so, in one run.

Side by side and *interleaved* (each repeat round runs every implementation once, after a short
settle pause, so a load change hits all alike), at yoso-4096 sizes (hidden 768, 12 heads, FFN 3072,
head dim 64, m = 64, tau = 9; random weights), batch 1:

  library     ONNX Runtime + libyoso_ort.so (the com.yoso kernels)
  ort-bodies  stock ONNX Runtime, no library: the export's model-local function bodies
  openvino    OpenVINO (CPU, f32) on the inlined bodies (--portable inline)

per op (FastHash, LSHCumulation alone, the shapes of one layer) and per encoder layer (a one-layer
export, ``base`` task). The minimum over ``--repeats`` of the wall time is reported, and of the
process CPU time (all threads; ONNX Runtime's pool does not spin here, so it is the work done,
which a loaded machine inflates far less than the wall time), with the 1-minute load average
(``os.getloadavg``, what ``uptime`` prints) read before each case: the machine may be shared.

    python scripts/bench/bench_portable.py --out docs/perf                # S 512 and 4096, 2 threads
    python scripts/bench/bench_portable.py --seq-lens 512 --repeats 2 --no-openvino
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

IMPLS = ("library", "ort-bodies", "openvino")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def ort_options(args, library: bool):
    """SessionOptions with ``args.threads`` intra-op threads that do not spin (CPU time = work)."""
    import onnxruntime as ort

    from yoso_deploy.runtime.session import session_options

    so = session_options(args.threads) if library else ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def op_runners(args, s: int) -> dict:
    """{(op, impl): callable} for FastHash and LSHCumulation at S = s."""
    import onnxruntime as ort
    import torch

    from yoso_deploy.export.functions import op_model
    from yoso_deploy.modeling import ops
    from yoso_deploy.backends.portable import compile_openvino, create_portable_session

    h, d, m, tau, dv = 12, 64, args.num_hash, args.hash_code_len, 64
    rng = np.random.default_rng(s)
    fh_feeds = {"x": rng.standard_normal((1, h, s, d)).astype(np.float32), "mask": np.ones((1, s), np.int32),
                "signs": ops.draw_signs(h, m, tau, d, generator=torch.Generator().manual_seed(0)).numpy()}
    lc_feeds = {"query_codes": rng.integers(0, 1 << tau, (1, h, s, m), dtype=np.int32),
                "key_codes": rng.integers(0, 1 << tau, (1, h, s, m), dtype=np.int32),
                "query_mask": np.ones((1, s), np.int32), "key_mask": np.ones((1, s), np.int32),
                "value": rng.standard_normal((1, h, s, dv)).astype(np.float32)}
    out = {}
    for op, feeds, kw in (("FastHash", fh_feeds, {"hash_dim": d, "num_hash": m}), ("LSHCumulation", lc_feeds, {})):
        lib = ort.InferenceSession(op_model(op, hash_code_len=tau, portable="off", **kw).SerializeToString(),
                                   ort_options(args, True), providers=["CPUExecutionProvider"])
        out[(op, "library")] = (lambda sess=lib, f=feeds: sess.run(None, f)[0])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "op.onnx"
            path.write_bytes(op_model(op, hash_code_len=tau, portable="functions", **kw).SerializeToString())
            stock = create_portable_session(path, session_options=ort_options(args, False))
            out[(op, "ort-bodies")] = (lambda sess=stock, f=feeds: sess.run(None, f)[0])
            if args.openvino:
                from yoso_deploy.backends.portable import run_openvino

                compiled = compile_openvino(path, threads=args.threads)
                name = "codes" if op == "FastHash" else "output"
                out[(op, "openvino")] = (lambda c=compiled, f=feeds, n=name: run_openvino(c, f)[n])
    return out


def layer_runners(args, work: Path) -> dict:
    """{impl: callable(ids, mask)} for a one-layer yoso-4096 export."""
    import onnxruntime as ort
    import torch
    from bench_cpu import yoso_config
    from transformers import YosoModel

    from yoso_deploy.workflow import export
    from yoso_deploy.backends.portable import compile_openvino, create_portable_session, run_openvino

    torch.manual_seed(0)
    ckpt = work / "yoso-1"
    YosoModel(yoso_config(1, args)).eval().save_pretrained(ckpt)
    t0 = time.perf_counter()
    result = export(ckpt, work / "onnx", task="base", validate=False)
    print(f"  exported one yoso-4096 layer in {time.perf_counter() - t0:.0f} s", flush=True)
    lib = ort.InferenceSession(str(result.onnx_path), ort_options(args, True), providers=["CPUExecutionProvider"])
    stock = create_portable_session(result.onnx_path, session_options=ort_options(args, False))
    fns = {"library": lambda ids, mask: lib.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0],
           "ort-bodies": lambda ids, mask: stock.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]}
    if args.openvino:
        compiled = compile_openvino(result.onnx_path, threads=args.threads)
        fns["openvino"] = lambda ids, mask: run_openvino(compiled, {"input_ids": ids, "attention_mask": mask})[
            "last_hidden_state"]
    return fns


def interleaved(fns: dict, args) -> tuple[dict, dict, dict]:
    """Min wall ms and min CPU ms per name over args.repeats rounds (after a warm-up call each), max |out - library|."""
    outs = {name: fn() for name, fn in fns.items()}  # warm-up, and the outputs for the sanity diff
    ref = next(v for k, v in outs.items() if "library" in (k if isinstance(k, str) else k[1]))
    diff = {name: float(np.abs(np.asarray(o, np.float64) - np.asarray(ref, np.float64)).max(initial=0.0))
            for name, o in outs.items()}
    times: dict = {name: [] for name in fns}
    cpu: dict = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            time.sleep(args.settle_ms / 1000)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
            cpu[name].append((time.process_time() - c0) * 1000)
    return {k: min(v) for k, v in times.items()}, {k: min(v) for k, v in cpu.items()}, diff


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-lens", default="512,4096", type=lambda v: [int(x) for x in v.split(",")])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settle-ms", type=float, default=50)
    p.add_argument("--num-hash", type=int, default=64)
    p.add_argument("--hash-code-len", type=int, default=9)
    p.add_argument("--no-openvino", dest="openvino", action="store_false")
    p.add_argument("--no-layer", dest="layer", action="store_false", help="ops only")
    p.add_argument("--out", type=Path, default=Path("bench-portable"))
    args = p.parse_args()
    if args.openvino:
        try:
            import openvino  # noqa: F401
        except ImportError:
            print("OpenVINO is not installed: the openvino column is skipped (pip install openvino)", flush=True)
            args.openvino = False
    from bench_cpu import machine

    t_start = time.perf_counter()
    data = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "machine": machine(),
            "threads": args.threads, "repeats": args.repeats, "num_hash": args.num_hash,
            "hash_code_len": args.hash_code_len, "ops": [], "layer": []}
    try:
        import openvino

        data["machine"]["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:
        pass
    for s in args.seq_lens:
        before = load()
        fns = op_runners(args, s)
        best, cpu, diff = {}, {}, {}
        for op in ("FastHash", "LSHCumulation"):
            b, c, d = interleaved({k: v for k, v in fns.items() if k[0] == op}, args)
            best.update(b)
            cpu.update(c)
            diff.update(d)
        for (op, impl), ms in best.items():
            data["ops"].append({"op": op, "impl": impl, "seq_len": s, "min_ms": round(ms, 2),
                                "cpu_ms": round(cpu[(op, impl)], 2), "max_abs_diff_vs_library": diff[(op, impl)],
                                "load_before": before, "load_after": load()})
        print(f"  [ops] S {s}: " + "  ".join(f"{op}/{impl}={ms:.1f}" for (op, impl), ms in best.items())
              + f" ms (load {before} -> {load()})", flush=True)
    if args.layer:
        with tempfile.TemporaryDirectory() as tmp:
            fns = layer_runners(args, Path(tmp))
            for s in args.seq_lens:
                rng = np.random.default_rng(s)
                ids = rng.integers(3, 1000, size=(1, s), dtype=np.int64)
                mask = np.ones((1, s), np.int64)
                before = load()
                best, cpu, diff = interleaved({k: (lambda fn=fn: fn(ids, mask)) for k, fn in fns.items()}, args)
                for impl, ms in best.items():
                    data["layer"].append({"impl": impl, "seq_len": s, "min_ms": round(ms, 1),
                                          "cpu_ms": round(cpu[impl], 1), "max_abs_diff_vs_library": diff[impl],
                                          "load_before": before, "load_after": load()})
                print(f"  [layer] S {s}: " + "  ".join(f"{k}={v:.0f}" for k, v in best.items())
                      + f" ms (load {before} -> {load()})", flush=True)
    data["seconds"] = round(time.perf_counter() - t_start)
    report(data, args.out)


def _table(rows, key_cols, seqs) -> list[str]:
    """One row per implementation: wall and CPU ms per S, and the CPU-time ratio to the library."""
    cols = [f"S {s} wall ms" for s in seqs] + [f"S {s} CPU ms" for s in seqs] + [f"S {s} ×library (CPU)" for s in seqs]
    lines = [f"| {' | '.join(key_cols)} | " + " | ".join(cols) + " | load (1 min) |",
             "|" + "---|" * len(key_cols) + "---:|" * len(cols) + "---|"]
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[c] for c in key_cols), {})[r["seq_len"]] = r
    lib = {(k[:-1], s): v[s]["cpu_ms"] for k, v in groups.items() for s in v if k[-1] == "library"}
    for key, per in groups.items():
        wall = [f"{per[s]['min_ms']:.1f}" if s in per else "–" for s in seqs]
        cpu = [f"{per[s]['cpu_ms']:.1f}" if s in per else "–" for s in seqs]
        ratio = [f"{per[s]['cpu_ms'] / lib[(key[:-1], s)]:.0f}×" if s in per and (key[:-1], s) in lib else "–"
                 for s in seqs]
        loads = ", ".join(f"{per[s]['load_before']:.1f}" for s in seqs if s in per)
        lines.append(f"| {' | '.join(str(k) for k in key)} | " + " | ".join(wall + cpu + ratio) + f" | {loads} |")
    return lines


def report(data: dict, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    (out / "portable.json").write_text(json.dumps(data, indent=2) + "\n")
    seqs = sorted({r["seq_len"] for r in data["ops"] + data["layer"]})
    m = data["machine"]
    lines = ["# The portable path (ONNX function bodies) vs libyoso_ort.so", "",
             f"Command: `{data['command']}` ({data['seconds']} s)", "",
             f"Measured {m['date']}: {m['cpu']}, {m['cores']} cores (shared), {data['threads']} threads, "
             f"onnxruntime {m['onnxruntime']}, OpenVINO {m.get('openvino', '–')}, torch {m['torch']}; yoso-4096 "
             f"sizes (12 heads, head dim 64, m = {data['num_hash']}, τ = {data['hash_code_len']}), batch 1, "
             f"minimum of {data['repeats']} interleaved rounds. Wall = latency; CPU = process CPU time of the call "
             "(all threads, ORT pools not spinning): the work, which competing load inflates far less. `load` is "
             "the 1-minute load average before the case (2 cores: above 2 means other work was competing).", "",
             "## Per op", ""]
    lines += _table(data["ops"], ["op", "impl"], seqs)
    if data["layer"]:
        lines += ["", "## Per encoder layer (one-layer export, `base` task)", ""]
        lines += _table(data["layer"], ["impl"], seqs)
        worst = max((r["max_abs_diff_vs_library"] for r in data["layer"] if r["impl"] != "library"), default=0.0)
        lines += ["", f"Largest |last_hidden_state − library| over these runs: {worst:.2e}."]
    worst_codes = max((r["max_abs_diff_vs_library"] for r in data["ops"] if r["op"] == "FastHash"), default=0.0)
    lines += [f"FastHash codes: largest |difference| to the library {worst_codes:.0f} (0 = bit-identical).", ""]
    (out / "portable.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
