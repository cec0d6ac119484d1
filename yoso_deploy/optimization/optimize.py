"""``optimize``: an export's graph fused for the CPU, as a new export (see the package doc for the levels).

O1 is ONNX Runtime's basic level (constant folding, redundant nodes removed) run with the custom-op library
registered and saved (``SessionOptions.optimized_model_filepath``). O2 first runs ONNX Runtime's own transformer
optimizer (``onnxruntime.transformers.optimizer``, model type ``bert``, attention fusion off: YOSO's attention is the
``com.yoso`` ops) on the exporter's graph -- SkipLayerNormalization (residual Add + bias + LayerNorm in one op) and
BiasGelu; its patterns are the exporter's, which O1's rewrites would hide -- then O1. O3 adds the GELU
approximation (FastGelu: tanh instead of erf, ~1e-3 absolute on the activation).
Every level keeps the value names the parity check observes (``yoso.probes``), so ``validate`` judges an optimized
export like any other, layer by layer, and ``quantize`` takes it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..constants import MODEL_FILE, OPTIMIZE_LEVELS
from ..errors import UsageError
from ..manifest import (
    copy_export_files,
    expand_path,
    load_manifest,
    model_file,
    prepare_derived_output,
    source_model_dir,
    source_model_entry,
    write_manifest,
)

LEVELS = OPTIMIZE_LEVELS
LEVEL_HELP = {
    "O1": "ONNX Runtime's basic graph optimizations (constant folding, redundant nodes), saved",
    "O2": "O1 + SkipLayerNormalization and bias-GELU fusions (ONNX Runtime's transformer optimizer)",
    "O3": "O2 + the GELU approximation (FastGelu, tanh form)",
}


class OptimizeError(UsageError):
    """The export cannot be optimized as asked (the message names the fix)."""


@dataclass
class OptimizeResult:
    output_dir: Path
    onnx_path: Path
    manifest: dict
    seconds: float
    fused: dict = field(default_factory=dict)  # op type -> count in the optimized graph (the fused ops)
    node_counts: tuple[int, int] = (0, 0)  # nodes before, after


def check_optimizable(manifest: dict, model_dir: Path, level: str) -> None:
    """Refuse what cannot or must not be optimized, each with one line naming the fix."""
    if level not in LEVELS:
        raise OptimizeError(f"unknown optimization level {level!r}", fix=f"choose one of {', '.join(LEVELS)}")
    if manifest.get("optimization"):
        src = manifest["optimization"].get("source_export", "its source export")
        raise OptimizeError(f"{str(model_dir)!r} is already optimized ({manifest['optimization'].get('level')})",
                            fix=f"optimize the unoptimized export instead ({src})")
    if manifest.get("quantization"):
        raise OptimizeError(f"{str(model_dir)!r} is an int8 export",
                            fix="optimize the fp32 export, then quantize the optimized one")
    if manifest.get("dtype", "fp32") != "fp32":
        raise OptimizeError(f"{str(model_dir)!r} is a {manifest.get('dtype')} export (for GPU backends)",
                            fix="optimize an fp32 export (the CPU fusions are fp32)")


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's optimizer logs a warning per fusion it cannot apply; they are not ours to show."""
    names = ("onnxruntime.transformers", "onnx_model", "fusion_utils", "fusion_skiplayernorm", "fusion_base",
             "fusion_gelu", "fusion_biasgelu", "fusion_layernorm", "fusion_embedlayer", "optimizer")
    loggers = [logging.getLogger(n) for n in names] + [logging.getLogger()]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


def _ort_basic(src: Path, dst: Path, threads: int | None) -> None:
    import onnxruntime as ort

    from ..runtime.session import session_options

    so = session_options(intra_op_threads=threads)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def _transformer_fusions(model, approximate_gelu: bool):
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    opts = FusionOptions("bert")
    opts.enable_attention = False  # YOSO's attention is com.yoso's FastHash + LSHCumulation
    opts.enable_rotary_embeddings = False
    opts.enable_gelu_approximation = approximate_gelu
    with _quiet():
        return optimize_model(model, model_type="bert", num_heads=0, hidden_size=0, optimization_options=opts,
                              opt_level=0, use_gpu=False, only_onnxruntime=False)


