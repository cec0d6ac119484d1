"""The production commands of ``yoso-deploy``: ``serve``, ``triton-repo`` and ``batch`` (registered by cli.py).

They sit on the runtime and import neither torch nor transformers; Ray is imported only by ``serve`` and
``batch --ray``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from .. import constants as C
from .options import ExpandedPath, allow_failed_option, model_option, output_option, say


def _serve_default(name: str):
    from ..serving.config import ServeConfig

    return ServeConfig.__dataclass_fields__[name].default


def _limit_default(name: str):
    from ..runtime.limits import Limits

    return Limits.__dataclass_fields__[name].default


LIMIT_HELP = {
    "max_tokens": "Tokens one request may ask to run, all its texts together (a QA context: every token once).",
    "max_texts": "Texts, text pairs, choices or targets in one request.",
    "max_text_chars": "Characters of any one text (checked before tokenizing).",
    "max_question_tokens": "Tokens of a QA question (it is repeated in every window).",
    "max_top_k": "top_k of qa, classification and fill-mask.",
    "max_answer_len": "max_answer_len of qa, in tokens.",
}


def limit_options(f):
    """The pipeline limits (yoso_deploy.runtime.limits.Limits) as options; a request over one gets one line
    naming the field, the limit and the option."""
    for name in reversed(list(LIMIT_HELP)):
        f = click.option("--" + name.replace("_", "-"), name, type=click.IntRange(min=1), default=_limit_default(name),
                         show_default=True, help=LIMIT_HELP[name])(f)
    return f


def _limits(values: dict):
    from ..runtime.limits import Limits

    return Limits(**{k: values[k] for k in LIMIT_HELP})


@click.command("serve")
@model_option()
@click.option("--engine", type=click.Choice(["asgi", "ray"]), default=_serve_default("engine"), show_default=True,
              help="asgi: uvicorn in this process (no Ray; the [serve] extra); ray: Ray Serve replicas (the [ray] extra).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="asgi: server processes, each holding one ONNX Runtime session.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="ray: Serve replicas, each holding one ONNX Runtime session.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=C.SERVE_MAX_BATCH_SIZE, show_default=True,
              help="Rows per model run (dynamic batches and the largest request accepted).")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=None,
              help=f"How long a dynamic batch waits to fill; 0: off (default: asgi 0, ray {C.SERVE_BATCH_WAIT_MS:g}).")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="ONNX Runtime intra-op threads per model (default: all cores).")
@click.option("--host", default=C.SERVE_HOST, show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=C.SERVE_PORT, show_default=True, help="HTTP port.")
@click.option("--name", default=None, help="The model's name in the URLs (default: the export directory's name).")
@click.option("--max-request-bytes", type=click.IntRange(min=1), default=_serve_default("max_request_bytes"),
              show_default=True, help="Largest request body (413 beyond; a chunked body is counted as it streams).")
@click.option("--max-json-depth", type=click.IntRange(min=1), default=_serve_default("max_json_depth"),
              show_default=True, help="Deepest JSON nesting read (400 beyond).")
@click.option("--header-timeout", "header_timeout_s", type=click.FloatRange(min=0.001),
              default=_serve_default("header_timeout_s"), show_default=True,
              help="asgi: seconds a client has to send its request line and headers (408 beyond).")
@click.option("--body-timeout", "body_timeout_s", type=click.FloatRange(min=0.001),
              default=_serve_default("body_timeout_s"), show_default=True,
              help="asgi: seconds a client has to send its body (408 beyond).")
@click.option("--max-inflight-tokens", type=click.IntRange(min=1), default=_serve_default("max_inflight_tokens"),
              show_default=True, help="Tokens of all requests in flight at once; a request beyond gets 503 + Retry-After.")
@click.option("--run-tokens", type=click.IntRange(min=1), default=_serve_default("run_tokens"), show_default=True,
              help="Positions of one model run: a long request runs as short runs others interleave with.")
@click.option("--max-connections", type=click.IntRange(min=1), default=_serve_default("max_connections"),
              show_default=True, help="asgi: connections at once (503 beyond).")
@click.option("--drain-timeout", "drain_timeout_s", type=click.FloatRange(min=0.001),
              default=_serve_default("drain_timeout_s"), show_default=True,
              help="asgi: on SIGTERM / Ctrl-C, seconds in-flight requests get to finish.")
@limit_options
@click.option("--address", default=None,
              help="ray: the cluster to deploy to, 'auto' or HOST:PORT (default: a private local Ray, stopped on exit).")
@click.option("--max-ongoing-requests", type=click.IntRange(min=1), default=None,
              help="ray: requests in flight per replica (default: 2 x --max-batch-size).")
@click.option("--max-queued-requests", type=click.IntRange(min=-1), default=None,
              help="ray: requests queued at each proxy before it answers 503 (default: 8 x max ongoing; -1 unbounded).")
@click.option("--num-cpus", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="ray: CPUs Ray reserves per replica (scheduling only).")
@allow_failed_option("Serve")
def serve_cmd(model_dir, engine, workers, replicas, max_batch_size, batch_wait_ms, threads, host, port, name,
              max_request_bytes, max_json_depth, header_timeout_s, body_timeout_s, max_inflight_tokens, run_tokens,
              max_connections, drain_timeout_s, address, max_ongoing_requests, max_queued_requests, num_cpus,
              allow_failed_export, **limits):
    """Serve an export over HTTP: Open Inference Protocol (/v2, tritonclient works) and task endpoints (/v1).

    Every size a client controls is bounded (body, JSON depth, time, tokens in flight, and what one request
    may ask for); over a limit the client gets one line naming it and the option that raises it.

    \b
    Example:
      yoso-deploy serve --model out/qa
      curl -s 127.0.0.1:8000/v1/qa/qa -d '{"question": "Where?", "context": "Ada moved to Oslo."}'
    Ctrl-C / SIGTERM lets the requests in flight finish, then stops (--engine ray: Ray too, unless --address).
    """
    from ..serving.config import ServeConfig
    from ..serving.launch import serve
    from ..serving.server import model_dir_arg

    config = ServeConfig(
        model_dir=str(model_dir_arg(model_dir)), name=name, engine=engine, host=host, port=port, workers=workers,
        replicas=replicas, threads=threads, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
        allow_failed_export=allow_failed_export, max_request_bytes=max_request_bytes, max_json_depth=max_json_depth,
        header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s, max_inflight_tokens=max_inflight_tokens,
        run_tokens=run_tokens, max_connections=max_connections, drain_timeout_s=drain_timeout_s,
        limits=_limits(limits), address=address, max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests, num_cpus=num_cpus)
    serve(config, echo=say)


@click.command("triton-repo")
@model_option()
@output_option("Model repository directory to write", required=True)
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True,
              help="onnxruntime: model.onnx + libyoso_ort.so (model_operations); tensorrt: a model.plan built by "
                   "'yoso-deploy build-engine' + libyoso_trt.so.")
@click.option("--name", default=None, help="Model name in the repository (default: the export directory's name).")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True, help="instance_group count.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=C.TRITON_MAX_BATCH_SIZE, show_default=True,
              help="Triton max_batch_size (for tensorrt: at most the engine profile's max batch).")
@click.option("--queue-delay-us", type=click.IntRange(min=0), default=C.TRITON_QUEUE_DELAY_US, show_default=True,
              help="dynamic_batching max_queue_delay_microseconds.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime intra_op_thread_count.")
@click.option("--plan", type=ExpandedPath(path_type=Path), default=None,
              help="tensorrt: the engine file (default: <model>/model.plan).")
@click.option("--plugins", default="auto", show_default=True,
              help="Library to copy beside the model: 'auto' (the installed libyoso_ort.so / libyoso_trt.so), a path, "
                   "or 'none' (tensorrt: the server loads the plugins itself).")
@click.option("--server-repo", default=None,
              help="The repository's path as tritonserver sees it, for model_operations (e.g. /models in a "
                   "container; default: --output's absolute path).")
@allow_failed_option()
def triton_repo_cmd(model_dir, output, backend, name, instances, max_batch_size, queue_delay_us, threads, plan,
                    plugins, server_repo, allow_failed_export):
    """Write a Triton Inference Server model repository for an export (config.pbtxt, model, library)."""
    from ..serving.triton_repo import server_command, write_repo

    res = write_repo(model_dir, output, name=name, backend=backend, instances=instances,
                     max_batch_size=max_batch_size, queue_delay_us=queue_delay_us, plan=plan,
                     plugins=plugins if plugins in ("auto", "none") else os.path.expanduser(plugins),
                     server_repo=server_repo, threads=threads, allow_failed_export=allow_failed_export)
    click.echo(f"wrote {res['model_dir']}: {', '.join(res['files'])}")
    click.echo("config.pbtxt " + ("parsed with Triton's ModelConfig schema" if res["schema_checked"] else
                                  "not checked (install the [triton] extra for Triton's ModelConfig schema)"))
    if backend == "tensorrt":
        click.echo("note: TensorRT is not installed here; the engine and plugins were copied, not checked")
    click.echo(f"serve it with: {server_command(res, backend)}")


@click.command("batch")
@model_option()
@click.option("--input", "-i", "input_path", required=True, type=ExpandedPath(path_type=Path),
              help="JSONL file: one record per line with the task's fields and an optional id.")
@output_option("JSONL file of {id, result} / {id, error}; ids already in it are skipped (resume)", required=True,
               dir_okay=False)
@click.option("--batch-size", type=click.IntRange(min=1), default=C.BATCH_SIZE, show_default=True,
              help="Records per chunk (and rows per model run).")
@click.option("--ray", "use_ray", is_flag=True, help="Run on Ray Data actors (map_batches) instead of in this process.")
@click.option("--address", default=None, help="--ray: cluster address ('auto' or HOST:PORT; default: a local Ray).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="--ray: actors.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="ONNX Runtime intra-op threads per model.")
@click.option("--no-progress", is_flag=True, help="No progress output on stderr.")
@click.option("--max-json-depth", type=click.IntRange(min=1), default=_serve_default("max_json_depth"),
              show_default=True, help="Deepest JSON nesting of a line (an error record beyond).")
@limit_options
@allow_failed_option()
def batch_cmd(model_dir, input_path, output, batch_size, use_ray, address, workers, threads, no_progress,
              max_json_depth, allow_failed_export, **limits):
    """Offline inference over a JSONL corpus with the task's pipeline (streaming, resumable)."""
    from ..serving.batch import run_batch

    res = run_batch(model_dir, input_path, output, batch_size=batch_size, use_ray=use_ray,
                    address=address, workers=workers, threads=threads, progress=not no_progress,
                    allow_failed_export=allow_failed_export, limits=_limits(limits), max_json_depth=max_json_depth)
    say(res.summary())


COMMANDS = (serve_cmd, triton_repo_cmd, batch_cmd)
