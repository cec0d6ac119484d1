#!/usr/bin/env python3
"""Accuracy of int8 exports of the embedded default model on its 200 held-out examples, next to fp32.

Exports ``model/`` (fp32, post-export check on), quantizes it with ``yoso-deploy quantize`` in each
variant -- dynamic and static (QDQ, calibrated on validation-split text, never the test split), query/key
projections int8 and fp32 -- and measures on the held-out split of ``scripts/train_default_model.py``
(the same examples and metrics as ``eval.json``'s ``test``):

* exact match and token F1 of the QA pipeline (one window per example), and how many answers equal
  the fp32 export's;
* on the same 200 inputs, the int8 criteria of ``yoso_deploy.int8_parity`` against the fp32 export:
  code agreement per layer and role (the fraction of hash codes identical to the fp32 export's), the
  smallest output and hidden-state cosine, and the task agreement (start/end argmax);
* the default variant also with 256-token windows (as ``test_windowed_ort_lsh``).

The model is not retrained. Results go to ``eval.json`` under ``test_int8`` (other keys untouched).

    python scripts/eval_int8.py [--model model] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

VARIANTS = {  # name -> quantize options
    "dynamic": {"method": "dynamic", "qk": "int8"},
    "dynamic, Q/K fp32": {"method": "dynamic", "qk": "fp32"},
    "static": {"method": "static", "qk": "int8"},
    "static, Q/K fp32": {"method": "static", "qk": "fp32"},
}
CALIBRATION_EXAMPLES = 32


def main() -> None:
    from train_default_model import WINDOWED_EVAL, evaluate_pipeline, heldout_split, make_split, split_seeds

    from yoso_deploy.export import export
    from yoso_deploy.int8_parity import Int8Report, judge_int8
    from yoso_deploy.manifest import load_manifest
    from yoso_deploy.quantization import DEFAULT_METHOD, DEFAULT_QK, probed_run, quantize
    from yoso_deploy.runtime.qa import QuestionAnsweringPipeline
    from yoso_deploy.runtime.tokenizer import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the --seed of train_default_model.py (which split)")
    ap.add_argument("--no-write", action="store_true", help="print, do not update eval.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    test = heldout_split(args.seed)
    calib = make_split(CALIBRATION_EXAMPLES, split_seeds(args.seed)["validation"], 40, 140, name="calibration")
    out: dict = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "n": len(test),
                 "calibration": f"static variants: {CALIBRATION_EXAMPLES} validation-split examples (seed "
                                f"{split_seeds(args.seed)['validation']}), question<TAB>context per line",
                 "default": {"method": DEFAULT_METHOD, "qk": DEFAULT_QK}, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "calibration.txt").write_text("".join(f"{e.question}\t{e.context}\n" for e in calib))
        fp32_dir = export(args.model, tmp / "fp32", task="qa").output_dir
        fp32_manifest = load_manifest(fp32_dir)
        tok = Tokenizer.from_dir(fp32_dir)
        cases = [tok(e.question, e.context).model_inputs(["input_ids", "attention_mask"]) for e in test]
        _, run_fp32 = probed_run(fp32_dir, fp32_manifest, args.threads)
        ref = [run_fp32(f) for f in cases]
        del run_fp32

        fp32_spans: list = []
        pipe = QuestionAnsweringPipeline.from_pretrained(fp32_dir, intra_op_threads=args.threads)
        out["fp32"] = evaluate_pipeline(pipe, test, fp32_spans)
        print("fp32", out["fp32"], flush=True)
        for name, opts in VARIANTS.items():
            extra = {"calibration": tmp / "calibration.txt"} if opts["method"] == "static" else {}
            qdir = tmp / name.replace(", ", "-").replace("/", "")
            t0 = time.perf_counter()
            res = quantize(fp32_dir, qdir, threads=args.threads, **opts, **extra)
            q_seconds = time.perf_counter() - t0
            spans: list = []
            pipe = QuestionAnsweringPipeline.from_pretrained(qdir, intra_op_threads=args.threads)
            r = evaluate_pipeline(pipe, test, spans)
            r["same_answer_as_fp32"] = sum(a == b for a, b in zip(spans, fp32_spans)) / len(test)
            _, run_int8 = probed_run(qdir, res.manifest, args.threads)
            got = [run_int8(f) for f in cases]
            del run_int8
            report = Int8Report(judge_int8("qa", list(zip(cases, got, ref)), "ort-cpu int8", "fp32 export"))
            per_layer = {}
            for c in report.comparisons:
                if c.kind == "codes":
                    k = c.name.replace(" codes", "")
                    a, t = per_layer.get(k, (0, 0))
                    per_layer[k] = (a + c.agree, t + c.total)
            r["code_agreement_vs_fp32"] = {k: round(a / t, 4) for k, (a, t) in per_layer.items()}
            tot = np.array(list(per_layer.values()), dtype=np.float64).sum(0)
            r["code_agreement_vs_fp32_all"] = round(float(tot[0] / tot[1]), 4)
            r["int8_criteria_vs_fp32"] = report.summary()["fp32 export"]
            r["int8_criteria_passed"] = report.passed
            r["task_agreement_vs_fp32"] = {c.name.split()[0]: {"agree": c.agree, "decisive": c.total,
                                                               "near_ties": c.near_ties}
                                           for c in report.comparisons if c.kind == "task"}
            r["quantize_seconds"] = round(q_seconds, 1)
            r["options"] = {k: res.manifest["quantization"][k] for k in
                            ("method", "qk", "weight_type", "activation_type", "per_channel", "reduce_range")}
            r["post_quantization_check"] = res.manifest["parity"]["status"]
            if name == "dynamic":
                small = QuestionAnsweringPipeline.from_pretrained(qdir, max_seq_len=WINDOWED_EVAL[0],
                                                                  doc_stride=WINDOWED_EVAL[1],
                                                                  intra_op_threads=args.threads)
                win = evaluate_pipeline(small, test)
                win["max_seq_len"], win["doc_stride"] = WINDOWED_EVAL
                r["windowed"] = win
            out["variants"][name] = r
            print(name, {k: v for k, v in r.items() if k not in ("code_agreement_vs_fp32",)}, flush=True)
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    table = ["| setting | exact match | F1 | same answer as fp32 | codes = fp32's |", "|---|---:|---:|---:|---:|",
             f"| fp32 | {out['fp32']['exact_match']:.3f} | {out['fp32']['f1']:.3f} | | |"]
    for name, r in out["variants"].items():
        table.append(f"| int8 {name} | {r['exact_match']:.3f} | {r['f1']:.3f} | {r['same_answer_as_fp32']:.3f} | "
                     f"{r['code_agreement_vs_fp32_all']:.4f} |")
    print("\n".join(table))
    if not args.no_write:
        path = args.model / "eval.json"
        data = json.loads(path.read_text())
        data["test_int8"] = out
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path} (test_int8)")


if __name__ == "__main__":
    main()
