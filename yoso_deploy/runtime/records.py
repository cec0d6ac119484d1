"""JSON records in, pipeline results out: the one mapping from a JSON request to a task pipeline call.

The task endpoints of ``yoso-deploy serve`` (``POST /v1/{model}/{task}``) and ``yoso-deploy batch`` (one
record per JSONL line) both go through :func:`run_record`, so a record means the same everywhere:

=======================  ===============================================  =====================================
task                     fields (besides options)                         result
=======================  ===============================================  =====================================
qa                       ``question``, ``context``                         ``[{"answer", "score", "start", "end"}]``
                                                                          (character offsets into the context)
sequence-classification  ``text`` (str or list), ``text_pair`` (optional)  ``[{"label", "score"}]`` per text
token-classification     ``text`` (str or list)                            entities with character offsets
mlm                      ``text`` (str or list), with the mask token       ``[{"score", "token", "token_str",
                                                                          "sequence"}]``
base                     ``text`` (str or list)                            ``{"embedding": [...]}`` per text
multiple-choice          ``prompt``, ``choices`` (list of >= 2)            ``[{"choice", "score", "logit"}]``
=======================  ===============================================  =====================================

Options are the pipeline's (``top_k``, ``max_answer_len``, ``handle_impossible_answer``,
``aggregation_strategy``, ``ignore_labels``, ``function_to_apply``, ``targets``, ``pooling``,
``normalize``, ``truncation``); an unknown field or a value of the wrong type is a :class:`RecordError`
naming the field. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import numpy as np

from .. import tasks
from ..errors import UsageError

ENDPOINT_ALIASES = {"embeddings": "base", "embedding": "base", "classification": "sequence-classification"}

_STR = (str,)
_TEXTS = "str or list of str"


def _is_texts(v) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v))


def _pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


# task -> (required fields, optional fields) with a check and a description of each
FIELDS = {
    "qa": ({"question": (lambda v: isinstance(v, str), "str"), "context": (lambda v: isinstance(v, str), "str")},
           {"top_k": (_pos_int, "integer >= 1"), "max_answer_len": (_pos_int, "integer >= 1"),
            "handle_impossible_answer": (lambda v: isinstance(v, bool), "true or false")}),
    "sequence-classification": ({"text": (_is_texts, _TEXTS)},
                                {"text_pair": (_is_texts, _TEXTS),
                                 "top_k": (lambda v: v is None or _pos_int(v), "integer >= 1 or null (all labels)"),
                                 "function_to_apply": (lambda v: v in ("softmax", "sigmoid", "none"),
                                                       '"softmax", "sigmoid" or "none"'),
                                 "truncation": (lambda v: isinstance(v, bool), "true or false")}),
    "token-classification": ({"text": (_is_texts, _TEXTS)},
                             {"aggregation_strategy": (lambda v: v in ("none", "simple", "first", "average", "max"),
                                                       '"none", "simple", "first", "average" or "max"'),
                              "ignore_labels": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                                                "list of str")}),
    "mlm": ({"text": (_is_texts, _TEXTS)},
            {"top_k": (_pos_int, "integer >= 1"), "targets": (_is_texts, _TEXTS),
             "truncation": (lambda v: isinstance(v, bool), "true or false")}),
    "base": ({"text": (_is_texts, _TEXTS)},
             {"pooling": (lambda v: v in ("mean", "cls", "none"), '"mean", "cls" or "none"'),
              "normalize": (lambda v: isinstance(v, bool), "true or false"),
              "truncation": (lambda v: isinstance(v, bool), "true or false")}),
    "multiple-choice": ({"prompt": (lambda v: isinstance(v, str), "str"),
                         "choices": (lambda v: isinstance(v, list) and len(v) >= 2 and all(isinstance(x, str) for x in v),
                                     "list of at least 2 str")},
                        {"truncation": (lambda v: isinstance(v, bool), "true or false")}),
}
RESERVED = ("id",)  # batch records carry an id; it is not a pipeline field


class RecordError(UsageError):
    """A record the task's pipeline cannot take (the message names the field and the fix)."""


def endpoint_task(name: str) -> str:
    """A task name, alias or endpoint alias (``embeddings``, ``classification``) -> the canonical task."""
    return tasks.canonical_task(ENDPOINT_ALIASES.get(str(name).strip().lower(), name))


