"""scripts/bench_cpu.py (the CPU comparison of issue 7) runs end to end on small settings and reports
the table, the targets, the isolated RSS and the plot. Timings are not asserted (benchmarks, not tests)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_cpu_smoke(tmp_path):
    out = tmp_path / "bench"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_cpu.py"), "--seq-lens", "1024,2048,4096", "--batches", "1",
         "--backends", "ort-lsh,bert-sdpa", "--repeats", "1", "--settle-ms", "0", "--threads", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "bench_cpu.md").read_text()
    data = json.loads((out / "bench_cpu.json").read_text())
    assert (out / "bench_cpu.png").stat().st_size > 10_000
    per = data["per_layer"]["min_ms"]
    for name in ("ort-lsh", "bert-sdpa", "FastHash (x2)", "LSHCumulation", "GEMM floor"):
        assert all(per[f"{name}|1|{s}"] > 0 for s in (1024, 2048, 4096)), name
    assert set(data["rss_layer"]) == {"1|1024", "1|2048", "1|4096"}
    assert all(v["peak_mb"] >= v["session_mb"] > 0 for v in data["rss_layer"].values())
    assert "| ort-lsh |" in md and data["machine"]["cores"] >= 1
    # every target that this backend set can evaluate is reported with its verdict
    for target in ("BERT-SDPA / ORT LSH >= 1.6x", "FastHash x2 + LSHCumulation <= 15%", "t(4096) / t(1024) <= 4.5",
                   "RSS linear in S"):
        line = next(ln for ln in md.splitlines() if target in ln)
        assert line.endswith("(met)") or line.endswith("(NOT met)"), line
