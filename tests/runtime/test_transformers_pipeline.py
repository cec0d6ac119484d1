"""``transformers.pipeline(task, model=<ORT model>, tokenizer=...)`` with yoso_deploy.hf's classes gives the
same results as the runtime's own pipelines (text classification, token classification with every
aggregation, fill-mask with one and several masks, feature extraction), without transformers logging that
the model is unsupported. Question answering: transformers >= 5.3 has no such pipeline; the test checks
whichever holds for the installed transformers."""

import logging

import numpy as np
import pytest
import torch
import transformers

from yoso_deploy import hf
from yoso_deploy.runtime import pipeline

TEXTS = ["Ada Lovelace moved to Zanzibar in 1999 and bought a red xylophone.", "Bruno lives in Lima."]


def _pair(task_exports, task, hf_task):
    d = task_exports[task]
    model = hf.HF_MODELS[task].from_pretrained(d)
    tok = transformers.AutoTokenizer.from_pretrained(str(d))
    return pipeline(d), transformers.pipeline(hf_task, model=model, tokenizer=tok), model


def _scores_close(a, b):
    return np.allclose([float(x["score"]) for x in a], [float(x["score"]) for x in b], rtol=1e-5, atol=1e-6)


@pytest.fixture(autouse=True)
def _no_unsupported_model_log(caplog):
    with caplog.at_level(logging.ERROR, logger="transformers"):
        yield
    bad = [r.getMessage() for r in caplog.records if "not supported" in r.getMessage()]
    assert not bad, bad


def test_text_classification(task_exports):
    ours, theirs, model = _pair(task_exports, "sequence-classification", "text-classification")
    assert type(theirs).__name__ == "TextClassificationPipeline" and theirs.model is model
    for text in TEXTS:
        a, b = ours(text, top_k=None), theirs(text, top_k=None)
        assert [x["label"] for x in a] == [x["label"] for x in b] and _scores_close(a, b)
    a, b = ours({"text": "first", "text_pair": "second"}, top_k=2), theirs({"text": "first", "text_pair": "second"}, top_k=2)
    assert [x["label"] for x in a] == [x["label"] for x in b] and _scores_close(a, b)


@pytest.mark.parametrize("agg", ["none", "simple", "first", "average", "max"])
def test_token_classification(task_exports, agg):
    ours, theirs, _ = _pair(task_exports, "token-classification", "token-classification")
    for text in TEXTS:
        a, b = ours(text, aggregation_strategy=agg), theirs(text, aggregation_strategy=agg)
        key = "entity" if agg == "none" else "entity_group"
        assert [(x[key], x["word"], x["start"], x["end"]) for x in a] == \
               [(x[key], x["word"], int(x["start"]), int(x["end"])) for x in b]
        assert _scores_close(a, b)
        if agg == "none":
            assert [x["index"] for x in a] == [x["index"] for x in b]


def test_fill_mask(task_exports):
    ours, theirs, _ = _pair(task_exports, "mlm", "fill-mask")
    for text in ("Ada moved to [MASK] in 1999.", "Ada [MASK] to [MASK] in 1999."):
        a, b = ours(text, top_k=3), theirs(text, top_k=3)
        flat = (lambda r: [x for m in r for x in m]) if isinstance(a[0], list) else (lambda r: r)
        assert [(x["token"], x["token_str"], x["sequence"]) for x in flat(a)] == \
               [(x["token"], x["token_str"], x["sequence"]) for x in flat(b)]
        assert _scores_close(flat(a), flat(b))


def test_feature_extraction(task_exports):
    ours, theirs, _ = _pair(task_exports, "base", "feature-extraction")
    for text in TEXTS:
        got = np.asarray(theirs(text))
        assert got.shape[0] == 1
        assert np.allclose(ours(text, pooling="none"), got[0], atol=1e-6)


def test_question_answering(task_exports):
    d = task_exports["qa"]
    model = hf.OrtYosoForQuestionAnswering.from_pretrained(d)
    tok = transformers.AutoTokenizer.from_pretrained(str(d))
    enc = tok("Where did Ada move?", "Ada moved to Oslo.", return_tensors="pt")
    out = model(**enc)
    assert isinstance(out.start_logits, torch.Tensor) and out.start_logits.shape == enc["input_ids"].shape
    raw = model.ort_model(**{k: v.numpy() for k, v in enc.items()})
    assert np.array_equal(out.end_logits.numpy(), raw.end_logits)
    if "question-answering" in transformers.pipelines.SUPPORTED_TASKS:  # transformers < 5.3
        ours = pipeline(d)
        qa = transformers.pipeline("question-answering", model=model, tokenizer=tok)
        a = ours(question="Where did Ada move?", context="Ada moved to Oslo in 1999.")
        b = qa(question="Where did Ada move?", context="Ada moved to Oslo in 1999.")
        assert (a["start"], a["end"], a["answer"]) == (b["start"], b["end"], b["answer"])
    else:
        print(f"transformers {transformers.__version__} has no question-answering pipeline (removed in 5.3); "
              "checked the model outputs and that transformers refuses the task")
        with pytest.raises(KeyError, match="question-answering has been removed"):
            transformers.pipeline("question-answering", model=model, tokenizer=tok)


def test_model_object_contract(task_exports):
    model = hf.OrtYosoPreTrainedModel.from_pretrained(task_exports["token-classification"])
    assert type(model) is hf.OrtYosoForTokenClassification  # the export's task picks the class
    assert model.config.id2label[1] == "B-PER" and model.device == torch.device("cpu")
    assert model.to("cpu") is model and model.can_generate() is False
    with pytest.raises(ValueError, match="needs a 'mlm' export"):
        hf.OrtYosoForMaskedLM(model.ort_model)
    p = hf.pipeline(task_exports["sequence-classification"])
    assert type(p).__name__ == "TextClassificationPipeline"
    with pytest.raises(ValueError, match="no pipeline for 'multiple-choice'"):
        hf.pipeline(task_exports["multiple-choice"])
