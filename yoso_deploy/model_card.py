"""``README.md`` of an export directory: a Hugging Face model card (torch-free, stdlib only).

    from yoso_deploy.model_card import write_model_card
    write_model_card("out/qa")        # -> Path("out/qa/README.md")

The card is made from the export's manifest and ``config.json`` alone: YAML front matter (``library_name``,
``pipeline_tag``, ``tags``, ``base_model`` when the source is a hub id), then what the model is, where it
came from, how it was checked (the manifest's ``parity``; a failed check is shown at the top), the int8
settings and metrics of a quantized export, and copy-paste snippets for yoso-deploy, ONNX Runtime, Optimum,
Triton and TensorRT. It is deterministic (no timestamps), and every manifest field but the ones
:func:`yoso_deploy.manifest.load_manifest` requires may be missing (older exports).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

from . import tasks
from .constants import CONFIG_FILE, MODEL_CARD_FILE, MODEL_FILE, TOKENIZER_FILE
from .manifest import expand_path, load_manifest

LIBRARY_NAME = "yoso-deploy"
OPTIMUM_CLASSES = {  # task -> optimum.onnxruntime class
    "qa": "ORTModelForQuestionAnswering",
    "sequence-classification": "ORTModelForSequenceClassification",
    "token-classification": "ORTModelForTokenClassification",
    "mlm": "ORTModelForMaskedLM",
    "multiple-choice": "ORTModelForMultipleChoice",
    "base": "ORTModelForFeatureExtraction",
}
def _py(text: str) -> str:
    return json.dumps(text)  # a JSON string (ASCII, JSON escapes) is a valid Python string literal


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
_MAX_LABELS = 50


def optimum_class(task: str) -> str:
    """The ``optimum.onnxruntime`` class of a task (name or alias)."""
    return OPTIMUM_CLASSES[tasks.canonical_task(task)]


def hub_id(source_model: Any) -> str | None:
    """``source_model`` if it looks like a Hugging Face hub id (``owner/name``), else None (a local path)."""
    if not isinstance(source_model, str):
        return None
    s = source_model.strip()
    if not _HUB_ID.match(s) or ".." in s.split("/") or "." in s.split("/")[:1]:
        return None
    return s


def _yaml(value: str) -> str:
    return value if _PLAIN.match(value) else json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)) and not value:
        return "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if all(not isinstance(v, (dict, list)) for v in value) \
            else f"{len(value)} entries"
    if isinstance(value, dict):
        return f"{len(value)} entries"
    return str(value)


def _cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _scalar_rows(obj: dict, skip: tuple = (), prefix: str = "") -> list[tuple[str, str]]:
    """``(key, value)`` rows of a manifest object: scalars and lists of scalars; nested objects flattened one
    level (``summary.min_output_cosine``); long lists counted."""
    rows = []
    for key in sorted(obj):
        if key in skip:
            continue
        value = obj[key]
        if isinstance(value, dict) and not prefix:
            rows += _scalar_rows(value, prefix=f"{key}.")
        elif isinstance(value, list) and len(value) > 12:
            rows.append((prefix + key, f"{len(value)} entries"))
        else:
            rows.append((prefix + key, _cell(value)))
    return rows


def _table(rows: list[tuple[str, str]], headers=("key", "value")) -> list[str]:
    return [f"| {headers[0]} | {headers[1]} |", "|---|---|"] + [f"| `{k}` | {v} |" for k, v in rows]


def _labels(config: dict) -> list[str]:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return []

    def order(item):
        try:
            return (0, int(item[0]), "")
        except (TypeError, ValueError):
            return (1, 0, str(item[0]))

    return [str(v) for _, v in sorted(id2label.items(), key=order)]


def _mask_token(export_dir: Path, manifest: dict) -> str:
    tok = manifest.get("tokenizer") if isinstance(manifest.get("tokenizer"), dict) else {}
    candidates = [(tok.get("special_tokens") or {}).get("mask_token") if isinstance(tok.get("special_tokens"), dict)
                  else None, _read_json(export_dir / "tokenizer_config.json").get("mask_token")]
    for value in candidates:
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return "[MASK]"


def _input_names(manifest: dict) -> list[str]:
    names = [t.get("name") for t in manifest.get("inputs") or [] if isinstance(t, dict)]
    return [n for n in names if isinstance(n, str)] or ["input_ids", "attention_mask"]


# ------------------------------------------------------------------------------------------------
# snippets
# ------------------------------------------------------------------------------------------------


def _pipeline_call(task: str, mask: str) -> str:
    return {
        "qa": 'print(pipe(question="Who wrote it?", context="The report was written by Ada Lovelace."))',
        "sequence-classification": 'print(pipe("a great film", top_k=None))',
        "token-classification": 'print(pipe("Ada Lovelace was born in London."))',
        "mlm": f"print(pipe({_py('Paris is the ' + mask + ' of France.')}))",
        "base": 'vectors = pipe(["a first sentence", "another one"])  # one vector per text (mean pooling)',
        "multiple-choice": 'print(pipe("The weather is", choices=["sunny.", "a banana."]))',
    }[task]


def _snippet_runtime(task: str, where: str, mask: str, failed: bool) -> str:
    extra = ", allow_failed_export=True" if failed else ""
    return "\n".join([
        "from yoso_deploy.runtime import pipeline",
        "",
        f"pipe = pipeline({_py(where)}{extra})  # the task ({task}) comes from the manifest",
        _pipeline_call(task, mask),
    ])


def _snippet_ort(task: str, where: str, manifest: dict) -> str:
    model = manifest.get("model_file") if isinstance(manifest.get("model_file"), str) else MODEL_FILE
    names = _input_names(manifest)
    fields = {"input_ids": "enc.ids", "attention_mask": "enc.attention_mask", "token_type_ids": "enc.type_ids"}
    nest = "[[{}]]" if task == "multiple-choice" else "[{}]"  # (batch, num_choices, sequence) for multiple choice
    feeds = ",\n    ".join(f"{_py(n)}: np.array({nest.format(fields.get(n, 'enc.ids'))}, dtype=np.int64)"
                             for n in names)
    return "\n".join([
        "import numpy as np",
        "import onnxruntime as ort",
        "from tokenizers import Tokenizer",
        "",
        "import yoso_deploy.runtime",
        "",
        "so = yoso_deploy.runtime.session_options()  # registers libyoso_ort.so (the com.yoso custom ops)",
        f"sess = ort.InferenceSession({_py(where + '/' + model)}, so, providers=[\"CPUExecutionProvider\"])",
        f"tok = Tokenizer.from_file({_py(where + '/' + TOKENIZER_FILE)})",
        'enc = tok.encode("some text")',
        "feeds = {",
        f"    {feeds},",
        "}",
        "outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))",
        "print({name: value.shape for name, value in outputs.items()})",
    ])


def _snippet_optimum(task: str, where: str, mask: str) -> str:
    cls = OPTIMUM_CLASSES[task]
    lines = [
        "import transformers",
        f"from optimum.onnxruntime import {cls}",
        "",
        "import yoso_deploy.runtime",
        "",
        f"model = {cls}.from_pretrained({_py(where)}, session_options=yoso_deploy.runtime.session_options())",
        f"tokenizer = transformers.AutoTokenizer.from_pretrained({_py(where)})",
    ]
    hf_task = tasks.get(task).hf_pipeline_task
    if task == "qa":  # transformers 5.3 dropped the question-answering pipeline: the logits directly
        lines += [
            'inputs = tokenizer("Who wrote it?", "The report was written by Ada Lovelace.", return_tensors="pt")',
            "out = model(**inputs)",
            "start, end = int(out.start_logits.argmax()), int(out.end_logits.argmax())",
            'print(tokenizer.decode(inputs["input_ids"][0, start:end + 1]))',
        ]
    elif task == "multiple-choice":  # transformers has no multiple-choice pipeline
        lines += [
            'prompt, choices = "The weather is", ["sunny.", "a banana."]',
            'enc = tokenizer([prompt] * len(choices), choices, return_tensors="pt", padding=True)',
            "out = model(**{k: v.unsqueeze(0) for k, v in enc.items()})  # (1, num_choices, sequence)",
            "print(out.logits.softmax(-1))",
        ]
    else:
        call = {"sequence-classification": 'pipe("a great film")',
                "token-classification": 'pipe("Ada Lovelace was born in London.")',
                "mlm": f"pipe({_py('Paris is the ' + mask + ' of France.')})",
                "base": 'pipe("some text")'}[task]
        lines += [f"pipe = transformers.pipeline({_py(hf_task)}, model=model, tokenizer=tokenizer)", f"print({call})"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the card
# ------------------------------------------------------------------------------------------------


def front_matter(manifest: dict) -> list[str]:
    task = manifest["task"]
    tags = ["onnx", "yoso", task]
    attention = manifest.get("attention")
    if isinstance(attention, str) and attention:
        tags.append(f"attention-{attention}")
    if isinstance(manifest.get("quantization"), dict):
        tags.append("int8")
    tags = list(dict.fromkeys(tags))
    lines = ["---", f"library_name: {LIBRARY_NAME}"]
    pipeline_tag = tasks.get(task).hf_pipeline_task
    if pipeline_tag:
        lines.append(f"pipeline_tag: {_yaml(pipeline_tag)}")
    lines.append("tags:")
    lines += [f"  - {_yaml(t)}" for t in tags]
    base = hub_id(manifest.get("source_model"))
    if base:
        lines.append(f"base_model: {_yaml(base)}")
    lines.append("---")
    return lines


def model_card(export_dir: str | os.PathLike, where: str | None = None) -> str:
    """The model card of an export directory, as text. ``where``: the directory's path in the snippets
    (default ``path/to/<the directory's name>``)."""
    export_dir = expand_path(export_dir)
    manifest = load_manifest(export_dir)
    config = _read_json(export_dir / CONFIG_FILE)
    name = export_dir.resolve().name or "export"
    where = where or f"path/to/{name}"
    task = manifest["task"]
    spec = tasks.get(task)
    parity = manifest.get("parity") if isinstance(manifest.get("parity"), dict) else None
    status = parity.get("status") if parity else None
    failed = status == "failed"
    quant = manifest.get("quantization") if isinstance(manifest.get("quantization"), dict) else None
    mask = _mask_token(export_dir, manifest)

    out = front_matter(manifest) + ["", f"# {name}", ""]
    if failed:
        first = parity.get("first_failure")
        out += [f"> **Warning: this export FAILED its post-export parity check**"
                f"{f' (first failure: `{first}`)' if first else ''}. The runtime refuses it unless asked "
                "(`allow_failed_export=True`, `--allow-failed-export`); re-export it or see *How it was checked*.", ""]
    kind = "An int8 (quantized) YOSO" if quant else "A YOSO"
    out += [f"{kind} model for **{task}** ({spec.description or task}), exported to ONNX by "
            "yoso-deploy for ONNX Runtime, Optimum, Triton and TensorRT.", ""]

    # what it is
    hash_ = manifest.get("hash") if isinstance(manifest.get("hash"), dict) else {}
    hf_note = f" (transformers pipeline `{spec.hf_pipeline_task}`)" if spec.hf_pipeline_task else ""
    rows = [("task", f"`{task}`{hf_note}"),
            ("attention", _cell(manifest.get("attention"))),
            ("opset", _cell(manifest.get("opset"))),
            ("dtype", _cell(manifest.get("dtype"))),
            ("max sequence length", _cell(manifest.get("max_sequence_length"))),
            ("hash (num_hash / hash_code_len)", f"{_cell(hash_.get('num_hash'))} / {_cell(hash_.get('hash_code_len'))}"
             if hash_ else "-"),
            ("inputs", ", ".join(f"`{n}`" for n in _input_names(manifest))),
            ("outputs", ", ".join(f"`{t.get('name')}`" for t in manifest.get("outputs") or [] if isinstance(t, dict))),
            ("portable (custom-op bodies)", _cell(manifest.get("portable")))]
    opt = manifest.get("optimization") if isinstance(manifest.get("optimization"), dict) else None
    if opt:  # yoso-deploy optimize
        fused = ", ".join(f"{n} {op}" for op, n in (opt.get("fused_ops") or {}).items()) or "none"
        rows.append(("graph optimization", f"{_cell(opt.get('level'))}: {_cell(opt.get('description'))} (fused: {fused}; "
                                           f"source export `{_cell(opt.get('source_export'))}`)"))
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        if key in config:
            rows.append((key, _cell(config[key])))
    tok = manifest.get("tokenizer") if isinstance(manifest.get("tokenizer"), dict) else None
    if tok:
        desc = [f"kind {_cell(tok.get('kind'))}"]
        if tok.get("source_class"):
            desc.append(f"from {_cell(tok.get('source_class'))}")
        if "converted" in tok:
            desc.append("converted to tokenizer.json" if tok.get("converted") else "fast tokenizer as shipped")
        if tok.get("vocab_size") is not None:
            desc.append(f"vocabulary {_cell(tok.get('vocab_size'))}")
        rows.append(("tokenizer", ", ".join(desc)))
    else:
        rows.append(("tokenizer", f"`{TOKENIZER_FILE}`" if (export_dir / TOKENIZER_FILE).is_file() else "-"))
    out += ["## Model", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
    labels = _labels(config)
    if labels:
        shown = ", ".join(f"`{label}`" for label in labels[:_MAX_LABELS])
        more = f" and {len(labels) - _MAX_LABELS} more" if len(labels) > _MAX_LABELS else ""
        out += [f"Labels ({len(labels)}): {shown}{more}.", ""]
    if manifest.get("attention") == "lsh" and manifest.get("custom_ops"):
        out += ["LSH attention runs as the custom ops `com.yoso::FastHash` and `com.yoso::LSHCumulation`: ONNX Runtime "
                "needs `libyoso_ort.so` registered (`yoso_deploy.runtime.session_options()` does it)"
                + (f"; the export also carries standard-ONNX bodies (`{manifest.get('portable')}`), so stock "
                   "ONNX Runtime and OpenVINO run it too, slower" if manifest.get("portable") in ("functions", "inline")
                   else "") + ".", ""]

    # source
    source = manifest.get("source_model")
    base = hub_id(source)
    out += ["## Source checkpoint", ""]
    if base:
        out += [f"[`{base}`](https://huggingface.co/{base})", ""]
    elif source:
        out += [f"`{source}` (a local checkpoint)", ""]
    else:
        out += ["Not recorded in the manifest.", ""]
    if quant and quant.get("source_export"):
        out += [f"Quantized from the export `{quant.get('source_export')}`.", ""]

    # how it was checked
    out += ["## How it was checked", ""]
    if parity is None:
        out += ["The manifest records no parity check (an older export); run `yoso-deploy validate --model "
                f"{shlex.quote(where)}`.", ""]
    else:
        against = parity.get("against")
        against = (f"the {against}" if isinstance(against, str)
                   else "the fp32 export" if parity.get("kind") == "int8" else "the PyTorch reference")
        verdict = {"passed": "passed", "failed": "**FAILED**",
                   "skipped": "skipped (not run)"}.get(status, _cell(status))
        out += [f"Post-export parity check against {against}: {verdict}."
                + (f" Reason: {parity.get('reason')}." if parity.get("reason") else ""), ""]
        rows = _scalar_rows(parity, skip=("table", "status", "summary", "thresholds", "against", "reason"))
        if rows:
            out += _table(rows) + [""]
        summary = parity.get("summary") if isinstance(parity.get("summary"), dict) else {}
        thresholds = parity.get("thresholds") if isinstance(parity.get("thresholds"), dict) else {}
        if summary or thresholds:
            keys = list(summary) + [k for k in thresholds if k not in summary]
            out += ["| metric | measured | threshold |", "|---|---|---|"]
            out += [f"| `{k}` | {_cell(summary.get(k))} | {_cell(thresholds.get(k))} |" for k in keys] + [""]
        table = parity.get("table")
        if isinstance(table, list) and table:
            out += ["<details><summary>comparison table</summary>", "", "```text"]
            out += [str(line) for line in table] + ["```", "", "</details>", ""]
    if quant:
        out += ["## int8 quantization", ""]
        out += _table(_scalar_rows(quant, skip=("source_model_sha256",))) + [""]

    # usage
    q = shlex.quote(where)
    out += ["## Usage", "",
            f"The snippets use `{where}` for this directory: replace it with where the directory lives.", "",
            "### yoso-deploy", "", "```python", _snippet_runtime(task, where, mask, failed), "```", "",
            "### ONNX Runtime", "", "```python", _snippet_ort(task, where, manifest), "```", "",
            "### Optimum", "", "```python", _snippet_optimum(task, where, mask), "```", "",
            "### Triton Inference Server", "",
            "```bash", f"yoso-deploy triton-repo --model {q} --output model_repository"
            + (" --allow-failed-export" if failed else ""),
            "```", "",
            "The repository holds `config.pbtxt`, the model and `libyoso_ort.so` (`--backend tensorrt` for an engine "
            "built below).", "",
            "### TensorRT", "",
            "```bash", f"yoso-deploy build-engine --model {q}  # writes {where}/model.plan", "```", "",
            "Needs an NVIDIA GPU, the TensorRT runtime (Python package `tensorrt`) and the plugin library "
            "`libyoso_trt.so` (the com.yoso ops as TensorRT plugins; `--plugins` picks another)."
            + (" This is an int8 export made for ONNX Runtime; for TensorRT, build from its fp32 source export."
               if quant else ""), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def write_model_card(export_dir: str | os.PathLike, where: str | None = None) -> Path:
    """Write ``README.md`` (:data:`~yoso_deploy.constants.MODEL_CARD_FILE`) into an export directory; returns
    its path. ``where``: the directory's path in the snippets (default ``path/to/<the directory's name>``)."""
    export_dir = expand_path(export_dir)
    path = export_dir / MODEL_CARD_FILE
    text = model_card(export_dir, where)
    tmp = path.with_name(f".{MODEL_CARD_FILE}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


__all__ = ["LIBRARY_NAME", "OPTIMUM_CLASSES", "front_matter", "hub_id", "model_card", "optimum_class",
           "write_model_card"]
