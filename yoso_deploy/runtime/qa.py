"""Extractive question answering over an exported YOSO QA model (the one QA decoder of the project).

Long contexts are split into overlapping windows (``doc_stride`` tokens of overlap) that each fit
``max_seq_len``; windows are run in batches and answers are mapped back to character offsets of the
context through the tokenizer's offset mapping. Spans lie inside the context only (never in the
question, never across a separator).

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

The first token ([CLS]) joins both softmaxes, as in transformers' pipeline, with the logits of the window
where its null score (start + end logit) is lowest (transformers took the minimum null score over windows);
with a single window the scores are then exactly transformers'. The score of an answer is a probability: the
scores of all spans sum to at most 1. ``handle_impossible_answer=True`` adds the null answer (SQuAD 2.0):
``""`` at ``start = end = 0`` with score P(start=[CLS]) * P(end=[CLS]), ranked with the spans.

``align_to_words=True`` (the default, as in transformers) widens an answer to the whole words of its first and
last tokens (tokenizers' ``word_to_chars``): a span starting inside "approximate" answers the whole word. As in
transformers, the best ``top_k * 2 + 10`` spans are decoded and those giving the same text are merged (scores
added, the best one's position kept); with one window the answers and scores equal transformers' pipeline's
(tests/export/test_optimum.py).
transformers' pipeline defaults to ``max_answer_len=15``; this one to 30 (SQuAD's evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .base import Pipeline, stitch_windows  # noqa: F401 - stitch_windows re-exported
from .models import YosoOrtForQuestionAnswering
from .tokenizer import Tokenizer


@dataclass
class Answer:
    answer: str
    score: float  # P(start) * P(end) (summed over spans of the same text), softmaxes over all windows (module doc)
    start: int  # character offsets in the context: context[start:end] == answer
    end: int
    window: int  # the window the start token's logits came from

    def to_json(self) -> dict:
        return {"answer": self.answer, "score": self.score, "start": self.start, "end": self.end}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def read_context(path: str | Path, option: str = "context file") -> str:
    """A context from a UTF-8 text file (a clear error for another encoding)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{option} {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})",
                         fix="convert it to UTF-8") from None


class QuestionAnsweringPipeline(Pipeline):
    task = "qa"

    def __init__(self, model: YosoOrtForQuestionAnswering, tokenizer, max_seq_len: int | None = None,
                 doc_stride: int | None = None, batch_size: int = 8, **defaults):
        if doc_stride is not None:
            defaults["doc_stride"] = doc_stride
        explicit = "doc_stride" in defaults
        super().__init__(model, tokenizer, batch_size=batch_size, **defaults)
        self.max_seq_len = min(int(max_seq_len or model.max_sequence_length), model.max_sequence_length)
        stride = int(self.defaults["doc_stride"])
        if not explicit:  # the default (128) shrinks for short windows: at most a quarter of the window
            stride = min(stride, self.max_seq_len // 4)
        if stride < 0 or stride >= self.max_seq_len // 2:
            raise UsageError(f"doc_stride must be in [0, {self.max_seq_len // 2}) for windows of {self.max_seq_len} "
                             f"tokens, got {stride}; lower --doc-stride or raise --max-seq-len")
        self.doc_stride = stride
        self.defaults["doc_stride"] = stride

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, provider: str = "cpu", max_seq_len: int | None = None,
                        doc_stride: int | None = None, batch_size: int = 8, **kwargs):
        kwargs["provider"] = provider
        if max_seq_len is not None:
            kwargs["max_seq_len"] = max_seq_len
        if doc_stride is not None:
            kwargs["doc_stride"] = doc_stride
        return super().from_pretrained(model_dir, batch_size=batch_size, **kwargs)

    def encode(self, question: str, context: str):
        return self.tokenizer(question, context, truncation="only_second", max_length=self.max_seq_len,
                              stride=self.doc_stride, return_overflowing=True, padding=True)

    def __call__(self, question: str, context: str, **params):
        """transformers-style result: ``{"score", "start", "end", "answer"}`` for ``top_k=1``, else a list."""
        opts = self._options(params)
        answers = self.answer(question, context, top_k=opts["top_k"], max_answer_len=opts["max_answer_len"],
                              handle_impossible_answer=opts["handle_impossible_answer"],
                              align_to_words=opts["align_to_words"])
        out = [{"score": a.score, "start": a.start, "end": a.end, "answer": a.answer} for a in answers]
        return out[0] if opts["top_k"] == 1 and out else out

    def answer(self, question: str, context: str, top_k: int = 1, max_answer_len: int = 30,
               handle_impossible_answer: bool = False, align_to_words: bool = True) -> list[Answer]:
        """The ``top_k`` best answers (highest score first) of ``question`` in ``context``.

        Bounded by :attr:`limits` before anything runs: characters of both texts, question and context tokens,
        ``top_k`` and ``max_answer_len``; the span search costs O(tokens x min(max_answer_len, tokens)) time and
        at most :data:`SPAN_BLOCK` scores of memory, whatever is asked."""
        if not isinstance(question, str) or not question.strip():
            raise UsageError("the question is empty")
        if not isinstance(context, str) or not context.strip():
            raise UsageError("the context is empty")
        if not isinstance(top_k, int) or not isinstance(max_answer_len, int) or top_k < 1 or max_answer_len < 1:
            raise UsageError("top_k and max_answer_len must be integers >= 1")
        lim = self.limits
        lim.check("max_top_k", top_k, "top_k")
        lim.check("max_answer_len", max_answer_len, "max_answer_len", "tokens")
        lim.check("max_text_chars", len(question), "the question", "characters")
        lim.check("max_text_chars", len(context), "the context", "characters")
        q_tokens = self.tokenizer.token_count(question)
        lim.check("max_question_tokens", q_tokens, "the question", "tokens")
        c_tokens = self.count_tokens([context], "the context")
        with self.admitted(q_tokens + c_tokens):
            enc = self.encode(question, context)
            ids = enc["input_ids"]
            mask = enc["attention_mask"]
            names = getattr(self.model, "input_names", ["input_ids", "attention_mask"])
            feeds_all = (enc.model_inputs(names) if hasattr(enc, "model_inputs")
                         else {"input_ids": ids, "attention_mask": mask})
            step = self.rows_per_run(ids.shape[-1])
            starts, ends = [], []
            for i in range(0, len(ids), step):
                out = self.model(**{k: v[i:i + step] for k, v in feeds_all.items()})
                starts.append(out.start_logits)
                ends.append(out.end_logits)
        start_logits = np.concatenate(starts).astype(np.float64)
        end_logits = np.concatenate(ends).astype(np.float64)

        # One sequence of context tokens, each with the logits of its max-context window (module doc).
        owner, position, offsets = stitch_windows(enc)
        s_ctx, e_ctx = start_logits[owner, position], end_logits[owner, position]
        n = len(owner)
        # Probabilities as transformers' pipeline has them: a softmax over the context tokens and the [CLS] logit
        # (of the window whose null score is lowest), the [CLS] share kept out of the spans.
        cls_id = self.tokenizer.cls_token_id
        cls_pos = [int(np.flatnonzero(ids[w] == cls_id)[0]) if cls_id is not None and (ids[w] == cls_id).any()
                   else 0 for w in range(len(ids))]
        null_logit = [start_logits[w, p] + end_logits[w, p] for w, p in enumerate(cls_pos)]
        w_null = int(np.argmin(null_logit))
        p_start = _softmax(np.append(s_ctx, start_logits[w_null, cls_pos[w_null]]))
        p_end = _softmax(np.append(e_ctx, end_logits[w_null, cls_pos[w_null]]))
        null = Answer("", float(p_start[-1] * p_end[-1]), 0, 0, w_null) if handle_impossible_answer else None
        p_start, p_end = p_start[:-1], p_end[:-1]
        # transformers' decoding: the best top_k * 2 + 10 spans (top_k without word alignment), answers with the same
        # text merged (scores added, the best one's position kept), then the null answer, best first.
        merged: dict[str, Answer] = {}
        for score, i, t in best_spans(p_start, p_end, min(max_answer_len, n), top_k * 2 + 10 if align_to_words
                                      else top_k):
            c0, c1 = int(offsets[i][0]), int(offsets[i + t][1])
            if align_to_words:  # whole words, as transformers' pipeline answers (align_to_words=True)
                c0 = _word_chars(enc, owner[i], position[i], c0, 0)
                c1 = _word_chars(enc, owner[i + t], position[i + t], c1, 1)
            text = context[c0:c1]
            if text in merged:
                merged[text].score += score
            else:
                merged[text] = Answer(text, score, c0, c1, int(owner[i]))
        ranked = sorted(list(merged.values()) + ([null] if null is not None else []), key=lambda a: -a.score)
        return ranked[:top_k]


