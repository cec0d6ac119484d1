"""Run inside Optimum's venv (transformers 4.57, optimum-onnx): what that stack makes of yoso-deploy exports.

    python optimum_probe.py JOB.json OUT.json

JOB: ``{"cases": [{"name", "task", "export", "checkpoint"}], "texts": [...], "pairs": [[q, c], ...],
"qa": [[question, context], ...]}``. For each case: transformers 4's *slow* tokenizer on the source checkpoint
(the reference the conversion must equal), AutoTokenizer and AutoConfig on the export, and the answers of
``transformers.pipeline`` over Optimum's ``ORTModelFor<Task>`` with yoso-deploy's session options.
"""

import json
import sys

import numpy as np
import transformers
from optimum import onnxruntime as ort_optimum

from yoso_deploy.runtime import session_options

CLASSES = {"qa": "ORTModelForQuestionAnswering", "sequence-classification": "ORTModelForSequenceClassification",
           "token-classification": "ORTModelForTokenClassification"}
HF_TASKS = {"qa": "question-answering", "sequence-classification": "text-classification",
            "token-classification": "token-classification"}


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _ids(tok, texts, pairs):
    out = [tok(t)["input_ids"] for t in texts]
    out += [dict(tok(q, c, return_token_type_ids=True)) for q, c in pairs]
    return [{k: list(v) for k, v in o.items()} if isinstance(o, dict) else list(o) for o in out]


def main(job_path, out_path):
    job = json.load(open(job_path))
    result = {"transformers": transformers.__version__, "cases": {}}
    for case in job["cases"]:
        r = {}
        slow = transformers.AutoTokenizer.from_pretrained(case["checkpoint"], use_fast=False)
        r["slow_class"] = type(slow).__name__
        r["slow_ids"] = _ids(slow, job["texts"], job["pairs"])
        r["slow_tokens"] = [slow.convert_ids_to_tokens(ids if not isinstance(ids, dict) else ids["input_ids"])
                            for ids in r["slow_ids"]]
        # transformers 4's own fast conversion of the same files (what a checkpoint's tokenizer.json would hold)
        r["fast_ids"] = _ids(transformers.AutoTokenizer.from_pretrained(case["checkpoint"], use_fast=True),
                             job["texts"], job["pairs"])
        tok = transformers.AutoTokenizer.from_pretrained(case["export"])
        r["export_class"] = type(tok).__name__
        r["export_ids"] = _ids(tok, job["texts"], job["pairs"])
        r["model_type"] = transformers.AutoConfig.from_pretrained(case["export"]).model_type
        task = case["task"]
        model = getattr(ort_optimum, CLASSES[task]).from_pretrained(case["export"], session_options=session_options())
        pipe = transformers.pipeline(HF_TASKS[task], model=model, tokenizer=tok)
        if task == "qa":
            r["answers"] = [pipe(question=q, context=c, top_k=3, max_answer_len=30) for q, c in job["qa"]]
        elif task == "sequence-classification":
            r["answers"] = [pipe(t, top_k=None) for t in job["texts"]]
        else:
            r["answers"] = [pipe(t, aggregation_strategy="simple") for t in job["texts"]]
        result["cases"][case["name"]] = _plain(r)
    json.dump(result, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
