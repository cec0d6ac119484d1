"""The ASGI engine of ``yoso-deploy serve`` (the default): the framework-free :class:`InferenceServer` behind
uvicorn, no Ray (the ``[serve]`` extra: uvicorn, starlette).

    yoso-deploy serve --model out/qa --workers 2          # two processes, each with its model

What reaches the server is bounded before it costs anything:

* the body: a ``Content-Length`` over ``--max-request-bytes`` is answered 413 before a byte of the body is
  read; a chunked body is counted as it streams and refused with 413 the moment it passes the limit (uvicorn
  stops reading from the socket while the application does not consume, so nothing is buffered beyond it);
* time: a client that has not sent its request line and headers within ``--header-timeout`` (and, on a kept-
  alive connection, the next request's) gets 408 and the connection is closed -- uvicorn alone would wait forever
  on a client that sends a byte every few seconds; the body must arrive within ``--body-timeout`` (408);
* connections: at most ``--max-connections`` at once (503 beyond, uvicorn's ``limit_concurrency``);
* the work of a request: the server's token budget and limits (:mod:`.server`, :mod:`yoso_deploy.runtime.limits`).

``HEAD`` is answered like ``GET`` without the body. SIGTERM or Ctrl-C stops accepting connections, lets the
requests in flight finish within ``--drain-timeout``, then exits (uvicorn's graceful shutdown). Dynamic batching is
off by default here (it gave no rows/s gain on CPU, measured in docs/perf/serving.md); ``--batch-wait-ms`` turns it
on (:class:`~yoso_deploy.serving.batching.AsyncBatcher`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from .config import ServeConfig
from .protocol import ProtocolError, error_body

log = logging.getLogger("yoso_deploy.serving")

CONFIG_ENV = "YOSO_SERVE_CONFIG"  # the ServeConfig (JSON) of worker processes started by uvicorn
JSON = [(b"content-type", b"application/json")]


def _response_head(status: int, headers: dict, length: int, close: bool = False) -> dict:
    hdrs = [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
    hdrs.append((b"content-length", str(length).encode()))
    if close:
        hdrs.append((b"connection", b"close"))
    return {"type": "http.response.start", "status": status, "headers": hdrs}


async def _within(awaitable, seconds: float):
    """``await awaitable`` or TimeoutError after ``seconds`` (``asyncio.timeout`` where there is one: no extra task
    per call, unlike ``wait_for``)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout=seconds)


class _Refused(ProtocolError):
    """The request is refused while it is read (413 / 408 / 400): its response, and the connection closes."""

    def __init__(self, status: int, message: str):
        super().__init__(message, status=status)


