"""Pipelines: text in, the task's answer out, decoded the way transformers' pipelines decode.

    from yoso_deploy.runtime import pipeline
    clf = pipeline("out/cls")                       # the export's task decides the pipeline
    clf("a great film", top_k=2)                    # [{"label": "POSITIVE", "score": 0.93}, ...]

=======================  =============================================================================
task                     pipeline and result
=======================  =============================================================================
qa                       :class:`~yoso_deploy.runtime.qa.QuestionAnsweringPipeline`: windows stitched,
                         spans inside the context, probability scores, optional null answer
sequence-classification  :class:`TextClassificationPipeline`: ``[{"label", "score"}]``; labels from
                         ``id2label``; softmax / sigmoid / none by ``problem_type`` (as transformers)
token-classification     :class:`TokenClassificationPipeline`: entities with character offsets;
                         aggregation none / simple / first / average / max; long texts in windows
mlm                      :class:`FillMaskPipeline`: ``[{"score", "token", "token_str", "sequence"}]``
                         per mask (one or several masks)
base                     :class:`FeatureExtractionPipeline`: one vector per text (``cls`` / ``mean``
                         pooling, optional L2 normalisation) or every token's (``pooling="none"``)
multiple-choice          :class:`MultipleChoicePipeline`: ``[{"choice", "score"}]`` (softmax over choices)
=======================  =============================================================================

Every pipeline runs the runtime model classes (:mod:`yoso_deploy.runtime.models`) and tokenizes with
:class:`~yoso_deploy.runtime.tokenizer.Tokenizer`; nothing here imports torch or transformers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import tasks
from ..errors import OptionError, UsageError
from ..manifest import load_manifest
from .base import SESSION_KWARGS, Pipeline, _texts, sigmoid, softmax, stitch_windows  # noqa: F401 - re-exported
from .qa import QuestionAnsweringPipeline
from .tokenizer import TokenizerError  # noqa: F401 - re-exported


class TextClassificationPipeline(Pipeline):
    """Labels of texts (or text pairs): ``[{"label", "score"}, ...]``, best first, ``top_k`` of them
    (``None``: all labels); without ``top_k``, as transformers, each text's best label as one dict (a single
    string: ``[{"label", "score"}]``, a list of texts: one dict per text). ``function_to_apply``: ``softmax``, ``sigmoid`` or ``none``; by default, as in
    transformers, none for ``problem_type="regression"``, sigmoid for multi-label or a single label,
    softmax otherwise."""

    task = "sequence-classification"

    def function_to_apply(self, override=None) -> str:
        if override is not None:
            f = str(override).lower()
            if f not in ("softmax", "sigmoid", "none"):
                raise UsageError(f"function_to_apply must be softmax, sigmoid or none, got {override!r}")
            return f
        cfg = self.model.config
        problem, n = cfg.get("problem_type"), len(self.model.id2label) or 2
        if problem == "regression":
            return "none"
        if problem == "multi_label_classification" or n == 1:
            return "sigmoid"
        return "softmax"

    def __call__(self, inputs, text_pair=None, truncation: bool = False, **params):
        opts = self._options(params)
        if isinstance(inputs, dict) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], dict)):
            items = [inputs] if isinstance(inputs, dict) else list(inputs)
            single = isinstance(inputs, dict)
            if not all("text" in d for d in items):
                raise UsageError('each input dict needs a "text" key (and optionally "text_pair")')
            texts = [d["text"] for d in items]
            pairs = [d.get("text_pair") for d in items]
            if all(p is None for p in pairs):
                pairs = None
            elif any(p is None for p in pairs):
                raise UsageError('give "text_pair" for every input dict or for none')
        else:
            texts, single = _texts(inputs)
            pairs = None if text_pair is None else ([text_pair] * len(texts) if isinstance(text_pair, str) else list(text_pair))
        top_k = opts["top_k"]
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise UsageError(f"top_k must be a positive integer or None (all labels), got {top_k!r}")
        # As transformers: without an explicit top_k each text gets its best label as one dict, and a single
        # string a list holding that dict; with top_k (or None: all) each text gets a ranked list.
        legacy = "top_k" not in params and "top_k" not in self.explicit
        if top_k is not None:
            self.limits.check("max_top_k", top_k, "top_k")
        self.limits.check_texts(texts)
        if pairs is not None:
            self.limits.check_texts(pairs, "text pair")
        fn = self.function_to_apply(opts["function_to_apply"])
        with self.admitted(self.count_tokens(texts + (pairs or []))):
            logits = self._forward(self._encode(texts, pairs, truncation), "logits").astype(np.float64)
        scores = softmax(logits) if fn == "softmax" else sigmoid(logits) if fn == "sigmoid" else logits
        labels = self.model.id2label
        results = []
        for row in scores:
            ranked = sorted(({"label": labels.get(i, f"LABEL_{i}"), "score": float(s)} for i, s in enumerate(row)),
                            key=lambda d: d["score"], reverse=True)
            results.append(ranked[0] if legacy else ranked if top_k is None else ranked[:top_k])
        if legacy:
            return [results[0]] if single else results
        return results[0] if single else results


AGGREGATIONS = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline(Pipeline):
    """Entities of texts, decoded as transformers' ``TokenClassificationPipeline``: ``aggregation_strategy``
    ``none`` (every token: ``entity, score, index, word, start, end``), ``simple`` (adjacent tokens of one
    entity grouped by their B-/I- tags: ``entity_group, score, word, start, end``), or ``first`` /
    ``average`` / ``max`` (words first, then groups). ``start``/``end`` are character offsets into the
    text. Tokens labelled with one of ``ignore_labels`` (default ``O``) are dropped.

    A text longer than the model's maximum is split into windows overlapping by ``stride`` tokens; each
    token takes its scores from the window where it has the most context (as the QA pipeline does), so
    every token is classified once."""

    task = "token-classification"

    def __call__(self, inputs, **params):
        opts = self._options(params)
        agg = str(opts["aggregation_strategy"] or "none").lower()
        if agg not in AGGREGATIONS:
            raise UsageError(f"aggregation_strategy must be one of {', '.join(AGGREGATIONS)}, got {agg!r}")
        ignore = list(opts["ignore_labels"] or ())
        texts, single = _texts(inputs)
        self.limits.check_texts(texts)
        with self.admitted(self.count_tokens(texts)):
            results = [self._one(t, agg, ignore, int(opts["stride"])) for t in texts]
        return results[0] if single else results

    def _one(self, text: str, agg: str, ignore: list[str], stride: int) -> list[dict]:
        msl = self.model.max_sequence_length
        long = self.tokenizer.token_count(text) + self.tokenizer.num_special_tokens(False) > msl
        enc = self.tokenizer(text, max_length=msl, truncation="longest_first" if long else False,
                             stride=min(stride, max(0, msl - self.tokenizer.num_special_tokens(False) - 1)),
                             return_overflowing=long)
        logits = self._forward(enc, "logits").astype(np.float64)
        owner, position, offsets = stitch_windows(enc, sequence=0)
        scores = softmax(logits[owner, position])
        first = enc.sequence_ids(0).index(0) if 0 in enc.sequence_ids(0) else 0
        prefix = self.tokenizer.continuing_subword_prefix
        unk = self.tokenizer.unk_token_id
        pre = []
        for k, (w, i) in enumerate(zip(owner, position)):
            tid = int(enc["input_ids"][w][i])
            word = self.tokenizer.convert_ids_to_tokens(tid)
            start, end = int(offsets[k][0]), int(offsets[k][1])
            ref = text[start:end]
            if prefix:
                is_subword = len(word) != len(ref)
            else:
                is_subword = start > 0 and " " not in text[start - 1:start + 1]
            if unk is not None and tid == unk:
                word, is_subword = ref, False
            pre.append({"word": word, "scores": scores[k], "start": start, "end": end, "index": first + k,
                        "is_subword": is_subword})
        entities = self._aggregate(pre, agg)
        return [e for e in entities if e.get("entity", e.get("entity_group")) not in ignore]

    def _label(self, idx: int) -> str:
        return self.model.id2label.get(int(idx), f"LABEL_{int(idx)}")

    def _aggregate(self, pre: list[dict], agg: str) -> list[dict]:
        if agg in ("none", "simple"):
            tokens = [{"entity": self._label(p["scores"].argmax()), "score": float(p["scores"].max()),
                       "index": p["index"], "word": p["word"], "start": p["start"], "end": p["end"]} for p in pre]
            return tokens if agg == "none" else self._group(tokens)
        words, group = [], []
        for p in pre:
            if group and not p["is_subword"]:
                words.append(self._word(group, agg))
                group = []
            group.append(p)
        if group:
            words.append(self._word(group, agg))
        return self._group(words)

    def _word(self, pieces: list[dict], agg: str) -> dict:
        if agg == "first":
            s = pieces[0]["scores"]
        elif agg == "max":
            s = max(pieces, key=lambda p: p["scores"].max())["scores"]
        else:  # average
            s = np.nanmean(np.stack([p["scores"] for p in pieces]), axis=0)
        return {"entity": self._label(s.argmax()), "score": float(s.max()),
                "word": self.tokenizer.convert_tokens_to_string([p["word"] for p in pieces]),
                "start": pieces[0]["start"], "end": pieces[-1]["end"]}

    @staticmethod
    def _tag(label: str) -> tuple[str, str]:
        if label.startswith("B-"):
            return "B", label[2:]
        if label.startswith("I-"):
            return "I", label[2:]
        return "I", label

    def _group(self, entities: list[dict]) -> list[dict]:
        groups, current = [], []
        for e in entities:
            if current:
                bi, tag = self._tag(e["entity"])
                _, last = self._tag(current[-1]["entity"])
                if not (tag == last and bi != "B"):
                    groups.append(self._close(current))
                    current = []
            current.append(e)
        if current:
            groups.append(self._close(current))
        return groups

    def _close(self, members: list[dict]) -> dict:
        return {"entity_group": members[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([m["score"] for m in members])),
                "word": self.tokenizer.convert_tokens_to_string([m["word"] for m in members]),
                "start": members[0]["start"], "end": members[-1]["end"]}


class FillMaskPipeline(Pipeline):
    """The ``top_k`` most likely tokens at each mask token: ``[{"score", "token", "token_str", "sequence"}]``
    (a list per mask when the text has several). ``targets`` restricts the candidates to those words."""

    task = "mlm"

    def __call__(self, inputs, targets=None, truncation: bool = False, **params):
        opts = self._options(params)
        top_k = opts["top_k"]
        if not isinstance(top_k, int) or top_k < 1:
            raise UsageError(f"top_k must be a positive integer, got {top_k!r}")
        mask_id = self.tokenizer.mask_token_id
        if mask_id is None:
            raise UsageError("the export's tokenizer defines no mask token (tokenizer_config.json 'mask_token'); "
                             "fill-mask needs one")
        texts, single = _texts(inputs)
        self.limits.check("max_top_k", top_k, "top_k")
        self.limits.check_texts(texts)
        if targets is not None:
            self.limits.check_texts([targets] if isinstance(targets, str) else list(targets), "target")
        tokens = self.count_tokens(texts)
        target_ids = self._target_ids(targets) if targets is not None else None
        enc = self._encode(texts, None, truncation)
        ids = enc["input_ids"]
        for r, t in enumerate(texts):
            if not (ids[r] == mask_id).any():
                raise UsageError(f"no mask token {self.tokenizer.mask_token} in {t[:60]!r}; put "
                                 f"{self.tokenizer.mask_token} where a word should be predicted")
        with self.admitted(tokens):
            logits = self._forward(enc, "logits")
        results = []
        for r in range(len(texts)):
            row_ids = ids[r][enc["attention_mask"][r] == 1]
            where = np.flatnonzero(row_ids == mask_id)
            probs = softmax(logits[r][where].astype(np.float64))
            cand = target_ids if target_ids is not None else np.arange(probs.shape[-1])
            k = min(top_k, len(cand))
            per_mask = []
            for m, pos in enumerate(where):
                p = probs[m][cand]
                order = np.argsort(-p, kind="stable")[:k]
                row = []
                for j in order:
                    tok = int(cand[j])
                    filled = row_ids.copy()
                    filled[pos] = tok
                    filled = filled[filled != self.tokenizer.pad_token_id]
                    row.append({"score": float(p[j]), "token": tok, "token_str": self.tokenizer.decode([tok]),
                                "sequence": self.tokenizer.decode(filled, skip_special_tokens=len(where) == 1)})
                per_mask.append(row)
            results.append(per_mask[0] if len(where) == 1 else per_mask)
        return results[0] if single else results

    def _target_ids(self, targets) -> np.ndarray:
        targets = [targets] if isinstance(targets, str) else list(targets)
        ids = []
        for t in targets:
            tid = self.tokenizer._tk.token_to_id(t)
            if tid is None:
                pieces = self.tokenizer.token_ids(t)
                if not pieces:
                    continue
                tid = pieces[0]
            ids.append(int(tid))
        if not ids:
            raise UsageError(f"none of the targets {targets} is in the vocabulary; give words the tokenizer knows")
        return np.array(sorted(set(ids)), dtype=np.int64)


POOLINGS = ("mean", "cls", "none")


class FeatureExtractionPipeline(Pipeline):
    """Embeddings: per text, the masked mean of the last hidden states (``pooling="mean"``), the first
    token's (``"cls"``), or every token's (``"none"``: ``[S, hidden]``, as transformers' feature-extraction
    pipeline); ``normalize=True`` scales each vector to unit L2 norm. Returns float32 arrays."""

    task = "base"

    def __call__(self, inputs, truncation: bool = False, **params):
        opts = self._options(params)
        pooling = str(opts["pooling"]).lower()
        if pooling not in POOLINGS:
            raise UsageError(f"pooling must be one of {', '.join(POOLINGS)}, got {opts['pooling']!r}")
        texts, single = _texts(inputs)
        self.limits.check_texts(texts)
        with self.admitted(self.count_tokens(texts)):
            enc = self._encode(texts, None, truncation)
            hidden = self._forward(enc, "last_hidden_state").astype(np.float32)
        mask = enc["attention_mask"].astype(np.float32)
        out = []
        for r in range(len(texts)):
            if pooling == "none":
                v = hidden[r][mask[r] == 1]
            elif pooling == "cls":
                v = hidden[r][0]
            else:
                v = (hidden[r] * mask[r][:, None]).sum(0) / max(mask[r].sum(), 1.0)
            if opts["normalize"]:
                v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
            out.append(v.astype(np.float32))
        return out[0] if single else out


class MultipleChoicePipeline(Pipeline):
    """A score per choice: ``[{"choice", "score", "logit"}]`` in the order given, scores a softmax over the
    choices. Call with ``(prompt, [choice, ...])`` or a list of such pairs."""

    task = "multiple-choice"

    def __call__(self, prompt, choices=None, truncation: bool = False, **params):
        self._options(params)
        if choices is None:
            items, single = list(prompt), False
        else:
            items, single = [(prompt, choices)], True
        self.limits.check("max_texts", len(items), "the number of questions")
        results = []
        for p, cs in items:
            _texts(p, "prompt")
            cs, _ = _texts(cs, "choice")
            if len(cs) < 2:
                raise UsageError("give at least two choices")
            self.limits.check_texts([p], "prompt")
            self.limits.check_texts(cs, "choice")
            tokens = self.count_tokens([p] * len(cs) + cs, "the prompt and its choices")
            enc = self.tokenizer([p] * len(cs), cs, max_length=self.model.max_sequence_length,
                                 truncation="longest_first" if truncation else False)
            feeds = {k: v[None] for k, v in enc.model_inputs(self.model.input_names).items()}
            with self.admitted(tokens):
                logits = self.model.run(feeds, output_names=["logits"])["logits"][0].astype(np.float64)
            probs = softmax(logits)
            results.append([{"choice": c, "score": float(s), "logit": float(lg)}
                            for c, s, lg in zip(cs, probs, logits)])
        return results[0] if single else results


def run_texts(pipe: Pipeline, texts, text_pair: str | None = None, **options):
    """Texts through an export's pipeline, the way ``yoso-deploy run --text`` gives them: for ``qa`` each text is a
    question about ``text_pair``; for ``multiple-choice`` the first is the prompt and the others the choices;
    otherwise the texts (``text_pair`` only for sequence classification). One text gives what the pipeline
    returns for one input (as transformers' pipeline would); several give a list of those.

    ``options`` are the task's decoding options (the registry's ``decoding``); another is an
    :class:`~yoso_deploy.errors.OptionError` naming the tasks that take it."""
    task = pipe.task
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise UsageError("no text given", fix="give at least one --text")
    takes = tasks.get(task).decoding
    for name in options:
        if name not in takes:
            takers = sorted(t.name for t in tasks.TASKS.values() if name in t.decoding)
            raise OptionError(f"{name} is an option of the {', '.join(takers) or 'no'} pipelines, not of {task}",
                              fix=f"drop it (the {task} pipeline takes: {', '.join(takes) or 'no options'})")
    if text_pair is not None and task not in ("qa", "sequence-classification"):
        raise UsageError(f"a text pair is for qa and sequence-classification exports, not {task}",
                         fix="drop --text-pair")
    if task == "qa":
        if not text_pair:
            raise UsageError("a qa export answers questions about a context", fix="give --text QUESTION --text-pair CONTEXT")
        res = [pipe(question=q, context=text_pair, **options) for q in texts]
        return res[0] if len(res) == 1 else res
    if task == "multiple-choice":
        if len(texts) < 3:
            raise UsageError("a multiple-choice export needs a prompt and at least two choices",
                             fix="give --text PROMPT --text CHOICE --text CHOICE [...]")
        return pipe(texts[0], texts[1:], **options)
    inputs = texts[0] if len(texts) == 1 else texts
    if task == "sequence-classification":
        return pipe(inputs, text_pair=text_pair, **options)
    return pipe(inputs, **options)


def pipeline_class(task: str):
    """The pipeline class of a task (name or alias), from the task registry."""
    return globals()[tasks.get(task).pipeline]


def pipeline(model_dir: str | Path, task: str | None = None, **kwargs):
    """The pipeline of an export directory (its task from the manifest; ``task``, if given, must match).

    Keyword arguments: session options (``provider``, ``intra_op_threads``, ``optimized_cache_dir``,
    ``allow_failed_export``, ...), ``batch_size``, and the task's decoding defaults (e.g. ``top_k``)."""
    manifest = load_manifest(model_dir)
    if task is not None and tasks.canonical_task(task) != manifest["task"]:
        raise UsageError(f"{str(model_dir)!r} is a {manifest['task']!r} export, not {tasks.canonical_task(task)!r}",
                         fix=f"re-export it with --task {task} or drop the task argument")
    return pipeline_class(manifest["task"]).from_pretrained(model_dir, **kwargs)


__all__ = ["FeatureExtractionPipeline", "FillMaskPipeline", "MultipleChoicePipeline", "Pipeline",
           "QuestionAnsweringPipeline", "TextClassificationPipeline", "TokenClassificationPipeline", "TokenizerError",
           "pipeline", "pipeline_class", "run_texts", "softmax", "stitch_windows"]
