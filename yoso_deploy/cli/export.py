"""``yoso-deploy export`` and ``yoso-deploy quantize``: make exports (:mod:`yoso_deploy.workflow`,
:mod:`yoso_deploy.quantization`)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import constants as C
from .. import tasks as _tasks
from ..constants import DEFAULT_EXPORT_DIR
from .options import ExpandedPath, comma_list, model_option, output_option, say, threads_option, verbose_option

OPTIMIZE_HELP = ("O1: ONNX Runtime's basic fusions, saved; O2: + SkipLayerNormalization and bias-GELU (ONNX Runtime's "
                 "transformer optimizer; runs in ONNX Runtime only); O3: + the GELU approximation (FastGelu).")
TASK_HELP = f"Model head: {', '.join(_tasks.TASKS)} (aliases: {', '.join(sorted(_tasks.ALIASES))})."


def _shapes(ctx, param, value):
    if value is None:
        return None
    from ..errors import UsageError
    from ..iospec import parse_shapes

    try:
        return parse_shapes(value, param.opts[0])
    except UsageError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def print_check(title: str, result, verbose: bool) -> None:
    """The post-export / post-quantization check: one summary line; the full table with --verbose."""
    report = result.parity if hasattr(result, "parity") else result.report  # ExportResult / QuantizeResult
    if report is None:
        return
    shapes = ", ".join(f"{b}x{s}" for b, s in result.check_shapes)
    checks = report.comparisons
    bad = [c for c in checks if not c.ok]
    seconds = getattr(result, "parity_seconds", None) or getattr(result, "check_seconds", 0.0)
    if verbose or bad:
        click.echo(f"{title} on {shapes} (batch x sequence, padded), {seconds:.1f}s:")
        click.echo(report.table())
    verdict = "passed" if not bad else f"FAILED ({len(bad)} of {len(checks)} checks)"
    click.echo(f"{title}: {verdict} -- {len(checks)} checks on {shapes} in {seconds:.1f}s"
               + ("" if verbose or bad else " (--verbose for the table)"))


def _print_quantized(res, source) -> None:
    q = res.manifest["quantization"]
    kept = f"; fp32: {', '.join(q['excluded_modules'])}" if q["excluded_modules"] else ""
    click.echo(f"quantized {len(res.quantized)} of {len(res.quantized) + len(res.excluded)} dense projections of "
               f"{source} ({q['method']}, weights {q['weight_type']}, activations {q['activation_type']}"
               f"{', per-channel' if q['per_channel'] else ''}{', reduce-range' if q['reduce_range'] else ''}) to "
               f"{res.onnx_path} in {res.seconds:.1f}s{kept}")


@click.command("export")
@click.option("--model", "-m", "model_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Hugging Face YOSO checkpoint directory (config.json + weights). Default: the embedded model in model/.")
@output_option("Export directory to write (new or empty, or a previous export to replace)", default=DEFAULT_EXPORT_DIR,
               show_default=True)
@click.option("--task", default=None,
              help=TASK_HELP + " Default: the checkpoint's architecture (config.json 'architectures'); a task whose "
                   "head the checkpoint lacks is refused (base is always allowed).")
@click.option("--attention", type=click.Choice(C.ATTENTION_MODES), default=C.ATTENTION_MODES[0], show_default=True,
              help="lsh: FastHash + LSHCumulation custom ops (linear cost); expectation: exact YOSO-E with standard ONNX ops.")
@click.option("--opset", type=int, default=C.DEFAULT_OPSET, show_default=True, help="ONNX opset (17 or higher).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random hash functions (signs).")
@click.option("--atol", type=float, default=C.DEFAULT_ATOL, show_default=True,
              help="Absolute tolerance of the post-export check (outputs and layer tensors, with hash codes injected).")
@click.option("--rtol", type=float, default=C.DEFAULT_RTOL, show_default=True,
              help="Relative tolerance of the post-export check.")
@click.option("--check-shapes", default=None, callback=_shapes,
              help="BATCHxSEQ list of the post-export check, e.g. 2x16,2x512 (default: 2x16,3x77,2x<min(512, max positions)>).")
@click.option("--dtype", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="Float type of weights and activations. fp16 is for GPU backends (TensorRT strongly typed "
                   "networks, ORT CUDA); hashing stays fp32 inside FastHash.")
@click.option("--debug-codes", is_flag=True, help="Also output every layer's hash codes (for parity debugging).")
@click.option("--no-validate", is_flag=True, help="Skip the ONNX Runtime vs PyTorch check after export.")
@click.option("--portable", type=click.Choice(["functions", "off", "inline"]), default=C.DEFAULT_PORTABLE, show_default=True,
              help="functions: the com.yoso ops also carry standard-ONNX bodies (any ONNX runtime runs the model; "
                   "ours runs the library); off: no bodies; inline: bodies expanded, no com.yoso node (OpenVINO).")
@click.option("--quantize", "quantize_to", type=click.Choice(["int8"]), default=None,
              help="Also quantize: the fp32 export goes to OUTPUT/fp32, the int8 export (the defaults of 'yoso-deploy "
                   "quantize') to OUTPUT. Other quantization options: run 'yoso-deploy quantize' on an fp32 export.")
@click.option("--tokenizer", "tokenizer_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Take the tokenizer from this directory instead of the checkpoint (tokenizer.json, or slow files: "
                   "vocab.txt, vocab.json + merges.txt, spiece.model, sentencepiece.bpe.model; converted to "
                   "tokenizer.json).")
@click.option("--optimize", "optimize_level", type=click.Choice(C.OPTIMIZE_LEVELS), default=None,
              help="Also optimize: the checked export goes to OUTPUT/fp32, the optimized one to OUTPUT (with --quantize: "
                   "to OUTPUT/<level>, its int8 quantization to OUTPUT). " + OPTIMIZE_HELP)
@verbose_option("Show the parity table and the exporter's log")
def export_cmd(model_dir, output, task, attention, opset, seed, atol, rtol, check_shapes, dtype, debug_codes,
               no_validate, portable, quantize_to, tokenizer_dir, optimize_level, verbose):
    """Export a YOSO checkpoint to ONNX (model.onnx, config.json, tokenizer files, yoso_export.json).

    After export the model is run by ONNX Runtime with libyoso_ort.so on generated, padded inputs
    and judged against the PyTorch reference (tie-aware for LSH, layer by layer; see 'yoso-deploy
    validate'). A failed check exits 1, keeps the files and marks the manifest "failed", so that
    run/qa/bench/validate refuse the export unless --allow-failed-export. Nothing is written when the
    export itself fails: it is built beside OUTPUT and renamed into place at the end.
    """
    from ..workflow import OptimizeCheckError, ParityError, export

    try:
        result = export(model_dir, output, task=task, attention=attention, opset=opset, seed=seed,
                        check_shapes=check_shapes, debug_codes=debug_codes, validate=not no_validate, atol=atol,
                        rtol=rtol, dtype=dtype, portable=portable, verbose=verbose, quantize=quantize_to,
                        progress=say, tokenizer=tokenizer_dir, optimize_level=optimize_level)
    except ParityError as e:
        print_check("post-export check", e.result, verbose)
        raise
    except OptimizeCheckError as e:
        _print_optimized(e.result, verbose)
        raise
    except Exception as e:
        failed = getattr(e, "result", None)  # the int8 check of --quantize
        if failed is not None:
            print_check("post-quantization check", failed, verbose)
        raise
    m = result.manifest
    click.echo(f"exported {m['task']} ({m['attention']}, opset {m['opset']}) to {result.onnx_path} "
               f"in {result.export_seconds:.1f}s")
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.skipped_validation:
        click.echo(f"post-export check skipped: {result.skipped_validation}")
    print_check("post-export check", result, verbose)
    if result.optimized is not None:
        _print_optimized(result.optimized, verbose)
    if result.quantized is not None:
        _print_quantized(result.quantized, result.output_dir)
        print_check("post-quantization check", result.quantized, verbose)


@click.command("quantize")
@model_option("fp32 export directory to quantize (from 'yoso-deploy export')")
@output_option("Output directory of the int8 export (new or empty, or a previous export to replace)", required=True)
@click.option("--method", type=click.Choice(["dynamic", "static"]), default=C.QUANTIZE_METHOD, show_default=True,
              help="dynamic: activations quantized per call, no calibration (the faster one, measured); static: QDQ "
                   "with activation ranges from calibration data.")
@click.option("--qk", type=click.Choice(["int8", "fp32"]), default=C.QUANTIZE_QK, show_default=True,
              help="The query/key projections, whose outputs the LSH codes are computed from: int8 (faster) or fp32 "
                   "(codes closer to the fp32 export's; docs/performance.md 'int8').")
@click.option("--per-channel", is_flag=True, help="One weight scale per output channel (default: one per tensor).")
@click.option("--reduce-range/--no-reduce-range", default=None,
              help="7-bit weights (for x86 CPUs without VNNI); default: the preset's, else off.")
@click.option("--preset", default=None,
              help="CPU family: avx2, avx512-vnni or arm64 (sets data types and reduce-range); auto: this CPU's "
                   "(VNNI or not, ARM64). Default: none (uint8 activations, int8 weights, full range).")
@click.option("--activation-type", type=click.Choice(["uint8", "int8"]), default=None,
              help="Static: activation type (default uint8; arm64 preset: int8). Dynamic is always uint8.")
@click.option("--weight-type", type=click.Choice(["int8", "uint8"]), default=None, help="Weight type (default int8).")
@click.option("--calibration", type=ExpandedPath(path_type=Path), default=None,
              help="Static: UTF-8 text file, one example per line (a tab between question and context / text pair).")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=None,
              help="Static: number of calibration inputs (lines of --calibration, or generated inputs; default 32).")
@click.option("--calibration-seq-len", type=click.IntRange(min=1), default=None,
              help="Static: length of generated calibration inputs / truncation of text (default min(512, max)).")
@click.option("--exclude", default=None,
              help="Comma-separated projections to keep fp32: node names or checkpoint modules, or patterns of them "
                   "(e.g. 'yoso.encoder.layer.0.*,qa_outputs').")
@click.option("--check-shapes", default=None, callback=_shapes,
              help="BATCHxSEQ list of the post-quantization check (default: 2x16,3x77,2x<min(512, max positions)>).")
@click.option("--no-validate", is_flag=True, help="Skip the int8-vs-fp32 check after quantizing.")
@threads_option("ONNX Runtime intra-op threads of calibration and check")
@verbose_option("Show the check's table")
def quantize_cmd(model_dir, output, method, qk, per_channel, reduce_range, preset, activation_type, weight_type,
                 calibration, calibration_samples, calibration_seq_len, exclude, check_shapes, no_validate, threads,
                 verbose):
    """Quantize an fp32 export to int8 for CPU serving (ONNX Runtime quantization of the dense projections).

    The output is an export directory every command and runtime class accepts; its manifest records the
    method, options, quantized and excluded nodes and the source export. After quantizing, the int8 export
    is judged against the fp32 export by the int8 criteria (cosine of outputs and hidden states, max abs,
    code agreement, task agreement); a failed check exits 1 and marks the manifest "failed".
    'yoso-deploy validate' on the int8 export also compares it with the PyTorch reference.

    \b
    Examples:
      yoso-deploy quantize --model out/qa --output out/qa-int8
      yoso-deploy quantize --model out/qa --output out/qa-int8 --method static --calibration texts.txt
    """
    from ..quantization import QuantizationCheckError, quantize

    try:
        res = quantize(model_dir, output, method=method, qk=qk, per_channel=per_channel, reduce_range=reduce_range,
                       preset=preset, activation_type=activation_type, weight_type=weight_type,
                       calibration=calibration, calibration_samples=calibration_samples,
                       calibration_seq_len=calibration_seq_len, exclude=comma_list(exclude), threads=threads,
                       check_shapes=check_shapes, validate=not no_validate, progress=say)
    except QuantizationCheckError as e:
        print_check("post-quantization check", e.result, verbose)
        raise
    _print_quantized(res, model_dir)
    if res.report is None:
        click.echo("post-quantization check skipped (--no-validate)")
    print_check("post-quantization check", res, verbose)


def _print_optimized(job, verbose: bool) -> None:
    res = job.optimized
    o = res.manifest["optimization"]
    fused = ", ".join(f"{n} {op}" for op, n in o["fused_ops"].items()) or "nothing"
    click.echo(f"optimized at {o['level']} to {res.onnx_path} in {res.seconds:.1f}s: {fused}; nodes "
               f"{o['nodes']['before']} -> {o['nodes']['after']}")
    if job.skipped_validation:
        click.echo(f"parity check skipped: {job.skipped_validation}")
    elif job.check is not None:
        table = res.manifest["parity"].get("table", [])
        if verbose or not job.ok:
            click.echo("\n".join(table))
        click.echo(f"parity check ({', '.join(res.manifest['parity']['shapes'])}): "
                   f"{'passed' if job.ok else 'FAILED'}" + ("" if verbose or not job.ok else " (--verbose for the table)"))


@click.command("optimize")
@model_option("Export directory to optimize (from 'yoso-deploy export')")
@output_option("Output directory of the optimized export (new or empty, or a previous export to replace)", required=True)
@click.option("--level", type=click.Choice(C.OPTIMIZE_LEVELS), default="O2", show_default=True, help=OPTIMIZE_HELP)
@click.option("--check-shapes", default=None, callback=_shapes,
              help="BATCHxSEQ list of the parity check (default: 2x16,3x77,2x<min(512, max positions)>).")
@click.option("--no-validate", is_flag=True, help="Skip the parity check against the PyTorch reference.")
@threads_option("ONNX Runtime intra-op threads of the optimizer and the check")
@verbose_option("Show the check's table")
def optimize_cmd(model_dir, output, level, check_shapes, no_validate, threads, verbose):
    """Optimize an export's graph for the CPU (fusions), as a new export.

    The result keeps its manifest (with the level and the fused ops) and is judged against the PyTorch
    reference like any export (tie-aware, layer by layer) where torch is installed; 'quantize' takes it.

    \b
    Examples:
      yoso-deploy optimize --model out/qa --output out/qa-o2
      yoso-deploy optimize --model out/qa --output out/qa-o3 --level O3
      yoso-deploy quantize --model out/qa-o2 --output out/qa-o2-int8
    """
    from ..workflow import OptimizeCheckError, optimize

    try:
        job = optimize(model_dir, output, level=level, validate=not no_validate, threads=threads,
                       check_shapes=check_shapes, progress=say)
    except OptimizeCheckError as e:
        _print_optimized(e.result, verbose)
        raise
    _print_optimized(job, verbose)


COMMANDS = (export_cmd, quantize_cmd, optimize_cmd)