def optimize(
    model: str | Path,
    output: str | Path,
    level: str = "O2",
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Optimize the export ``model`` at ``level`` (O1, O2, O3) into the export directory ``output``.

    The result's manifest is the source's with ``optimization`` (level, the fused ops, ONNX Runtime's version, the
    source export) and ``parity`` ``skipped`` until a check records its verdict (:func:`yoso_deploy.workflow.optimize`
    runs ``validate``)."""
    import onnx
    import onnxruntime as ort

    from ..export.probes import PROBES_METADATA_KEY
    from ..export.rewrites import reduce_l2_as_sum

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    src = expand_path(model)
    manifest = load_manifest(src)
    check_optimizable(manifest, src, level)
    src_path = model_file(manifest, src)
    out = prepare_derived_output(src, expand_path(output), OptimizeError)
    source = onnx.load(str(src_path))
    before = len(source.graph.node)
    metadata = {p.key: p.value for p in source.metadata_props}
    if reduce_l2_as_sum(source):  # an export made before the exporter wrote it so
        say("rewrote ReduceL2 as ReduceSum of squares (ONNX Runtime's shape inference needs it)")

    tmp_in = out / ".optimize-in.onnx.partial"
    tmp_basic = out / ".optimize-o1.onnx.partial"
    tmp_out = out / ".model.onnx.partial"
    try:
        if level in ("O2", "O3"):  # on the exporter's graph: the fusions match its patterns (not O1's)
            say(f"{level}: ONNX Runtime's transformer fusions ...")
            source = _transformer_fusions(source, approximate_gelu=level == "O3").model
        onnx.save(source, str(tmp_in))
        say(f"{level}: ONNX Runtime's basic graph optimizations ...")
        _ort_basic(tmp_in, tmp_basic, threads)
        optimized = onnx.load(str(tmp_basic))
        # ONNX Runtime keeps the nodes; the model's own metadata (task, probes, op domain) is put back.
        have = {p.key for p in optimized.metadata_props}
        for k, v in metadata.items():
            if k not in have:
                optimized.metadata_props.add(key=k, value=v)
        optimized.producer_name, optimized.producer_version = source.producer_name, source.producer_version
        optimized.doc_string = f"{source.doc_string} -- optimized at {level} by yoso-deploy"
        onnx.save(optimized, str(tmp_out))
        # it must load where it will run: ONNX Runtime with the library
        from ..runtime.session import session_options

        ort.InferenceSession(str(tmp_out), session_options(intra_op_threads=threads),
                             providers=["CPUExecutionProvider"])
        onnx_path = out / MODEL_FILE
        tmp_out.replace(onnx_path)
    finally:
        for p in (tmp_in, tmp_basic, tmp_out):
            p.unlink(missing_ok=True)
    copy_export_files(src, out)  # config, tokenizer files, model card (rewritten after)

    counts: dict[str, int] = {}
    for n in optimized.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    fused_ops = ("SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "EmbedLayerNormalization",
                 "LayerNormalization", "SkipSimplifiedLayerNormalization")
    fused = {op: counts[op] for op in fused_ops if counts.get(op)}
    new = {k: v for k, v in manifest.items() if k != "parity"}
    new["model_file"] = MODEL_FILE
    ref = source_model_dir(manifest, src)
    if ref is not None:  # the checkpoint, as seen from the new directory
        new["source_model"] = source_model_entry(ref, out)
    new["optimization"] = {
        "level": level,
        "description": LEVEL_HELP[level],
        "fused_ops": fused,
        "nodes": {"before": before, "after": len(optimized.graph.node)},
        "onnxruntime": ort.__version__,
        "source_export": source_model_entry(src, out),
        "probes_kept": PROBES_METADATA_KEY in {p.key for p in optimized.metadata_props},
    }
    if manifest.get("portable") == "functions" and not optimized.functions:
        new["portable"] = "off"  # ONNX Runtime drops the model-local function bodies when it saves a graph
    if level in ("O2", "O3"):  # contrib ops (com.microsoft): ONNX Runtime only
        new["optimization"]["runs_on"] = "onnxruntime (com.microsoft contrib ops)"
    new["parity"] = {"status": "skipped", "reason": "not checked (yoso-deploy validate)"}
    write_manifest(out, new)
    return OptimizeResult(out, onnx_path, new, time.perf_counter() - t0, fused, (before, len(optimized.graph.node)))
