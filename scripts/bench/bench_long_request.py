#!/usr/bin/env python3
"""What one request at the ``--max-tokens`` limit costs: wall time and peak RSS growth of a QA call whose
context is just under the limit, with the server's ``--run-tokens`` and without it (a library call, batch 8),
side by side in one run. Each setting runs in a fresh process, so each peak RSS is its own.

Meant for the size users deploy (the uw-madison/yoso-4096 configuration):

    python scripts/dev/make_yoso4096_checkpoint.py --output /tmp/ckpt-4096
    cp model/tokenizer.json model/tokenizer_config.json /tmp/ckpt-4096/
    yoso-deploy export --model /tmp/ckpt-4096 --task qa --output /tmp/qa-4096 --no-validate
    python scripts/bench/bench_long_request.py --model /tmp/qa-4096
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from yoso_deploy.runtime import pipeline
from yoso_deploy.runtime.limits import Limits
model, run_tokens, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
qa = pipeline(model, run_tokens=run_tokens or None)
words = "Ada moved to Oslo in the spring and then wrote letters about engines . "
limit = Limits().max_tokens
per = qa.tokenizer.token_count(words)
context = words * ((limit - 64) // per)
tokens = qa.tokenizer.token_count(context)
qa(question="Where did Ada move?", context="Ada moved to Oslo.")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(repeats):
    t = time.perf_counter()
    qa(question="Where did Ada move?", context=context)
    times.append(time.perf_counter() - t)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"run_tokens": run_tokens or None, "context_tokens": tokens, "seconds": times,
                  "peak_rss_growth_mb": round((after - before) / 1024, 1)}))
"""


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a QA export directory")
    ap.add_argument("--run-tokens", type=int, nargs="+", default=[2048, 0],
                    help="settings to compare (0: no cap, the library default); default 2048 (serve's default) and 0")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}; model: {args.model}")
    print("| --run-tokens | context tokens | seconds per request | peak RSS growth MB |")
    print("|---|---:|---|---:|")
    for rt in args.run_tokens:
        r = subprocess.run([sys.executable, "-c", CHILD, args.model, str(rt), str(args.repeats)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"run_tokens {rt}: failed\n{r.stderr[-2000:]}")
        d = json.loads(r.stdout.strip().splitlines()[-1])
        secs = ", ".join(f"{s:.2f}" for s in d["seconds"])
        setting = d["run_tokens"] or "none (batch 8)"
        print(f"| {setting} | {d['context_tokens']:,} | {secs} | {d['peak_rss_growth_mb']} |")


if __name__ == "__main__":
    main()
