#!/usr/bin/env python3
"""Accuracy of the embedded default model at every optimization level, next to the plain export and int8.

Exports ``model/`` (fp32), optimizes it at O1, O2 and O3 (``yoso-deploy optimize``, each with its own check) and
quantizes the O2 export (``yoso-deploy quantize`` defaults), then measures exact match and token F1 of the QA
pipeline on the 200 held-out examples of ``scripts/train/train_default_model.py`` (the split and metrics of
``eval.json``'s ``test``), and how many answers equal the plain export's. Prints a Markdown table; with ``--json F``
also writes the numbers.

    python scripts/train/eval_levels.py [--model model] [--threads 2] [--json levels.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from train_default_model import evaluate_pipeline, heldout_split

    from yoso_deploy.quantization import quantize
    from yoso_deploy.runtime.qa import QuestionAnsweringPipeline
    from yoso_deploy.workflow import export, optimize

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the --seed of train_default_model.py (which split)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    test = heldout_split(args.seed)
    out = {"command": "python " + shlex.join(["scripts/train/eval_levels.py", *sys.argv[1:]]), "n": len(test),
           "settings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dirs = {"default (no optimization)": export(args.model, tmp / "fp32", task="qa").output_dir}
        for level in ("O1", "O2", "O3"):
            job = optimize(dirs["default (no optimization)"], tmp / level.lower(), level=level, threads=args.threads)
            dirs[level] = job.optimized.output_dir
            out.setdefault("checks", {})[level] = job.optimized.manifest["parity"]["status"]
        q = quantize(dirs["O2"], tmp / "o2-int8", threads=args.threads)
        dirs["int8 (O2, quantize defaults)"] = q.output_dir
        out.setdefault("checks", {})["int8 (O2)"] = q.manifest["parity"]["status"]
        base_spans: list = []
        for name, d in dirs.items():
            spans: list = []
            pipe = QuestionAnsweringPipeline.from_pretrained(d, intra_op_threads=args.threads)
            r = evaluate_pipeline(pipe, test, spans)
            if not base_spans:
                base_spans = spans
            r["same_answer_as_default"] = sum(a == b for a, b in zip(spans, base_spans)) / len(test)
            out["settings"][name] = r
            print(name, r, flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    base = out["settings"]["default (no optimization)"]
    lines = ["| setting | exact match | F1 | Δ EM | Δ F1 | same answer as default |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in out["settings"].items():
        lines.append(f"| {name} | {r['exact_match']:.3f} | {r['f1']:.3f} | {r['exact_match'] - base['exact_match']:+.3f} "
                     f"| {r['f1'] - base['f1']:+.3f} | {r['same_answer_as_default']:.3f} |")
    print("\n".join(lines))
    print(f"checks: {out['checks']}; {out['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
