"""``yoso-deploy validate`` and ``yoso-deploy bench``: check an export against the reference, measure it
(:mod:`yoso_deploy.validation.validate`, :mod:`yoso_deploy.bench`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import constants as C
from .options import ExpandedPath, allow_failed_option, int_list, model_option, threads_option, verbose_option


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


def _backends(value: str | None) -> list[str] | None:
    return [b.strip() for b in value.split(",") if b.strip()] if value else None


@click.command("validate")
@model_option()
@click.option("--backends", default=",".join(C.VALIDATE_BACKENDS), show_default=True,
              help="Comma-separated backends; torch is the reference. Also ort-portable (stock ONNX Runtime, the "
                   "export's function bodies) and openvino. Unavailable ones are listed with the reason.")
@click.option("--batch", "batches", default=_csv(C.VALIDATE_BATCHES), show_default=True, help="Batch sizes (comma-separated).")
@click.option("--seq-len", "seq_lens", default=_csv(C.VALIDATE_SEQ_LENS), show_default=True,
              help="Sequence lengths (comma-separated).")
@click.option("--atol", multiple=True,
              help=f"Absolute tolerance, global ({C.DEFAULT_ATOL:g}) or per output (start_logits=1e-3; hidden_states=... "
                   "for layer tensors); repeatable.")
@click.option("--rtol", multiple=True, help=f"Relative tolerance, global ({C.DEFAULT_RTOL:g}) or per output; repeatable.")
@click.option("--hidden-rtol", type=float, default=None,
              help=f"Per-feature relative error allowed in hidden states and layer tensors (default {C.DEFAULT_HIDDEN_RTOL:g}).")
@click.option("--tie-bound-scale", type=float, default=1.0, show_default=True,
              help="Multiplier of the float32 tie bound of LSH codes (plugins/OPS.md section 5); raise only for "
                   "backends that compute projections in lower precision (e.g. TF32).")
@click.option("--inputs", type=ExpandedPath(path_type=Path), default=None,
              help="Use these inputs instead of generated ones: .npz, or JSON (object or list of objects, name -> nested list).")
@click.option("--reference", type=ExpandedPath(path_type=Path), default=None,
              help="Checkpoint directory of the PyTorch reference (default: the export's source model).")
@click.option("--report", "report_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Write validation.json and validation.md here.")
@threads_option()
@allow_failed_option("Validate")
@click.option("--int8-threshold", "int8_thresholds", multiple=True,
              help="int8 exports: override a threshold of the int8 criteria, NAME=VALUE (min_output_cosine, max_abs_rel, "
                   "min_hidden_cosine, min_code_agreement, min_task_agreement, min_decisions, tie_margin); repeatable.")
@verbose_option("Show the full comparison table and polygraphy's log")
def validate_cmd(model_dir, backends, batches, seq_lens, atol, rtol, hidden_rtol, tie_bound_scale, inputs, reference,
                 report_dir, threads, allow_failed_export, int8_thresholds, verbose):
    """Check that every available backend computes what the PyTorch reference computes.

    Inputs are generated from the export's input spec with realistic padding (row i > 0 of a batch
    is right-padded), or loaded with --inputs. LSH exports are judged tie-aware: every layer's hash
    codes may differ from the reference's only in near-tie bits (|t| within the float32 tie bound),
    and with the backend's codes injected into the reference every layer tensor, hidden state and
    output must agree within tolerance. Exit code 1 names the first failing layer. An int8 export
    (from 'yoso-deploy quantize') is judged by the int8 criteria against its fp32 export and the
    reference instead (--int8-threshold; docs/performance.md 'int8').
    """
    from ..validation.int8_criteria import parse_thresholds
    from ..validation.validate import PRECISION_NOTE, ValidationFailed, validate

    res = validate(model_dir, backends=_backends(backends), batches=int_list(batches, "--batch"),
                   seq_lens=int_list(seq_lens, "--seq-len"), atol=atol, rtol=rtol, hidden_rtol=hidden_rtol,
                   tie_bound_scale=tie_bound_scale, inputs=inputs, reference=reference, report_dir=report_dir,
                   verbose=verbose, allow_failed_export=allow_failed_export, intra_op_threads=threads,
                   int8_thresholds=parse_thresholds(int8_thresholds))
    for b in res.backends.values():
        if not b.available and b.reason != "not requested":
            click.echo(f"skipped {b.name}: {b.reason}", err=True)
    click.echo(f"reference: {res.reference}; {len(res.cases)} input case(s); {res.seconds:.1f}s")
    summary = getattr(res.report, "summary_lines", None)
    if verbose or not res.passed or summary is None:
        click.echo(res.table())
    else:
        for line in summary():
            click.echo(f"  {line}")
        for note in res.report.notes:  # the table prints every note; here the backends' inference precision
            if PRECISION_NOTE in note:
                click.echo(f"  {note}")
    if report_dir:
        click.echo(f"report: {report_dir}/validation.md")
    if not res.passed:
        raise ValidationFailed(res)
    click.echo("validation passed")


@click.command("bench")
@model_option()
@click.option("--backends", default=",".join(C.BENCH_BACKENDS), show_default=True,
              help="Comma-separated: torch, ort-cpu, ort-cuda, trt.")
@click.option("--batch", "batches", default=_csv(C.BENCH_BATCHES), show_default=True, help="Batch sizes (comma-separated).")
@click.option("--seq-len", "seq_lens", default=_csv(C.BENCH_SEQ_LENS), show_default=True,
              help="Sequence lengths (comma-separated).")
@click.option("--warmup", type=int, default=C.BENCH_WARMUP, show_default=True, help="Untimed runs before timing each case.")
@click.option("--iterations", type=int, default=None,
              help=f"Timed runs per case (default {C.BENCH_ITERATIONS} unless --seconds).")
@click.option("--seconds", type=float, default=None, help="Time each case for this many seconds instead.")
@threads_option("Intra-op threads (ORT) / torch threads (default: all cores)")
@click.option("--reference", type=ExpandedPath(path_type=Path), default=None,
              help="Checkpoint for the torch backend (default: the export's source model).")
@click.option("--report", "report_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Write report.json, report.md and latency.png here.")
@click.option("--profile", is_flag=True,
              help="Instead of latency: ONNX Runtime's profiler, time per op type and its share, per batch and length "
                   "(--iterations profiled runs after --warmup; default 3).")
@allow_failed_option("Benchmark")
def bench_cmd(model_dir, backends, batches, seq_lens, warmup, iterations, seconds, threads, reference, report_dir,
              profile, allow_failed_export):
    """Measure latency (p50/p90/p99/mean), throughput and peak memory per backend, batch and length.

    The ORT backends time the runtime's own inference path (the one run, qa and serving use). With --profile,
    where the time goes instead: ONNX Runtime's profiler summed per op type (docs/performance.md)."""
    if profile:
        _profile(model_dir, int_list(batches, "--batch"), int_list(seq_lens, "--seq-len"), warmup, iterations,
                 threads, report_dir, allow_failed_export)
        return
    from ..bench import run

    if iterations is None and seconds is None:
        iterations = C.BENCH_ITERATIONS
    res = run(model_dir, backends=_backends(backends), batches=int_list(batches, "--batch"),
              seq_lens=int_list(seq_lens, "--seq-len"), warmup=warmup, iterations=iterations, seconds=seconds,
              threads=threads, reference=reference, report_dir=report_dir, progress=sys.stderr.isatty(),
              allow_failed_export=allow_failed_export)
    for b in res.backends.values():
        if not b.available:
            click.echo(f"skipped {b.name}: {b.reason}", err=True)
    m = res.machine
    click.echo(f"{m['cpu']} ({m['cores']} cores), onnxruntime {m['onnxruntime']}, torch {m['torch']}")
    click.echo(res.table())
    if report_dir:
        click.echo(f"report: {report_dir}/report.md, report.json, latency.png")


def _profile(model_dir, batches, seq_lens, warmup, iterations, threads, report_dir, allow_failed_export) -> None:
    import json

    from ..bench.profile import profile_export
    from ..bench.runner import machine_info

    m = machine_info()
    click.echo(f"{m['cpu']} ({m['cores']} cores; {' '.join(m['isa']) or 'no AVX2'}), onnxruntime {m['onnxruntime']}; "
               f"{model_dir}")
    out = []
    for b in batches:
        for s in seq_lens:
            prof = profile_export(model_dir, batch=b, seq_len=s, runs=iterations or 3, warmup=warmup, threads=threads,
                                  allow_failed_export=allow_failed_export)
            click.echo(prof.table())
            out.append(prof.to_json())
    if report_dir:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "profile.json").write_text(json.dumps({"machine": m, "model": str(model_dir), "profiles": out},
                                                            indent=2))
        click.echo(f"report: {report_dir}/profile.json")


COMMANDS = (validate_cmd, bench_cmd)