def _word_chars(enc, window: int, position: int, fallback: int, side: int) -> int:
    """The character where the word of a context token starts (``side`` 0) or ends (1): tokenizers' own
    ``word_to_chars``, which transformers' pipeline uses; the token's offset where the token has no word."""
    encoding = enc.encodings[int(window)]
    word = encoding.token_to_word(int(position))
    if word is None:
        return fallback
    chars = encoding.word_to_chars(word, 1)
    return fallback if chars is None else int(chars[side])


SPAN_BLOCK = 1 << 20  # span scores held at once by best_spans (8 MiB of float64)


def best_spans(p_start: np.ndarray, p_end: np.ndarray, span: int, keep: int) -> list[tuple[float, int, int]]:
    """The ``keep`` best spans ``(score, start, length - 1)`` by ``p_start[i] * p_end[i + t]``, ``0 <= t < span``,
    ``i + t < n``, positive scores only, best first: O(n x span) time, at most :data:`SPAN_BLOCK` scores in memory
    (start positions are scored in blocks; each block's best ``keep`` are kept, which hold the overall best)."""
    n = len(p_start)
    if n == 0 or span < 1 or keep < 1:
        return []
    padded = np.concatenate([p_end, np.zeros(span - 1, dtype=np.float64)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, span)  # windows[i, t] = p_end[i + t] (0 past n)
    block = max(1, SPAN_BLOCK // span)
    scores_k, starts_k, lens_k = [], [], []
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        scores = p_start[b0:b1, None] * windows[b0:b1]
        k = min(keep, scores.size)
        flat = np.argpartition(scores, scores.size - k, axis=None)[scores.size - k:]
        i, t = np.unravel_index(flat, scores.shape)
        scores_k.append(scores[i, t])
        starts_k.append(i + b0)
        lens_k.append(t)
    scores, starts, lens = np.concatenate(scores_k), np.concatenate(starts_k), np.concatenate(lens_k)
    order = np.argsort(-scores, kind="stable")[:keep]
    return [(float(scores[j]), int(starts[j]), int(lens[j])) for j in order if scores[j] > 0]


__all__ = ["Answer", "QuestionAnsweringPipeline", "Tokenizer", "best_spans", "stitch_windows"]
