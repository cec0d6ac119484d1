#!/usr/bin/env python3
"""Accuracy of int8 exports of the embedded default model on its 200 held-out examples, next to fp32.

Exports ``model/`` (fp32, post-export check on), quantizes it with ``yoso-deploy quantize`` in each
variant -- dynamic and static (QDQ, calibrated on validation-split text, never the test split), query/key
projections int8 and fp32 -- and measures on the held-out split of ``scripts/train/train_default_model.py``
(the same examples and metrics as ``eval.json``'s ``test``):

* exact match and token F1 of the QA pipeline (one window per example), and how many answers equal
  the fp32 export's;
* on the same 200 inputs, the int8 criteria of ``yoso_deploy.validation.int8_criteria`` against the fp32 export:
  code agreement per layer and role (the fraction of hash codes identical to the fp32 export's), the
  smallest output and hidden-state cosine, and the task agreement (start/end argmax);
* the default variant also with 256-token windows (as ``test_windowed_ort_lsh``).

The model is not retrained. Results go to ``eval.json`` under ``test_int8`` (other keys untouched).

    python scripts/train/eval_int8.py [--model model] [--threads 2]
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {  # name -> quantize options
    "dynamic": {"method": "dynamic", "qk": "int8"},
    "dynamic, Q/K fp32": {"method": "dynamic", "qk": "fp32"},
    "static": {"method": "static", "qk": "int8"},
    "static, Q/K fp32": {"method": "static", "qk": "fp32"},
}
CALIBRATION_EXAMPLES = 32
BROKEN = {  # name -> (quantized weight whose scale is multiplied, factor)
    "layer 1 FFN output scale x2": ("yoso.encoder.layer.1.output.dense.weight.T", 2.0),
    "layer 0 attention output scale x1.5": ("yoso.encoder.layer.0.attention.output.dense.weight.T", 1.5),
}


def with_wrong_scale(src: Path, dst: Path, weight: str, factor: float) -> Path:
    """A copy of the int8 export ``src`` with the scale of one quantized weight multiplied by ``factor``."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from yoso_deploy.manifest import load_manifest, write_manifest

    shutil.copytree(src, dst)
    g = onnx.load(str(dst / "model.onnx"))
    init = next(i for i in g.graph.initializer if i.name == weight + "_scale")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(g, str(dst / "model.onnx"))
    m = load_manifest(dst)  # still names the same fp32 export and checkpoint
    for key in ("source_export",):
        m["quantization"][key] = str((src / m["quantization"][key]).resolve())
    if m.get("source_model"):
        m["source_model"] = str((src / m["source_model"]).resolve())
    write_manifest(dst, m)
    return dst


def main() -> None:
    from train_default_model import WINDOWED_EVAL, evaluate_pipeline, heldout_split, make_split, split_seeds

    from yoso_deploy.workflow import export
    from yoso_deploy.validation.int8_criteria import DEFAULT_THRESHOLDS, Int8Report, judge_int8
    from yoso_deploy.manifest import load_manifest
    from yoso_deploy.quantization.quantize import DEFAULT_METHOD, DEFAULT_QK, probed_run, quantize
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
                 "default": {"method": DEFAULT_METHOD, "qk": DEFAULT_QK},
                 "thresholds": DEFAULT_THRESHOLDS.to_json(), "variants": {}}
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
        def measure(qdir: Path, manifest: dict) -> dict:
            spans: list = []
            pipe = QuestionAnsweringPipeline.from_pretrained(qdir, intra_op_threads=args.threads,
                                                             allow_failed_export=True)
            r = evaluate_pipeline(pipe, test, spans)
            r["same_answer_as_fp32"] = sum(a == b for a, b in zip(spans, fp32_spans)) / len(test)
            _, run_int8 = probed_run(qdir, manifest, args.threads)
            got = [run_int8(f) for f in cases]
            del run_int8
            report = Int8Report(judge_int8("qa", list(zip(cases, got, ref)), "ort-cpu int8", "fp32 export"))
            r["code_agreement_vs_fp32"] = {c.name.replace(" codes", ""): round(c.value, 4)
                                           for c in report.comparisons if c.kind == "codes"}
            agree = sum(c.agree for c in report.comparisons if c.kind == "codes")
            total = sum(c.total for c in report.comparisons if c.kind == "codes")
            r["code_agreement_vs_fp32_all"] = round(agree / total, 4)
            r["hidden_cosine_vs_fp32"] = {c.name.split(" ")[0]: round(float(c.value), 6)
                                          for c in report.comparisons if c.kind == "hidden"}
            r["int8_criteria_vs_fp32"] = report.summary()["fp32 export"]
            r["int8_criteria_passed"] = report.passed
            first = report.first_failure()
            r["int8_first_failure"] = None if first is None else str(first.error)
            r["task_agreement_vs_fp32"] = {c.name.split()[0]: {"agree": c.agree, "decisive": c.total,
                                                               "near_ties": c.near_ties}
                                           for c in report.comparisons if c.kind == "task"}
            return r

        for name, opts in VARIANTS.items():
            extra = {"calibration": tmp / "calibration.txt"} if opts["method"] == "static" else {}
            qdir = tmp / name.replace(", ", "-").replace("/", "")
            t0 = time.perf_counter()
            res = quantize(fp32_dir, qdir, threads=args.threads, **opts, **extra)
            q_seconds = time.perf_counter() - t0
            r = measure(qdir, res.manifest)
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
        # Negative controls: the default int8 export with one weight scale deliberately wrong. The int8
        # criteria must fail these (and pass every variant above): docs/performance.md "int8 quantization".
        out["broken_scale"] = {}
        for name, (weight, factor) in BROKEN.items():
            bdir = tmp / ("broken-" + weight)
            with_wrong_scale(tmp / "dynamic", bdir, weight, factor)
            r = measure(bdir, load_manifest(bdir))
            r["weight"], r["factor"] = weight, factor
            out["broken_scale"][name] = r
            print("broken:", name, {k: v for k, v in r.items() if k not in ("code_agreement_vs_fp32",)}, flush=True)
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    table = ["| setting | exact match | F1 | same answer as fp32 | codes = fp32's |", "|---|---:|---:|---:|---:|",
             f"| fp32 | {out['fp32']['exact_match']:.3f} | {out['fp32']['f1']:.3f} | | |"]
    for name, r in out["variants"].items():
        table.append(f"| int8 {name} | {r['exact_match']:.3f} | {r['f1']:.3f} | {r['same_answer_as_fp32']:.3f} | "
                     f"{r['code_agreement_vs_fp32_all']:.4f} |")
    for name, r in out["broken_scale"].items():
        table.append(f"| broken: {name} | {r['exact_match']:.3f} | {r['f1']:.3f} | {r['same_answer_as_fp32']:.3f} | "
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
