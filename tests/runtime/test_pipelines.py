"""The runtime pipelines of every task, checked against the raw model outputs they decode (the
transformers comparison is tests/runtime/test_transformers_pipeline.py)."""

import numpy as np
import pytest

from yoso_deploy import tasks
from yoso_deploy.runtime import pipeline
from yoso_deploy.runtime.pipelines import (
    FeatureExtractionPipeline,
    FillMaskPipeline,
    MultipleChoicePipeline,
    TextClassificationPipeline,
    TokenClassificationPipeline,
    pipeline_class,
    softmax,
)
from yoso_deploy.runtime.qa import QuestionAnsweringPipeline

from support.checkpoints import CLS_LABELS, NER_LABELS

TEXT = "Ada Lovelace moved to Zanzibar in 1999 and bought a red xylophone."


def raw(pipe, texts, pairs=None):
    enc = pipe.tokenizer(texts, pairs)
    return enc, pipe.model(**enc.model_inputs(pipe.model.input_names))


def test_factory_picks_the_task_pipeline(task_exports):
    want = {"base": FeatureExtractionPipeline, "mlm": FillMaskPipeline, "sequence-classification": TextClassificationPipeline,
            "multiple-choice": MultipleChoicePipeline, "token-classification": TokenClassificationPipeline,
            "qa": QuestionAnsweringPipeline}
    for task, d in task_exports.items():
        assert pipeline_class(task) is want[task] and pipeline_class(tasks.get(task).aliases[0]) is want[task]
        assert type(pipeline(d)) is want[task]
    with pytest.raises(ValueError, match="is a 'qa' export, not 'mlm'"):
        pipeline(task_exports["qa"], task="fill-mask")
    with pytest.raises(ValueError, match="needs a 'sequence-classification' model, got a 'qa' export"):
        TextClassificationPipeline(pipeline(task_exports["qa"]).model, pipeline(task_exports["qa"]).tokenizer)
    with pytest.raises(TypeError, match="has no option pooling"):
        pipeline(task_exports["sequence-classification"])("x", pooling="mean")


def test_text_classification(task_exports):
    pipe = pipeline(task_exports["sequence-classification"])
    _, out = raw(pipe, [TEXT])
    probs = softmax(out.logits[0])
    top = pipe(TEXT)
    assert len(top) == 1 and top[0]["label"] == CLS_LABELS[int(np.argmax(probs))]
    assert top[0]["score"] == pytest.approx(probs.max(), rel=1e-6)
    every = pipe(TEXT, top_k=None)
    assert [d["label"] for d in every] == [CLS_LABELS[i] for i in np.argsort(-probs)]
    assert sum(d["score"] for d in every) == pytest.approx(1.0)
    # problem_type decides the function, as in transformers; an explicit function wins
    pipe.model.config["problem_type"] = "multi_label_classification"
    try:
        sig = {d["label"]: d["score"] for d in pipe(TEXT, top_k=None)}
        assert sig == pytest.approx({CLS_LABELS[i]: 1 / (1 + np.exp(-out.logits[0][i])) for i in CLS_LABELS})
        pipe.model.config["problem_type"] = "regression"
        assert {d["label"]: d["score"] for d in pipe(TEXT, top_k=None)} == pytest.approx(
            {CLS_LABELS[i]: float(out.logits[0][i]) for i in CLS_LABELS})
        assert pipe(TEXT, function_to_apply="softmax")[0]["score"] == pytest.approx(probs.max(), rel=1e-6)
    finally:
        pipe.model.config.pop("problem_type")
    # pairs, dict inputs, batches
    _, pair_out = raw(pipe, ["first part"], ["second part"])
    got = pipe({"text": "first part", "text_pair": "second part"}, top_k=None)
    assert got[0]["score"] == pytest.approx(softmax(pair_out.logits[0]).max(), rel=1e-6)
    assert pipe("first part", text_pair="second part", top_k=None) == got
    batch = pipe([TEXT, "short one", "another text of middling length"], top_k=2)
    singles = [pipe(t, top_k=2) for t in [TEXT, "short one", "another text of middling length"]]
    for b, s in zip(batch, singles):
        assert [d["label"] for d in b] == [d["label"] for d in s]
        assert [d["score"] for d in b] == pytest.approx([d["score"] for d in s], abs=1e-5)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        pipe(TEXT, top_k=0)
    with pytest.raises(ValueError, match="function_to_apply must be"):
        pipe(TEXT, function_to_apply="relu")
    with pytest.raises(ValueError, match="the text is empty"):
        pipe("  ")


