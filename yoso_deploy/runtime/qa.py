"""Extractive question answering over an exported YOSO QA model.

Long contexts are split into overlapping windows (``doc_stride`` tokens of overlap) that each fit
``max_seq_len``; windows are run in batches, every window's best spans are scored, and answers are
mapped back to character offsets of the context through the tokenizer's offset mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .models import YosoOrtForQuestionAnswering


@dataclass
class Answer:
    answer: str
    score: float  # P(start) * P(end) within the window the span came from
    start: int  # character offsets in the context: context[start:end] == answer
    end: int
    window: int

    def to_json(self) -> dict:
        return {"answer": self.answer, "score": self.score, "start": self.start, "end": self.end}


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x)
    e = np.exp(x)
    return e / e.sum()


class QuestionAnsweringPipeline:
    def __init__(self, model: YosoOrtForQuestionAnswering, tokenizer, max_seq_len: int | None = None,
                 doc_stride: int = 128, batch_size: int = 8):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("the QA pipeline needs a fast tokenizer (tokenizer.json) for offset mapping")
        self.model = model
        self.tokenizer = tokenizer
        self.max_seq_len = min(int(max_seq_len or model.max_sequence_length), model.max_sequence_length)
        if doc_stride < 0 or doc_stride >= self.max_seq_len // 2:
            raise ValueError(f"doc_stride must be in [0, {self.max_seq_len // 2}), got {doc_stride}")
        self.doc_stride = int(doc_stride)
        self.batch_size = max(1, int(batch_size))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, provider: str = "cpu", max_seq_len: int | None = None,
                        doc_stride: int = 128, batch_size: int = 8, **session_kwargs):
        from transformers import AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{str(model_dir)!r} has no tokenizer.json; export from a checkpoint with a fast tokenizer")
        model = YosoOrtForQuestionAnswering.from_pretrained(model_dir, provider=provider, **session_kwargs)
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        return cls(model, tok, max_seq_len=max_seq_len, doc_stride=doc_stride, batch_size=batch_size)

    def encode(self, question: str, context: str):
        enc = self.tokenizer(
            question, context, truncation="only_second", max_length=self.max_seq_len, stride=self.doc_stride,
            return_overflowing_tokens=True, return_offsets_mapping=True, padding="longest",
        )
        n_windows = len(enc["input_ids"])
        if n_windows == 0 or all(s != 1 for s in enc.sequence_ids(0)):
            raise ValueError("the question leaves no room for the context; shorten it or raise max_seq_len")
        return enc

    def answer(self, question: str, context: str, top_k: int = 1, max_answer_len: int = 30) -> list[Answer]:
        """The ``top_k`` best answers (highest score first) of ``question`` in ``context``."""
        if not question or not question.strip():
            raise ValueError("the question is empty")
        if not context or not context.strip():
            raise ValueError("the context is empty")
        if top_k < 1 or max_answer_len < 1:
            raise ValueError("top_k and max_answer_len must be >= 1")
        enc = self.encode(question, context)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        mask = np.asarray(enc["attention_mask"], dtype=np.int64)
        starts, ends = [], []
        for i in range(0, len(ids), self.batch_size):
            out = self.model(input_ids=ids[i : i + self.batch_size], attention_mask=mask[i : i + self.batch_size])
            starts.append(out.start_logits)
            ends.append(out.end_logits)
        start_logits, end_logits = np.concatenate(starts), np.concatenate(ends)

        candidates = []
        for w in range(len(ids)):
            seq_ids = enc.sequence_ids(w)
            ctx = np.array([s == 1 for s in seq_ids], dtype=bool)
            offsets = enc["offset_mapping"][w]
            s_log = np.where(ctx, start_logits[w], -np.inf)
            e_log = np.where(ctx, end_logits[w], -np.inf)
            p_start, p_end = _softmax(s_log), _softmax(e_log)
            # score[i, j] = p_start[i] * p_end[j] for i <= j < i + max_answer_len
            scores = np.triu(np.outer(p_start, p_end))
            scores = np.tril(scores, max_answer_len - 1)
            flat = np.argsort(scores, axis=None)[::-1][: top_k * 4]
            for idx in flat:
                i, j = np.unravel_index(idx, scores.shape)
                if scores[i, j] <= 0 or not ctx[i] or not ctx[j]:
                    continue
                c0, c1 = offsets[i][0], offsets[j][1]
                candidates.append(Answer(context[c0:c1], float(scores[i, j]), int(c0), int(c1), w))
        # The same span can win in two overlapping windows: keep its best score.
        best: dict[tuple[int, int], Answer] = {}
        for a in candidates:
            if (a.start, a.end) not in best or a.score > best[(a.start, a.end)].score:
                best[(a.start, a.end)] = a
        ranked = sorted(best.values(), key=lambda a: -a.score)
        return ranked[:top_k]
