"""Extractive question answering over an exported YOSO QA model.

Long contexts are split into overlapping windows (``doc_stride`` tokens of overlap) that each fit
``max_seq_len``; windows are run in batches and answers are mapped back to character offsets of the
context through the tokenizer's offset mapping.

Scoring across windows. A per-window softmax (P(start) * P(end) normalised inside each window) makes
every window claim a full unit of probability, so a window that does not hold the answer still puts a
high score on some distractor, and the answer then depends on where the window edges fall. Instead the
windows are stitched back into one sequence of context tokens:

* each context token takes its start and end logits from one window only, the one where it has the
  most context on both sides (BERT's "max context" rule: the window maximising
  ``min(left, right) + 0.01 * length``), so a token near one window's edge is judged where it sits in
  the middle of another window;
* spans are then scored over that sequence as if it were one window: P(start) and P(end) are softmaxes
  over all context tokens, and a span may cross the point where ownership passes between windows.

With a single window this is exactly the usual per-window softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .models import YosoOrtForQuestionAnswering


@dataclass
class Answer:
    answer: str
    score: float  # P(start) * P(end), softmaxes over the context tokens of all windows (module doc)
    start: int  # character offsets in the context: context[start:end] == answer
    end: int
    window: int  # the window the start token's logits came from

    def to_json(self) -> dict:
        return {"answer": self.answer, "score": self.score, "start": self.start, "end": self.end}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def stitch_windows(enc):
    """The context tokens of all windows as one sequence, in document order.

    Returns ``(owner, position, offsets)``: for each context token, the window whose logits it takes
    (the one where it has the most context, ``min(left, right) + 0.01 * window length``; ties: the first
    such window), its index in that window, and its character offsets. Tokens are identified across
    windows by their character offsets, plus their order among tokens with the same offsets (which some
    normalisers produce)."""
    best: dict[tuple, tuple[float, int, int]] = {}
    for w in range(len(enc["input_ids"])):
        positions = [i for i, s in enumerate(enc.sequence_ids(w)) if s == 1]
        n = len(positions)
        seen: dict[tuple, int] = {}
        for k, i in enumerate(positions):
            off = tuple(int(x) for x in enc["offset_mapping"][w][i])
            seen[off] = seen.get(off, -1) + 1
            key = (*off, seen[off])
            score = min(k, n - 1 - k) + 0.01 * n
            if key not in best or score > best[key][0]:
                best[key] = (score, w, i)
    keys = sorted(best)
    owner = np.array([best[k][1] for k in keys], dtype=np.int64)
    position = np.array([best[k][2] for k in keys], dtype=np.int64)
    offsets = np.array([k[:2] for k in keys], dtype=np.int64).reshape(-1, 2)
    return owner, position, offsets


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
        model = YosoOrtForQuestionAnswering.from_pretrained(model_dir, provider=provider, **session_kwargs)
        if not (model_dir / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{str(model_dir)!r} has no tokenizer.json; export from a checkpoint with a fast tokenizer")
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

        # One sequence of context tokens, each with the logits of its max-context window (module doc).
        owner, position, offsets = stitch_windows(enc)
        p_start = _softmax(start_logits[owner, position].astype(np.float64))
        p_end = _softmax(end_logits[owner, position].astype(np.float64))
        n = len(owner)
        span = min(max_answer_len, n)
        # scores[i, t] = p_start[i] * p_end[i + t], 0 <= t < max_answer_len, i + t < n
        padded = np.concatenate([p_end, np.zeros(span, dtype=np.float64)])
        scores = p_start[:, None] * np.stack([padded[t : t + n] for t in range(span)], axis=1)
        keep = min(top_k * 4, scores.size)
        flat = np.argpartition(scores, scores.size - keep, axis=None)[scores.size - keep:]
        candidates = []
        for idx in flat[np.argsort(scores.ravel()[flat])[::-1]]:
            i, t = np.unravel_index(idx, scores.shape)
            if scores[i, t] <= 0:
                continue
            c0, c1 = int(offsets[i][0]), int(offsets[i + t][1])
            candidates.append(Answer(context[c0:c1], float(scores[i, t]), c0, c1, int(owner[i])))
        # Tokens with identical offsets (rare normaliser cases) can give the same span twice: keep the best.
        best: dict[tuple[int, int], Answer] = {}
        for a in candidates:
            if (a.start, a.end) not in best or a.score > best[(a.start, a.end)].score:
                best[(a.start, a.end)] = a
        ranked = sorted(best.values(), key=lambda a: -a.score)
        return ranked[:top_k]
