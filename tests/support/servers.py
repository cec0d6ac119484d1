"""Private Ray clusters on loopback (one or more nodes on this machine) and a loopback HTTP client: what the
serving tests, ``scripts/bench/bench_serve.py``, ``scripts/bench/soak_serve.py`` and ``scripts/bench/fault_serve.py`` start.

:func:`ray_cluster` checks on exit that every process Ray started is gone; :func:`ray_sockets_on_loopback`
that every Ray server socket listens on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # a source checkout (workers import it through PYTHONPATH)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body=None, headers=None, timeout: float = 60.0):
    """``(status, headers, body bytes)`` of one HTTP request to 127.0.0.1:port."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def wait_ready(port: int, path: str, timeout: float = 180.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode} before it was ready")
        try:
            status, _, _ = request(port, "GET", path, timeout=5)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"127.0.0.1:{port}{path} not ready after {timeout}s")


@contextlib.contextmanager
def ray_environment(spread_over_nodes: bool = False):
    """Environment for a test cluster: loopback-only Ray, workers import this checkout, and (2 nodes) a
    proxy that routes to replicas on every node."""
    keys = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    if (REPO / "yoso_deploy" / "__init__.py").is_file():  # a checkout: workers import these sources
        keys["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if spread_over_nodes:
        keys["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    from yoso_deploy.serving.ray_env import loopback_only_env

    loopback_only_env()
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def ray_cluster(nodes: int = 1, cpus_per_node: int = 2):
    """A private Ray cluster on 127.0.0.1 (``ray.cluster_utils.Cluster``: ``nodes`` nodes on this machine),
    connected; on exit Ray is shut down and every process it started must be gone (asserted)."""
    import ray
    from ray.cluster_utils import Cluster

    from support import procs

    temp = tempfile.mkdtemp(prefix="yr", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    cluster = None
    try:
        common = dict(num_cpus=cpus_per_node, object_store_memory=96 * 2**20, include_dashboard=False,
                      dashboard_agent_listen_port=None, temp_dir=temp)
        cluster = Cluster(initialize_head=True, head_node_args=common)
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus_per_node, object_store_memory=96 * 2**20, temp_dir=temp)
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        yield cluster
    finally:
        before = procs.snapshot(os.getpid())
        try:
            try:
                from ray import serve

                serve.shutdown()
            except Exception:  # noqa: BLE001 - serve may never have started
                pass
            ray.shutdown()
        finally:
            if cluster is not None:
                cluster.shutdown()
        left = procs.wait_gone(before, timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, "Ray processes left behind: " + "; ".join(f"{p} {procs.cmdline(p)[:80]}" for p in left)


def ray_sockets_on_loopback() -> dict:
    """Every listening socket of this process's Ray descendants -> pid; asserts all are on loopback."""
    from support import procs

    pids = procs.descendants(os.getpid()) + [os.getpid()]
    socks = procs.listening(pids)
    outside = {a: procs.cmdline(p)[:60] for a, p in socks.items() if not procs.is_loopback(a)}
    assert not outside, f"Ray servers listen outside loopback: {outside}"
    return socks


def rss_kb(pid: int) -> int:
    """Resident set size of a process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def asgi_server(model_dir, *args, name: str = "m", timeout: float = 120.0, env: dict | None = None,
                engine: str = "asgi"):
    """``yoso-deploy serve`` (the asgi engine, or ``engine="ray"``) on a free loopback port, in a subprocess
    importing this checkout; yields ``(proc, port)`` once it answers, and stops it with SIGTERM (it must exit 0).
    The ray engine starts a Ray of its own (never one found on the machine)."""
    import signal
    import subprocess
    import sys

    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTEST"))}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    if engine == "ray":
        full_env["RAY_ADDRESS"] = "127.0.0.1:1"  # nothing listens there: never join a cluster found on the machine
    proc = subprocess.Popen([sys.executable, "-m", "yoso_deploy.cli", "serve", "--engine", engine, "--model",
                             str(model_dir), "--name", name, "--port", str(port), *map(str, args)], cwd=REPO, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, f"/v2/models/{name}/ready", timeout=timeout, proc=proc)
        yield proc, port
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopped" in err, (proc.returncode, err[-3000:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
