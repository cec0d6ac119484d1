"""``yoso-deploy build-engine``: a TensorRT engine from an export (:mod:`yoso_deploy.backends.trt`)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import constants as C
from .options import ExpandedPath, model_option, output_option, range3, verbose_option


@click.command("build-engine")
@model_option()
@output_option("Engine file to write (default: <model>/model.plan)", dir_okay=False)
@click.option("--plugins", default="auto", show_default=True,
              help="TensorRT plugin library: 'auto' (the installed libyoso_trt.so), a path to libyoso_trt.so "
                   "or libyoso_trt_dyn.so, or 'none' if already registered.")
@click.option("--batch", "batch_range", default=",".join(map(str, C.ENGINE_BATCH)), show_default=True,
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
@verbose_option("Show TensorRT's verbose log")
def build_engine_cmd(model_dir, output, plugins, batch_range, seq_range, min_shapes, opt_shapes, max_shapes, fp16,
                     workspace_mb, timing_cache, verbose):
    """Build a TensorRT engine from an export; the com.yoso ops run as the plugins of libyoso_trt.so.

    \b
    Example:
      yoso-deploy build-engine --model out/qa --batch 1,1,8 --seq-len 1,128,512
      yoso-deploy run --model out/qa --backend trt --text "question" --text-pair "context"
    """
    from ..backends.trt import build_export_engine

    res = build_export_engine(model_dir, output, plugins=plugins, batch=range3(batch_range, "--batch"),
                              sequence=range3(seq_range, "--seq-len") if seq_range else None, min_shapes=min_shapes,
                              opt_shapes=opt_shapes, max_shapes=max_shapes, fp16=fp16, workspace_mb=workspace_mb,
                              timing_cache=timing_cache, verbose=verbose, progress=True)
    for name, (mn, opt, mx) in res.profile.items():
        click.echo(f"  {name}: min {list(mn)}  opt {list(opt)}  max {list(mx)}")
    typing = "strongly typed" if res.strongly_typed else "weakly typed, fp16 allowed"
    click.echo(f"built {res.engine_path} ({typing}) with TensorRT {res.tensorrt_version} in {res.seconds:.1f}s "
               f"(plugins: {res.plugins or 'pre-registered'})")


COMMANDS = (build_engine_cmd,)
