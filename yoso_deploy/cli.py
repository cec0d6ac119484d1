"""``yoso-deploy`` command line: a thin layer over the library API."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from . import __version__
from . import tasks as _tasks
from .cli_types import ExpandedPath


class DebuggableGroup(click.Group):
    """Turns any exception into one ``error:`` line and exit code 1, unless ``--debug`` is given.

    A missing optional dependency (torch, polygraphy, ...) becomes the ``pip install 'yoso-deploy[extra]'``
    that provides it."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:  # noqa: BLE001 - the CLI's one error boundary
            from ._extras import COMMAND_EXTRAS, missing_extra

            if ctx.obj and ctx.obj.get("debug"):
                raise
            sub = ctx.invoked_subcommand
            extra = missing_extra(e, f"'yoso-deploy {sub}'" if sub else None, COMMAND_EXTRAS.get(sub))
            shown = extra if extra is not None else e
            msg = str(shown).strip().splitlines()[0] if str(shown).strip() else type(e).__name__
            click.echo(f"error: {msg}", err=True)
            click.echo("(run 'yoso-deploy --debug ...' for the full traceback)", err=True)
            ctx.exit(1)


def _quiet_transformers():
    """Offline, no progress bars, errors only -- without importing transformers (start-up time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:  # already imported (in-process callers): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


@click.group(cls=DebuggableGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="yoso-deploy")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx, debug):
    """Deploy YOSO models: export to ONNX with the com.yoso custom ops and run them in ONNX Runtime.

    \b
    Typical use:
      yoso-deploy export --task qa --output out/qa        # embedded default model
      yoso-deploy run --model out/qa --text "question" --text-pair "context"
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    _quiet_transformers()


TASK_HELP = (  # from the task registry
    f"Model head: {', '.join(_tasks.TASKS)} (aliases: {', '.join(sorted(_tasks.ALIASES))})."
)


@main.command("export")
@click.option("--model", "model_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Hugging Face YOSO checkpoint directory (config.json + weights). Default: the embedded model in model/.")
@click.option("--task", default=None,
              help=TASK_HELP + " Default: the checkpoint's architecture (config.json 'architectures'); a task whose "
                   "head the checkpoint lacks is refused (base is always allowed).")
@click.option("--output", "-o", type=ExpandedPath(path_type=Path), required=True,
              help="Output directory (new or empty, or a previous export to replace).")
@click.option("--attention", type=click.Choice(["lsh", "expectation"]), default="lsh", show_default=True,
              help="lsh: FastHash + LSHCumulation custom ops (linear cost); expectation: exact YOSO-E with standard ONNX ops.")
@click.option("--opset", type=int, default=None, help="ONNX opset (17 or higher; default 18).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random hash functions (signs).")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Absolute tolerance of the post-export check (outputs and layer tensors, with hash codes injected).")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="Relative tolerance of the post-export check.")
@click.option("--check-shapes", default=None,
              help="BATCHxSEQ list of the post-export check, e.g. 2x16,2x512 (default: 2x16,3x77,2x<min(512, max positions)>).")
@click.option("--dtype", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="Float type of weights and activations. fp16 is for GPU backends (TensorRT strongly typed "
                   "networks, ORT CUDA); hashing stays fp32 inside FastHash.")
@click.option("--debug-codes", is_flag=True, help="Also output every layer's hash codes (for parity debugging).")
@click.option("--no-validate", is_flag=True, help="Skip the ONNX Runtime vs PyTorch check after export.")
@click.option("--portable", type=click.Choice(["functions", "off", "inline"]), default="functions", show_default=True,
              help="functions: the com.yoso ops also carry standard-ONNX bodies (any ONNX runtime runs the model; "
                   "ours runs the library); off: no bodies; inline: bodies expanded, no com.yoso node (OpenVINO).")
@click.option("--quantize", "quantize_to", type=click.Choice(["int8"]), default=None,
              help="Also quantize: the fp32 export goes to OUTPUT/fp32, the int8 export (the defaults of 'yoso-deploy "
                   "quantize') to OUTPUT. Other quantization options: run 'yoso-deploy quantize' on an fp32 export.")
