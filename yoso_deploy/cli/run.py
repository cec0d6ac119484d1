"""``yoso-deploy run`` and ``yoso-deploy qa``: an export's pipeline or raw outputs (:mod:`yoso_deploy.runtime`;
``--backend trt``: :mod:`yoso_deploy.backends.trt`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from .. import tasks as _tasks
from .options import ExpandedPath, allow_failed_option, model_option, say, threads_option

# run's option -> the pipeline's decoding option (which tasks take each: the task registry's ``decoding``)
_QA = _tasks.get("qa").decoding  # the qa pipeline's defaults, from the task registry
PIPELINE_OPTIONS = {"top_k": "top_k", "max_answer_len": "max_answer_len",
                    "handle_impossible_answer": "handle_impossible_answer", "aggregation": "aggregation_strategy",
                    "pooling": "pooling", "normalize": "normalize", "function_to_apply": "function_to_apply"}


def _write_json(path: Path | None, data) -> None:
    if path is None:
        return
    from ..errors import UsageError

    try:
        path.write_text(json.dumps(data))
    except OSError as e:
        raise UsageError(f"cannot write --output-json {str(path)!r}: {e.strerror or e}",
                         fix="choose a writable file path") from e
    say(f"wrote {path}")


def _print_raw(outs: dict) -> None:
    import numpy as np

    np.set_printoptions(precision=4, suppress=True, threshold=20, edgeitems=3)
    for n, v in outs.items():
        click.echo(f"{n} {list(v.shape)} {v.dtype}:\n{v}")


def _print_result(task: str, result) -> None:
    from ..runtime.records import to_json

    if task == "base":  # embeddings: summarised; --output-json has every value
        import numpy as np

        vecs = result if isinstance(result, list) else [result]
        np.set_printoptions(precision=4, suppress=True, threshold=12, edgeitems=3)
        for i, v in enumerate(vecs):
            click.echo(f"embedding[{i}] {list(np.shape(v))}: {np.asarray(v)}")
        return
    click.echo(json.dumps(to_json(result), indent=2))


@click.command("run")
@model_option()
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
@threads_option()
@allow_failed_option("Run")
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
    """Run an export: the task's pipeline on --text (answer, labels, entities, tokens, embeddings) -- printed as
    transformers' pipeline returns it -- or the raw model outputs for --input token ids / --raw.

    \b
    Examples:
      yoso-deploy run --model out/qa --text "Where did Ada move?" --text-pair "Ada moved to Oslo."
      yoso-deploy run --model out/ner --text "Ada Lovelace lives in London" --aggregation simple
      yoso-deploy run --model out/qa --input '{"input_ids": [[0, 7, 9, 2]]}'
    """
    from ..manifest import check_usable, load_manifest

    if bool(input_json) == bool(texts):
        raise click.UsageError("give exactly one of --input JSON or --text TEXT")
    given = {"top_k": top_k, "max_answer_len": max_answer_len, "handle_impossible_answer": handle_impossible_answer,
             "aggregation": aggregation, "pooling": pooling, "normalize": normalize,
             "function_to_apply": function_to_apply}
    options = {PIPELINE_OPTIONS[k]: v for k, v in given.items() if v is not None}
    if options and (raw or input_json or backend == "trt"):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None)
        raise click.UsageError(f"{flags} applies to the pipelines' results, not to raw outputs "
                               "(--raw/--input/--backend trt)")
    manifest = load_manifest(model_dir)
    task = manifest["task"]
    for flag, param in PIPELINE_OPTIONS.items():  # which task takes which option: the task registry
        if given[flag] is not None and param not in _tasks.get(task).decoding:
            takers = sorted(t.name for t in _tasks.TASKS.values() if param in t.decoding)
            raise click.UsageError(f"--{flag.replace('_', '-')} applies to the pipelines of {', '.join(takers)} "
                                   f"exports, not this {task} export")
    check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
    if backend == "trt" or input_json or raw:
        if input_json:
            from ..runtime.inputs import feeds_from_json

            feeds = feeds_from_json(manifest, input_json)
        else:
            from ..runtime.inputs import encode_texts
            from ..runtime.tokenizer import Tokenizer

            feeds = encode_texts(Tokenizer.from_dir(model_dir), manifest, texts, text_pair)
        if backend == "trt":
            from ..backends.trt import run_export

            outs, ms = run_export(model_dir, feeds, engine_path=engine_path, plugins=plugins)
            where = "trt"
        else:
            from ..runtime.models import YosoOrtModel

            model = YosoOrtModel.from_pretrained(model_dir, provider=provider, intra_op_threads=threads,
                                                 allow_failed_export=allow_failed_export)
            t0 = time.perf_counter()
            outs = model.run(feeds)
            ms = 1000 * (time.perf_counter() - t0)
            where = f"ort {provider}"
        shape = "x".join(str(s) for s in next(iter(feeds.values())).shape)
        say(f"ran {task} ({manifest['attention']}) on input {shape} with {where} in {ms:.1f} ms")
        _print_raw(outs)
        _write_json(output_json, {n: v.tolist() for n, v in outs.items()})
        return
    from ..runtime.pipelines import pipeline, run_texts
    from ..runtime.records import to_json

    pipe = pipeline(model_dir, provider=provider, intra_op_threads=threads, allow_failed_export=allow_failed_export)
    t0 = time.perf_counter()
    result = run_texts(pipe, texts, text_pair, **options)
    say(f"{task} ({manifest['attention']}) pipeline with ort {provider}: {1000 * (time.perf_counter() - t0):.1f} ms")
    _print_result(task, result)
    _write_json(output_json, to_json(result))


@click.command("qa")
@model_option("QA export directory (from 'yoso-deploy export')")
@click.option("--question", required=True, help="The question.")
@click.option("--context", default=None, help="The context text.")
@click.option("--context-file", type=ExpandedPath(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Read the context from this UTF-8 file instead.")
@click.option("--top-k", type=click.IntRange(min=1), default=_QA["top_k"], show_default=True, help="How many answers to print.")
@click.option("--max-answer-len", type=click.IntRange(min=1), default=_QA["max_answer_len"], show_default=True,
              help="Longest answer in tokens.")
@click.option("--max-seq-len", type=click.IntRange(min=8), default=None, help="Window length in tokens (default: the model's maximum).")
@click.option("--doc-stride", type=click.IntRange(min=0), default=None,
              help="Token overlap between windows (default: 128, at most a quarter of the window).")
@click.option("--handle-impossible-answer", is_flag=True, help="Allow the empty answer (the context may not hold one).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Execution provider; a missing provider is an error, not a fallback.")
@threads_option()
@allow_failed_option()
@click.option("--json", "as_json", is_flag=True, help="Print the answers as JSON.")
def qa_cmd(model_dir, question, context, context_file, top_k, max_answer_len, max_seq_len, doc_stride,
           handle_impossible_answer, provider, threads, allow_failed_export, as_json):
    """Answer a question about a context with an exported QA model (ONNX Runtime)."""
    from ..runtime.qa import QuestionAnsweringPipeline, read_context

    if (context is None) == (context_file is None):
        raise click.UsageError("give exactly one of --context TEXT or --context-file FILE")
    if context_file is not None:
        context = read_context(context_file, option="--context-file")
    pipe = QuestionAnsweringPipeline.from_pretrained(model_dir, provider=provider, max_seq_len=max_seq_len,
                                                     doc_stride=doc_stride, intra_op_threads=threads,
                                                     allow_failed_export=allow_failed_export)
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


COMMANDS = (run_cmd, qa_cmd)
