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


@click.command("serve")
@model_option()
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ray Serve replicas, each holding one ONNX Runtime session.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=C.SERVE_MAX_BATCH_SIZE, show_default=True,
              help="Rows per model run (dynamic batches and the largest request accepted).")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=C.SERVE_BATCH_WAIT_MS, show_default=True,
              help="How long a dynamic batch waits to fill; 0 turns dynamic batching off.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="ONNX Runtime intra-op threads per replica (default: all cores).")
@click.option("--host", default=C.SERVE_HOST, show_default=True, help="Address the HTTP proxy binds.")
@click.option("--port", type=click.IntRange(1, 65535), default=C.SERVE_PORT, show_default=True, help="HTTP port.")
@click.option("--name", default=None, help="The model's name in the URLs (default: the export directory's name).")
@click.option("--address", default=None,
              help="Ray cluster to deploy to: 'auto' or HOST:PORT (default: start a private local Ray and stop it "
                   "on exit).")
@click.option("--max-ongoing-requests", type=click.IntRange(min=1), default=None,
              help="Requests in flight per replica (default: 2 x --max-batch-size).")
@click.option("--max-queued-requests", type=click.IntRange(min=-1), default=None,
              help="Requests queued at each proxy before it answers 503 (default: 8 x max ongoing; -1 unbounded).")
@click.option("--num-cpus", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="CPUs Ray reserves per replica (scheduling only).")
@allow_failed_option("Serve")
def serve_cmd(model_dir, replicas, max_batch_size, batch_wait_ms, threads, host, port, name, address,
              max_ongoing_requests, max_queued_requests, num_cpus, allow_failed_export):
    """Serve an export with Ray Serve: Open Inference Protocol (/v2, tritonclient works) and task endpoints (/v1).

    \b
    Example:
      yoso-deploy serve --model out/qa --replicas 2
      curl -s localhost:8000/v1/qa/qa -d '{"question": "Where?", "context": "Ada moved to Oslo."}'
    Ctrl-C / SIGTERM stops the application and, unless --address was given, Ray itself.
    """
    from ..errors import require

    require("ray.serve", "'yoso-deploy serve'")
    from ..serving.launch import serve_model

    serve_model(model_dir, replicas=replicas, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
                threads=threads, host=host, port=port, name=name, address=address,
                max_ongoing_requests=max_ongoing_requests, max_queued_requests=max_queued_requests,
                num_cpus=num_cpus, allow_failed_export=allow_failed_export,
                echo=say)


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
@allow_failed_option()
def batch_cmd(model_dir, input_path, output, batch_size, use_ray, address, workers, threads, no_progress,
              allow_failed_export):
    """Offline inference over a JSONL corpus with the task's pipeline (streaming, resumable)."""
    from ..serving.batch import run_batch

    res = run_batch(model_dir, input_path, output, batch_size=batch_size, use_ray=use_ray,
                    address=address, workers=workers, threads=threads, progress=not no_progress,
                    allow_failed_export=allow_failed_export)
    say(res.summary())


COMMANDS = (serve_cmd, triton_repo_cmd, batch_cmd)
