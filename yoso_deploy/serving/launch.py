"""``yoso-deploy serve``: start (or join) Ray, run the Serve application, stop cleanly on Ctrl-C / SIGTERM.

Without ``address`` a private local Ray instance is started -- always a new one (no dashboard, servers on
127.0.0.1 when the host is loopback); a cluster already running on the machine, or named by ``RAY_ADDRESS``,
is left alone -- and shut down on exit, so no Ray process outlives the command. With ``address``
(``auto`` or ``HOST:PORT`` of a running cluster) the application is deployed there and deleted on exit;
the cluster itself is left running.
"""

from __future__ import annotations

import signal
import threading
import time

from ..constants import SERVE_BATCH_WAIT_MS, SERVE_HOST, SERVE_MAX_BATCH_SIZE, SERVE_PORT

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_model(model, replicas: int = 1, max_batch_size: int = SERVE_MAX_BATCH_SIZE,
                batch_wait_ms: float = SERVE_BATCH_WAIT_MS, threads: int | None = None, host: str = SERVE_HOST,
                port: int = SERVE_PORT, name: str | None = None,
                address: str | None = None, max_ongoing_requests: int | None = None,
                max_queued_requests: int | None = None, num_cpus: float = 1.0, allow_failed_export: bool = False,
                echo=print, ready_file=None, stop_event: threading.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop_event``); ``ready_file`` gets ``{"url", "name", "task"}`` once
    the application answers (for scripts and tests)."""
    import json

    from ..errors import UsageError
    from .deployment import build_app, loopback_only_env
    from .server import default_model_name, preflight

    if not 0 < int(port) < 65536:
        raise UsageError(f"--port must be in 1..65535, got {port}")
    manifest = preflight(model, name, allow_failed_export)  # fails in seconds, with the cause, before Ray starts
    name = name or default_model_name(model)
    app = build_app({"model": str(model), "replicas": replicas, "max_batch_size": max_batch_size,
                     "batch_wait_ms": batch_wait_ms, "threads": threads, "name": name,
                     "max_ongoing_requests": max_ongoing_requests, "max_queued_requests": max_queued_requests,
                     "num_cpus": num_cpus, "allow_failed_export": allow_failed_export})
    stop = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    import ray
    from ray import serve

    own_cluster = address is None
    t0 = time.perf_counter()
    if own_cluster:
        if host in LOOPBACK:
            loopback_only_env()
        # address="local": always a new instance of our own -- never a cluster found through RAY_ADDRESS or
        # /tmp/ray/ray_current_cluster (someone else's, whose Serve the shutdown below would stop)
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                 configure_logging=True)
    else:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    # ray.init installs its own SIGTERM handler (sys.exit): ours again, so the shutdown below always runs.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": int(port)},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        serve.run(app, name=name, route_prefix="/", blocking=False,
                  logging_config={"log_level": "WARNING", "enable_access_log": False})
        url = f"http://{host}:{port}"
        echo(f"serving {name!r} ({manifest['task']}, {replicas} replica(s), max batch {max_batch_size}, "
             f"batch wait {batch_wait_ms:g} ms) at {url} after {time.perf_counter() - t0:.1f}s")
        echo(f"  {url}/v2/models/{name}/infer   (Open Inference Protocol; tritonclient.http works)")
        echo(f"  {url}/v1/{name}/{manifest['task']}   (task pipeline, JSON)")
        echo("Ctrl-C or SIGTERM stops it")
        if ready_file is not None:
            from pathlib import Path

            Path(ready_file).write_text(json.dumps({"url": url, "name": name, "task": manifest["task"]}))
        while not stop.wait(0.5):
            pass
        echo("stopping ...")
    finally:
        try:
            if own_cluster:
                serve.shutdown()
            else:
                serve.delete(name)
        finally:
            ray.shutdown()
    echo("stopped")
