"""What every pipeline shares: the :class:`Pipeline` base (a runtime model, its tokenizer, decoding defaults),
score functions, text checks, and the stitching of long inputs' windows (numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import tasks
from ..errors import OptionError, UsageError
from ..manifest import check_usable, expand_path, load_manifest
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
    """Base: a runtime model of the pipeline's task, its tokenizer, and default decoding parameters."""

    task: str = ""

    def __init__(self, model: YosoOrtModel, tokenizer, batch_size: int = 8, **defaults):
        model_task = getattr(model, "manifest", {}).get("task", self.task)
        if model_task != self.task:
            raise UsageError(f"{type(self).__name__} needs a {self.task!r} model, got a {model_task!r} export; use "
                             f"yoso_deploy.runtime.pipeline(model_dir) to get the export's own pipeline")
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = Tokenizer.from_transformers(tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
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

    def _forward(self, enc, output: str) -> np.ndarray:
        """``output`` for every row of ``enc``, run in batches of ``batch_size`` rows."""
        feeds = enc.model_inputs(self.model.input_names)
        rows = len(enc)
        outs = []
        for i in range(0, rows, self.batch_size):
            out = self.model.run({k: v[i:i + self.batch_size] for k, v in feeds.items()}, output_names=[output])
            outs.append(out[output])
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

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
    normalisers produce)."""
    best: dict[tuple, tuple[float, int, int]] = {}
    for w in range(len(enc["input_ids"])):
        positions = [i for i, s in enumerate(enc.sequence_ids(w)) if s == sequence]
        n = len(positions)
        seen: dict[tuple, int] = {}
        offsets = enc["offset_mapping"][w]
        for k, i in enumerate(positions):
            off = tuple(int(x) for x in offsets[i])
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
