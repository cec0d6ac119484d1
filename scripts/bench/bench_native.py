#!/usr/bin/env python3
"""CPU benchmark of the native PyTorch path: one yoso-4096 encoder layer, side by side in one process.

Backends (same checkpoint, same signs, same inputs), timed *interleaved*: each round runs every backend
once, after a --settle-ms pause, so load changes on a shared machine hit all of them alike:

  torch-native   our PyTorch reference model with kernels="native" (libyoso_kernels.so, AVX2 kernels)
  ort-lsh        our ONNX export (com.yoso ops in libyoso_ort.so) in ONNX Runtime
  torch-lsh      the same PyTorch model with kernels="torch" (the pure-PyTorch reference ops; slow, so it
                 runs only in the first --reference-rounds rounds)
  native-ops     FastHash x2 + LSHCumulation alone through the native ops, at the layer's shapes
  ort-ops        the same two ops alone in ONNX Runtime sessions (scripts/bench/bench_cpu.py's op sessions)
  gemm-floor     the layer's dense projections (QKV, output, FFN) as torch linears

Reports the minimum per backend and the ratios of the same run (goal: torch-native within 1.2x of
ort-lsh), with `uptime` load before and after, to --out (bench_native.json / .md).

    .venv/bin/python scripts/bench/bench_native.py                        # B=1, S=4096, 2 threads, 7 rounds
    .venv/bin/python scripts/bench/bench_native.py --seq-lens 512,4096 --threads 2 --rounds 5 --out bench-native
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" 1")[0].strip()  # "1-min 5-min 15-min"
    except OSError:
        return "unknown"


def yoso_4096_config(seq: int, layers: int = 1):
    from transformers import YosoConfig

    return YosoConfig(vocab_size=1000, hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                      intermediate_size=3072, max_position_embeddings=seq + 2, num_hash=64, hash_code_len=9,
                      conv_window=None, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def build(args, work: Path) -> dict:
    from transformers import YosoModel

    from yoso_deploy.workflow import export
    from yoso_deploy.modeling import convert_model, native_ops
    from yoso_deploy.runtime import create_session

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf = YosoModel(yoso_4096_config(max(args.seq_lens))).eval()
    ckpt = work / "yoso-4096-1layer"
    hf.save_pretrained(ckpt)
    native = convert_model(copy.deepcopy(hf), attention="lsh", kernels="native")
    reference = convert_model(copy.deepcopy(hf), attention="lsh", kernels="torch")
    res = export(ckpt, work / "ort-lsh", task="base", attention="lsh", validate=False)
    sess = create_session(res.onnx_path, intra_op_threads=args.threads)
    names = [o.name for o in sess.get_outputs()]

    def torch_fn(model):
        def run(ids, mask):
            with torch.inference_mode():
                return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        return run

    signs = native.encoder.layer[0].attention.self.signs
    g = torch.Generator().manual_seed(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpu import gemm_floor, op_sessions  # the same op sessions and GEMM floor as bench_cpu.py

    shared = argparse.Namespace(num_hash=64, hash_code_len=9, threads=args.threads)
    ort_ops, floor = op_sessions(shared), gemm_floor(shared)

    def per_shape(b, s):
        x = torch.randn(b, 12, s, 64, generator=g)
        mask = torch.ones(b, s, dtype=torch.int32)

        def native_ops_fn():
            c = native_ops.fast_hash(x, mask, signs, 64, 9)
            native_ops.fast_hash(x, mask, signs, 64, 9)
            return native_ops.lsh_cumulation(c, c, mask, mask, x, 9)

        fh, lc = ort_ops(b, s)
        return {"native-ops": native_ops_fn, "ort-ops": lambda: (fh(), fh(), lc()), "gemm-floor": floor(b, s)}

    return {"torch-native": torch_fn(native),
            "ort-lsh": lambda ids, mask: sess.run(names, {"input_ids": ids, "attention_mask": mask})[0],
            "torch-lsh": torch_fn(reference), "_per_shape": per_shape}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", default="4096")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reference-rounds", type=int, default=2, help="rounds that include the slow torch-lsh backend")
    ap.add_argument("--settle-ms", type=float, default=50.0)
    ap.add_argument("--out", type=Path, default=Path("bench-native"))
    args = ap.parse_args()
    args.seq_lens = [int(s) for s in args.seq_lens.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import onnxruntime as ort

    from yoso_deploy.modeling import native_ops

    data = {"machine": {"cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                                     if ln.startswith("model name")), ""), "cores": os.cpu_count(),
                        "torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
                        "kernels_library": native_ops.build_info(),
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "load_before": uptime()}
    print(json.dumps(data["machine"]), f"load before: {data['load_before']}", flush=True)
    t_start = time.time()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fns = build(args, Path(tmp))
        per_shape = fns.pop("_per_shape")
        for s in args.seq_lens:
            b = args.batch
            rng = np.random.default_rng(s)
            ids = rng.integers(3, 1000, size=(b, s), dtype=np.int64)
            mask = np.ones((b, s), dtype=np.int64)
            layer = {name: (lambda fn=fn: fn(ids, mask)) for name, fn in fns.items()}
            outs = {"torch-native": layer["torch-native"]().numpy(), "ort-lsh": np.asarray(layer["ort-lsh"]())}
            diff = float(np.abs(outs["torch-native"] - outs["ort-lsh"]).max())
            data.setdefault("max_abs_diff_native_vs_ort", {})[str(s)] = diff
            print(f"  S {s}: max |torch-native - ort-lsh| = {diff:.2e}", flush=True)
            active = {**layer, **per_shape(b, s)}
            for fn in active.values():  # warm-up (and the slow reference once)
                fn()
            for r in range(args.rounds):
                for name, fn in active.items():
                    if name == "torch-lsh" and r >= args.reference_rounds:
                        continue
                    time.sleep(args.settle_ms / 1000)
                    t0 = time.perf_counter()
                    fn()
                    results.setdefault(f"{name}|{b}|{s}", []).append(1000 * (time.perf_counter() - t0))
            line = "  ".join(f"{n}={min(results[f'{n}|{b}|{s}']):.1f}" for n in active)
            print(f"  batch {b} S {s}: {line} ms (min)", flush=True)
    data["load_after"] = uptime()
    data["seconds"] = round(time.time() - t_start, 1)
    data["min_ms"] = {k: min(v) for k, v in results.items()}
    data["median_ms"] = {k: float(np.median(v)) for k, v in results.items()}
    lines = [f"One yoso-4096 layer (hidden 768, 12 heads, FFN 3072, m=64, tau=9), batch {args.batch}, {args.threads} threads, "
             f"min (median) of {args.rounds} interleaved rounds (torch-lsh: {args.reference_rounds}); "
             f"{data['machine']['cpu']}, {data['machine']['date']}; load (1/5/15 min) before {data['load_before']}, "
             f"after {data['load_after']}", "",
             "| backend | " + " | ".join(f"S {s}" for s in args.seq_lens) + " |",
             "|---|" + "---:|" * len(args.seq_lens)]
    for name in ("torch-native", "ort-lsh", "torch-lsh", "native-ops", "ort-ops", "gemm-floor"):
        cells = []
        for s in args.seq_lens:
            k = f"{name}|{args.batch}|{s}"
            cells.append(f"{data['min_ms'][k]:.1f} ({data['median_ms'][k]:.1f})" if k in data["min_ms"] else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for s in args.seq_lens:
        get = lambda n: data["min_ms"].get(f"{n}|{args.batch}|{s}")  # noqa: E731
        nat, ortl, ref = get("torch-native"), get("ort-lsh"), get("torch-lsh")
        ratio = nat / ortl
        data.setdefault("ratio_native_over_ort", {})[str(s)] = ratio
        med = data["median_ms"][f"torch-native|{args.batch}|{s}"] / data["median_ms"][f"ort-lsh|{args.batch}|{s}"]
        ops_ratio = get("native-ops") / get("ort-ops")
        lines.append(f"- S {s}: torch-native / ort-lsh = {ratio:.2f}x (medians: {med:.2f}x; goal <= 1.2x: "
                     f"{'met' if ratio <= 1.2 else 'NOT met'}); native-ops / ort-ops = {ops_ratio:.2f}x; "
                     f"torch-lsh / torch-native = {ref / nat:.1f}x; "
                     f"max |torch-native - ort-lsh| = {data['max_abs_diff_native_vs_ort'][str(s)]:.1e}")
    text = "\n".join(lines) + "\n"
    (args.out / "bench_native.json").write_text(json.dumps(data, indent=2))
    (args.out / "bench_native.md").write_text(text)
    print("\n" + text + f"total {data['seconds']:.0f}s; wrote {args.out}/bench_native.md, bench_native.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
