"""Latency, throughput and memory of an export on each available backend (``yoso-deploy bench``).

The ONNX Runtime backends time exactly what users run: :meth:`yoso_deploy.runtime.models.YosoOrtModel.run`
(input validation, then ``InferenceSession.run``, or IO binding on CUDA). Nothing here imports torch
unless the ``torch`` backend is asked for.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..constants import (
    BENCH_BACKENDS,
    BENCH_BATCHES,
    BENCH_ITERATIONS,
    BENCH_SEQ_LENS,
    BENCH_WARMUP,
    CONFIG_FILE,
    ENGINE_FILE,
    __version__,
)
from ..errors import UsageError
from ..iospec import make_inputs
from ..manifest import check_usable, expand_path, load_manifest, manifest_spec, source_model_dir
from ..validation.report import format_table

BACKENDS = ("torch", "ort-cpu", "ort-cuda", "trt")


class BenchError(UsageError):
    """The benchmark cannot run (bad arguments, nothing available)."""


@dataclass
class BenchCase:
    backend: str
    batch: int
    seq_len: int
    iterations: int
    latency_ms: dict  # p50, p90, p99, mean, min
    sequences_per_s: float
    tokens_per_s: float
    peak_memory_mb: float
    memory_kind: str


@dataclass
class BenchResult:
    model_dir: str
    machine: dict
    backends: dict
    cases: list[BenchCase] = field(default_factory=list)

    def table(self) -> str:
        rows = [[c.backend, str(c.batch), str(c.seq_len), str(c.iterations), f"{c.latency_ms['p50']:.2f}",
                 f"{c.latency_ms['p90']:.2f}", f"{c.latency_ms['p99']:.2f}", f"{c.latency_ms['mean']:.2f}",
                 f"{c.sequences_per_s:.1f}", f"{c.tokens_per_s:.0f}", f"{c.peak_memory_mb:.0f} ({c.memory_kind})"]
                for c in self.cases]
        return format_table(["backend", "batch", "seq", "iters", "p50 ms", "p90 ms", "p99 ms", "mean ms",
                             "seq/s", "tok/s", "peak MB"], rows)

    def to_json(self) -> dict:
        return {"model_dir": self.model_dir, "machine": self.machine,
                "backends": {k: asdict(v) for k, v in self.backends.items()},
                "cases": [asdict(c) for c in self.cases]}


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8", "avx_vnni")


def machine_info() -> dict:
    import onnxruntime as ort

    cpu = platform.processor() or ""
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == (platform.processor() or ""):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return {"cpu": cpu, "isa": flags, "cores": os.cpu_count(), "python": platform.python_version(), "torch": _version("torch"),
            "onnxruntime": ort.__version__, "yoso_deploy": __version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) of this process.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _device_memory_mb() -> float:
    """GPU memory in use (MiB) per nvidia-smi, or NaN where there is none."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return float("nan")
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.split()[0])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return float("nan")


def _make_callable(backend: str, model_dir: Path, manifest: dict, threads: int | None, reference,
                   allow_failed_export: bool = False):
    """Return (run(feeds) -> None, close(), memory_kind)."""
    if backend in ("ort-cpu", "ort-cuda"):
        from ..runtime.models import YosoOrtModel

        model = YosoOrtModel.from_pretrained(model_dir, provider="cuda" if backend == "ort-cuda" else "cpu",
                                             intra_op_threads=threads, allow_failed_export=allow_failed_export)
        return model.run, (lambda: None), ("device" if backend == "ort-cuda" else "RSS")
    if backend == "trt":
        from ..backends.trt import make_trt_runner

        runner = make_trt_runner(model_dir / ENGINE_FILE)
        runner.activate()
        return (lambda feeds: runner.infer(feeds)), runner.deactivate, "device"
    if backend == "torch":
        import torch

        from ..modeling import load_model
        from ..validation.parity import torch_outputs

        if threads:
            torch.set_num_threads(int(threads))
        model = load_model(reference, task=manifest["task"], attention=manifest["attention"], seed=manifest["seed"])
        spec = manifest_spec(manifest)
        return (lambda feeds: torch_outputs(model, spec, feeds)), (lambda: None), "RSS"
    raise BenchError(f"backend {backend!r} cannot be benchmarked here")


