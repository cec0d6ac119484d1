#!/usr/bin/env python3
"""The int8 criteria at the realistic size: a 2-layer yoso-4096-sized QA export (random weights, hidden 768,
12 heads, FFN 3072, m = 64, tau = 9) quantized with ``yoso-deploy quantize`` -- dynamic and static, Q/K
projections int8 and fp32 -- and two deliberately wrong scales, each judged against the fp32 export by
``yoso_deploy.validation.int8_criteria`` on one padded batch at S 4096 (plus the post-quantization check's shapes).
Prints, per variant, the pooled code agreement per layer and role, the hidden-state and output cosines,
max abs (relative) and whether the default thresholds pass. The numbers behind the thresholds in the
the "int8 quantization" section of docs/performance.md (with ``scripts/train/eval_int8.py`` on the trained default model).

    python scripts/train/int8_criteria_yoso4096.py [--seq-len 4096] [--threads 2] [--json FILE]
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

VARIANTS = {
    "dynamic": {"method": "dynamic", "qk": "int8"},
    "dynamic, Q/K fp32": {"method": "dynamic", "qk": "fp32"},
    "static": {"method": "static", "qk": "int8", "calibration_samples": 8},
}
BROKEN = {  # applied to the default (dynamic) int8 export
    "layer 0 FFN output scale x2": ("yoso.encoder.layer.0.output.dense.weight.T", 2.0),
    "layer 0 attention output scale x1.5": ("yoso.encoder.layer.0.attention.output.dense.weight.T", 1.5),
}


def main() -> None:
    import torch
    from eval_int8 import with_wrong_scale
    from transformers import YosoForQuestionAnswering

    from yoso_deploy.workflow import export
    from yoso_deploy.iospec import make_inputs
    from yoso_deploy.manifest import load_manifest, manifest_spec
    from yoso_deploy.modeling import yoso_4096_config
    from yoso_deploy.quantization.quantize import check_against_fp32, quantize

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()
    from yoso_deploy.validation.int8_criteria import DEFAULT_THRESHOLDS

    out = {"command": "python " + shlex.join(["scripts/train/int8_criteria_yoso4096.py", *sys.argv[1:]]),
           "thresholds": DEFAULT_THRESHOLDS.to_json(), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = yoso_4096_config(num_hidden_layers=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        torch.manual_seed(4096)
        YosoForQuestionAnswering(cfg).save_pretrained(tmp / "ckpt")
        fp32 = export(tmp / "ckpt", tmp / "fp32", task="qa", validate=False).output_dir
        m32 = load_manifest(fp32)
        spec = manifest_spec(m32)
        cases = [make_inputs(spec, 1, args.seq_len, cfg.vocab_size, seed=1),
                 make_inputs(spec, 2, 512, cfg.vocab_size, seed=2)]  # row 1 right-padded

        def judge(qdir: Path) -> dict:
            rep = check_against_fp32(qdir, load_manifest(qdir), fp32, m32, None, threads=args.threads, cases=cases)
            first = rep.first_failure()
            return {"passed": rep.passed, "first_failure": None if first is None else str(first.error),
                    "summary": rep.summary()["fp32 export"],
                    "codes": {c.name: round(c.value, 4) for c in rep.comparisons if c.kind == "codes"},
                    "hidden": {c.name.split(" ")[0]: round(float(c.value), 6)
                               for c in rep.comparisons if c.kind == "hidden"}}

        for name, opts in VARIANTS.items():
            res = quantize(fp32, tmp / name.replace(", ", "-").replace("/", ""), threads=args.threads,
                           check_shapes=((1, 64),), **opts)
            out["variants"][name] = judge(res.output_dir)
            print(name, json.dumps(out["variants"][name]), flush=True)
        out["broken_scale"] = {}
        for name, (weight, factor) in BROKEN.items():
            bdir = with_wrong_scale(tmp / "dynamic", tmp / ("broken-" + weight), weight, factor)
            out["broken_scale"][name] = judge(bdir)
            print("broken:", name, json.dumps(out["broken_scale"][name]), flush=True)
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