def test_token_classification_none_and_aggregations(task_exports):
    pipe = pipeline(task_exports["token-classification"])
    enc, out = raw(pipe, [TEXT])
    probs = softmax(out.logits[0])
    tokens = [i for i, s in enumerate(enc.sequence_ids(0)) if s == 0]
    every = pipe(TEXT, ignore_labels=[])
    assert [e["index"] for e in every] == tokens
    for e in every:
        assert e["entity"] == NER_LABELS[int(np.argmax(probs[e["index"]]))]
        assert e["score"] == pytest.approx(probs[e["index"]].max(), rel=1e-6)
        assert 0 <= e["start"] < e["end"] <= len(TEXT)
        assert TEXT[e["start"]:e["end"]].lower() == e["word"].removeprefix("##")
    kept = pipe(TEXT)  # default: "O" dropped
    assert kept == [e for e in every if e["entity"] != "O"]
    for agg in ("simple", "first", "average", "max"):
        groups = pipe(TEXT, aggregation_strategy=agg, ignore_labels=[])
        assert groups and all("entity_group" in g and "index" not in g for g in groups)
        spans = [(g["start"], g["end"]) for g in groups]
        assert spans == sorted(spans) and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
        assert spans[0][0] == every[0]["start"] and spans[-1][1] == every[-1]["end"]  # every token is covered
        assert all(g["entity_group"] in {"O", "PER", "LOC"} for g in groups)
        if agg != "simple":  # word-level: a group never starts or ends inside a word
            starts = {e["start"] for e in every if not e["word"].startswith("##")}
            assert all(g["start"] in starts for g in groups)
    with pytest.raises(ValueError, match="aggregation_strategy must be one of"):
        pipe(TEXT, aggregation_strategy="mean")


def test_token_classification_long_text_in_windows(task_exports):
    pipe = pipeline(task_exports["token-classification"])
    words = ("Ada Lovelace moved to Zanzibar and bought quixotic xylophones " * 80).split()
    text = " ".join(words)
    n_tokens = pipe.tokenizer.token_count(text)
    assert n_tokens > pipe.model.max_sequence_length  # 512 positions in the tiny config
    every = pipe(text, ignore_labels=[], stride=64)
    assert len(every) == n_tokens  # each token exactly once, in order
    assert [e["start"] for e in every] == sorted(e["start"] for e in every)
    assert all(text[e["start"]:e["end"]].lower() == e["word"].removeprefix("##") for e in every)
    # a token in the middle of the first window is classified from that window
    enc = pipe.tokenizer(text, max_length=512, truncation=True)
    first = softmax(pipe.model(**enc.model_inputs(pipe.model.input_names)).logits[0])
    for e in every[100:110]:
        assert e["score"] == pytest.approx(first[e["index"]].max(), rel=1e-5)


def test_fill_mask(task_exports):
    pipe = pipeline(task_exports["mlm"])
    text = "Ada moved to [MASK] in 1999."
    enc, out = raw(pipe, [text])
    pos = int(np.flatnonzero(enc["input_ids"][0] == pipe.tokenizer.mask_token_id)[0])
    probs = softmax(out.logits[0][pos])
    res = pipe(text, top_k=4)
    assert [r["token"] for r in res] == list(np.argsort(-probs)[:4])
    assert [r["score"] for r in res] == pytest.approx(list(np.sort(probs)[::-1][:4]), rel=1e-6)
    for r in res:
        assert r["token_str"] == pipe.tokenizer.decode([r["token"]])
        assert "[MASK]" not in r["sequence"] and r["sequence"].startswith("ada moved to ")
    two = pipe("Ada [MASK] to [MASK] in 1999.", top_k=2)
    assert len(two) == 2 and all(len(m) == 2 for m in two)
    assert all("[MASK]" in r["sequence"] for m in two for r in m)  # the other mask stays visible
    targeted = pipe(text, targets=["oslo", "lima", "in"])
    assert {r["token_str"] for r in targeted} <= {"oslo", "lima", "in"} and len(targeted) <= 3
    assert len(pipe([text, "The [MASK] is red."])) == 2
    with pytest.raises(ValueError, match=r"no mask token \[MASK\] in 'no mask here'"):
        pipe("no mask here")


def test_feature_extraction(task_exports):
    pipe = pipeline(task_exports["base"])
    enc, out = raw(pipe, [TEXT])
    hidden = out.last_hidden_state[0]
    assert np.allclose(pipe(TEXT), hidden.mean(0), atol=1e-6)  # default: mean pooling
    assert np.allclose(pipe(TEXT, pooling="cls"), hidden[0])
    assert np.allclose(pipe(TEXT, pooling="none"), hidden)
    v = pipe(TEXT, normalize=True)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-6) and np.allclose(v, hidden.mean(0) / np.linalg.norm(hidden.mean(0)), atol=1e-6)
    # padding in a batch does not enter the mean
    batch = pipe([TEXT, "short"])
    assert np.allclose(batch[0], pipe(TEXT), atol=1e-4) and np.allclose(batch[1], pipe("short"), atol=1e-4)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pipe(TEXT, pooling="max")


def test_multiple_choice(task_exports):
    pipe = pipeline(task_exports["multiple-choice"])
    prompt, choices = "Ada moved to", ["Oslo in 1999.", "a red lamp.", "Lima."]
    enc = pipe.tokenizer([prompt] * 3, choices)
    logits = pipe.model(**{k: v[None] for k, v in enc.model_inputs(pipe.model.input_names).items()}).logits[0]
    res = pipe(prompt, choices)
    assert [r["choice"] for r in res] == choices
    assert [r["score"] for r in res] == pytest.approx(list(softmax(logits)), rel=1e-6)
    assert sum(r["score"] for r in res) == pytest.approx(1.0)
    assert len(pipe([(prompt, choices), ("Bruno bought", ["a map", "a clock"])])) == 2
    with pytest.raises(ValueError, match="at least two choices"):
        pipe(prompt, ["only one"])
