"""The Ray Serve deployment and application of ``yoso-deploy serve --engine ray`` (needs the ``[ray]`` extra).

Each replica holds one :class:`~yoso_deploy.serving.server.InferenceServer` (one runtime model, the
custom-op library registered, and the task's pipeline). Every model run -- of an Open Inference Protocol
request or of a pipeline -- goes through ``@serve.batch``, whose batch size counts *rows*
(``batch_size_fn``), so one run takes at most ``max_batch_size`` rows, padded to the longest sequence of
the batch. ``batch_wait_ms=0`` turns dynamic batching off (each request runs alone).

Overload is bounded: ``max_ongoing_requests`` per replica and ``max_queued_requests`` at each proxy;
beyond them the proxy answers 503 with ``Retry-After`` (no unbounded queue, no unbounded memory).

    serve run yoso_deploy.serving:build_app model=out/qa replicas=2      # Ray Serve's own CLI
    app = build_app({"model": "out/qa", "max_batch_size": 8})            # an Application for serve.run
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from ..constants import (
    MANIFEST_FILE,
    SERVE_BATCH_WAIT_MS,
    SERVE_MAX_BATCH_SIZE,
    SERVE_MAX_INFLIGHT_TOKENS,
    SERVE_RUN_TOKENS,
)
from ..errors import NotFoundError, UsageError
from ..runtime.limits import Limits
from .protocol import DEFAULT_MAX_JSON_DEPTH, error_body
from .ray_env import loopback_only_env  # noqa: F401 - re-exported (older imports)
from .server import DEFAULT_MAX_REQUEST_BYTES, InferenceServer, model_dir_arg

DEFAULTS = {"replicas": 1, "max_batch_size": SERVE_MAX_BATCH_SIZE, "batch_wait_ms": SERVE_BATCH_WAIT_MS,
            "threads": None, "name": None, "max_ongoing_requests": None, "max_queued_requests": None, "num_cpus": 1.0,
            "allow_failed_export": False, "max_request_bytes": DEFAULT_MAX_REQUEST_BYTES,
            "optimized_cache_dir": None, "max_json_depth": DEFAULT_MAX_JSON_DEPTH,
            "max_inflight_tokens": SERVE_MAX_INFLIGHT_TOKENS, "run_tokens": SERVE_RUN_TOKENS, **Limits().to_json()}
LIMIT_KEYS = tuple(Limits().to_json())


def _bind_replica_grpc_to_loopback() -> None:
    """In a loopback-only cluster (:func:`loopback_only_env`), bind the replica's inter-deployment gRPC server
    to 127.0.0.1 instead of ``[::]`` (Ray 2.60 hard-codes all interfaces there; every other Ray server follows
    the node address). Clients reach it at the node address, which is 127.0.0.1 in such a cluster. If Ray's
    internals differ, nothing is changed (``tests/serving/test_serving_ray.py`` checks every socket)."""
    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        return
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "_yoso_loopback", False):
        return

    def add_port(server, address):
        if isinstance(address, str) and address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:"):]
        return original(server, address)

    add_port._yoso_loopback = True
    replica.add_port_to_grpc_server = add_port


_bind_replica_grpc_to_loopback()


def _app_path(request: Request) -> str:
    """The request's path below the application's route prefix (``serve run ... route_prefix=/yoso``: the
    endpoints are then ``/yoso/v2/...``)."""
    path = request.url.path
    root = (request.scope.get("root_path") or "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):] or "/"
    return path


def _rows(items) -> int:
    return sum(it.rows for it in items)


@serve.deployment(ray_actor_options={"num_cpus": 1})
class YosoModelDeployment:
    """One replica: the model, its pipeline, the dynamic batcher; an ASGI-free ``__call__`` for HTTP."""

    def __init__(self, model_dir: str, name: str | None = None, max_batch_size: int = SERVE_MAX_BATCH_SIZE,
                 batch_wait_ms: float = SERVE_BATCH_WAIT_MS,
                 threads: int | None = None, allow_failed_export: bool = False,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, pipeline_threads: int = 32,
                 optimized_cache_dir: str | None = None, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
                 max_inflight_tokens: int = SERVE_MAX_INFLIGHT_TOKENS, run_tokens: int = SERVE_RUN_TOKENS,
                 limits: dict | None = None):
        self.batching = batch_wait_ms > 0 and max_batch_size > 1
        self.server = InferenceServer(model_dir, name=name, max_batch_size=max_batch_size, threads=threads,
                                      allow_failed_export=allow_failed_export, max_request_bytes=max_request_bytes,
                                      pipeline_threads=pipeline_threads, submit=self._submit,
                                      optimized_cache_dir=optimized_cache_dir, limits=Limits(**(limits or {})),
                                      max_json_depth=max_json_depth, max_inflight_tokens=max_inflight_tokens,
                                      run_tokens=run_tokens)
        self.server.stats_fn = self.stats
        self._batched.set_max_batch_size(int(max_batch_size))
        self._batched.set_batch_wait_timeout_s(float(batch_wait_ms) / 1000.0)

    @serve.batch(max_batch_size=SERVE_MAX_BATCH_SIZE, batch_wait_timeout_s=SERVE_BATCH_WAIT_MS / 1000, batch_size_fn=_rows)
    async def _batched(self, items):
        return await self.server.run_items_async(items)

    async def _submit(self, item):
        if self.batching:
            return await self._batched(item)
        return await self.server.run_one(item)

    async def __call__(self, request: Request) -> Response:
        limit = self.server.max_request_bytes
        refused = {"content-type": "application/json", "connection": "close"}
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:  # refused before reading the body
            status, headers, body = 413, refused, error_body(
                f"the request body is {int(length):,} bytes (Content-Length), more than this server accepts "
                f"({limit:,}); send less, or raise the limit with --max-request-bytes")
        else:
            chunks, size = [], 0
            async for chunk in request.stream():  # counted while it streams (a chunked body has no length)
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
            if size > limit:
                status, headers, body = 413, refused, error_body(
                    f"the request body passed {limit:,} bytes, more than this server accepts; send less, or raise "
                    "the limit with --max-request-bytes")
            else:
                status, headers, body = await self.server.handle(request.method, _app_path(request),
                                                                 dict(request.headers), b"".join(chunks))
        if request.method == "HEAD":
            return Response(status_code=status, headers={**headers, "content-length": str(len(body))})
        return Response(content=body, status_code=status, headers=headers)

    def stats(self) -> dict:
        """Counters, batching histogram, pid and the heavy modules loaded in this replica (for tests, benchmarks)."""
        import ray

        return {**self.server.stats(), "batching_enabled": self.batching,
                "node_id": ray.get_runtime_context().get_node_id()}


def _parse(args: dict) -> dict:
    """``serve run ... key=value`` arguments (strings) or Python values -> typed options."""
    unknown = [k for k in args if k not in DEFAULTS and k != "model"]
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r} for yoso_deploy.serving:build_app; arguments: model, "
                         + ", ".join(DEFAULTS))
    if "model" not in args:
        raise UsageError("build_app needs model=EXPORT_DIR (an export made by 'yoso-deploy export')")
    out: dict[str, Any] = dict(DEFAULTS)
    for k, v in args.items():
        if k == "model" or v is None:
            out[k] = v
            continue
        default = DEFAULTS[k]
        try:
            if k == "allow_failed_export":
                out[k] = v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
            elif k in ("name", "optimized_cache_dir"):
                out[k] = str(v)
            elif isinstance(default, float) or k in ("batch_wait_ms", "num_cpus"):
                out[k] = float(v)
            else:
                out[k] = int(v)
        except ValueError:
            raise UsageError(f"argument {k}={v!r} must be a number") from None
    for k in ("replicas", "max_batch_size"):
        if out[k] < 1:
            raise UsageError(f"{k} must be >= 1, got {out[k]}")
    if out["batch_wait_ms"] < 0:
        raise UsageError(f"batch_wait_ms must be >= 0, got {out['batch_wait_ms']}")
    return out


def build_app(args: dict | None = None, **kwargs):
    """The Serve application of one export (``serve run yoso_deploy.serving:build_app model=out/qa``).

    Arguments: ``model`` (export directory), ``replicas``, ``max_batch_size`` (rows per run), ``batch_wait_ms``
    (0: no dynamic batching), ``threads`` (ORT intra-op threads per replica), ``name`` (in the URLs; default
    the export directory's name), ``max_ongoing_requests`` (per replica; default 2 x max_batch_size),
    ``max_queued_requests`` (per proxy; default 8 x max_ongoing), ``num_cpus`` (per replica, Ray's
    scheduling), ``allow_failed_export``, ``max_request_bytes``, ``optimized_cache_dir``, ``max_json_depth``,
    ``max_inflight_tokens``, ``run_tokens`` and the pipeline limits (``max_tokens``, ``max_texts``, ...:
    :class:`~yoso_deploy.runtime.limits.Limits`)."""
    o = _parse({**(args or {}), **kwargs})
    model_dir = model_dir_arg(o["model"])
    if not (model_dir / MANIFEST_FILE).is_file():
        raise NotFoundError(f"{str(model_dir)!r} is not an export directory (no yoso_export.json); run "
                                "'yoso-deploy export' first")
    ongoing = o["max_ongoing_requests"] or 2 * o["max_batch_size"]
    queued = o["max_queued_requests"] if o["max_queued_requests"] is not None else 8 * ongoing
    name = o["name"] or model_dir.name
    dep = YosoModelDeployment.options(
        name=f"yoso-{name}", num_replicas=o["replicas"], max_ongoing_requests=ongoing, max_queued_requests=queued,
        ray_actor_options={"num_cpus": o["num_cpus"]},
        graceful_shutdown_timeout_s=10.0,
    )
    return dep.bind(str(model_dir), name=name, max_batch_size=o["max_batch_size"], batch_wait_ms=o["batch_wait_ms"],
                    threads=o["threads"], allow_failed_export=o["allow_failed_export"],
                    max_request_bytes=o["max_request_bytes"], pipeline_threads=max(32, ongoing),
                    optimized_cache_dir=o["optimized_cache_dir"], max_json_depth=o["max_json_depth"],
                    max_inflight_tokens=o["max_inflight_tokens"], run_tokens=o["run_tokens"],
                    limits={k: o[k] for k in LIMIT_KEYS})
