"""What ``yoso-deploy serve`` is told, in one object both engines take (light: no numpy, no Ray, no uvicorn).

Every size a client controls is bounded here: the body (``max_request_bytes``, refused before it is read when
``Content-Length`` says so, counted while it streams otherwise), JSON nesting, the time to send headers and body,
the tokens in flight over all requests (``max_inflight_tokens``: admission, 503 + ``Retry-After`` beyond), the
positions of one model run (``run_tokens``: a long request runs as short runs other requests interleave with),
and what one pipeline call may ask for (``limits``: :class:`~yoso_deploy.runtime.limits.Limits`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..constants import (
    SERVE_BATCH_WAIT_MS,
    SERVE_HOST,
    SERVE_MAX_BATCH_SIZE,
    SERVE_MAX_INFLIGHT_TOKENS,
    SERVE_MAX_JSON_DEPTH,
    SERVE_MAX_REQUEST_BYTES,
    SERVE_PORT,
    SERVE_RUN_TOKENS,
)
from ..errors import UsageError
from ..runtime.limits import Limits

ENGINES = ("asgi", "ray")
DEFAULT_ENGINE = "asgi"


@dataclass(frozen=True)
class ServeConfig:
    model_dir: str
    name: str | None = None
    engine: str = DEFAULT_ENGINE
    host: str = SERVE_HOST
    port: int = SERVE_PORT
    workers: int = 1  # asgi: server processes, each with its own model
    replicas: int = 1  # ray: Serve replicas
    threads: int | None = None  # ONNX Runtime intra-op threads per model (None: all cores)
    max_batch_size: int = SERVE_MAX_BATCH_SIZE  # rows of one model run, and of one OIP request
    batch_wait_ms: float | None = None  # dynamic batching window; None: the engine's default (asgi 0 = off, ray 5)
    allow_failed_export: bool = False
    max_request_bytes: int = SERVE_MAX_REQUEST_BYTES  # --max-request-bytes
    max_json_depth: int = SERVE_MAX_JSON_DEPTH  # --max-json-depth
    header_timeout_s: float = 10.0  # --header-timeout: a client that has not sent its headers by then gets 408
    body_timeout_s: float = 30.0  # --body-timeout: ... its whole body
    max_inflight_tokens: int = SERVE_MAX_INFLIGHT_TOKENS  # --max-inflight-tokens: admission budget over all requests
    run_tokens: int = SERVE_RUN_TOKENS  # --run-tokens: positions of one model run (interleaving granularity)
    max_connections: int = 256  # asgi: connections (and requests) at once; beyond: 503
    drain_timeout_s: float = 30.0  # SIGTERM / Ctrl-C: in-flight requests finish within this, then exit
    limits: Limits = field(default_factory=Limits)
    # ray only
    address: str | None = None
    max_ongoing_requests: int | None = None
    max_queued_requests: int | None = None
    num_cpus: float = 1.0
    optimized_cache_dir: str | None = None

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}", fix=f"choose one of {', '.join(ENGINES)}")
        for name in ("port", "workers", "replicas", "max_batch_size", "max_request_bytes", "max_json_depth",
                     "max_inflight_tokens", "run_tokens", "max_connections"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        for name in ("header_timeout_s", "body_timeout_s", "drain_timeout_s"):
            if not getattr(self, name) > 0:
                raise UsageError(f"--{name[:-2].replace('_', '-')} must be a positive number of seconds")
        if self.limits.max_tokens > self.max_inflight_tokens:
            raise UsageError(f"--max-tokens {self.limits.max_tokens:,} is over --max-inflight-tokens "
                             f"{self.max_inflight_tokens:,}: such a request could never be admitted",
                             fix="raise --max-inflight-tokens or lower --max-tokens")

    @property
    def batch_wait(self) -> float:
        """The dynamic-batching window in ms: as given, else off for asgi (it gave no gain on CPU, measured),
        the Ray default for ray."""
        if self.batch_wait_ms is not None:
            return float(self.batch_wait_ms)
        return 0.0 if self.engine == "asgi" else SERVE_BATCH_WAIT_MS

    def to_json(self) -> dict:
        d = asdict(self)
        d["limits"] = self.limits.to_json()
        return d

    @classmethod
    def from_json(cls, data: dict) -> "ServeConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown serving option(s) {', '.join(unknown)}")
        data = dict(data)
        if isinstance(data.get("limits"), dict):
            data["limits"] = Limits(**data["limits"])
        return cls(**data)