@click.option("--verbose", is_flag=True, help="Show the exporter's log.")
def export_cmd(model_dir, task, output, attention, opset, seed, atol, rtol, check_shapes, dtype, debug_codes,
               no_validate, portable, quantize_to, verbose):
    """Export a YOSO checkpoint to ONNX (model.onnx, config.json, tokenizer files, yoso_export.json).

    After export the model is run by ONNX Runtime with libyoso_ort.so on generated, padded inputs
    and judged against the PyTorch reference (tie-aware for LSH, layer by layer; see 'yoso-deploy
    validate'). A failed check exits 1, keeps the files and marks the manifest "failed", so that
    run/qa/bench/validate refuse the export unless --allow-failed-export.
    """
    from .export import DEFAULT_OPSET, ParityError, export
    from .export.exporter import parse_shapes

    t0 = time.perf_counter()
    shapes = parse_shapes(check_shapes) if check_shapes else None
    final_output = output
    if quantize_to:
        if dtype != "fp32":
            raise click.UsageError("--quantize int8 starts from an fp32 export; drop --dtype fp16")
        output = Path(output) / "fp32"
    try:
        result = export(model_dir, output, task=task, attention=attention,
                        opset=DEFAULT_OPSET if opset is None else opset, seed=seed, check_shapes=shapes,
                        debug_codes=debug_codes, validate=not no_validate, atol=atol, rtol=rtol, dtype=dtype,
                        portable=portable, verbose=verbose)
    except ParityError as e:
        _print_check(e.result)
        raise
    click.echo(f"exported {result.manifest['task']} ({result.manifest['attention']}, opset {result.manifest['opset']}) "
               f"to {result.onnx_path} in {result.export_seconds:.1f}s")
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.skipped_validation:
        click.echo(f"parity check skipped: {result.skipped_validation}")
    _print_check(result)
    if quantize_to:
        _quantize_and_report(result.output_dir, final_output, {}, validate=not no_validate)
    click.echo(f"done in {time.perf_counter() - t0:.1f}s")


def _quantize_and_report(model_dir, output, options: dict, validate: bool = True) -> None:
    """``quantize`` (and ``export --quantize``): quantize, print the check, exit 1 if it failed."""
    from .quantization import QuantizationCheckError, quantize

    def progress(msg):
        click.echo(msg, err=True)

    try:
        res = quantize(model_dir, output, validate=validate, progress=progress, **options)
    except QuantizationCheckError as e:
        _print_quantize_check(e.result)
        raise
    q = res.manifest["quantization"]
    kept = f"; fp32: {', '.join(q['excluded_modules'])}" if q["excluded_modules"] else ""
    click.echo(f"quantized {len(res.quantized)} of {len(res.quantized) + len(res.excluded)} dense projections of "
               f"{model_dir} ({q['method']}, weights {q['weight_type']}, activations {q['activation_type']}"
               f"{', per-channel' if q['per_channel'] else ''}{', reduce-range' if q['reduce_range'] else ''}) to "
               f"{res.onnx_path} in {res.seconds:.1f}s{kept}")
    _print_quantize_check(res)


def _print_quantize_check(result) -> None:
    if result.report is None:
        click.echo("post-quantization check skipped (--no-validate)")
        return
    shapes = ", ".join(f"{b}x{s}" for b, s in result.check_shapes)
    click.echo(f"int8 vs the fp32 export on {shapes} (batch x sequence, padded), {result.check_seconds:.1f}s:")
    click.echo(result.table())
    click.echo(f"post-quantization check: {'passed' if result.ok else 'FAILED (the int8 export is marked failed)'}")


