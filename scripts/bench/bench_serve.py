#!/usr/bin/env python3
"""Serving benchmark: `yoso-deploy serve`'s two engines over loopback vs the runtime in-process, in one run.

  in-process   one runtime session (YosoOrtModel, libyoso_ort.so) in this process, batch 1, calls back to back:
               p50/p99 latency and requests/s -- the reference, timed in slices alternating with the serve
               slices of every point (--rounds), so that load from elsewhere on a shared machine hits both alike;
  asgi         `yoso-deploy serve` (the default engine: uvicorn, no Ray) in a subprocess, as users start it;
  ray          the Ray Serve application of the same export on a private one-node Ray (127.0.0.1 only), with its
               default dynamic batching (--ray-batch-wait-ms);

each driven by a bounded loopback client: C threads, one keep-alive HTTP connection each, Open Inference Protocol
requests with binary tensors (what tritonclient.http sends), for --seconds per point after a warm-up; every answer
must be 200 and the first one of each point must equal the in-process outputs (1e-4), else the run stops (exit 1).

The attack scenario (per engine): 8 clients send small requests (S = the smallest --seq-lens) for --attack-seconds,
first alone, then while one more client sends maximum-size QA requests (a context just under --max-tokens) back to
back: the small requests' p50/p99 with and without the attacker, and what the attacker got (200s, 503s).

Goals (the issue's): asgi overhead at C=1 <= 2 ms p50 over in-process; asgi requests/s at C=16 >= 85 % of
in-process; small requests' p99 during the attack <= 3 x their p99 without it; Ray overhead at C=1 <= 10 ms.
Writes OUT.json, OUT.md (tables, goals, the command, CPU model and load) and OUT.png (latency vs concurrency).

    python scripts/bench/bench_serve.py --model out/qa                      # S 128,512; C 1,4,16; ~6 minutes
    python scripts/bench/bench_serve.py --model out/qa --seconds 2 --seq-lens 128 --engines asgi --out /tmp/b
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

GOAL_ASGI_OVERHEAD_MS = 2.0
GOAL_ASGI_THROUGHPUT = 0.85
GOAL_RAY_OVERHEAD_MS = 10.0
GOAL_ATTACK = 3.0
SMALL_CLIENTS = 8

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


def show(label, p):
    ip = p["in_process"]
    print(f"  {label:6s} S={p['seq']:4d} C={p['concurrency']:2d}: p50 {p['p50_ms']:7.2f} ms  p99 {p['p99_ms']:7.2f} ms"
          f"  {p['rps']:6.1f} req/s  errors {p['errors']} | in-process p50 {ip['p50_ms']:6.2f} ms "
          f"{ip['rps']:6.1f} req/s", flush=True)


class Engine:
    """A started engine: its label, port and served model name, stopped by :meth:`close`."""

    def __init__(self, label, port, name, close):
        self.label, self.port, self.name, self._close = label, port, name, close

    def close(self):
        self._close()


def start_asgi(args) -> Engine:
    import signal
    import subprocess

    from support.servers import free_port, wait_ready

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "yoso_deploy.cli", "serve", "--model", str(args.model), "--name",
                             "bench", "--port", str(port), "--threads", str(args.threads),
                             "--max-batch-size", str(args.max_batch_size), "--max-tokens", str(args.max_tokens)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    wait_ready(port, "/v2/models/bench/ready", timeout=120, proc=proc)
    cold = time.perf_counter() - t0
    print(f"asgi: ready in {cold:.1f}s (cold start of a new process)", flush=True)

    def close():
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        if proc.returncode != 0:
            sys.exit(f"FAILED: the asgi server exited {proc.returncode}")

    e = Engine("asgi", port, "bench", close)
    e.cold_start_s, e.pids = cold, [proc.pid]
    return e


def start_ray(args, stack) -> Engine:
    from ray import serve

    from support.servers import free_port, ray_cluster, ray_environment, wait_ready
    from yoso_deploy.serving import build_app

    port = free_port()
    t0 = time.perf_counter()
    stack.enter_context(ray_environment())
    stack.enter_context(ray_cluster(nodes=1, cpus_per_node=max(2, os.cpu_count() or 2)))
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    serve.run(build_app({"model": str(args.model), "name": "bench", "max_batch_size": args.max_batch_size,
                         "batch_wait_ms": args.ray_batch_wait_ms, "threads": args.threads, "max_tokens": args.max_tokens,
                         "max_ongoing_requests": 64, "max_queued_requests": 512}), name="bench", route_prefix="/")
    wait_ready(port, "/v2/models/bench/ready", timeout=180)
    cold = time.perf_counter() - t0
    print(f"ray: ready in {cold:.1f}s (cold start: Ray, Serve, the replica)", flush=True)
    e = Engine("ray", port, "bench", lambda: serve.delete("bench"))
    e.cold_start_s, e.pids = cold, []
    return e


def attacker_context(model_dir, max_tokens: int) -> str:
    """A context just under the server's --max-tokens: the largest QA request it admits."""
    from yoso_deploy.runtime.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(model_dir)
    sentence = "Ada Lovelace moved to Oslo in 1999 and Otto moved to Lima in 2004 with a red lamp. "
    per = tok.token_count(sentence)
    return sentence * max(1, (max_tokens - 64) // per)


def attack(engine: Engine, ref: InProcess, args, seq: int) -> dict:
    """8 small-request clients alone, then with one client sending maximum-size QA requests back to back."""
    import http.client

    feeds, _ = ref.expected[seq]
    body, headers = oip_body(feeds)
    path = f"/v2/models/{engine.name}/infer"
    alone, codes_alone, _ = drive(engine.port, path, body, headers, SMALL_CLIENTS, args.attack_seconds, args.warmup)
    big = json.dumps({"question": "Where did Ada move?", "context": attacker_context(args.model, args.max_tokens)})
    stop = threading.Event()
    got = {"statuses": {}, "seconds": []}

    def attacker():
        conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=300)
        while not stop.is_set():
            t = time.monotonic()
            conn.request("POST", f"/v1/{engine.name}/qa", body=big, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            got["statuses"][str(r.status)] = got["statuses"].get(str(r.status), 0) + 1
            got["seconds"].append(time.monotonic() - t)
            if r.status == 503:
                stop.wait(float(r.getheader("retry-after", "1")))
        conn.close()

    th = threading.Thread(target=attacker)
    th.start()
    time.sleep(0.5)  # the attacker's first request is running
    under, codes_under, _ = drive(engine.port, path, body, headers, SMALL_CLIENTS, args.attack_seconds, 0.0)
    stop.set()
    th.join(300)
    out = {"engine": engine.label, "seq": seq, "clients": SMALL_CLIENTS, "seconds": args.attack_seconds,
           "alone": {"p50_ms": pct(alone, 50), "p99_ms": pct(alone, 99), "requests": len(alone),
                     "statuses": codes_alone},
           "attacked": {"p50_ms": pct(under, 50), "p99_ms": pct(under, 99), "requests": len(under),
                        "statuses": codes_under},
           "attacker": {"statuses": got["statuses"],
                        "p50_s": round(float(np.median(got["seconds"])), 3) if got["seconds"] else None,
                        "context_chars": len(json.loads(big)["context"])}}
    out["p99_ratio"] = out["attacked"]["p99_ms"] / out["alone"]["p99_ms"]
    print(f"  {engine.label:6s} attack: small p99 {out['alone']['p99_ms']:.2f} -> {out['attacked']['p99_ms']:.2f} ms "
          f"(x{out['p99_ratio']:.2f}), attacker {got['statuses']} p50 {out['attacker']['p50_s']}s", flush=True)
    return out


def run_engine(engine: Engine, args, ref: InProcess, seqs, concs) -> tuple[list[dict], dict]:
    points = []
    path = f"/v2/models/{engine.name}/infer"
    for s in seqs:
        feeds, want = ref.expected[s]
        body, headers = oip_body(feeds)
        for c in concs:
            p = {"engine": engine.label, "load_before": load_avg(),
                 **measure(engine.port, path, body, headers, c, s, ref, args, want)}
            points.append(p)
            show(engine.label, p)
    return points, attack(engine, ref, args, min(seqs))


def goals(points, attacks, seqs, concs) -> list[dict]:
    """The issue's goals, each against the in-process slices interleaved with the same point."""
    out = []
    c_hi = max(concs)
    for engine in sorted({p["engine"] for p in points}):
        for s in seqs:
            pts = {p["concurrency"]: p for p in points if p["engine"] == engine and p["seq"] == s}
            if 1 in pts:
                ov = pts[1]["p50_ms"] - pts[1]["in_process"]["p50_ms"]
                bound = GOAL_ASGI_OVERHEAD_MS if engine == "asgi" else GOAL_RAY_OVERHEAD_MS
                out.append({"goal": f"{engine}: p50 overhead at C=1 <= {bound:g} ms", "seq": s, "value": round(ov, 2),
                            "met": ov <= bound})
            if engine == "asgi" and c_hi in pts:
                r = pts[c_hi]["rps"] / pts[c_hi]["in_process"]["rps"]
                out.append({"goal": f"asgi: req/s at C={c_hi} >= {GOAL_ASGI_THROUGHPUT:.0%} of in-process", "seq": s,
                            "value": round(r, 3), "met": r >= GOAL_ASGI_THROUGHPUT})
    for engine, a in attacks.items():
        out.append({"goal": f"{engine}: small requests' p99 under attack <= {GOAL_ATTACK:g} x without",
                    "seq": a["seq"], "value": round(a["p99_ratio"], 2), "met": a["p99_ratio"] <= GOAL_ATTACK})
    return out


def write_md(path, args, meta, points, attacks, engines, met):
    lines = [f"# Serving benchmark ({meta['date']})", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}; CPU {meta['cpu']}; load average before {meta['load_before']}, after "
             f"{meta['load_after']}. Model: `{meta['model']}` ({meta['model_desc']}); ORT intra-op threads "
             f"{args.threads} (server and in-process; the client needs the other core); max batch "
             f"{args.max_batch_size}; asgi without dynamic batching (its default), ray with {args.ray_batch_wait_ms:g} ms "
             f"(its default). {args.seconds:g} s of serve load and {args.seconds:g} s of in-process runs per point, "
             f"alternated in {args.rounds} rounds (warm-up {args.warmup:g} s first); binary Open Inference Protocol "
             "requests over one keep-alive loopback connection per client thread. The in-process columns are the "
             "runtime alone (one session, batch 1, back to back) timed in the slices between that point's serve "
             "slices.", "",
             "Cold start (command or deployment to the first ready answer): " +
             ", ".join(f"{e} {v['cold_start_s']:.1f} s" for e, v in engines.items()) + ".", "",
             "| engine | S | C | p50 ms | p99 ms | req/s | errors | in-process p50 ms | in-process req/s | "
             "p50 overhead ms | req/s vs in-process |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        ip = p["in_process"]
        lines.append(f"| {p['engine']} | {p['seq']} | {p['concurrency']} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | "
                     f"{p['rps']:.1f} | {p['errors']} | {ip['p50_ms']:.2f} | {ip['rps']:.1f} | "
                     f"{p['p50_ms'] - ip['p50_ms']:+.2f} | {p['rps'] / ip['rps']:.0%} |")
    lines += ["", f"Attack: {SMALL_CLIENTS} clients send small requests (S={min(int(x) for x in args.seq_lens.split(','))}) "
              f"for {args.attack_seconds:g} s alone, then while one more client sends maximum-size QA requests (a "
              f"context just under --max-tokens {args.max_tokens:,}) back to back:", "",
              "| engine | small p50 alone ms | small p99 alone ms | small p50 attacked ms | small p99 attacked ms | "
              "p99 ratio | small statuses attacked | attacker statuses | attacker p50 s |",
              "|---|---:|---:|---:|---:|---:|---|---|---:|"]
    for e, a in attacks.items():
        lines.append(f"| {e} | {a['alone']['p50_ms']:.2f} | {a['alone']['p99_ms']:.2f} | {a['attacked']['p50_ms']:.2f} "
                     f"| {a['attacked']['p99_ms']:.2f} | {a['p99_ratio']:.2f} | {a['attacked']['statuses']} | "
                     f"{a['attacker']['statuses']} | {a['attacker']['p50_s']} |")
    lines += ["", "Goals (from the issue):", "", "| goal | S | value | met |", "|---|---:|---:|---|"]
    for g in met:
        lines.append(f"| {g['goal']} | {g['seq']} | {g['value']} | {'yes' if g['met'] else 'NO'} |")
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
        for engine, color in (("asgi", "tab:blue"), ("ray", "tab:orange")):
            pts = sorted((p for p in points if p["seq"] == s and p["engine"] == engine), key=lambda p: p["concurrency"])
            if not pts:
                continue
            cs = [p["concurrency"] for p in pts]
            ax.plot(cs, [p["p50_ms"] for p in pts], "o-", color=color, label=f"{engine}: p50")
            ax.plot(cs, [p["p99_ms"] for p in pts], "s--", color=color, alpha=0.6, label=f"{engine}: p99")
        pts = sorted((p for p in points if p["seq"] == s), key=lambda p: p["concurrency"])
        ax.plot([p["concurrency"] for p in pts], [p["in_process"]["p50_ms"] * p["concurrency"] for p in pts], ":",
                color="gray", label="in-process p50 x C (one session, queued)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"S = {s}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
                isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags.split()]
                return f"{name} ({', '.join(isa)})"
    except (OSError, StopIteration):
        pass
    return platform.processor() or "?"


def main() -> int:
    import contextlib

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "out" / "qa", help="QA export directory (default out/qa)")
    ap.add_argument("--engines", default="asgi,ray")
    ap.add_argument("--seq-lens", default="128,512")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=6.0,
                    help="timed seconds per point, serve and in-process each (bounded)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of serve and in-process per point")
    ap.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds per point")
    ap.add_argument("--attack-seconds", type=float, default=10.0, help="seconds of each half of the attack scenario")
    ap.add_argument("--max-tokens", type=int, default=16384, help="the servers' --max-tokens (the attacker's size)")
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--ray-batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1,
                    help="ORT intra-op threads, in-process and of the server (default 1: the client needs a core too)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf" / "serving"), help="output prefix")
    args = ap.parse_args()
    seqs = [int(x) for x in args.seq_lens.split(",")]
    concs = sorted(int(x) for x in args.concurrency.split(","))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not (args.model / "yoso_export.json").is_file():
        sys.exit(f"{args.model} is not an export directory; run 'yoso-deploy export --task qa --output out/qa'")
    if args.seconds <= 0 or args.seconds > 60 or not 1 <= args.rounds <= 10 or not 0 < args.attack_seconds <= 60:
        sys.exit("--seconds and --attack-seconds must be in (0, 60] and --rounds in 1..10: the benchmark is bounded")
    manifest = json.loads((args.model / "yoso_export.json").read_text())
    if manifest["task"] != "qa":
        sys.exit("the attack scenario sends QA requests: give a QA export")
    cfg = json.loads((args.model / "config.json").read_text())
    cmd = " ".join(["python", "scripts/bench/bench_serve.py", *map(shlex.quote, sys.argv[1:])])
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": cmd, "cpu": cpu_model(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "load_before": load_avg(), "model": str(args.model),
            "model_desc": f"{manifest['task']}, {cfg.get('num_hidden_layers')} layers, hidden {cfg.get('hidden_size')}, "
                          f"{cfg.get('max_position_embeddings')} positions"}
    print(f"{meta['cpu']}; load average {meta['load_before']}", flush=True)
    ref = InProcess(args.model, seqs, args.threads)
    points, attacks, started = [], {}, {}
    for name in engines:
        with contextlib.ExitStack() as stack:
            engine = start_asgi(args) if name == "asgi" else start_ray(args, stack)
            started[name] = {"cold_start_s": engine.cold_start_s}
            try:
                pts, att = run_engine(engine, args, ref, seqs, concs)
            finally:
                engine.close()
            points += pts
            attacks[name] = att
    meta["load_after"] = load_avg()
    met = goals(points, attacks, seqs, concs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "args": {k: str(v) for k, v in vars(args).items()},
                                                    "engines": started, "points": points, "attacks": attacks,
                                                    "goals": met}, indent=1))
    write_md(out.with_suffix(".md"), args, meta, points, attacks, started, met)
    plot(out.with_suffix(".png"), points, seqs)
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}")
    for g in met:
        print(f"goal {g['goal']}, S={g['seq']}: {g['value']} {'met' if g['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
