#!/usr/bin/env python3
"""Serving benchmark: `yoso-deploy serve`'s Ray Serve application over loopback vs the runtime in-process.

In one run, on one machine:

  in-process   one runtime session (YosoOrtModel, libyoso_ort.so) in this process, batch 1, calls back to back:
               p50/p99 latency and requests/s -- the reference, timed in slices alternating with the serve
               slices of every point (--rounds), so that load from elsewhere on a shared machine hits both alike;
  serve        the Serve application of the same export on a private one-node Ray (127.0.0.1 only, started and
               stopped here), dynamic batching on (--batch-wait-ms, --max-batch-size) and off (batch wait 0),
               driven by a bounded loopback client: C threads, one keep-alive HTTP connection each, Open
               Inference Protocol requests with binary tensors (what tritonclient.http sends), for --seconds
               per point (alternating with the in-process slices) after a warm-up; every answer must be 200 and the first one of each point must equal
               the in-process outputs (1e-4), else the run stops with exit 1.

Reported per (batching, S, concurrency): p50/p99 latency, requests/s, errors, and the dynamic-batching histogram
of the replica; and the issue's goals: serving overhead at concurrency 1 <= 10 ms p50 over in-process,
throughput at concurrency 16 >= 75 % of in-process single-session throughput, p99 <= 3 x p50. Writes
OUT.json, OUT.md (table + the exact command + machine load) and OUT.png (latency vs concurrency).

    python scripts/bench/bench_serve.py --model out/qa                         # S 128,512; C 1,4,16; ~4 minutes
    python scripts/bench/bench_serve.py --model out/qa --seconds 3 --seq-lens 128 --out /tmp/b
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

GOAL_OVERHEAD_MS = 10.0
GOAL_THROUGHPUT = 0.75
GOAL_TAIL = 3.0


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q)) if xs else float("nan")


def make_inputs(model, seq: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    vocab = int(model.config.get("vocab_size", 100))
    ids = rng.integers(5, vocab, (1, seq)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    return {k: v for k, v in feeds.items() if k in model.input_names}


class InProcess:
    """One runtime session (batch 1, back to back): the reference, timed in slices between the serve slices."""

    def __init__(self, model_dir, seqs, threads):
        from yoso_deploy.runtime import YosoOrtModel

        self.model = YosoOrtModel.from_pretrained(model_dir, intra_op_threads=threads)
        self.outputs = list(self.model.output_names)
        self.expected = {}
        for s in seqs:
            feeds = make_inputs(self.model, s)
            self.expected[s] = (feeds, self.model.run(feeds))
            for _ in range(5):
                self.model.run(feeds)

    def slice(self, seq, seconds) -> tuple[list, float]:
        feeds = self.expected[seq][0]
        lat = []
        t0 = time.perf_counter()
        t_end = t0 + seconds
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            self.model.run(feeds)
            lat.append(time.perf_counter() - t)
        return lat, time.perf_counter() - t0


def oip_body(name_dtype_arrays) -> tuple[bytes, dict]:
    """An Open Inference Protocol request with binary inputs and binary outputs (tritonclient.http's default)."""
    header = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": "INT64",
                          "parameters": {"binary_data_size": a.nbytes}} for n, a in name_dtype_arrays.items()],
              "parameters": {"binary_data_output": True}}
    h = json.dumps(header).encode()
    body = h + b"".join(np.ascontiguousarray(a).tobytes() for a in name_dtype_arrays.values())
    return body, {"Inference-Header-Content-Length": str(len(h)), "Content-Type": "application/octet-stream"}


def decode_response(body: bytes, headers: dict) -> dict:
    n = int(headers.get("inference-header-content-length", len(body)))
    head = json.loads(body[:n])
    out, off = {}, n
    for o in head["outputs"]:
        size = o.get("parameters", {}).get("binary_data_size")
        if size is None:
            out[o["name"]] = np.array(o["data"], dtype=np.float32).reshape(o["shape"])
        else:
            out[o["name"]] = np.frombuffer(body[off:off + size], dtype=np.float32).reshape(o["shape"])
            off += size
    return out


