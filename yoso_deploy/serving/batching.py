"""Dynamic batching of model requests: pad to the batch's longest sequence, run once, split, trim (numpy only).

A *work item* is one request's validated feeds (:meth:`YosoOrtModel.prepare_inputs`: every input present,
the manifest's dtypes) and the outputs it wants. :func:`run_batched` groups items that can share a run
(same inputs, same non-sequence dims -- e.g. the number of choices of a multiple-choice model), cuts each
group into runs of at most ``max_rows`` rows, pads every item of a run on the sequence axis to the run's
longest sequence (never to the model maximum): ``input_ids`` with the tokenizer's pad id, masks and token
types with 0), runs the model once per run, and gives every item back its own rows, each output trimmed to
the item's own length on its sequence axes. YOSO masks padding (masked keys contribute nothing, OPS.md
section 3), so an item's outputs do not depend on what it was batched with beyond float rounding of the
dense layers (tested: identical to running alone).

One failing run fails only the items of that run; every item gets its result or its own exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SEQUENCE = "sequence"


@dataclass
class WorkItem:
    feeds: dict  # input name -> array [batch, (choices,) sequence], validated
    output_names: list

    @property
    def rows(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0])

    @property
    def length(self) -> int:
        return int(next(iter(self.feeds.values())).shape[-1])

    def key(self) -> tuple:
        first = next(iter(self.feeds.values()))
        return (tuple(sorted(self.feeds)), tuple(first.shape[1:-1]))


@dataclass
class BatchStats:
    runs: int = 0
    items: int = 0
    rows: int = 0
    tokens: int = 0  # real (request) positions run
    padded_tokens: int = 0  # positions added by padding
    max_items_per_run: int = 0
    items_per_run: dict = field(default_factory=dict)  # histogram: items in a run -> runs

    def to_json(self) -> dict:
        return {"runs": self.runs, "items": self.items, "rows": self.rows, "tokens": self.tokens,
                "padded_tokens": self.padded_tokens, "max_items_per_run": self.max_items_per_run,
                "items_per_run": {str(k): v for k, v in sorted(self.items_per_run.items())}}


def pad_values(model) -> dict:
    """The value each input is padded with: ``input_ids`` the config's pad token (else 0), others 0."""
    pad = model.config.get("pad_token_id") if hasattr(model, "config") else None
    return {"input_ids": int(pad) if isinstance(pad, int) and pad >= 0 else 0}


def sequence_axes(manifest: dict) -> dict[str, list[int]]:
    """For each output of a manifest, the axes whose dim is the input sequence."""
    return {o["name"]: [i for i, d in enumerate(o["dims"]) if d == SEQUENCE] for o in manifest["outputs"]}


def _pad(arr: np.ndarray, length: int, value: int) -> np.ndarray:
    extra = length - arr.shape[-1]
    if extra == 0:
        return arr
    widths = [(0, 0)] * (arr.ndim - 1) + [(0, extra)]
    return np.pad(arr, widths, constant_values=value)


def _trim(arr: np.ndarray, axes: list[int], length: int) -> np.ndarray:
    for ax in axes:
        if arr.shape[ax] != length:
            arr = np.take(arr, np.arange(length), axis=ax)
    return arr


def plan_runs(items: list[WorkItem], max_rows: int) -> list[list[int]]:
    """Indices of ``items`` per run: compatible items together, at most ``max_rows`` rows a run (an item is
    never split), in arrival order within a group."""
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.key(), []).append(i)
    runs = []
    for idx in groups.values():
        current, rows = [], 0
        for i in idx:
            r = items[i].rows
            if current and rows + r > max_rows:
                runs.append(current)
                current, rows = [], 0
            current.append(i)
            rows += r
        if current:
            runs.append(current)
    return runs


def run_batched(run_fn, items: list[WorkItem], max_rows: int, pads: dict, seq_axes: dict,
                stats: BatchStats | None = None) -> list:
    """Run ``items`` in as few model runs as :func:`plan_runs` allows; ``run_fn(feeds, output_names)`` is the
    model's ``run`` (validation already done). Returns, per item, ``{output: array}`` or the exception of its run."""
    results: list = [None] * len(items)
    for run in plan_runs(items, max_rows):
        group = [items[i] for i in run]
        length = max(it.length for it in group)
        names = list(dict.fromkeys(n for it in group for n in it.output_names))
        try:
            feeds = {name: np.concatenate([_pad(it.feeds[name], length, pads.get(name, 0)) for it in group])
                     for name in group[0].feeds}
            outs = run_fn(feeds, names)
        except Exception as e:  # noqa: BLE001 - every item of the run gets the error, the server lives on
            for i in run:
                results[i] = e
            continue
        start = 0
        for i, it in zip(run, group):
            rows = slice(start, start + it.rows)
            start += it.rows
            results[i] = {n: np.ascontiguousarray(_trim(outs[n][rows], seq_axes.get(n, []), it.length))
                          for n in it.output_names}
        if stats is not None:
            stats.runs += 1
            stats.items += len(group)
            stats.rows += sum(it.rows for it in group)
            real = sum(it.rows * it.length * int(np.prod(it.feeds["input_ids"].shape[1:-1], dtype=np.int64))
                       for it in group)
            total = int(feeds["input_ids"].size)
            stats.tokens += real
            stats.padded_tokens += total - real
            stats.max_items_per_run = max(stats.max_items_per_run, len(group))
            stats.items_per_run[len(group)] = stats.items_per_run.get(len(group), 0) + 1
    return results


class AsyncBatcher:
    """Dynamic batching for the ASGI engine: ``submit(item)`` waits until its batch has run. A batch starts when
    it holds ``max_rows`` rows or ``wait_ms`` after its first item; ``run_items`` (the server's
    ``run_items_async``) runs it in as few model runs as :func:`plan_runs` allows."""

    def __init__(self, run_items, max_rows: int, wait_ms: float):
        import asyncio

        self._asyncio = asyncio
        self.run_items = run_items
        self.max_rows = int(max_rows)
        self.wait_s = float(wait_ms) / 1000.0
        self._queue: list = []
        self._rows = 0
        self._flush = None  # the timer of the open batch
        self._closed = False

    async def submit(self, item: WorkItem):
        if self._closed:
            raise RuntimeError("the batcher is closed")
        loop = self._asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((item, fut))
        self._rows += item.rows
        if self._rows >= self.max_rows:
            self._start(loop)
        elif self._flush is None:
            self._flush = loop.call_later(self.wait_s, self._start, loop)
        return await fut

    def _start(self, loop):
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch, self._queue, self._rows = self._queue, [], 0
        if batch:
            loop.create_task(self._run(batch))

    async def _run(self, batch):
        try:
            results = await self.run_items([item for item, _ in batch])
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            results = [e] * len(batch)
        for (_, fut), res in zip(batch, results):
            if not fut.done():
                fut.set_result(res)

    async def close(self):
        self._closed = True
        if self._queue:
            self._start(self._asyncio.get_running_loop())
