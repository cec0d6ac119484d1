"""The model card (README.md) of an export: front matter, per-task snippets that compile, parity, old manifests."""

import json
import re

import pytest

from yoso_deploy import tasks
from yoso_deploy.constants import MODEL_CARD_FILE
from yoso_deploy.model_card import OPTIMUM_CLASSES, hub_id, model_card, optimum_class, write_model_card

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML comes with the test environment
    yaml = None

CONFIG = {"model_type": "yoso", "vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
          "max_position_embeddings": 64, "num_labels": 3, "type_vocab_size": 1,
          "id2label": {"0": "NEG", "1": "NEU", "2": "POS"}}


def front_matter(text: str) -> dict:
    """The YAML block between the leading ``---`` lines, parsed (PyYAML, else a minimal reader)."""
    assert text.startswith("---\n"), text[:80]
    block = text[4:text.index("\n---\n", 4)]
    if yaml is not None:
        return yaml.safe_load(block)
    out, key = {}, None
    for line in block.splitlines():
        if line.startswith("  - "):
            out.setdefault(key, []).append(line[4:].strip().strip('"'))
        else:
            key, _, value = line.partition(":")
            assert _ == ":", line
            out[key] = value.strip().strip('"') or None
    return out


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def make_manifest(task: str, **extra) -> dict:
    spec = tasks.get(task)
    outputs = [{"name": o.name, "dtype": "float32", "dims": [3 if str(d).startswith("$") else d for d in o.dims]}
               for o in spec.outputs]
    inputs = [{"name": n, "dtype": "int64", "dims": list(spec.input_dims)} for n in ("input_ids", "attention_mask")]
    return {"format": "yoso-deploy-export", "format_version": 1, "task": task, "attention": "lsh",
            "inputs": inputs, "outputs": outputs, "max_sequence_length": 64, **extra}


def make_export(path, manifest: dict, config: dict | None = CONFIG):
    path.mkdir(parents=True)
    (path / "yoso_export.json").write_text(json.dumps(manifest))
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


FULL = {"opset": 18, "dtype": "fp32", "seed": 0, "source_model": "uw-madison/yoso-4096", "portable": "functions",
        "custom_ops": [{"domain": "com.yoso", "version": 1, "ops": ["FastHash", "LSHCumulation"]}],
        "hash": {"num_hash": 64, "hash_code_len": 12},
        "tokenizer": {"kind": "bpe", "source_class": "RobertaTokenizer", "converted": True, "vocab_size": 97,
                      "special_tokens": {"mask_token": "<mask>"}},
        "parity": {"status": "passed", "shapes": ["2x16", "3x77"], "first_failure": None,
                   "table": ["ort-cpu vs torch, input 2x16: ok"]}}


@pytest.mark.parametrize("task", list(tasks.TASKS))
def test_card_per_task(tmp_path, task):
    d = make_export(tmp_path / f"my-{task}", make_manifest(task, **FULL))
    path = write_model_card(d)
    assert path == d / MODEL_CARD_FILE == d / "README.md"
    text = path.read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "yoso-deploy"
    assert meta.get("pipeline_tag") == tasks.get(task).hf_pipeline_task  # absent for multiple-choice
    if tasks.get(task).hf_pipeline_task is None:
        assert "pipeline_tag" not in meta
    assert meta["tags"][:2] == ["onnx", "yoso"] and task in meta["tags"]
    assert meta["base_model"] == "uw-madison/yoso-4096"
    assert f"from optimum.onnxruntime import {OPTIMUM_CLASSES[task]}" in text
    assert optimum_class(task) == OPTIMUM_CLASSES[task]
    assert "passed" in text.split("## How it was checked", 1)[1].split("##", 1)[0]
    blocks = python_blocks(text)
    assert len(blocks) == 3
    for code in blocks:
        compile(code, "card", "exec")
        assert f'"path/to/my-{task}' in code
    assert f"yoso-deploy triton-repo --model path/to/my-{task} --output" in text
    assert f"yoso-deploy build-engine --model path/to/my-{task}" in text and "libyoso_trt.so" in text
    assert "RobertaTokenizer" in text and "64 / 12" in text and "| max sequence length | 64 |" in text
    if task in ("sequence-classification", "token-classification"):
        assert "`NEG`, `NEU`, `POS`" in text
    if task == "mlm":
        assert "<mask>" in text
    assert write_model_card(d).read_text() == text  # deterministic