class YosoASGI:
    """An ASGI 3 application over one :class:`InferenceServer` (built at lifespan start-up by ``factory``, or given)."""

    def __init__(self, config: ServeConfig, server=None):
        self.config = config
        self.server = server
        self.batcher = None

    # -- lifespan ------------------------------------------------------------------------------------------------
    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.server is None:
                        self.server = await asyncio.get_running_loop().run_in_executor(None, self._build)
                    await send({"type": "lifespan.startup.complete"})
                except Exception as e:  # noqa: BLE001 - reported to uvicorn, which exits with it
                    log.exception("the model could not be loaded")
                    await send({"type": "lifespan.startup.failed", "message": str(e).splitlines()[0] if str(e) else
                                type(e).__name__})
                    return
            elif message["type"] == "lifespan.shutdown":
                if self.batcher is not None:
                    await self.batcher.close()
                if self.server is not None:
                    self.server.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _build(self):
        from .server import InferenceServer

        server = InferenceServer.from_config(self.config)
        if self.config.batch_wait > 0 and self.config.max_batch_size > 1:
            from .batching import AsyncBatcher

            self.batcher = AsyncBatcher(server.run_items_async, self.config.max_batch_size, self.config.batch_wait)
            server._submit = self.batcher.submit
        return server

    # -- HTTP ----------------------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":  # websockets: not served
            return
        if self.server is None:  # no lifespan (a bare ASGI host): build on first use
            self.server = await asyncio.get_running_loop().run_in_executor(None, self._build)
        method = scope["method"]
        path = scope["path"]
        root = (scope.get("root_path") or "").rstrip("/")
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root):] or "/"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await self._read_body(headers, receive)
        except _Refused as e:
            payload = error_body(str(e))
            await send(_response_head(e.status, {"content-type": "application/json"}, len(payload), close=True))
            await send({"type": "http.response.body", "body": payload if method != "HEAD" else b""})
            return
        status, hdrs, payload = await self.server.handle(method, path, headers, body)
        await send(_response_head(status, hdrs, len(payload)))
        await send({"type": "http.response.body", "body": payload if method != "HEAD" else b""})

    async def _read_body(self, headers: dict, receive) -> bytes:
        limit = self.config.max_request_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise _Refused(400, f"Content-Length {length!r} is not a number of bytes")
            if int(length) > limit:  # refused before a byte of the body is read
                raise _Refused(413, f"the request body is {int(length):,} bytes (Content-Length), more than this "
                                    f"server accepts ({limit:,}); send less, or raise the limit with "
                                    "--max-request-bytes")
        deadline = time.monotonic() + self.config.body_timeout_s
        chunks, size = [], 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = await _within(receive(), max(remaining, 0.001))
            except (asyncio.TimeoutError, TimeoutError):
                raise _Refused(408, f"the request body did not arrive within {self.config.body_timeout_s:g} s; "
                                    "send it at once, or raise the limit with --body-timeout") from None
            if message["type"] == "http.disconnect":
                raise _Refused(400, "the client disconnected before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # a chunked (or lying) body: refused as soon as it passes the limit
                raise _Refused(413, f"the request body passed {limit:,} bytes, more than this server accepts; "
                                    "send less, or raise the limit with --max-request-bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


# -- the header timeout: a protocol that closes a connection whose headers do not arrive in time ------------------

HEADER_TIMEOUT_ENV = "YOSO_HEADER_TIMEOUT_S"


def _timed(base):
    """``base`` (uvicorn's h11 or httptools protocol) with a header timeout: armed when the connection opens and
    after each response, disarmed when a request's headers are complete; on expiry a 408 and the connection
    closes. (uvicorn's keep-alive timer restarts on every byte, so alone it never ends a slow client.)"""

    class TimedProtocol(base):
        header_timeout_s = float(os.environ.get(HEADER_TIMEOUT_ENV, "10"))

        def connection_made(self, transport):
            super().connection_made(transport)
            self._yoso_timer = None
            self._yoso_arm()

        def _yoso_waiting(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _yoso_arm(self):
            self._yoso_disarm()
            self._yoso_timer = self.loop.call_later(self.header_timeout_s, self._yoso_expire)

        def _yoso_disarm(self):
            timer = getattr(self, "_yoso_timer", None)
            if timer is not None:
                timer.cancel()
                self._yoso_timer = None

        def data_received(self, data):
            super().data_received(data)
            if not self._yoso_waiting():
                self._yoso_disarm()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                if self._yoso_waiting():
                    self._yoso_arm()
                else:
                    self._yoso_disarm()  # a pipelined request is already being served

        def _yoso_expire(self):
            self._yoso_timer = None
            if self.transport.is_closing() or not self._yoso_waiting():
                return
            body = error_body(f"the request line and headers did not arrive within {self.header_timeout_s:g} s; "
                              "send them at once, or raise the limit with --header-timeout")
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            self.transport.close()

        def connection_lost(self, exc):
            self._yoso_disarm()
            super().connection_lost(exc)

    TimedProtocol.__name__ = TimedProtocol.__qualname__ = f"Timed{base.__name__}"
    return TimedProtocol


def _protocols():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    out = {"h11": _timed(H11Protocol)}
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        out["httptools"] = _timed(HttpToolsProtocol)
    except ImportError:  # httptools is optional (uvicorn[standard])
        pass
    return out


_PROTOCOLS = None


def protocol_class():
    """The timed protocol of the fastest HTTP parser installed (httptools, else h11)."""
    global _PROTOCOLS
    if _PROTOCOLS is None:
        _PROTOCOLS = _protocols()
    return _PROTOCOLS.get("httptools") or _PROTOCOLS["h11"]


class TimedHttpToolsOrH11:
    """An importable name for uvicorn worker processes (``--workers``): resolves to :func:`protocol_class`."""

    def __new__(cls, *args, **kwargs):
        return protocol_class()(*args, **kwargs)


def server_class():
    """``uvicorn.Server`` whose SIGINT / SIGTERM handling ends in a normal return (exit 0) after the graceful
    shutdown: uvicorn itself re-raises the signal afterwards, which turns a clean stop into an interrupt."""
    import contextlib
    import signal
    import threading

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server


def app_from_env():
    """uvicorn's factory in worker processes: the application of the ServeConfig in ``$YOSO_SERVE_CONFIG``."""
    return YosoASGI(ServeConfig.from_json(json.loads(os.environ[CONFIG_ENV])))


def uvicorn_config(config: ServeConfig, app=None):
    """The ``uvicorn.Config`` of a serve config: loopback unless asked, the timed protocol, our limits."""
    import uvicorn

    os.environ[HEADER_TIMEOUT_ENV] = str(config.header_timeout_s)  # read by the timed protocol (also in workers)
    protocol_class().header_timeout_s = config.header_timeout_s
    common = dict(host=config.host, port=int(config.port), http=TimedHttpToolsOrH11, lifespan="on",
                  log_level="warning", access_log=False, timeout_graceful_shutdown=config.drain_timeout_s,
                  timeout_keep_alive=5, limit_concurrency=config.max_connections, h11_max_incomplete_event_size=64 * 1024,
                  server_header=False)
    if config.workers > 1:
        os.environ[CONFIG_ENV] = json.dumps(config.to_json())
        return uvicorn.Config("yoso_deploy.serving.asgi:app_from_env", factory=True, workers=config.workers, **common)
    return uvicorn.Config(app or YosoASGI(config), **common)
