#!/usr/bin/env python3
"""Soak test: serve an export for --minutes under a modest steady load and record the RSS of every Ray process.

A private one-node Ray (127.0.0.1 only, started and stopped here) runs the Serve application (1 replica, dynamic
batching on). A loopback client sends --rate requests/s (paced, bounded), cycling through a fixed mix: Open
Inference Protocol requests (binary, batch 1, S = 32..512) and task-endpoint requests (QA: question + context,
windows batched through the same queue) and a bad request (400) every 20th. Every --interval seconds the RSS
and PSS of each process of the deployment (replica, proxy, controller, raylet, GCS, other workers) is read
from /proc.

Reports RSS start (first sample after --warmup-s), end, max and the growth over the run per component, the
least-squares slope of the replica's RSS over the second half (MiB/min), request counts by status. Writes
OUT.json (every sample), OUT.md and OUT.png (RSS curves). Exit 1 if any request got an unexpected status.

    python scripts/bench/soak_serve.py --minutes 10 --rate 10
    python scripts/bench/soak_serve.py --minutes 1 --rate 5 --out /tmp/soak
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # support.servers: private Ray clusters and the loopback client
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve import load_avg, make_inputs, oip_body  # noqa: E402

COMPONENTS = (("replica", "ServeReplica"), ("proxy", "ProxyActor"), ("controller", "ServeController"),
              ("raylet", "raylet"), ("gcs", "gcs_server"))


def component(cmd: str) -> str:
    for name, needle in COMPONENTS:
        if needle in cmd:
            return name
    return "other"


def sample() -> dict:
    from support import procs

    mem: dict[str, dict[str, int]] = {}
    for pid in procs.descendants(os.getpid()):
        m = procs.memory_kb(pid)
        c = component(procs.cmdline(pid))
        d = mem.setdefault(c, {"rss": 0, "pss": 0, "procs": 0})
        d["rss"] += m["rss"]
        d["pss"] += m["pss"]
        d["procs"] += 1
    return mem


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "out" / "qa")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=10.0, help="requests per second (paced)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--warmup-s", type=float, default=60.0, help="RSS 'start' is the first sample after this")
    ap.add_argument("--threads", type=int, default=1, help="ORT threads of the replica")
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf" / "serve_soak"))
    args = ap.parse_args()
    if not 0 < args.minutes <= 120 or not 0 < args.rate <= 200:
        sys.exit("--minutes must be in (0, 120] and --rate in (0, 200]: the soak is bounded")
    if args.warmup_s >= args.minutes * 60:
        args.warmup_s = args.minutes * 60 / 4

    from ray import serve

    from yoso_deploy.runtime import YosoOrtModel
    from yoso_deploy.serving import build_app
    from support.servers import free_port, ray_cluster, ray_environment, wait_ready

    manifest = json.loads((args.model / "yoso_export.json").read_text())
    model = YosoOrtModel.from_pretrained(args.model, intra_op_threads=1)
    max_len = min(512, model.max_sequence_length)
    name = "soak"
    mix = []
    for i, s in enumerate(sorted({32, 100, 128, 257, 384, max_len})):
        body, headers = oip_body(make_inputs(model, min(s, max_len), seed=i))
        mix.append(("POST", f"/v2/models/{name}/infer", body, headers, 200))
    del model
    if manifest["task"] == "qa":
        context = " ".join(f"Person{i} moved to City{i} in {1900 + i}." for i in range(60))
        for q in ("Where did Person7 move?", "When did Person42 move?"):
            mix.append(("POST", f"/v1/{name}/qa", json.dumps({"question": q, "context": context}).encode(),
                        {"Content-Type": "application/json"}, 200))
    bad = ("POST", f"/v2/models/{name}/infer", b"{not json", {}, 400)

    port = free_port()
    counts: dict[str, int] = {}
    unexpected = []
    samples = []
    load_before = load_avg()
    with ray_environment(), ray_cluster(nodes=1, cpus_per_node=2):
        serve.start(http_options={"host": "127.0.0.1", "port": port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        serve.run(build_app({"model": str(args.model), "name": name, "max_batch_size": 8, "batch_wait_ms": 5,
                             "threads": args.threads}), name=name, route_prefix="/")
        wait_ready(port, f"/v2/models/{name}/ready", timeout=120)
        stop = threading.Event()
        lock = threading.Lock()

        def client():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            period = 1.0 / args.rate
            nxt = time.monotonic()
            k = 0
            while not stop.is_set():
                method, path, body, headers, expect = bad if k % 20 == 19 else mix[k % len(mix)]
                k += 1
                try:
                    conn.request(method, path, body=body, headers=headers)
                    r = conn.getresponse()
                    r.read()
                    status = r.status
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    status = f"connection {type(e).__name__}"
                with lock:
                    counts[str(status)] = counts.get(str(status), 0) + 1
                    if status != expect:
                        unexpected.append((path, status))
                nxt += period
                stop.wait(max(0.0, nxt - time.monotonic()))
            conn.close()

        t0 = time.monotonic()
        th = threading.Thread(target=client, daemon=True)
        th.start()
        end = t0 + args.minutes * 60
        while True:
            now = time.monotonic()
            with lock:
                done = sum(counts.values())
            samples.append({"t_s": round(now - t0, 1), "requests": done, "mem_kb": sample()})
            last = samples[-1]
            rep = last["mem_kb"].get("replica", {}).get("rss", 0) / 1024
            tot = sum(v["rss"] for v in last["mem_kb"].values()) / 1024
            print(f"t={last['t_s']:6.1f}s requests {last['requests']:6d}  replica RSS {rep:7.1f} MiB  "
                  f"all Ray {tot:7.1f} MiB", flush=True)
            if now >= end:
                break
            time.sleep(max(0.0, min(args.interval, end - time.monotonic())))
        stop.set()
        th.join(timeout=70)
        serve.delete(name)
    wall = time.monotonic() - t0

    comps = sorted({c for s in samples for c in s["mem_kb"]})
    t = np.array([s["t_s"] for s in samples])
    after = [i for i, s in enumerate(samples) if s["t_s"] >= args.warmup_s] or [0]
    summary = {}
    for c in comps + ["all"]:
        rss = np.array([(sum(v["rss"] for v in s["mem_kb"].values()) if c == "all"
                         else s["mem_kb"].get(c, {}).get("rss", 0)) / 1024 for s in samples])
        half = t >= t[-1] / 2
        slope = float(np.polyfit(t[half] / 60, rss[half], 1)[0]) if half.sum() >= 3 else float("nan")
        summary[c] = {"start_mib": round(float(rss[after[0]]), 1), "end_mib": round(float(rss[-1]), 1),
                      "max_mib": round(float(rss[after].max()), 1), "first_mib": round(float(rss[0]), 1),
                      "growth_mib": round(float(rss[-1] - rss[after[0]]), 1),
                      "slope_second_half_mib_per_min": round(slope, 2)}
    res = {"command": " ".join(["python", "scripts/bench/soak_serve.py", *map(shlex.quote, sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "minutes": round(wall / 60, 2),
           "rate": args.rate, "load_before": load_before, "load_after": load_avg(), "requests": counts,
           "unexpected": unexpected[:20], "unexpected_count": len(unexpected), "warmup_s": args.warmup_s,
           "summary": summary, "samples": samples}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    lines = [f"# Serving soak ({res['date']})", "", f"Command: `{res['command']}`", "",
             f"{res['minutes']} min at {args.rate:g} req/s (mix: OIP S=32..512, QA task requests, a bad request "
             f"every 20th), 1 replica, batching on; requests by status {counts}; unexpected statuses "
             f"{len(unexpected)}. Load average before {load_before}, after {res['load_after']}. RSS sampled every "
             f"{args.interval:g} s; 'start' is the first sample after {args.warmup_s:g} s.", "",
             "| process | RSS first MiB | start MiB | end MiB | max MiB | growth MiB | slope 2nd half MiB/min |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c, v in summary.items():
        lines.append(f"| {c} | {v['first_mib']} | {v['start_mib']} | {v['end_mib']} | {v['max_mib']} | "
                     f"{v['growth_mib']} | {v['slope_second_half_mib_per_min']} |")
    lines += ["", f"Curve: `{out.name}.png`.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for c in comps:
            ax.plot(t / 60, [s["mem_kb"].get(c, {}).get("rss", 0) / 1024 for s in samples], label=c)
        ax.set_xlabel("minutes")
        ax.set_ylabel("RSS (MiB)")
        ax.set_title(f"yoso-deploy serve soak: {args.rate:g} req/s, {res['minutes']} min")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=110)
    except ImportError:
        print("no plot: matplotlib is not installed")
    print("\n".join(lines))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