def drive(port, path, body, headers, concurrency, seconds, warmup_s):
    """C client threads, one keep-alive connection each, for warmup + seconds: latencies of the timed part,
    status counts, the first 200 answer."""
    import http.client

    stop_at = time.monotonic() + warmup_s + seconds
    timed_from = time.monotonic() + warmup_s
    lat, statuses, first = [], {}, []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency)

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, codes = [], {}
        barrier.wait()
        try:
            while True:
                t = time.monotonic()
                if t >= stop_at:
                    break
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    r = conn.getresponse()
                    payload = r.read()
                    status = r.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    status, payload = "connection", b""
                dt = time.monotonic() - t
                if t >= timed_from:
                    codes[status] = codes.get(status, 0) + 1
                    if status == 200:
                        mine.append(dt)
                if status == 200 and not first:
                    with lock:
                        if not first:
                            first.append((payload, {k.lower(): v for k, v in r.getheaders()}))
        finally:
            conn.close()
        with lock:
            lat.extend(mine)
            for k, v in codes.items():
                statuses[str(k)] = statuses.get(str(k), 0) + v

    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    return lat, statuses, first[0] if first else None


def stats(port, name):
    from support.servers import request

    status, _, body = request(port, "GET", f"/v1/{name}/stats")
    return json.loads(body)["batching"] if status == 200 else {}


def hist_delta(before, after) -> dict:
    a, b = after.get("items_per_run", {}), before.get("items_per_run", {})
    return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}


def measure(port, path, body, headers, c, s, ref: InProcess, args, want=None) -> dict:
    """One point: --rounds alternating slices of the in-process reference (same S) and of the loopback client."""
    part = args.seconds / args.rounds
    lat, codes, wall, ilat, iwall = [], {}, 0.0, [], 0.0
    for r in range(args.rounds):
        x, w = ref.slice(s, part)
        ilat += x
        iwall += w
        t0 = time.perf_counter()
        warm = args.warmup if r == 0 else 0.3
        got_lat, got_codes, first = drive(port, path, body, headers, c, part, warm)
        wall += time.perf_counter() - t0 - warm
        lat += got_lat
        for k, v in got_codes.items():
            codes[k] = codes.get(k, 0) + v
        if first is None:
            sys.exit(f"FAILED: no 200 answer from {path} at S={s}, C={c}: {got_codes}")
        if want is not None:
            got = decode_response(*first)
            for n in ref.outputs:
                if not np.allclose(got[n], want[n], rtol=1e-4, atol=1e-4):
                    sys.exit(f"FAILED: output {n} over HTTP differs from in-process at S={s}, C={c} "
                             f"(max |diff| {np.abs(got[n] - want[n]).max():.3g})")
    return {"seq": s, "concurrency": c, "requests": len(lat), "errors": sum(v for k, v in codes.items() if k != "200"),
            "statuses": codes, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "rps": len(lat) / wall,
            "in_process": {"requests": len(ilat), "p50_ms": pct(ilat, 50), "p99_ms": pct(ilat, 99),
                           "rps": len(ilat) / iwall}}


def echo_deployment(answers: dict):
    """The floor: a Serve deployment that answers the benchmark's requests with the precomputed response bytes
    (no model, no parsing) -- what the proxy/router/replica hops alone cost on this machine."""
    from ray import serve
    from starlette.responses import Response

    @serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
    class Echo:
        def __init__(self, answers):
            self.answers = answers

        async def __call__(self, request):
            await request.body()
            seq = int(request.query_params.get("s", "0"))
            body, headers = self.answers[seq]
            return Response(content=body, headers=headers)

    return Echo.bind(answers)


def show(label, p):
    ip = p["in_process"]
    print(f"  {label:12s} S={p['seq']:4d} C={p['concurrency']:2d}: p50 {p['p50_ms']:7.2f} ms  p99 {p['p99_ms']:7.2f} ms"
          f"  {p['rps']:6.1f} req/s  errors {p['errors']} | in-process p50 {ip['p50_ms']:6.2f} ms "
          f"{ip['rps']:6.1f} req/s | runs by size {p.get('items_per_run', '-')}", flush=True)


