"""Offline inference over a JSONL corpus (``yoso-deploy batch``): local, or Ray Data actors with ``--ray``.

Input: one JSON record per line, the task's fields (:mod:`yoso_deploy.runtime.records`) and an optional
``id`` (default: the line number, from 1). Output: one line per record, ``{"id": ..., "result": ...}`` or
``{"id": ..., "error": "<one line>"}`` -- a bad record (malformed JSON, a missing field, a text the model
cannot take) becomes an error record, never a crash.

* Streaming: records are read, run in chunks of ``batch_size`` and written (flushed) chunk by chunk.
* Resumable: ids already in the output file are skipped; a last line cut short by a crash is dropped and
  its record run again. Re-running a finished job writes nothing.
* ``use_ray``: Ray Data ``map_batches`` over ``workers`` actors, each holding one runtime model and the
  task's pipeline (the same :func:`~yoso_deploy.runtime.records.run_records` as the local path); results
  stream back to this process, which writes them (in completion order; ids identify them). The pending
  records are held in this process's memory as raw lines.

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..constants import BATCH_SIZE
from ..errors import NotFoundError, UsageError
from ..manifest import check_usable, expand_path, load_manifest
from ..runtime.limits import Limits
from .protocol import DEFAULT_MAX_JSON_DEPTH, ProtocolError, parse_json


@dataclass
class BatchResult:
    written: int  # records written by this run (results + errors)
    errors: int  # error records among them
    skipped: int  # records already in the output (resumed)
    duplicates: int  # input records whose id came earlier in the input (not run again)
    seconds: float
    ray: bool

    def summary(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.written} record(s) written ({self.errors} error(s)), {self.skipped} already done, "
                f"{self.duplicates} duplicate id(s) skipped, {self.seconds:.1f}s ({rate:.1f} records/s)"
                + (" on Ray Data" if self.ray else ""))


def _id_key(value) -> str:
    return json.dumps(value, sort_keys=True)


def done_ids(output: Path) -> set[str]:
    """Ids already written to ``output``; a final line without its newline (a crash mid-write) is cut off."""
    if not output.is_file():
        return set()
    ids: set[str] = set()
    good = 0
    with output.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            if isinstance(rec, dict) and "id" in rec:
                ids.add(_id_key(rec["id"]))
            good += len(raw)
    if good != output.stat().st_size:
        with output.open("r+b") as f:
            f.truncate(good)
    return ids


def read_pending(input_path: Path, done: set[str], max_json_depth: int = DEFAULT_MAX_JSON_DEPTH):
    """``(pending, errors, skipped, duplicates)``: pending ``(id, record)`` pairs in file order, error records
    for unparsable lines (keyed by their line number)."""
    pending, errors, skipped, dups = [], [], 0, 0
    seen: set[str] = set()
    with input_path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = parse_json(raw, max_json_depth, what=f"line {n}")
            except ProtocolError as e:  # not UTF-8 JSON, malformed, or nested too deeply: an error record
                rec, err = None, str(e)
            rid = rec.get("id", n) if isinstance(rec, dict) else n
            if isinstance(rid, (dict, list)) or rid is None:
                rec, err, rid = None, f"line {n}: \"id\" must be a string or a number", n
            key = _id_key(rid)
            if key in done:
                skipped += 1
                continue
            if key in seen:
                dups += 1
                continue
            seen.add(key)
            if rec is None:
                errors.append({"id": rid, "error": err})
            elif not isinstance(rec, dict):
                errors.append({"id": rid, "error": f"line {n} is a JSON {type(rec).__name__}, not an object with the "
                                                   "task's fields"})
            else:
                pending.append((rid, rec))
    return pending, errors, skipped, dups


def _line(rid, outcome: tuple) -> str:
    kind, value = outcome
    return json.dumps({"id": rid, "result" if kind == "ok" else "error": value}) + "\n"


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done, self.errors = total, enabled, 0, 0
        self.t0 = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, n: int, errors: int, final: bool = False):
        self.done += n
        self.errors += errors
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.last < (0.2 if self.tty else 5.0)):
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        msg = f"batch: {self.done}/{self.total} records, {self.errors} error(s), {rate:.1f} records/s"
        sys.stderr.write(("\r" + msg + ("\n" if final else "")) if self.tty else msg + "\n")
        sys.stderr.flush()


def run_batch(model_dir, input_path, output_path, batch_size: int = BATCH_SIZE, use_ray: bool = False,
              address: str | None = None, workers: int = 1, threads: int | None = None, num_cpus: float = 1.0,
              progress: bool = True, allow_failed_export: bool = False, limits: Limits | None = None,
              max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> BatchResult:
    """Run every record of ``input_path`` not yet in ``output_path`` (module doc). ``limits`` bound what one record
    may ask for (:class:`~yoso_deploy.runtime.limits.Limits`); a record over one is an error record."""
    if int(batch_size) < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if int(workers) < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    model_dir = expand_path(model_dir).resolve()
    manifest = load_manifest(model_dir)
    check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
    input_path, output_path = expand_path(input_path), expand_path(output_path)
    if not input_path.is_file():
        raise NotFoundError(f"--input {str(input_path)!r} does not exist; give a JSONL file (one record per line)")
    if output_path.resolve() == input_path.resolve():
        raise UsageError("--output must differ from --input")
    if output_path.is_dir():
        raise UsageError(f"--output {str(output_path)!r} is a directory", fix="give a file path")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = done_ids(output_path)
    pending, bad, skipped, dups = read_pending(input_path, done, max_json_depth)
    bar = _Progress(len(pending) + len(bad), progress)
    written = errors = 0
    with output_path.open("a", encoding="utf-8") as out:
        for e in bad:
            out.write(json.dumps(e) + "\n")
        out.flush()
        written, errors = len(bad), len(bad)
        bar.update(len(bad), len(bad))
        if pending:
            chunks = (_run_ray if use_ray else _run_local)(
                model_dir, manifest["task"], pending, int(batch_size), address=address, workers=int(workers),
                threads=threads, num_cpus=num_cpus, allow_failed_export=allow_failed_export, progress=progress,
                limits=(limits or Limits()).to_json())
            for lines, n_err in chunks:
                out.write("".join(lines))
                out.flush()
                written += len(lines)
                errors += n_err
                bar.update(len(lines), n_err)
    bar.update(0, 0, final=True)
    return BatchResult(written, errors, skipped, dups, time.perf_counter() - t0, use_ray)


def _load_pipeline(model_dir, threads, allow_failed_export, batch_size, limits: dict | None = None):
    from ..runtime.pipelines import pipeline

    return pipeline(model_dir, intra_op_threads=threads, allow_failed_export=allow_failed_export,
                    batch_size=batch_size, limits=Limits(**(limits or {})))


def _run_local(model_dir, task, pending, batch_size, threads=None, allow_failed_export=False, limits=None, **_):
    from ..runtime.records import run_records

    pipe = _load_pipeline(model_dir, threads, allow_failed_export, batch_size, limits)
    for i in range(0, len(pending), batch_size):
        chunk = pending[i:i + batch_size]
        outcomes = run_records(pipe, task, [r for _, r in chunk])
        yield [_line(rid, o) for (rid, _), o in zip(chunk, outcomes)], sum(o[0] == "error" for o in outcomes)


class RecordWorker:
    """A Ray Data actor: one pipeline, records in, output lines out (``map_batches``)."""

    def __init__(self, model_dir: str, task: str, threads=None, allow_failed_export=False, batch_size: int = 8,
                 limits: dict | None = None):
        self.task = task
        self.pipe = _load_pipeline(model_dir, threads, allow_failed_export, batch_size, limits)

    def __call__(self, batch: dict) -> dict:
        from ..runtime.records import run_records

        records = [json.loads(r) for r in batch["record"]]
        ids = [json.loads(r) for r in batch["id"]]
        outcomes = run_records(self.pipe, self.task, records)
        return {"line": [_line(rid, o) for rid, o in zip(ids, outcomes)],
                "error": [o[0] == "error" for o in outcomes]}


def _run_ray(model_dir, task, pending, batch_size, address=None, workers=1, threads=None, num_cpus=1.0,
             allow_failed_export=False, progress=True, limits=None):
    from ..errors import require

    require("ray.data", "'yoso-deploy batch --ray'")
    import ray

    own = address is None and not ray.is_initialized()
    if own:
        from .ray_env import loopback_only_env

        loopback_only_env()
        # a new instance of our own, never one found through RAY_ADDRESS or /tmp/ray/ray_current_cluster
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    elif not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(progress) and sys.stderr.isatty()
        ctx.print_on_execution_start = False
        items = [{"id": json.dumps(rid), "record": json.dumps(rec)} for rid, rec in pending]
        blocks = max(1, min(len(items), workers * 4, -(-len(items) // batch_size)))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        out = ds.map_batches(RecordWorker, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                             num_cpus=num_cpus,
                             batch_format="numpy",
                             fn_constructor_kwargs={"model_dir": str(model_dir), "task": task, "threads": threads,
                                                    "allow_failed_export": allow_failed_export,
                                                    "batch_size": batch_size, "limits": limits})
        for b in out.iter_batches(batch_size=None, batch_format="numpy"):
            lines = [str(x) for x in b["line"]]
            yield lines, int(sum(bool(e) for e in b["error"]))
    finally:
        if own:
            ray.shutdown()