def run(
    model_dir: str | Path,
    backends: list[str] | None = None,
    batches=BENCH_BATCHES,
    seq_lens=BENCH_SEQ_LENS,
    warmup: int = BENCH_WARMUP,
    iterations: int | None = BENCH_ITERATIONS,
    seconds: float | None = None,
    threads: int | None = None,
    reference=None,
    report_dir: str | Path | None = None,
    progress: bool = False,
    allow_failed_export: bool = False,
) -> BenchResult:
    """Time every (backend, batch, seq_len) case: ``warmup`` untimed runs, then ``iterations`` runs
    (or as many as fit in ``seconds``). Inputs are full-length (no padding)."""
    import click

    from ..validation.backends import backend_status

    model_dir = expand_path(model_dir)
    manifest = load_manifest(model_dir)
    check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
    spec = manifest_spec(manifest)
    requested = list(backends or BENCH_BACKENDS)
    unknown = [b for b in requested if b not in BACKENDS]
    if unknown:
        raise BenchError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if iterations is None and seconds is None:
        raise BenchError("give --iterations or --seconds")
    if (iterations is not None and iterations < 1) or (seconds is not None and seconds <= 0) or warmup < 0:
        raise BenchError("--iterations must be >= 1, --seconds > 0 and --warmup >= 0")
    too_long = [s for s in seq_lens if s > manifest["max_sequence_length"]]
    if too_long:
        raise BenchError(f"--seq-len {too_long[0]} exceeds the model's maximum {manifest['max_sequence_length']}")
    if report_dir is not None:  # fail before the timing, not after it
        from ..errors import require

        require("matplotlib", "the bench report's latency plot")
    reference = expand_path(reference) if reference else source_model_dir(manifest, model_dir)
    status = backend_status(model_dir, manifest, reference)
    runnable = [b for b in requested if status[b].available]
    if not runnable:
        raise BenchError("no requested backend is available: " + "; ".join(f"{b}: {status[b].reason}" for b in requested))
    vocab = int(json.loads((model_dir / CONFIG_FILE).read_text())["vocab_size"])
    result = BenchResult(str(model_dir), machine_info(), {b: status[b] for b in requested})
    plan = [(b, bs, s) for b in runnable for bs in batches for s in seq_lens]
    bar = click.progressbar(length=len(plan), label="bench", file=None) if progress else None
    if bar is not None:
        bar.__enter__()
    try:
        for backend in runnable:
            gc.collect()
            _reset_peak_rss()
            fn, close, mem_kind = _make_callable(backend, model_dir, manifest, threads, reference, allow_failed_export)
            try:
                for bs in batches:
                    for s in seq_lens:
                        feeds = make_inputs(spec, int(bs), int(s), vocab, padding=False)
                        for _ in range(warmup):
                            fn(feeds)
                        times = []
                        t_end = time.perf_counter() + (seconds or 0)
                        while True:
                            t0 = time.perf_counter()
                            fn(feeds)
                            times.append(time.perf_counter() - t0)
                            if iterations is not None and len(times) >= iterations:
                                break
                            if iterations is None and time.perf_counter() >= t_end:
                                break
                        ms = np.array(times) * 1000
                        mean_s = float(np.mean(times))
                        result.cases.append(BenchCase(
                            backend, int(bs), int(s), len(times),
                            {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                             "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "min": float(ms.min())},
                            bs / mean_s, bs * s / mean_s,
                            _device_memory_mb() if mem_kind == "device" else _peak_rss_mb(), mem_kind))
                        if bar is not None:
                            bar.update(1)
            finally:
                close()
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if report_dir is not None:
        write_report(result, Path(report_dir))
    return result


def write_report(result: BenchResult, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    m = result.machine
    lines = [f"# Benchmark of `{result.model_dir}`", "",
             f"Machine: {m['cpu']} ({m['cores']} cores); torch {m['torch']}, onnxruntime {m['onnxruntime']}, "
             f"yoso-deploy {m['yoso_deploy']}; {m['date']}", "",
             "| backend | batch | seq | iters | p50 ms | p90 ms | p99 ms | mean ms | seq/s | tok/s | peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in result.cases:
        lines.append(f"| {c.backend} | {c.batch} | {c.seq_len} | {c.iterations} | {c.latency_ms['p50']:.2f} | "
                     f"{c.latency_ms['p90']:.2f} | {c.latency_ms['p99']:.2f} | {c.latency_ms['mean']:.2f} | "
                     f"{c.sequences_per_s:.1f} | {c.tokens_per_s:.0f} | {c.peak_memory_mb:.0f} ({c.memory_kind}) |")
    unavailable = [b for b in result.backends.values() if not b.available]
    if unavailable:
        lines += ["", "Not measured:"] + [f"- {b.name}: {b.reason}" for b in unavailable]
    lines += ["", "![latency vs sequence length](latency.png)", ""]
    (report_dir / "report.md").write_text("\n".join(lines))
    plot_latency(result, report_dir / "latency.png")


def plot_latency(result: BenchResult, path: Path) -> None:
    from ..errors import require

    matplotlib = require("matplotlib", "the bench report's latency plot")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    series = {}
    for c in result.cases:
        series.setdefault((c.backend, c.batch), []).append((c.seq_len, c.latency_ms["p50"]))
    for (backend, batch), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{backend}, batch {batch}")
    if series:
        # Reference slopes through the first point of the first series: linear and quadratic scaling.
        x0, y0 = sorted(next(iter(series.values())))[0]
        xs = np.array(sorted({c.seq_len for c in result.cases}), dtype=float)
        if len(xs) > 1:
            ax.plot(xs, y0 * xs / x0, "k:", lw=1, label="∝ S (linear)")
            ax.plot(xs, y0 * (xs / x0) ** 2, "k--", lw=1, label="∝ S² (quadratic)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length S")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("YOSO latency vs sequence length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