def serve_points(args, ref: InProcess, seqs, concs) -> tuple[list[dict], list[dict]]:
    """Every (batching, S, C) point, and the echo floor at C=1 per S."""
    from ray import serve

    from yoso_deploy.serving import build_app
    from support.servers import free_port, ray_cluster, ray_environment, wait_ready

    points, floor = [], []
    port = free_port()
    modes = [("on", args.batch_wait_ms), ("off", 0.0)]
    answers = {}
    with ray_environment(), ray_cluster(nodes=1, cpus_per_node=max(2, os.cpu_count() or 2)):
        serve.start(http_options={"host": "127.0.0.1", "port": port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        for mode, wait_ms in modes:
            name = f"bench-{mode}"
            t0 = time.perf_counter()
            serve.run(build_app({"model": str(args.model), "name": name, "max_batch_size": args.max_batch_size,
                                 "batch_wait_ms": wait_ms, "threads": args.threads,
                                 "max_ongoing_requests": max(concs) * 2, "max_queued_requests": max(concs) * 8}),
                      name=name, route_prefix="/")
            wait_ready(port, f"/v2/models/{name}/ready", timeout=120)
            print(f"serve, batching {mode}: ready in {time.perf_counter() - t0:.1f}s", flush=True)
            path = f"/v2/models/{name}/infer"
            for s in seqs:
                feeds, want = ref.expected[s]
                body, headers = oip_body(feeds)
                if s not in answers:
                    from support.servers import request

                    status, hdrs, payload = request(port, "POST", path, body, headers)
                    answers[s] = (payload, {k: v for k, v in hdrs.items()
                                            if k in ("content-type", "inference-header-content-length")})
                for c in concs:
                    before = stats(port, name)
                    load = load_avg()
                    p = {"batching": mode, "batch_wait_ms": wait_ms, "load_before": load,
                         **measure(port, path, body, headers, c, s, ref, args, want)}
                    p["items_per_run"] = hist_delta(before, stats(port, name))
                    points.append(p)
                    show(f"batching {mode}", p)
            serve.delete(name)
        if args.floor:
            serve.run(echo_deployment(answers), name="echo", route_prefix="/echo")
            wait_ready(port, f"/echo?s={seqs[0]}", timeout=60)
            for s in seqs:
                body, headers = oip_body(ref.expected[s][0])
                p = {"load_before": load_avg(), **measure(port, f"/echo?s={s}", body, headers, 1, s, ref, args)}
                floor.append(p)
                show("echo floor", p)
            serve.delete("echo")
    return points, floor


def goals(points, seqs, concs) -> list[dict]:
    """The issue's goals, each against the in-process slices interleaved with the same point."""
    out = []
    c_lo, c_hi = min(concs), max(concs)
    for mode in ("on", "off"):
        for s in seqs:
            pts = {p["concurrency"]: p for p in points if p["batching"] == mode and p["seq"] == s}
            if c_lo == 1 and 1 in pts:
                ov = pts[1]["p50_ms"] - pts[1]["in_process"]["p50_ms"]
                out.append({"goal": f"overhead p50 at C=1 <= {GOAL_OVERHEAD_MS:g} ms", "batching": mode, "seq": s,
                            "value": round(ov, 2), "met": ov <= GOAL_OVERHEAD_MS})
            if c_hi in pts:
                r = pts[c_hi]["rps"] / pts[c_hi]["in_process"]["rps"]
                out.append({"goal": f"req/s at C={c_hi} >= {GOAL_THROUGHPUT:.0%} of in-process", "batching": mode,
                            "seq": s, "value": round(r, 3), "met": r >= GOAL_THROUGHPUT})
            worst = max(pts.values(), key=lambda p: p["p99_ms"] / p["p50_ms"])
            t = worst["p99_ms"] / worst["p50_ms"]
            out.append({"goal": f"p99 <= {GOAL_TAIL:g} x p50 (worst C={worst['concurrency']})", "batching": mode,
                        "seq": s, "value": round(t, 2), "met": t <= GOAL_TAIL})
    return out


def write_md(path, args, meta, points, floor, met):
    lines = [f"# Serving benchmark ({meta['date']})", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}; load average before {meta['load_before']}, after {meta['load_after']} "
             "(the cores are shared with other work). Model: "
             f"`{meta['model']}` ({meta['model_desc']}); ORT threads {args.threads or 'all cores'}; "
             f"max batch {args.max_batch_size}, batch wait {args.batch_wait_ms:g} ms when batching is on; "
             f"{args.seconds:g} s of serve load and {args.seconds:g} s of in-process runs per point, alternated in "
             f"{args.rounds} rounds (warm-up {args.warmup:g} s first); binary Open Inference Protocol "
             "requests over one keep-alive loopback connection per client thread. The in-process columns are the "
             "runtime alone (one session, batch 1, back to back) timed in the slices between that point's serve "
             "slices.", "",
             "| batching | S | C | serve p50 ms | serve p99 ms | serve req/s | errors | in-process p50 ms | "
             "in-process req/s | p50 overhead ms | req/s vs in-process | model runs by items per run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in points:
        hist = ", ".join(f"{k}:{v}" for k, v in p["items_per_run"].items())
        ip = p["in_process"]
        lines.append(f"| {p['batching']} | {p['seq']} | {p['concurrency']} | {p['p50_ms']:.2f} | "
                     f"{p['p99_ms']:.2f} | {p['rps']:.1f} | {p['errors']} | {ip['p50_ms']:.2f} | {ip['rps']:.1f} | "
                     f"{p['p50_ms'] - ip['p50_ms']:+.2f} | {p['rps'] / ip['rps']:.0%} | {hist} |")
    if floor:
        lines += ["", "The floor: a Serve deployment that answers with the precomputed response bytes (no model, no "
                  "parsing), C=1, same client and slices -- the proxy -> router -> replica hops alone:", "",
                  "| S | echo p50 ms | echo p99 ms | echo req/s | in-process p50 ms (same slices) |",
                  "|---:|---:|---:|---:|---:|"]
        for p in floor:
            lines.append(f"| {p['seq']} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['rps']:.1f} | "
                         f"{p['in_process']['p50_ms']:.2f} |")
    lines += ["", "Goals (from the issue):", "", "| goal | batching | S | value | met |", "|---|---|---:|---:|---|"]
    for g in met:
        lines.append(f"| {g['goal']} | {g['batching']} | {g['seq']} | {g['value']} | {'yes' if g['met'] else 'NO'} |")
    lines += ["", f"Plot: `{Path(args.out).name}.png`.", ""]
    Path(path).write_text("\n".join(lines))


def plot(path, points, seqs):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib)")
        return
    fig, axes = plt.subplots(1, len(seqs), figsize=(5.5 * len(seqs), 4), squeeze=False)
    for ax, s in zip(axes[0], seqs):
        for mode, color in (("on", "tab:blue"), ("off", "tab:orange")):
            pts = sorted((p for p in points if p["seq"] == s and p["batching"] == mode), key=lambda p: p["concurrency"])
            cs = [p["concurrency"] for p in pts]
            ax.plot(cs, [p["p50_ms"] for p in pts], "o-", color=color, label=f"serve, batching {mode}: p50")
            ax.plot(cs, [p["p99_ms"] for p in pts], "s--", color=color, alpha=0.6, label=f"serve, batching {mode}: p99")
        ref = [p["in_process"]["p50_ms"] for p in points if p["seq"] == s]
        ax.axhline(float(np.median(ref)), color="gray", ls=":", label="in-process p50 (median of the slices)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"S = {s}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "out" / "qa", help="export directory (default out/qa)")
    ap.add_argument("--seq-lens", default="128,512")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=6.0,
                    help="timed seconds per point, serve and in-process each (bounded)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of serve and in-process per point")
    ap.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds per point")
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1,
                    help="ORT intra-op threads, in-process and of the replica (default 1: the proxy and the client "
                         "need a core too)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the echo deployment (the Serve hops alone)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf" / "serve_bench"), help="output prefix")
    args = ap.parse_args()
    seqs = [int(x) for x in args.seq_lens.split(",")]
    concs = sorted(int(x) for x in args.concurrency.split(","))
    if not (args.model / "yoso_export.json").is_file():
        sys.exit(f"{args.model} is not an export directory; run 'yoso-deploy export --task qa --output out/qa'")
    if args.seconds <= 0 or args.seconds > 60 or not 1 <= args.rounds <= 10:
        sys.exit("--seconds must be in (0, 60] and --rounds in 1..10: the benchmark is bounded")
    manifest = json.loads((args.model / "yoso_export.json").read_text())
    cfg = json.loads((args.model / "config.json").read_text())
    cmd = " ".join(["python", "scripts/bench/bench_serve.py", *map(shlex.quote, sys.argv[1:])])
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": cmd,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "load_before": load_avg(), "model": str(args.model),
            "model_desc": f"{manifest['task']}, {cfg.get('num_hidden_layers')} layers, hidden {cfg.get('hidden_size')}"}
    print(f"load average {meta['load_before']}", flush=True)
    ref = InProcess(args.model, seqs, args.threads)
    points, floor = serve_points(args, ref, seqs, concs)
    meta["load_after"] = load_avg()
    met = goals(points, seqs, concs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "args": {k: str(v) for k, v in vars(args).items()},
                                                    "serve": points, "echo_floor": floor, "goals": met}, indent=1))
    write_md(out.with_suffix(".md"), args, meta, points, floor, met)
    plot(out.with_suffix(".png"), points, seqs)
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}")
    missed = [g for g in met if not g["met"]]
    for g in met:
        print(f"goal {g['goal']}, batching {g['batching']}, S={g['seq']}: {g['value']} {'met' if g['met'] else 'NOT met'}")
    if missed:
        print(f"{len(missed)} goal(s) not met (see {out.with_suffix('.md')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