def test_optimum_class_aliases():
    assert optimum_class("question-answering") == "ORTModelForQuestionAnswering"
    assert optimum_class("ner") == "ORTModelForTokenClassification"
    assert optimum_class("feature-extraction") == "ORTModelForFeatureExtraction"
    assert set(OPTIMUM_CLASSES) == set(tasks.TASKS)


@pytest.mark.parametrize("source, want", [
    ("uw-madison/yoso-4096", "uw-madison/yoso-4096"),
    ("/work/ckpt/qa", None), ("../ckpt-qa", None), ("ckpt", None), ("./a/b", None), ("~/models/x", None),
    ("a/b/c", None), (None, None), (3, None)])
def test_hub_id(source, want):
    assert hub_id(source) == want


def test_minimal_manifest_and_no_config(tmp_path):
    """An older export: no parity, tokenizer, quantization, hash, opset, source or config.json; still a card."""
    d = make_export(tmp_path / "old", make_manifest("qa"), config=None)
    text = write_model_card(d).read_text()
    meta = front_matter(text)
    assert meta["pipeline_tag"] == "question-answering" and "base_model" not in meta
    assert "no parity check" in text and "Not recorded" in text
    for code in python_blocks(text):
        compile(code, "card", "exec")


def test_local_source_is_not_base_model(tmp_path):
    d = make_export(tmp_path / "local", make_manifest("sequence-classification", source_model="../ckpt-cls"))
    text = write_model_card(d).read_text()
    assert "base_model" not in front_matter(text) and "`../ckpt-cls` (a local checkpoint)" in text


def test_failed_parity_is_shown_at_the_top(tmp_path):
    parity = {"status": "failed", "first_failure": "ort-cpu 2x16 layer 0 query", "shapes": ["2x16"]}
    d = make_export(tmp_path / "bad", make_manifest("qa", parity=parity))
    text = write_model_card(d).read_text()
    head = text.split("## Model", 1)[0]
    assert "FAILED" in head and "layer 0 query" in head and "allow_failed_export" in head
    assert "**FAILED**" in text.split("## How it was checked", 1)[1]
    assert "allow_failed_export=True" in python_blocks(text)[0] and "--allow-failed-export" in text
    # the control: a passed check says nothing of the kind
    ok = make_export(tmp_path / "good", make_manifest("qa", parity={"status": "passed"}))
    good = write_model_card(ok).read_text()
    assert "FAILED" not in good and "allow_failed_export" not in good


def test_int8_metrics(tmp_path):
    quant = {"method": "dynamic", "format": "integer ops (DynamicQuantizeLinear + MatMulInteger)",
             "weight_type": "int8", "activation_type": "uint8", "per_channel": False, "qk": "int8",
             "quantized_nodes": ["a", "b"], "excluded_nodes": [], "source_export": "/work/out/qa"}
    parity = {"status": "passed", "kind": "int8", "against": "fp32 export", "shapes": ["2x16"],
              "thresholds": {"min_output_cosine": 0.99}, "summary": {"min_output_cosine": 0.999919}}
    d = make_export(tmp_path / "int8", make_manifest("qa", quantization=quant, parity=parity))
    text = write_model_card(d).read_text()
    assert "int8" in front_matter(text)["tags"]
    assert "## int8 quantization" in text and "MatMulInteger" in text and "| `weight_type` | int8 |" in text
    assert "| `min_output_cosine` | 0.999919 | 0.99 |" in text and "against the fp32 export: passed" in text


def test_card_of_real_exports(task_exports):
    """Every task's real export (from the exporter, with its real manifest and config)."""
    for task, d in task_exports.items():
        text = model_card(d, where="exports/" + task)
        meta = front_matter(text)
        assert meta.get("pipeline_tag") == tasks.get(task).hf_pipeline_task
        assert OPTIMUM_CLASSES[task] in text
        for code in python_blocks(text):
            compile(code, "card", "exec")
            assert '"exports/' + task in code
        assert "## How it was checked" in text
