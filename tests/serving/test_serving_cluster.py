"""Serving and batch inference on a private 2-node Ray cluster (ray.cluster_utils.Cluster, both nodes on this
machine, 127.0.0.1 only): replicas on both nodes and both serving traffic, a replica killed under a bounded
loopback load loses no request once the client retries 5xx (bounded), and `batch --ray` (Ray Data actors)
writes the same records as the local path."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.serving import free_port, ray_cluster, ray_environment, request, require_ray_serve

pytestmark = [pytest.mark.slow, pytest.mark.ray]

LOAD_S = 8.0  # the CI version; scripts/bench/fault_serve.py runs 30 s
CLIENTS = 4
RETRIES = 5


@pytest.fixture(scope="module")
def cluster(task_exports):
    require_ray_serve()
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'yoso-deploy[batch]'")
    from ray import serve

    from yoso_deploy.serving import build_app

    port = free_port()
    with ray_environment(spread_over_nodes=True), ray_cluster(nodes=2, cpus_per_node=2) as c:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        app = build_app({"model": str(task_exports["token-classification"]), "name": "ner", "replicas": 2,
                         "max_batch_size": 4, "batch_wait_ms": 2, "threads": 1, "num_cpus": 1})
        serve.run(app, name="ner", route_prefix="/")
        yield c, port


def _replicas() -> list[str]:
    """Names of the live Serve replica actors (the state API needs the dashboard, which these clusters lack)."""
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and a["name"].startswith("SERVE_REPLICA::")]


RECORD = {"text": "Ada Lovelace lives in London", "aggregation_strategy": "simple"}


def _post(port):
    """One request with a bounded retry on 5xx / connection errors (inference is idempotent): (ok, raw failures)."""
    failures = 0
    for attempt in range(RETRIES + 1):
        try:
            status, _, body = request(port, "POST", "/v1/ner/ner", RECORD, timeout=30)
        except OSError:
            status, body = None, b""
        if status == 200:
            return json.loads(body)["result"], failures
        if status is not None and status < 500:
            raise AssertionError(f"client error {status}: {body[:200]}")
        failures += 1
        time.sleep(0.2 * 2 ** attempt)
    return None, failures


def test_replicas_spread_and_share_traffic(cluster):
    _, port = cluster
    assert len(_replicas()) == 2
    seen = set()
    for _ in range(40):
        status, _, body = request(port, "GET", "/v1/ner/stats")
        assert status == 200
        s = json.loads(body)
        seen.add((s["pid"], s["node_id"]))
    assert len(seen) == 2 and len({n for _, n in seen}) == 2, f"replicas seen: {seen} (both nodes must serve)"


def test_kill_a_replica_under_load_loses_nothing_with_retry(cluster):
    import ray

    _, port = cluster
    want, _ = _post(port)
    stop = threading.Event()
    outcomes = []

    def client():
        while not stop.is_set():
            outcomes.append(_post(port))

    victim = _replicas()[0]
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client) for _ in range(CLIENTS)]
        time.sleep(2.0)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        killed_at = time.monotonic()
        time.sleep(LOAD_S - 2.0)
        stop.set()
        for f in futures:
            f.result()
    lost = [o for o in outcomes if o[0] is None]
    raw = sum(o[1] for o in outcomes)
    assert all(o[0] == want for o in outcomes if o[0] is not None)
    # Serve replaces the dead replica
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_replicas()) < 2:
        time.sleep(0.5)
    restarted = time.monotonic() - killed_at
    print(f"\nkill under load: {len(outcomes)} requests, {raw} raw 5xx/connection failures retried, {len(lost)} lost; "
          f"2 replicas again {restarted:.1f}s after the kill")
    assert not lost and len(outcomes) >= 20
    assert len(_replicas()) == 2


def test_batch_on_ray_data_equals_local(cluster, task_exports, tmp_path):
    from yoso_deploy.serving.batch import run_batch

    texts = ["Ada Lovelace lives in London", "Otto moved to Lima in 2004", "Clara bought a red lamp in Oslo",
             "", "Grace Hopper visited Paris and Rome"]
    lines = [json.dumps({"id": i, "text": t, "aggregation_strategy": "first"}) for i, t in enumerate(texts * 4)]
    lines.append("{broken")
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    local = run_batch(task_exports["token-classification"], src, tmp_path / "local.jsonl", batch_size=3,
                      progress=False)
    dist = run_batch(task_exports["token-classification"], src, tmp_path / "ray.jsonl", batch_size=3, use_ray=True,
                     workers=2, progress=False)
    assert local.written == dist.written == 21 and local.errors == dist.errors == 5  # 4 empty texts + 1 bad line

    def load(p):
        return {json.dumps(r["id"]): r for r in map(json.loads, p.read_text().splitlines())}

    a, b = load(tmp_path / "local.jsonl"), load(tmp_path / "ray.jsonl")
    assert a.keys() == b.keys()
    for k in a:
        ra, rb = a[k], b[k]
        assert ra.keys() == rb.keys() and ra.get("error") == rb.get("error")
        for ea, eb in zip(ra.get("result", []), rb.get("result", [])):
            assert {**ea, "score": 0} == {**eb, "score": 0} and ea["score"] == pytest.approx(eb["score"], rel=1e-5)
