"""``yoso-deploy serve``: check the export, start the engine, stop cleanly on Ctrl-C / SIGTERM.

Both engines serve the same :class:`~yoso_deploy.serving.server.InferenceServer` (the same endpoints, limits and
statuses). The export is checked in this process first (:func:`~yoso_deploy.serving.server.preflight`), so a broken
one fails in seconds with its cause, before any engine starts.

* ``asgi`` (default): uvicorn in this process (``workers`` > 1: uvicorn's worker processes, each with its model);
  SIGTERM / Ctrl-C stops accepting, lets in-flight requests finish within ``drain_timeout_s``, exits 0.
* ``ray``: without ``address`` a private local Ray instance is started -- always a new one (no dashboard, servers
  on 127.0.0.1 when the host is loopback); a cluster already running on the machine, or named by
  ``RAY_ADDRESS``, is left alone -- and shut down on exit, so no Ray process outlives the command. With
  ``address`` (``auto`` or ``HOST:PORT``) the application is deployed there and deleted on exit; the cluster
  itself is left running.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

from ..errors import require
from .config import ServeConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _announce(config: ServeConfig, name: str, task: str, seconds: float, echo, ready_file) -> None:
    url = f"http://{config.host}:{config.port}"
    scale = (f"{config.workers} worker(s)" if config.engine == "asgi" else f"{config.replicas} replica(s)")
    batching = f"dynamic batching {config.batch_wait:g} ms" if config.batch_wait > 0 else "no dynamic batching"
    echo(f"serving {name!r} ({task}, {config.engine}, {scale}, max batch {config.max_batch_size}, {batching}) at "
         f"{url} after {seconds:.1f}s")
    echo(f"  {url}/v2/models/{name}/infer   (Open Inference Protocol; tritonclient.http works)")
    echo(f"  {url}/v1/{name}/{task}   (task pipeline, JSON)")
    echo("Ctrl-C or SIGTERM stops it")
    if ready_file is not None:
        Path(ready_file).write_text(json.dumps({"url": url, "name": name, "task": task}))


def serve(config: ServeConfig, echo=print, ready_file=None, stop_event: threading.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop_event``); ``ready_file`` gets ``{"url", "name", "task"}`` once the
    server answers (for scripts and tests)."""
    from .server import default_model_name

    name = config.name or default_model_name(config.model_dir)
    if config.engine == "ray":
        return _serve_ray(config, name, echo, ready_file, stop_event)
    return _serve_asgi(config, name, echo, ready_file, stop_event)


def _serve_asgi(config: ServeConfig, name: str, echo, ready_file, stop_event) -> None:
    require("uvicorn", "'yoso-deploy serve'")
    from .asgi import YosoASGI, server_class, uvicorn_config
    from .server import InferenceServer, preflight

    t0 = time.perf_counter()
    config = ServeConfig.from_json({**config.to_json(), "name": name})
    if config.workers == 1:  # the one model this process serves is its own check
        server = InferenceServer.from_config(config)
        task, app = server.task, YosoASGI(config, server)
    else:  # each worker loads its own; check here first
        task, app = preflight(config.model_dir, name, config.allow_failed_export)["task"], None
    uconfig = uvicorn_config(config, app)
    if config.workers == 1:
        userver = server_class()(uconfig)
        started = lambda: userver.started  # noqa: E731
        stop = lambda: setattr(userver, "should_exit", True)  # noqa: E731
    else:  # uvicorn's supervisor: worker processes on one socket, each loading its model (asgi.app_from_env)
        from uvicorn.supervisors import Multiprocess

        supervisor = Multiprocess(uconfig, sockets=[uconfig.bind_socket()])
        started = lambda: _answers(config)  # noqa: E731
        stop = supervisor.should_exit.set

    def watch():
        while not started():
            time.sleep(0.05)
        _announce(config, name, task, time.perf_counter() - t0, echo, ready_file)
        if stop_event is not None:
            stop_event.wait()
            stop()

    threading.Thread(target=watch, daemon=True, name="yoso-serve-watch").start()
    if config.workers == 1:
        userver.run()  # SIGINT/SIGTERM: graceful shutdown within drain_timeout_s, then a normal return
    else:
        supervisor.run()  # SIGINT/SIGTERM: every worker shuts down gracefully, then the supervisor returns
    echo("stopped")


def _answers(config: ServeConfig) -> bool:
    import http.client

    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    try:
        conn = http.client.HTTPConnection(host, config.port, timeout=2)
        conn.request("GET", "/v2/health/ready")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        time.sleep(0.2)
        return False


def _serve_ray(config: ServeConfig, name: str, echo, ready_file, stop_event) -> None:
    require("ray.serve", "'yoso-deploy serve --engine ray'")
    from .deployment import build_app
    from .ray_env import loopback_only_env
    from .server import preflight

    manifest = preflight(config.model_dir, name, config.allow_failed_export)  # fails in seconds, before Ray starts
    args = {"model": str(config.model_dir), "replicas": config.replicas, "max_batch_size": config.max_batch_size,
            "batch_wait_ms": config.batch_wait, "threads": config.threads, "name": name,
            "max_ongoing_requests": config.max_ongoing_requests, "max_queued_requests": config.max_queued_requests,
            "num_cpus": config.num_cpus, "allow_failed_export": config.allow_failed_export,
            "max_request_bytes": config.max_request_bytes, "max_json_depth": config.max_json_depth,
            "max_inflight_tokens": config.max_inflight_tokens, "run_tokens": config.run_tokens,
            **config.limits.to_json()}
    app = build_app(args)
    stop = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    import ray
    from ray import serve as ray_serve

    own_cluster = config.address is None
    t0 = time.perf_counter()
    if own_cluster:
        if config.host in LOOPBACK:
            loopback_only_env()
        # address="local": always a new instance of our own -- never a cluster found through RAY_ADDRESS or
        # /tmp/ray/ray_current_cluster (someone else's, whose Serve the shutdown below would stop)
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                 configure_logging=True)
    else:
        ray.init(address=config.address, log_to_driver=False, logging_level="WARNING")
    # ray.init installs its own SIGTERM handler (sys.exit): ours again, so the shutdown below always runs.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        ray_serve.start(http_options={"host": config.host, "port": int(config.port)},
                        logging_config={"log_level": "WARNING", "enable_access_log": False})
        ray_serve.run(app, name=name, route_prefix="/", blocking=False,
                      logging_config={"log_level": "WARNING", "enable_access_log": False})
        _announce(config, name, manifest["task"], time.perf_counter() - t0, echo, ready_file)
        while not stop.wait(0.5):
            pass
        echo("stopping ...")
    finally:
        try:
            if own_cluster:
                ray_serve.shutdown()
            else:
                ray_serve.delete(name)
        finally:
            ray.shutdown()
    echo("stopped")


def serve_model(model, engine: str = "ray", echo=print, ready_file=None, stop_event=None, **options) -> None:
    """:func:`serve` with keyword options (the earlier API: Ray unless ``engine`` says otherwise)."""
    from .server import model_dir_arg

    serve(ServeConfig(model_dir=str(model_dir_arg(model)), engine=engine, **options), echo=echo,
          ready_file=ready_file, stop_event=stop_event)
