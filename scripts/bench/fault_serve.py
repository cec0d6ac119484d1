#!/usr/bin/env python3
"""Fault test: kill a Serve replica under load on a local 2-node Ray cluster; count what the client loses.

A private ``ray.cluster_utils.Cluster`` of 2 nodes on this machine (127.0.0.1 only, started and stopped here),
the export served with 2 replicas (one per node; proxy on the head, routing to both nodes), a bounded loopback
load of --clients threads for --seconds sending Open Inference Protocol requests (binary, batch 1, S=--seq),
each retried on 5xx / connection errors at most --retries times with exponential back-off (inference is
idempotent, so a retry is safe). --kills replicas are killed (``ray.kill``, evenly spaced in the run); Serve
starts replacements. Every 200 answer is checked against the in-process runtime (1e-4).

Reports: requests, answered on the first try, answered after retries, lost (retries exhausted: the goal is 0),
raw failures by kind, most attempts one request needed, seconds until 2 replicas were running again after each
kill. Writes OUT.json and OUT.md; exit 1 if a request was lost or an answer was wrong.

    python scripts/bench/fault_serve.py --model out/qa                 # 30 s, 4 clients, 1 kill
    python scripts/bench/fault_serve.py --model out/qa --seconds 60 --kills 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import shlex
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # support.servers: private Ray clusters and the loopback client
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve import decode_response, load_avg, make_inputs, oip_body  # noqa: E402


def replicas() -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and a["name"].startswith("SERVE_REPLICA::")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "out" / "qa")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--kills", type=int, default=1)
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="ORT threads per replica")
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf" / "serve_fault"))
    args = ap.parse_args()
    if not 0 < args.seconds <= 600 or not 1 <= args.clients <= 64:
        sys.exit("--seconds must be in (0, 600] and --clients in 1..64: the load is bounded")

    from ray import serve

    from yoso_deploy.runtime import YosoOrtModel
    from yoso_deploy.serving import build_app
    from support.servers import free_port, ray_cluster, ray_environment, wait_ready

    model = YosoOrtModel.from_pretrained(args.model, intra_op_threads=1)
    feeds = make_inputs(model, args.seq)
    want = model.run(feeds)
    del model
    body, headers = oip_body(feeds)
    load_before = load_avg()
    port = free_port()
    name = "fault"
    path = f"/v2/models/{name}/infer"
    with ray_environment(spread_over_nodes=True), ray_cluster(nodes=2, cpus_per_node=2):
        import ray

        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        serve.run(build_app({"model": str(args.model), "name": name, "replicas": 2, "max_batch_size": 8,
                             "batch_wait_ms": 2, "threads": args.threads, "num_cpus": 1}), name=name, route_prefix="/")
        wait_ready(port, f"/v2/models/{name}/ready", timeout=120)
        assert len(replicas()) == 2, replicas()
        stop = threading.Event()
        lock = threading.Lock()
        tally = {"requests": 0, "first_try": 0, "after_retry": 0, "lost": 0, "wrong": 0, "max_attempts": 1}
        raw: dict[str, int] = {}

        def one(conn):
            for attempt in range(args.retries + 1):
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    r = conn.getresponse()
                    payload, status = r.read(), r.status
                    hdrs = {k.lower(): v for k, v in r.getheaders()}
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    status, kind = None, f"connection ({type(e).__name__})"
                if status == 200:
                    got = decode_response(payload, hdrs)
                    ok = all(np.allclose(got[n], want[n], rtol=1e-4, atol=1e-4) for n in want)
                    return conn, ("first_try" if attempt == 0 else "after_retry") if ok else "wrong", attempt + 1, None
                if status is not None and status < 500:
                    raise AssertionError(f"client error {status}: {payload[:300]!r}")
                kind = kind if status is None else f"HTTP {status}"
                with lock:
                    raw[kind] = raw.get(kind, 0) + 1
                time.sleep(min(2.0, 0.1 * 2 ** attempt))
            return conn, "lost", args.retries + 1, kind

        def client():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                conn, outcome, attempts, _ = one(conn)
                with lock:
                    tally["requests"] += 1
                    tally[outcome] += 1
                    tally["max_attempts"] = max(tally["max_attempts"], attempts)
            conn.close()

        restarts = []
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(client) for _ in range(args.clients)]
            for k in range(args.kills):
                time.sleep(max(0.0, t0 + args.seconds * (k + 1) / (args.kills + 1) - time.monotonic()))
                victim = replicas()[0]
                ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
                killed = time.monotonic()
                print(f"t={killed - t0:5.1f}s killed {victim}", flush=True)
                deadline = killed + 60
                while time.monotonic() < deadline and (len(replicas()) < 2 or victim in replicas()):
                    time.sleep(0.2)
                restarts.append(round(time.monotonic() - killed, 1))
                print(f"          2 replicas again after {restarts[-1]}s", flush=True)
            time.sleep(max(0.0, t0 + args.seconds - time.monotonic()))
            stop.set()
            for f in futures:
                f.result()
        wall = time.monotonic() - t0
        serve.delete(name)
    res = {"command": " ".join(["python", "scripts/bench/fault_serve.py", *map(shlex.quote, sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": load_before,
           "load_after": load_avg(), "seconds": round(wall, 1), "clients": args.clients, "kills": args.kills,
           "retries": args.retries, "seq": args.seq, **tally, "raw_failures": raw, "restart_s": restarts,
           "rps": round(tally["requests"] / wall, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text("\n".join([
        f"# Replica killed under load ({res['date']})", "", f"Command: `{res['command']}`", "",
        f"Local 2-node Ray cluster (`ray.cluster_utils.Cluster`, 127.0.0.1), 2 replicas (one per node), proxy on the "
        f"head routing to both nodes; {args.clients} loopback clients for {res['seconds']} s, Open Inference Protocol, "
        f"batch 1, S={args.seq}; bounded retry on 5xx / connection errors (at most {args.retries} retries, back-off "
        f"0.1 s doubling). Load average before {load_before}, after {res['load_after']}.", "",
        "| requests | req/s | answered first try | answered after retry | lost | wrong answers | raw failures "
        "| most attempts | replicas again after (s) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---|",
        f"| {res['requests']} | {res['rps']} | {res['first_try']} | {res['after_retry']} | {res['lost']} | "
        f"{res['wrong']} | {', '.join(f'{k}: {v}' for k, v in raw.items()) or 'none'} | {res['max_attempts']} | "
        f"{', '.join(map(str, restarts))} |", ""]))
    print(json.dumps(res, indent=1))
    return 1 if res["lost"] or res["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