def _comma_list(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


@main.command("quantize")
@click.option("--model", "model_dir", type=ExpandedPath(path_type=Path), required=True,
              help="fp32 export directory (from 'yoso-deploy export').")
@click.option("--output", "-o", type=ExpandedPath(path_type=Path), required=True,
              help="Output directory of the int8 export (new or empty, or a previous export to replace).")
@click.option("--method", type=click.Choice(["dynamic", "static"]), default="dynamic", show_default=True,
              help="dynamic: activations quantized per call, no calibration (the faster one, measured); static: QDQ "
                   "with activation ranges from calibration data.")
@click.option("--qk", type=click.Choice(["int8", "fp32"]), default="int8", show_default=True,
              help="The query/key projections, whose outputs the LSH codes are computed from: int8 (faster) or fp32 "
                   "(codes closer to the fp32 export's; README 'int8 quantization').")
@click.option("--per-channel", is_flag=True, help="One weight scale per output channel (default: one per tensor).")
@click.option("--reduce-range/--no-reduce-range", default=None,
              help="7-bit weights (for x86 CPUs without VNNI); default: the preset's, else off.")
@click.option("--preset", default=None, help="CPU family: avx2, avx512-vnni or arm64 (sets data types and reduce-range).")
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
@click.option("--check-shapes", default=None,
              help="BATCHxSEQ list of the post-quantization check (default: 2x16,3x77,2x<min(512, max positions)>).")
@click.option("--no-validate", is_flag=True, help="Skip the int8-vs-fp32 check after quantizing.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads of calibration and check.")
def quantize_cmd(model_dir, output, method, qk, per_channel, reduce_range, preset, activation_type, weight_type,
                 calibration, calibration_samples, calibration_seq_len, exclude, check_shapes, no_validate, threads):
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
    from .export.exporter import parse_shapes

    options = dict(method=method, qk=qk, per_channel=per_channel, reduce_range=reduce_range, preset=preset,
                   activation_type=activation_type, weight_type=weight_type, calibration=calibration,
                   calibration_samples=calibration_samples, calibration_seq_len=calibration_seq_len,
                   exclude=_comma_list(exclude), threads=threads,
                   check_shapes=parse_shapes(check_shapes) if check_shapes else None)
    _quantize_and_report(model_dir, output, options, validate=not no_validate)


def _print_check(result) -> None:
    if result.parity is None:
        return
    shapes = ", ".join(f"{b}x{s}" for b, s in result.check_shapes)
    click.echo(f"ONNX Runtime vs PyTorch on {shapes} (batch x sequence, padded), {result.parity_seconds:.1f}s:")
    click.echo(result.parity_table())
    click.echo(f"post-export check: {'passed' if result.ok else 'FAILED (the export is marked failed)'}")


def _feeds_from_json(manifest: dict, source: str) -> dict:
    """``--input``: a JSON file or inline JSON object, input name -> nested lists. A missing batch axis is
    added; everything else is checked by the runtime (:func:`yoso_deploy.runtime.models.prepare_inputs`)."""
    from .runtime.models import as_input_array

    text = source
    if not source.lstrip().startswith(("{", "[")):  # a file path (inline JSON can be longer than a file name may be)
        path = Path(os.path.expanduser(source))
        try:
            if path.is_file():
                text = path.read_text()
        except OSError:
            pass
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--input is neither a JSON file nor valid JSON ({e.msg} at char {e.pos})") from e
    names = [t["name"] for t in manifest["inputs"]]
    if not isinstance(data, dict):
        raise ValueError(f'--input must be a JSON object of input name -> nested lists, e.g. {{"input_ids": [[0, 5, 2]]}}; '
                         f"got a JSON {type(data).__name__}")
    if "input_ids" not in data:
        raise ValueError(f"--input lacks 'input_ids' (needs: {', '.join(names)}; attention_mask defaults to ones)")
    rank = len(manifest["inputs"][0]["dims"])
    feeds = {}
    for name, value in data.items():
        arr = as_input_array(f"--input {name!r}", value)
        feeds[name] = arr[None] if arr.ndim == rank - 1 else arr
    return feeds


def _print_raw(outs: dict) -> None:
    import numpy as np

    np.set_printoptions(precision=4, suppress=True, threshold=20, edgeitems=3)
    for n, v in outs.items():
        click.echo(f"{n} {list(v.shape)} {v.dtype}:\n{v}")


def _to_json(value):
    """Pipeline results -> JSON-able (numpy arrays and scalars to lists and numbers)."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_json(path: Path | None, data) -> None:
    if path is None:
        return
    try:
        path.write_text(json.dumps(data))
    except OSError as e:
        raise OSError(f"cannot write --output-json {str(path)!r}: {e.strerror or e}; choose a writable file path") from e
    click.echo(f"wrote {path}", err=True)


def _run_pipeline(pipe, task: str, texts: tuple, pair: str | None, opts: dict):
    """``run --text``: the task's pipeline on the texts (qa: each --text is a question about --text-pair)."""
    if task == "qa":
        if not pair:
            raise click.UsageError("a qa export needs --text QUESTION --text-pair CONTEXT")
        res = [pipe(question=q, context=pair, **opts) for q in texts]
        return res[0] if len(res) == 1 else res
    if task == "multiple-choice":
        if len(texts) < 3:
            raise click.UsageError("a multiple-choice export needs --text PROMPT --text CHOICE --text CHOICE [...]")
        return pipe(texts[0], list(texts[1:]), **opts)
    inputs = texts[0] if len(texts) == 1 else list(texts)
    if task == "sequence-classification":
        return pipe(inputs, text_pair=pair, **opts)
    if pair:
        raise click.UsageError(f"--text-pair is for qa and sequence-classification exports, not {task}")
    return pipe(inputs, **opts)


def _print_result(task: str, result) -> None:
    if task == "base":  # embeddings: summarised; --output-json has every value
        import numpy as np

        vecs = result if isinstance(result, list) else [result]
        np.set_printoptions(precision=4, suppress=True, threshold=12, edgeitems=3)
        for i, v in enumerate(vecs):
            click.echo(f"embedding[{i}] {list(np.shape(v))}: {np.asarray(v)}")
        return
    click.echo(json.dumps(_to_json(result), indent=2))


PIPELINE_OPTIONS = {  # run option -> (pipeline parameter, tasks that take it)
    "top_k": ("top_k", {"qa", "sequence-classification", "mlm"}),
    "max_answer_len": ("max_answer_len", {"qa"}),
    "handle_impossible_answer": ("handle_impossible_answer", {"qa"}),
    "aggregation": ("aggregation_strategy", {"token-classification"}),
    "pooling": ("pooling", {"base"}),
    "normalize": ("normalize", {"base"}),
    "function_to_apply": ("function_to_apply", {"sequence-classification"}),
}


@main.command("run")
@click.option("--model", "model_dir", type=ExpandedPath(path_type=Path), required=True,
              help="Export directory (from 'yoso-deploy export').")
@click.option("--input", "input_json", default=None,
              help='JSON file or inline JSON mapping input names to nested lists, e.g. {"input_ids": [[0, 5, 2]]}; '
                   "prints the raw outputs.")
@click.option("--text", "texts", multiple=True,
              help="Text for the export's pipeline (repeat for a batch; qa: the question; multiple-choice: the prompt "
                   "then each choice).")
@click.option("--text-pair", default=None, help="Second segment: the context for qa, the pair for classification.")
@click.option("--raw", is_flag=True, help="Print the model's raw outputs (logits) instead of the pipeline's result.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="qa, classification, fill-mask: how many results.")
@click.option("--max-answer-len", type=click.IntRange(min=1), default=None, help="qa: longest answer in tokens.")
@click.option("--handle-impossible-answer", is_flag=True, default=None, help="qa: allow the empty (null) answer.")
@click.option("--aggregation", type=click.Choice(["none", "simple", "first", "average", "max"]), default=None,
              help="token-classification: how tokens become entities.")
@click.option("--pooling", type=click.Choice(["mean", "cls", "none"]), default=None, help="feature extraction pooling.")
@click.option("--normalize", is_flag=True, default=None, help="feature extraction: unit-length vectors.")
@click.option("--function-to-apply", type=click.Choice(["softmax", "sigmoid", "none"]), default=None,
              help="classification scores (default: by the config's problem_type, as transformers).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="ONNX Runtime execution provider; a missing provider is an error, not a fallback.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--allow-failed-export", is_flag=True, help="Run an export whose post-export parity check failed.")
@click.option("--output-json", type=ExpandedPath(path_type=Path), default=None,
              help="Write the result (or with --raw/--input every output) to this JSON file.")
@click.option("--backend", type=click.Choice(["ort", "trt"]), default="ort", show_default=True,
              help="ort: ONNX Runtime with libyoso_ort.so; trt: the TensorRT engine made by 'yoso-deploy build-engine' "
                   "(raw outputs).")
@click.option("--engine", "engine_path", type=ExpandedPath(path_type=Path, dir_okay=False), default=None,
              help="TensorRT engine for --backend trt (default: <model>/model.plan).")
@click.option("--plugins", default="auto", show_default=True,
              help="TensorRT plugin library for --backend trt ('auto' = the installed libyoso_trt.so).")
def run_cmd(model_dir, input_json, texts, text_pair, raw, top_k, max_answer_len, handle_impossible_answer, aggregation,
            pooling, normalize, function_to_apply, provider, threads, allow_failed_export, output_json, backend,
            engine_path, plugins):
    """Run an export: the task's pipeline on --text (answer, labels, entities, tokens, embeddings), or the
    raw model outputs for --input token ids / --raw.

    \b
    Examples:
      yoso-deploy run --model out/qa --text "Where did Ada move?" --text-pair "Ada moved to Oslo."
      yoso-deploy run --model out/ner --text "Ada Lovelace lives in London" --aggregation simple
      yoso-deploy run --model out/qa --input '{"input_ids": [[0, 7, 9, 2]]}'
    """
    from .manifest import check_usable, load_manifest

    if bool(input_json) == bool(texts):
        raise click.UsageError("give exactly one of --input JSON or --text TEXT")
    manifest = load_manifest(model_dir)
    task = manifest["task"]
    check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
    given = {"top_k": top_k, "max_answer_len": max_answer_len, "handle_impossible_answer": handle_impossible_answer,
             "aggregation": aggregation, "pooling": pooling, "normalize": normalize,
             "function_to_apply": function_to_apply}
    opts = {}
    for name, value in given.items():
        if value is None:
            continue
        param, takers = PIPELINE_OPTIONS[name]
        if task not in takers or raw or input_json:
            raise click.UsageError(f"--{name.replace('_', '-')} applies to the pipelines of "
                                   f"{', '.join(sorted(takers))} exports (without --raw/--input), not this {task} run")
        opts[param] = value
    session = {"provider": provider, "intra_op_threads": threads, "allow_failed_export": allow_failed_export}
    if backend == "trt":
        return _run_trt(model_dir, manifest, input_json, texts, text_pair, engine_path, plugins, output_json)
    if input_json or raw:
        from .runtime.models import YosoOrtModel

        if input_json:
            feeds = _feeds_from_json(manifest, input_json)
        else:
            from .runtime.tokenizer import Tokenizer

            feeds = _encode_texts(Tokenizer.from_dir(model_dir), manifest, texts, text_pair)
        model = YosoOrtModel.from_pretrained(model_dir, **session)
        t0 = time.perf_counter()
        outs = model.run(feeds)
        ms = 1000 * (time.perf_counter() - t0)
        shape = "x".join(str(s) for s in next(iter(feeds.values())).shape)
        click.echo(f"ran {task} ({manifest['attention']}) on input {shape} with ort {provider} in {ms:.1f} ms")
        _print_raw(outs)
        _write_json(output_json, {n: v.tolist() for n, v in outs.items()})
        return
    from .runtime.pipelines import pipeline

    pipe = pipeline(model_dir, **session)
    t0 = time.perf_counter()
    result = _run_pipeline(pipe, task, texts, text_pair, opts)
    ms = 1000 * (time.perf_counter() - t0)
    click.echo(f"{task} ({manifest['attention']}) pipeline with ort {provider}: {ms:.1f} ms", err=True)
    _print_result(task, result)
    _write_json(output_json, _to_json(result))


def _encode_texts(tok, manifest: dict, texts: tuple, pair: str | None) -> dict:
    """Token ids of --text for --raw / --backend trt (multiple-choice: [1, choices, S])."""
    names = [t["name"] for t in manifest["inputs"]]
    msl = int(manifest["max_sequence_length"])
    if manifest["task"] == "multiple-choice":
        if len(texts) < 2:
            raise click.UsageError("a multiple-choice export needs --text PROMPT --text CHOICE [...]")
        enc = tok([texts[0]] * (len(texts) - 1), list(texts[1:]), max_length=msl)
        return {k: v[None] for k, v in enc.model_inputs(names).items()}
    pairs = [pair] * len(texts) if pair else None
    return tok(list(texts), pairs, max_length=msl).model_inputs(names)


def _run_trt(model_dir, manifest, input_json, texts, text_pair, engine_path, plugins, output_json):
    import numpy as np

    from . import trt as ytrt
    from .runtime.models import prepare_inputs

    ytrt.require_tensorrt()
    config_path = Path(model_dir) / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if input_json:
        feeds = _feeds_from_json(manifest, input_json)
    else:
        from .runtime.tokenizer import Tokenizer

        feeds = _encode_texts(Tokenizer.from_dir(model_dir), manifest, texts, text_pair)
    feeds = prepare_inputs(feeds, manifest, config)  # the checks the ORT path makes, before TensorRT sees them
    runner = ytrt.make_trt_runner(engine_path or Path(model_dir) / "model.plan", plugins=plugins)
    with runner:  # engine deserialization and buffer setup stay outside the timing
        t0 = time.perf_counter()
        raw = runner.infer(feed_dict=feeds)
        ms = 1000 * (time.perf_counter() - t0)
    names = [t["name"] for t in manifest["outputs"]] + [t["name"] for t in manifest.get("debug_outputs", [])]
    outs = {n: np.asarray(raw[n]) for n in names if n in raw}
    shape = "x".join(str(s) for s in feeds["input_ids"].shape)
    click.echo(f"ran {manifest['task']} ({manifest['attention']}) on input {shape} with trt in {ms:.1f} ms")
    _print_raw(outs)
    _write_json(output_json, {n: v.tolist() for n, v in outs.items()})


def _int_list(value: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, e.g. 1,4") from None
    if not out or any(v < 1 for v in out):
        raise click.BadParameter(f"{what} must list positive integers, e.g. 1,4")
    return out


def _backend_list(value: str | None) -> list[str] | None:
    return [b.strip() for b in value.split(",") if b.strip()] if value else None


def _default_export_dir() -> Path:
    """Where the main job puts the default export; validate/bench use it when --model is not given."""
    return Path("out") / "qa"


def _range3(value: str, what: str) -> tuple[int, int, int]:
    vals = _int_list(value, what)
    if len(vals) != 3 or not vals[0] <= vals[1] <= vals[2]:
        raise click.BadParameter(f"{what} must be min,opt,max with min <= opt <= max, e.g. 1,128,512")
    return vals[0], vals[1], vals[2]


@main.command("build-engine")
@click.option("--model", "model_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Export directory (default: out/qa, where 'scripts/main.sh' exports the default model).")
@click.option("--output", "-o", type=ExpandedPath(path_type=Path, dir_okay=False), default=None,
              help="Engine file to write (default: <model>/model.plan).")
@click.option("--plugins", default="auto", show_default=True,
              help="TensorRT plugin library: 'auto' (the installed libyoso_trt.so), a path to libyoso_trt.so "
                   "or libyoso_trt_dyn.so, or 'none' if already registered.")
@click.option("--batch", "batch_range", default="1,1,8", show_default=True,
              help="min,opt,max batch size of the optimization profile.")
@click.option("--seq-len", "seq_range", default=None,
              help="min,opt,max sequence length (default: 1,128,<the export's max_sequence_length>).")
@click.option("--min-shapes", default=None,
              help="Explicit profile instead of --batch/--seq-len, trtexec style: input_ids:1x1,attention_mask:1x1.")
@click.option("--opt-shapes", default=None, help="e.g. input_ids:1x128,attention_mask:1x128.")
@click.option("--max-shapes", default=None, help="e.g. input_ids:8x512,attention_mask:8x512.")
@click.option("--fp16", is_flag=True,
              help="Let TensorRT run layers in fp16 (weakly typed network + BuilderFlag.FP16). Default: strongly "
                   "typed, every precision from the ONNX model (export with --dtype fp16 for an fp16 model).")
@click.option("--workspace-mb", type=click.IntRange(min=1), default=None, help="Limit of TensorRT's workspace pool, MiB.")
@click.option("--timing-cache", type=ExpandedPath(path_type=Path, dir_okay=False), default=None,
              help="Timing cache file to read (if present) and update.")
@click.option("--verbose", is_flag=True, help="Show TensorRT's verbose log.")
def build_engine_cmd(model_dir, output, plugins, batch_range, seq_range, min_shapes, opt_shapes, max_shapes, fp16,
                     workspace_mb, timing_cache, verbose):
    """Build a TensorRT engine from an export; the com.yoso ops run as the plugins of libyoso_trt.so.

    \b
    Example:
      yoso-deploy build-engine --model out/qa --batch 1,1,8 --seq-len 1,128,512
      yoso-deploy run --model out/qa --backend trt --text "question" --text-pair "context"
    """
    from . import trt as ytrt

    from .export import load_manifest

    ytrt.require_tensorrt()  # "TensorRT runtime not installed: ..." before anything else
    model_dir = model_dir or _default_export_dir()
    manifest = load_manifest(model_dir)
    onnx_path = Path(model_dir) / manifest.get("model_file", "model.onnx")
    output = output or Path(model_dir) / "model.plan"
    if min_shapes or opt_shapes or max_shapes:
        mins, opts, maxs = (ytrt.parse_shapes(s) for s in (min_shapes, opt_shapes, max_shapes))
    else:
        seq = _range3(seq_range, "--seq-len") if seq_range else ytrt.DEFAULT_SEQUENCE
        mins, opts, maxs = ytrt.profile_from_manifest(manifest, batch=_range3(batch_range, "--batch"), sequence=seq)
    res = ytrt.build_engine(onnx_path, output, plugins=plugins, min_shapes=mins, opt_shapes=opts, max_shapes=maxs,
                            fp16=fp16, workspace_mb=workspace_mb, timing_cache=timing_cache, verbose=verbose,
                            progress=True)
    for name, (mn, opt, mx) in res.profile.items():
        click.echo(f"  {name}: min {list(mn)}  opt {list(opt)}  max {list(mx)}")
    typing = "strongly typed" if res.strongly_typed else "weakly typed, fp16 allowed"
    click.echo(f"built {res.engine_path} ({typing}) with TensorRT {res.tensorrt_version} in {res.seconds:.1f}s "
               f"(plugins: {res.plugins or 'pre-registered'})")


@main.command("validate")
@click.option("--model", "model_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Export directory (default: out/qa, where 'scripts/main.sh' exports the default model).")
@click.option("--backends", default="torch,ort-cpu,ort-cuda,trt", show_default=True,
              help="Comma-separated backends; torch is the reference. Also ort-portable (stock ONNX Runtime, the "
                   "export's function bodies) and openvino. Unavailable ones are listed with the reason.")
@click.option("--batch", "batches", default="1,4", show_default=True, help="Batch sizes (comma-separated).")
@click.option("--seq-len", "seq_lens", default="16,128", show_default=True, help="Sequence lengths (comma-separated).")
@click.option("--atol", multiple=True,
              help="Absolute tolerance, global (1e-4) or per output (start_logits=1e-3; hidden_states=... for layer "
                   "tensors); repeatable.")
@click.option("--rtol", multiple=True, help="Relative tolerance, global (1e-3) or per output; repeatable.")
@click.option("--hidden-rtol", type=float, default=None,
              help="Per-feature relative error allowed in hidden states and layer tensors (default 1e-4).")
@click.option("--tie-bound-scale", type=float, default=1.0, show_default=True,
              help="Multiplier of the float32 tie bound of LSH codes (plugins/OPS.md section 5); raise only for "
                   "backends that compute projections in lower precision (e.g. TF32).")
@click.option("--inputs", type=ExpandedPath(path_type=Path), default=None,
              help="Use these inputs instead of generated ones: .npz, or JSON (object or list of objects, name -> nested list).")
@click.option("--reference", type=ExpandedPath(path_type=Path), default=None,
              help="Checkpoint directory of the PyTorch reference (default: the export's source model).")
@click.option("--report", "report_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Write validation.json and validation.md here.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--allow-failed-export", is_flag=True, help="Validate an export whose post-export check failed.")
@click.option("--int8-threshold", "int8_thresholds", multiple=True,
              help="int8 exports: override a threshold of the int8 criteria, NAME=VALUE (min_output_cosine, max_abs_rel, "
                   "min_hidden_cosine, min_code_agreement, min_task_agreement, min_decisions, tie_margin); repeatable.")
@click.option("--verbose", is_flag=True, help="Show polygraphy's log.")
def validate_cmd(model_dir, backends, batches, seq_lens, atol, rtol, hidden_rtol, tie_bound_scale, inputs, reference,
                 report_dir, threads, allow_failed_export, int8_thresholds, verbose):
    """Check that every available backend computes what the PyTorch reference computes.

    Inputs are generated from the export's input spec with realistic padding (row i > 0 of a batch
    is right-padded), or loaded with --inputs. LSH exports are judged tie-aware: every layer's hash
    codes may differ from the reference's only in near-tie bits (|t| within the float32 tie bound),
    and with the backend's codes injected into the reference every layer tensor, hidden state and
    output must agree within tolerance. Exit code 1 names the first failing layer. An int8 export
    (from 'yoso-deploy quantize') is judged by the int8 criteria against its fp32 export and the
    reference instead (--int8-threshold; README 'int8 quantization').
    """
    from . import validate as v
    from .int8_parity import parse_thresholds

    a, a_per = v.parse_tolerances(atol, v.DEFAULT_ATOL)
    r, r_per = v.parse_tolerances(rtol, v.DEFAULT_RTOL)
    res = v.compare(model_dir or _default_export_dir(), backends=_backend_list(backends),
                    batches=_int_list(batches, "--batch"), seq_lens=_int_list(seq_lens, "--seq-len"),
                    atol={"*": a, **a_per}, rtol={"*": r, **r_per}, inputs=inputs, reference=reference,
                    report_dir=report_dir, verbose=verbose,
                    hidden_rtol=v.DEFAULT_HIDDEN_RTOL if hidden_rtol is None else hidden_rtol,
                    tie_bound_scale=tie_bound_scale, allow_failed_export=allow_failed_export,
                    intra_op_threads=threads, int8_thresholds=parse_thresholds(int8_thresholds))
    for b in res.backends.values():
        if not b.available:
            click.echo(f"skipped {b.name}: {b.reason}")
    click.echo(f"reference: {res.reference}; {len(res.cases)} input case(s); {res.seconds:.1f}s")
    click.echo(res.table())
    if report_dir:
        click.echo(f"report: {report_dir}/validation.md")
    if not res.passed:
        first = res.first_failure()
        raise click.ClickException(f"validation FAILED for {first.backend}:{first.name} (input {first.case}): {first.error}")
    click.echo("validation passed")


@main.command("bench")
@click.option("--model", "model_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Export directory (default: out/qa, where 'scripts/main.sh' exports the default model).")
@click.option("--backends", default="ort-cpu", show_default=True, help="Comma-separated: torch, ort-cpu, ort-cuda, trt.")
@click.option("--batch", "batches", default="1", show_default=True, help="Batch sizes (comma-separated).")
@click.option("--seq-len", "seq_lens", default="128,512,2048", show_default=True, help="Sequence lengths (comma-separated).")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed runs before timing each case.")
@click.option("--iterations", type=int, default=None, help="Timed runs per case (default 20 unless --seconds).")
@click.option("--seconds", type=float, default=None, help="Time each case for this many seconds instead.")
@click.option("--threads", type=int, default=None, help="Intra-op threads (ORT) / torch threads (default: all cores).")
@click.option("--reference", type=ExpandedPath(path_type=Path), default=None,
              help="Checkpoint for the torch backend (default: the export's source model).")
@click.option("--report", "report_dir", type=ExpandedPath(path_type=Path), default=None,
              help="Write report.json, report.md and latency.png here.")
@click.option("--allow-failed-export", is_flag=True, help="Benchmark an export whose post-export parity check failed.")
def bench_cmd(model_dir, backends, batches, seq_lens, warmup, iterations, seconds, threads, reference, report_dir,
              allow_failed_export):
    """Measure latency (p50/p90/p99/mean), throughput and peak memory per backend, batch and length.

    The ORT backends time the runtime's own inference path (the one run, qa and serving use)."""
    from . import bench

    if iterations is None and seconds is None:
        iterations = 20
    res = bench.run(model_dir or _default_export_dir(), backends=_backend_list(backends),
                    batches=_int_list(batches, "--batch"), seq_lens=_int_list(seq_lens, "--seq-len"),
                    warmup=warmup, iterations=iterations, seconds=seconds, threads=threads, reference=reference,
                    report_dir=report_dir, progress=sys.stderr.isatty(), allow_failed_export=allow_failed_export)
    for b in res.backends.values():
        if not b.available:
            click.echo(f"skipped {b.name}: {b.reason}")
    m = res.machine
    click.echo(f"{m['cpu']} ({m['cores']} cores), onnxruntime {m['onnxruntime']}, torch {m['torch']}")
    click.echo(res.table())
    if report_dir:
        click.echo(f"report: {report_dir}/report.md, report.json, latency.png")


@main.command("qa")
@click.option("--model", "model_dir", type=ExpandedPath(path_type=Path), default=None,
              help="QA export directory (default: out/qa, where 'scripts/main.sh' exports the default model).")
@click.option("--question", required=True, help="The question.")
@click.option("--context", default=None, help="The context text.")
@click.option("--context-file", type=ExpandedPath(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Read the context from this UTF-8 file instead.")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True, help="How many answers to print.")
@click.option("--max-answer-len", type=click.IntRange(min=1), default=30, show_default=True, help="Longest answer in tokens.")
@click.option("--max-seq-len", type=click.IntRange(min=8), default=None, help="Window length in tokens (default: the model's maximum).")
@click.option("--doc-stride", type=click.IntRange(min=0), default=None,
              help="Token overlap between windows (default: 128, at most a quarter of the window).")
@click.option("--handle-impossible-answer", is_flag=True, help="Allow the empty answer (the context may not hold one).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Execution provider; a missing provider is an error, not a fallback.")
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: all cores).")
@click.option("--allow-failed-export", is_flag=True, help="Use an export whose post-export parity check failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the answers as JSON.")
def qa_cmd(model_dir, question, context, context_file, top_k, max_answer_len, max_seq_len, doc_stride,
           handle_impossible_answer, provider, threads, allow_failed_export, as_json):
    """Answer a question about a context with an exported QA model (ONNX Runtime)."""
    from .runtime.qa import QuestionAnsweringPipeline

    if (context is None) == (context_file is None):
        raise click.UsageError("give exactly one of --context TEXT or --context-file FILE")
    if context_file is not None:
        try:
            context = context_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"--context-file {str(context_file)!r} is not UTF-8 text ({e.reason} at byte {e.start}); "
                             "convert it to UTF-8") from None
    pipe = QuestionAnsweringPipeline.from_pretrained(model_dir or _default_export_dir(), provider=provider,
                                                     max_seq_len=max_seq_len, doc_stride=doc_stride,
                                                     intra_op_threads=threads, allow_failed_export=allow_failed_export)
    answers = pipe.answer(question, context, top_k=top_k, max_answer_len=max_answer_len,
                          handle_impossible_answer=handle_impossible_answer)
    if as_json:
        click.echo(json.dumps([a.to_json() for a in answers], indent=2))
        return
    if not answers:
        click.echo("no answer found")
    for rank, a in enumerate(answers, 1):
        shown = repr(a.answer) if a.answer else "(no answer)"
        click.echo(f"{rank}. {shown}  score {a.score:.4f}  span [{a.start}, {a.end})")


# serve, triton-repo, batch (yoso_deploy/cli_serving.py)
from .cli_serving import COMMANDS as _SERVING_COMMANDS  # noqa: E402

for _cmd in _SERVING_COMMANDS:
    main.add_command(_cmd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
