"""The HTTP front of one served model, independent of any web framework or of Ray.

:class:`InferenceServer` holds one runtime model (:class:`~yoso_deploy.runtime.YosoOrtModel`, the
custom-op library registered) and the task's pipeline, and answers ``handle(method, path, headers,
body)`` with ``(status, headers, body)``:

==========================================================  ===============================================
``GET  /v2``                                                server metadata
``GET  /v2/health/live``, ``/v2/health/ready``              200 once the model is loaded
``GET  /v2/models/{name}[/versions/1]``                     model metadata (inputs, outputs, -1 = dynamic)
``GET  /v2/models/{name}[/versions/1]/ready``               200
``GET  /v2/models/{name}[/versions/1]/config``              the Triton model configuration (JSON) that
                                                            ``yoso-deploy triton-repo`` writes as config.pbtxt
``POST /v2/models/{name}[/versions/1]/infer``               Open Inference Protocol inference, JSON or binary
                                                            tensors (:mod:`.protocol`)
``POST /v1/{name}/{task}``                                  the task's pipeline on a JSON record
                                                            (:mod:`yoso_deploy.runtime.records`)
``GET  /v1/{name}/stats``                                   requests, errors and dynamic-batching counters
==========================================================  ===============================================

Every model run goes through ``submit(WorkItem)`` -- by default a direct run; the Ray Serve deployment
(:mod:`.deployment`) passes its ``@serve.batch`` queue, so that OIP requests and the pipelines' runs (a QA
request's windows, a classification request's texts) share dynamic batches. Validation happens per request
before anything is queued (:meth:`YosoOrtModel.prepare_inputs`), so a bad request never fails the
requests batched with it.

Bad input of any kind is a 4xx with ``{"error": "<one line naming the field and the fix>"}``; only a fault
of the server itself is a 500. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..constants import (
    SERVE_MAX_BATCH_SIZE,
    SERVE_MAX_INFLIGHT_TOKENS,
    SERVE_MAX_REQUEST_BYTES,
    SERVE_RUN_TOKENS,
    __version__,
)
from ..errors import UsageError, YosoDeployError
from ..manifest import expand_path
from ..runtime.limits import Limits, OverloadedError, TokenBudget
from .batching import BatchStats, WorkItem, pad_values, run_batched, sequence_axes
from .protocol import (
    DEFAULT_MAX_JSON_DEPTH,
    ProtocolError,
    encode_infer_response,
    error_body,
    parse_infer_request,
    parse_json,
    tensor_metadata,
)

log = logging.getLogger("yoso_deploy.serving")

JSON = {"content-type": "application/json"}
DEFAULT_MAX_REQUEST_BYTES = SERVE_MAX_REQUEST_BYTES
_MODEL_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/[a-z]+)?$")
_TASK_PATH = re.compile(r"^/v1/(?P<name>[^/]+)/(?P<task>[^/]+)$")


def default_model_name(model_dir) -> str:
    """The name of a model in URLs: its export directory's name."""
    return expand_path(model_dir).resolve().name


def check_model_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise UsageError(f"model name {name!r} may hold only letters, digits, '_', '.' and '-' (it is part of the URLs)",
                         fix="pass --name")
    return name


def preflight(model_dir, name: str | None = None, allow_failed_export: bool = False) -> dict:
    """What serving needs, checked in this process before any engine (Ray, uvicorn) starts, so that a broken
    export fails in seconds with its cause: the export is usable, its model loads in ONNX Runtime (one thread,
    released again), the name fits in URLs. Returns the manifest."""
    from ..runtime.models import YosoOrtModel

    check_model_name(name or default_model_name(model_dir))
    model = YosoOrtModel.from_pretrained(expand_path(model_dir), intra_op_threads=1,
                                         allow_failed_export=allow_failed_export)
    manifest = model.manifest
    del model
    return manifest


class _BatchedModel:
    """What a pipeline sees as its model: the runtime model's facts, with ``run`` going through the
    server's ``submit`` (so pipeline runs join dynamic batches). Called from pipeline worker threads."""

    def __init__(self, server: "InferenceServer"):
        self._server = server
        self._model = server.model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def run(self, feeds: dict, output_names=None, validate: bool = True) -> dict:
        feeds = self._model.prepare_inputs(feeds) if validate else feeds
        names = list(output_names) if output_names is not None else list(self._model.output_names)
        item = WorkItem(feeds, names)
        loop = self._server._loop
        return asyncio.run_coroutine_threadsafe(self._server._submit_checked(item), loop).result()

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        from ..runtime.models import ModelOutput

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids, **kwargs}
        return ModelOutput(self.run({k: v for k, v in inputs.items() if v is not None}))