def example(task: str) -> str:
    required = FIELDS[task][0]
    return "{" + ", ".join(f'"{k}": ...' for k in required) + "}"


def check_record(task: str, record) -> dict:
    """The record's pipeline fields, checked; :class:`RecordError` names a missing, unknown or mistyped field."""
    required, optional = FIELDS[task]
    if not isinstance(record, dict):
        raise RecordError(f"a {task} record must be a JSON object {example(task)}, got a JSON {type(record).__name__}")
    fields = {k: v for k, v in record.items() if k not in RESERVED}
    missing = [k for k in required if k not in fields]
    unknown = [k for k in fields if k not in required and k not in optional]
    if unknown:  # first: a misspelt field is also why a required one is "missing"
        allowed = ", ".join(list(required) + list(optional))
        also = f" (and {missing[0]!r} is missing)" if missing else ""
        raise RecordError(f"unknown field {unknown[0]!r} for task {task}{also}; the fields are: {allowed}")
    if missing:
        raise RecordError(f"missing field {missing[0]!r}; a {task} record is {example(task)}")
    for k, v in fields.items():
        check, what = required.get(k) or optional[k]
        if not check(v):
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            raise RecordError(f"field {k!r} must be {what}, got {shown}")
    return fields


def to_json(value):
    """Pipeline results -> JSON-able values (numpy arrays and scalars to lists and numbers)."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def run_record(pipe, task: str, record) -> object:
    """Run one record through the task's pipeline and return a JSON-able result (module doc)."""
    f = check_record(task, record)
    if task == "qa":
        opts = {k: f[k] for k in ("top_k", "max_answer_len", "handle_impossible_answer") if k in f}
        answers = pipe.answer(f["question"], f["context"], **opts)
        return [a.to_json() for a in answers]
    if task == "multiple-choice":
        return to_json(pipe(f["prompt"], f["choices"], **{k: f[k] for k in ("truncation",) if k in f}))
    texts = f.pop("text")
    if task == "sequence-classification":  # a ranked list per text (top_k 1 unless asked), whatever transformers' default
        return to_json(pipe(texts, **{"top_k": 1, **f}))
    if task == "base":
        vecs = pipe(texts, **f)
        wrap = (lambda v: {"embedding": to_json(v)})
        return wrap(vecs) if isinstance(texts, str) else [wrap(v) for v in vecs]
    return to_json(pipe(texts, **f))


# Tasks whose pipeline takes a list of texts in one call (the rows share runs, padded to the longest).
LIST_TASKS = ("sequence-classification", "token-classification", "mlm", "base")


def run_records(pipe, task: str, records: list) -> list:
    """Run many records; returns, per record, ``("ok", result)`` or ``("error", one-line message)``.

    Records of a list task (:data:`LIST_TASKS`) with a single ``text`` and the same options go to the pipeline
    in one call (one run per ``batch_size`` rows); if that call fails, each is run alone, so one bad record
    yields one error and never fails the others."""
    out: list = [None] * len(records)
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        try:
            f = check_record(task, rec)
        except RecordError as e:
            out[i] = ("error", str(e))
            continue
        if task in LIST_TASKS and isinstance(f["text"], str) and not isinstance(f.get("text_pair"), list):
            key = repr(sorted((k, v) for k, v in f.items() if k != "text"))
            groups.setdefault(key, []).append(i)
        else:
            out[i] = _one(pipe, task, rec)
    for idx in groups.values():
        if len(idx) > 1:
            f = check_record(task, records[idx[0]])
            texts = [records[i]["text"] for i in idx]
            try:
                combined = run_record(pipe, task, {**f, "text": texts})
            except Exception:  # noqa: BLE001 - fall back to one record at a time to isolate the bad one
                combined = None
            if combined is not None:
                for i, r in zip(idx, combined):
                    out[i] = ("ok", r)
                continue
        for i in idx:
            out[i] = _one(pipe, task, records[i])
    return out


def _one(pipe, task: str, record) -> tuple:
    try:
        return ("ok", run_record(pipe, task, record))
    except Exception as e:  # noqa: BLE001 - a record's failure is its error record, never a crash
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return ("error", msg)
