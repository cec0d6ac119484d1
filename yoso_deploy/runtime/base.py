"""What every pipeline shares: the :class:`Pipeline` base (a runtime model, its tokenizer, decoding defaults),
score functions, text checks, and the stitching of long inputs' windows (numpy only)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from .. import tasks
from ..errors import OptionError, UsageError
from ..manifest import check_usable, expand_path, load_manifest
from .limits import Limits
from .models import TASK_MODELS, YosoOrtModel
from .tokenizer import Tokenizer

SESSION_KWARGS = ("provider", "device_id", "gpu_mem_limit", "intra_op_threads", "inter_op_threads",
                  "optimized_cache_dir", "allow_failed_export")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class Pipeline:
    """Base: a runtime model of the pipeline's task, its tokenizer, and default decoding parameters.

    ``limits`` (:class:`~yoso_deploy.runtime.limits.Limits`, default: a QA service's) bound what one call may
    ask for; ``run_tokens`` caps the positions of one model run (rows x window length), so that a long input
    runs as several short runs another caller's work can be interleaved with; ``admission`` (set by a server,
    a :class:`~yoso_deploy.runtime.limits.TokenBudget`) reserves a call's tokens before it runs."""

    task: str = ""

    def __init__(self, model: YosoOrtModel, tokenizer, batch_size: int = 8, limits: Limits | None = None,
                 run_tokens: int | None = None, **defaults):
        model_task = getattr(model, "manifest", {}).get("task", self.task)
        if model_task != self.task:
            raise UsageError(f"{type(self).__name__} needs a {self.task!r} model, got a {model_task!r} export; use "
                             f"yoso_deploy.runtime.pipeline(model_dir) to get the export's own pipeline")
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = Tokenizer.from_transformers(tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.limits = limits if limits is not None else Limits()
        self.run_tokens = None if run_tokens is None else max(1, int(run_tokens))
        self.admission = None
        self.defaults = dict(tasks.get(self.task).decoding)
        self.explicit = set(defaults)  # options the caller chose (transformers decodes some defaults differently)
        unknown = [k for k in defaults if k not in self.defaults]
        if unknown:
            raise OptionError(f"{type(self).__name__} has no option {', '.join(unknown)} "
                            f"(options: {', '.join(self.defaults) or 'none'})")
        self.defaults.update(defaults)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, batch_size: int = 8, **kwargs):
        """Load the export (runtime model + tokenizer). Session options (``provider``, ``intra_op_threads``,
        ``optimized_cache_dir``, ``allow_failed_export``, ...) go to the model, the rest are decoding defaults."""
        model_dir = expand_path(model_dir)
        session_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in SESSION_KWARGS}
        # A refused export (failed parity check) is said first, then a missing tokenizer, before any session.
        check_usable(load_manifest(model_dir), allow_failed=session_kwargs.get("allow_failed_export", False),
                     model_dir=model_dir)
        tok = Tokenizer.from_dir(model_dir)
        model = TASK_MODELS[cls.task].from_pretrained(model_dir, **session_kwargs)
        return cls(model, tok, batch_size=batch_size, **kwargs)

    def _options(self, params: dict) -> dict:
        unknown = [k for k in params if k not in self.defaults]
        if unknown:
            raise OptionError(f"{type(self).__name__} has no option {', '.join(unknown)} "
                            f"(options: {', '.join(self.defaults) or 'none'})")
        return {**self.defaults, **{k: v for k, v in params.items()}}

    def rows_per_run(self, length: int) -> int:
        """Rows of ``length`` positions in one model run: ``batch_size``, fewer under ``run_tokens``."""
        if self.run_tokens is None:
            return self.batch_size
        return max(1, min(self.batch_size, self.run_tokens // max(1, int(length))))

    def _forward(self, enc, output: str) -> np.ndarray:
        """``output`` for every row of ``enc``, run in batches of :meth:`rows_per_run` rows."""
        feeds = enc.model_inputs(self.model.input_names)
        rows = len(enc)
        step = self.rows_per_run(enc["input_ids"].shape[-1])
        outs = []
        for i in range(0, rows, step):
            out = self.model.run({k: v[i:i + step] for k, v in feeds.items()}, output_names=[output])
            outs.append(out[output])
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def count_tokens(self, texts, what: str = "the input") -> int:
        """Tokens of ``texts`` together (no special tokens), refused over ``limits.max_tokens``; characters were
        checked first (:meth:`Limits.check_texts`), so counting costs at most that much."""
        total = 0
        for t in texts:
            total += self.tokenizer.token_count(t)
            self.limits.check("max_tokens", total, f"{what}" if len(texts) == 1 else f"{what} (all texts)", "tokens")
        return total

    def admitted(self, tokens: int):
        """A context in which ``tokens`` are reserved from the server's budget (nothing without one)."""
        return self.admission.reserve(tokens) if self.admission is not None else contextlib.nullcontext()

    def _encode(self, texts, pairs=None, truncation=False):
        return self.tokenizer(texts, pairs, max_length=self.model.max_sequence_length,
                              truncation="longest_first" if truncation else False)


def _texts(inputs, what: str = "text") -> tuple[list[str], bool]:
    single = isinstance(inputs, str)
    texts = [inputs] if single else list(inputs)
    if not texts:
        raise UsageError(f"no {what} given")
    for t in texts:
        if not isinstance(t, str):
            raise UsageError(f"each {what} must be a string, got {type(t).__name__}")
        if not t.strip():
            raise UsageError(f"the {what} is empty")
    return texts, single


def stitch_windows(enc, sequence: int = 1):
    """The tokens of ``sequence`` (1: the context of a pair, 0: a single text) over all windows, once each,
    in document order.

    Returns ``(owner, position, offsets)``: for each token, the window whose outputs it takes (the one
    where it has the most context, ``min(left, right) + 0.01 * window length``; ties: the first such
    window), its index in that window, and its character offsets. Tokens are identified across
    windows by their character offsets, plus their order among tokens with the same offsets (which some
    normalisers produce). Vectorised (numpy): a long context costs milliseconds, not a Python loop per token."""
    all_offsets = enc["offset_mapping"]
    cols = {"w": [], "pos": [], "start": [], "end": [], "occ": [], "score": []}
    for w in range(len(enc["input_ids"])):
        seq = np.array([-1 if s is None else s for s in enc.sequence_ids(w)], dtype=np.int64)
        pos = np.flatnonzero(seq == sequence)
        n = len(pos)
        if n == 0:
            continue
        off = np.asarray(all_offsets[w], dtype=np.int64).reshape(-1, 2)[pos]
        k = np.arange(n)
        # occurrence of each (start, end) among the window's tokens with the same offsets, in token order
        key = off[:, 0] * (1 << 32) + off[:, 1]
        order = np.argsort(key, kind="stable")
        sk = key[order]
        first = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        group_start = np.repeat(first, np.diff(np.r_[first, n]))
        occ = np.empty(n, dtype=np.int64)
        occ[order] = np.arange(n) - group_start
        cols["w"].append(np.full(n, w, dtype=np.int64))
        cols["pos"].append(pos)
        cols["start"].append(off[:, 0])
        cols["end"].append(off[:, 1])
        cols["occ"].append(occ)
        cols["score"].append(np.minimum(k, n - 1 - k) + 0.01 * n)
    if not cols["w"]:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty.reshape(0, 2)
    w, pos, start, end, occ, score = (np.concatenate(cols[c]) for c in ("w", "pos", "start", "end", "occ", "score"))
    # per token (start, end, occ): the highest score, the first window among equals
    order = np.lexsort((w, -score, occ, end, start))
    s_, e_, o_ = start[order], end[order], occ[order]
    head = order[np.r_[True, (s_[1:] != s_[:-1]) | (e_[1:] != e_[:-1]) | (o_[1:] != o_[:-1])]]
    return w[head], pos[head], np.stack([start[head], end[head]], axis=1)