class InferenceServer:
    """One model behind the Open Inference Protocol and the task endpoints (module doc).

    ``max_batch_size``: the most rows one model run takes (a request with more rows is refused, as Triton
    does); ``batching``: whether ``submit`` queues runs into dynamic batches (set by the deployment);
    ``threads``: ONNX Runtime intra-op threads; ``max_request_bytes``: larger bodies get 413.
    """

    def __init__(self, model_dir, name: str | None = None, max_batch_size: int = SERVE_MAX_BATCH_SIZE,
                 threads: int | None = None, allow_failed_export: bool = False,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, pipeline_threads: int = 32, submit=None,
                 optimized_cache_dir=None, limits: Limits | None = None, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
                 max_inflight_tokens: int = SERVE_MAX_INFLIGHT_TOKENS, run_tokens: int | None = SERVE_RUN_TOKENS):
        from ..runtime.models import YosoOrtModel
        from ..runtime.pipelines import pipeline_class
        from ..runtime.tokenizer import Tokenizer

        if int(max_batch_size) < 1:
            raise UsageError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model_dir = expand_path(model_dir).resolve()
        self.name = check_model_name(name or default_model_name(self.model_dir))
        self.max_batch_size = int(max_batch_size)
        self.max_request_bytes = int(max_request_bytes)
        self.max_json_depth = int(max_json_depth)
        self.limits = limits if limits is not None else Limits()
        self.run_tokens = run_tokens
        self.admission = TokenBudget(max_inflight_tokens)
        self.model = YosoOrtModel.from_pretrained(self.model_dir, intra_op_threads=threads,
                                                  allow_failed_export=allow_failed_export,
                                                  optimized_cache_dir=optimized_cache_dir)
        self.manifest = self.model.manifest
        self.task = self.manifest["task"]
        self._pads = pad_values(self.model)
        self._seq_axes = sequence_axes(self.manifest)
        self._fixed_dims = {o["name"]: o["dims"] for o in self.manifest["outputs"]}
        self._submit = submit or self.run_one
        self.stats_fn = self.stats  # the deployment adds Ray facts
        self._run_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="yoso-run")
        self._pipe_pool = ThreadPoolExecutor(max_workers=max(1, int(pipeline_threads)), thread_name_prefix="yoso-pipe")
        self._loop = None
        self._lock = threading.Lock()
        self.batch_stats = BatchStats()
        self.counters = {"requests": 0, "infer": 0, "task": 0, "client_errors": 0, "server_errors": 0,
                         "overloaded": 0}
        self.pipeline = None
        self.tokenizer_error = None
        try:
            tok = Tokenizer.from_dir(self.model_dir)
            self.pipeline = pipeline_class(self.task)(_BatchedModel(self), tok, batch_size=self.max_batch_size,
                                                      limits=self.limits, run_tokens=run_tokens)
            self.pipeline.admission = self.admission
        except (FileNotFoundError, ValueError) as e:  # no tokenizer: OIP only
            self.tokenizer_error = str(e)
        self.loaded_at = time.time()

    # -- model runs -----------------------------------------------------------------------------
    def run_items(self, items: list[WorkItem]) -> list:
        """Run work items in as few runs as possible (blocking; the deployment calls it in a worker thread)."""
        with self._lock:
            stats = BatchStats()
        results = run_batched(lambda feeds, names: self.model.run(feeds, output_names=names, validate=False),
                              items, self.max_batch_size, self._pads, self._seq_axes, stats)
        with self._lock:
            b = self.batch_stats
            b.runs += stats.runs
            b.items += stats.items
            b.rows += stats.rows
            b.tokens += stats.tokens
            b.padded_tokens += stats.padded_tokens
            b.max_items_per_run = max(b.max_items_per_run, stats.max_items_per_run)
            for k, v in stats.items_per_run.items():
                b.items_per_run[k] = b.items_per_run.get(k, 0) + v
        return results

    async def run_items_async(self, items: list[WorkItem]) -> list:
        return await asyncio.get_running_loop().run_in_executor(self._run_pool, self.run_items, items)

    async def run_one(self, item: WorkItem):
        return (await self.run_items_async([item]))[0]

    async def _submit_checked(self, item: WorkItem) -> dict:
        result = await self._submit(item)
        if isinstance(result, BaseException):
            raise result
        return result

    # -- HTTP -----------------------------------------------------------------------------------
    def stats(self) -> dict:
        import os
        import sys

        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers"})
        return {"model": self.name, "task": self.task, "pid": os.getpid(), "counters": dict(self.counters),
                "batching": self.batch_stats.to_json(), "admission": self.admission.to_json(),
                "limits": self.limits.to_json(), "heavy_modules": heavy, "uptime_s": time.time() - self.loaded_at}

    @classmethod
    def from_config(cls, config, submit=None) -> "InferenceServer":
        """The server of a :class:`~yoso_deploy.serving.config.ServeConfig`."""
        return cls(config.model_dir, name=config.name, max_batch_size=config.max_batch_size, threads=config.threads,
                   allow_failed_export=config.allow_failed_export, max_request_bytes=config.max_request_bytes,
                   submit=submit, optimized_cache_dir=config.optimized_cache_dir, limits=config.limits,
                   max_json_depth=config.max_json_depth, max_inflight_tokens=config.max_inflight_tokens,
                   run_tokens=config.run_tokens)

    async def handle(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        """Answer one HTTP request: ``(status, headers, body)``; never raises.

        What the client got wrong (a :class:`~yoso_deploy.errors.YosoDeployError`: a malformed request, a limit, a
        bad input) is its 4xx with ``{"error": "<one line>"}`` (503 + ``Retry-After`` when the token budget is
        full); anything else is a fault of the server: 500 with a generic message and a request id, the
        traceback in the server's log only."""
        self._loop = asyncio.get_running_loop()
        self.counters["requests"] += 1
        try:
            status, hdrs, payload = await self._route(method.upper(), path.rstrip("/") or "/", headers, body)
        except YosoDeployError as e:
            status = int(getattr(e, "status", 400))
            hdrs = {**JSON, **getattr(e, "headers", {})}
            if isinstance(e, OverloadedError):
                status, hdrs["retry-after"] = 503, str(max(1, math.ceil(e.retry_after)))
                self.counters["overloaded"] += 1
            elif not 400 <= status < 500:  # a kind without an HTTP status of its own is the client's input
                status = 400
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            payload = error_body(msg)
        except Exception:  # noqa: BLE001 - a fault of ours: 500 without its details, logged, the server lives on
            rid = uuid.uuid4().hex[:12]
            log.exception("internal error (request id %s) on %s %s", rid, method, path)
            status, hdrs, payload = 500, JSON, error_body(f"internal server error (request id {rid}); the server "
                                                          "log has the details")
        if 400 <= status < 500:
            self.counters["client_errors"] += 1
        elif status >= 500 and status != 503:
            self.counters["server_errors"] += 1
        return status, hdrs, payload

    def _json(self, obj, status: int = 200):
        return status, JSON, json.dumps(obj).encode()

    def _check_name(self, name: str, version: str | None):
        if name != self.name:
            raise ProtocolError(f"unknown model {name!r}; this server serves {self.name!r}", status=404)
        if version not in (None, "", "1"):
            raise ProtocolError(f"model {name!r} has no version {version!r}; it has version 1", status=404)

    async def _route(self, method: str, path: str, headers: dict, body: bytes):
        if path in ("/v2", "/v2/health/live", "/v2/health/ready"):
            self._method(method, "GET")
            if path == "/v2":
                return self._json({"name": "yoso-deploy", "version": __version__,
                                   "extensions": ["binary_tensor_data", "model_configuration"]})
            return self._json({"live": True} if path.endswith("live") else {"ready": True})
        m = _MODEL_PATH.match(path)
        if m:
            self._check_name(m["name"], m["version"])
            rest = m["rest"]
            if rest is None:
                self._method(method, "GET")
                return self._json(self.metadata())
            if rest == "/ready":
                self._method(method, "GET")
                return self._json({"name": self.name, "ready": True})
            if rest == "/config":
                self._method(method, "GET")
                from .triton_repo import model_config

                return self._json(model_config(self.manifest, self.name, max_batch_size=self.max_batch_size,
                                               backend="onnxruntime"))
            if rest == "/infer":
                self._method(method, "POST")
                return await self._infer(headers, body)
            raise ProtocolError(f"no endpoint {path!r}; see GET /v2/models/{self.name}", status=404)
        m = _TASK_PATH.match(path)
        if m:
            if m["name"] != self.name:
                raise ProtocolError(f"unknown model {m['name']!r}; this server serves {self.name!r}", status=404)
            if m["task"] == "stats":
                self._method(method, "GET")
                return self._json(self.stats_fn())
            self._method(method, "POST")
            return await self._task(m["task"], body)
        raise ProtocolError(f"no endpoint {method} {path!r}; this server has /v2/health/ready, "
                            f"/v2/models/{self.name}[/infer], POST /v1/{self.name}/{self.task}", status=404)

    @staticmethod
    def _method(method: str, allowed: str):
        """Refuse another method with 405 and ``Allow``; ``HEAD`` is answered wherever ``GET`` is."""
        ok = (allowed, "HEAD") if allowed == "GET" else (allowed,)
        if method not in ok:
            raise ProtocolError(f"method {method} is not allowed here; use {allowed}", status=405,
                                headers={"allow": ", ".join(ok)})

    def metadata(self) -> dict:
        return {"name": self.name, "versions": ["1"], "platform": "onnxruntime_onnx", "task": self.task,
                "max_batch_size": self.max_batch_size, "max_sequence_length": self.model.max_sequence_length,
                "inputs": tensor_metadata(self.manifest["inputs"]), "outputs": tensor_metadata(self.manifest["outputs"])}

    def _check_size(self, body: bytes):
        if len(body) > self.max_request_bytes:
            raise ProtocolError(f"the request body has {len(body):,} bytes, more than this server accepts "
                                f"({self.max_request_bytes:,})", status=413,
                                fix="send less per request, or raise the limit with --max-request-bytes")

    async def _infer(self, headers: dict, body: bytes):
        self._check_size(body)
        self.counters["infer"] += 1
        limit = self.max_batch_size * self.model.max_sequence_length * 64
        req = parse_infer_request(body, headers, max_elements=limit, max_depth=self.max_json_depth)
        names = req.outputs if req.outputs is not None else list(self.model.output_names)
        unknown = [n for n in names if n not in self.model.output_names]
        if unknown:
            raise ProtocolError(f"unknown output {unknown[0]!r}; the model has {', '.join(self.model.output_names)}")
        feeds = self.model.prepare_inputs(req.inputs)  # InputError -> 400, naming the input
        rows = int(feeds["input_ids"].shape[0])
        if rows > self.max_batch_size:
            raise ProtocolError(f"input 'input_ids' has a batch of {rows} rows, more than this server's max batch "
                                f"size {self.max_batch_size}; split the request (or serve with a larger "
                                "--max-batch-size)")
        item = WorkItem(feeds, names)
        with self.admission.reserve(item.rows * item.length):  # 503 when the budget is full
            outs = await self._submit_checked(item)
        binary = {n for n in names if req.binary(n)}
        payload, hdrs = encode_infer_response(self.name, {n: outs[n] for n in names}, binary, req.id)
        return 200, hdrs, payload

    async def _task(self, task: str, body: bytes):
        from ..runtime.records import endpoint_task, run_record
        from ..tasks import UnknownTaskError

        self._check_size(body)
        try:
            wanted = endpoint_task(task)
        except UnknownTaskError:
            wanted = None
        if wanted != self.task:
            raise ProtocolError(f"model {self.name!r} is a {self.task} model; POST /v1/{self.name}/{self.task} "
                                f"(not /{task})", status=404)
        if self.pipeline is None:
            raise ProtocolError(f"model {self.name!r} has no tokenizer ({self.tokenizer_error}); use "
                                f"/v2/models/{self.name}/infer with token ids", status=404)
        if not body.strip():
            raise ProtocolError("the request body is empty; send a JSON object with the task's fields")
        record = parse_json(body, self.max_json_depth)
        self.counters["task"] += 1
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pipe_pool, run_record, self.pipeline, self.task, record)
        return self._json({"model_name": self.name, "task": self.task, "result": result})

    def close(self):
        self._pipe_pool.shutdown(wait=False, cancel_futures=True)
        self._run_pool.shutdown(wait=False, cancel_futures=True)


def model_dir_arg(value) -> Path:
    """An export directory as replicas on any node see it: absolute, ``~`` expanded."""
    return expand_path(value).resolve()
