"""The post-export check: a fresh export in ONNX Runtime against the PyTorch reference it was converted from.

:func:`check_export` runs the export (``libyoso_ort.so`` registered) on generated, padded inputs and judges it
tie-aware, layer by layer (:mod:`.parity`), then records the verdict in the export's manifest (``parity``), so
that every command refuses an export whose check failed. :func:`yoso_deploy.workflow.export` calls it after
:func:`yoso_deploy.export.exporter.convert`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..constants import MANIFEST_FILE
from ..errors import UsageError
from ..iospec import default_check_shapes, make_inputs
from ..manifest import write_manifest
from .parity import ParityReport, Tolerances, check_onnxruntime
from .report import parity_entry


@dataclass
class PostExportCheck:
    """The verdict of :func:`check_export`: the parity report, the shapes it ran and how long it took."""

    report: ParityReport | None
    shapes: tuple = ()
    seconds: float = 0.0
    skipped: str = ""  # why the check did not run (then ``report`` is None)

    @property
    def ok(self) -> bool:
        return self.report is None or self.report.passed


def cuda_ep_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def check_export(converted, shapes=None, tolerances: Tolerances | None = None) -> PostExportCheck:
    """Judge a :class:`~yoso_deploy.export.exporter.ConvertResult` on ``shapes`` (batch, sequence; default
    :func:`~yoso_deploy.iospec.default_check_shapes`) and write the verdict into its manifest.

    fp16 exports are for GPU backends: without ONNX Runtime's CUDA provider the check is skipped, with the
    reason recorded."""
    manifest, config = converted.manifest, converted.reference.config
    max_len = int(config.max_position_embeddings)
    if manifest.get("dtype") == "fp16" and not cuda_ep_available():
        why = ("fp16 exports are for GPU backends (ORT CUDA / TensorRT): this onnxruntime has no "
               "CUDAExecutionProvider and the CPU custom ops are fp32, so the parity check was skipped")
        manifest["parity"] = {"status": "skipped", "reason": why}
        write_manifest(converted.output_dir, manifest)
        return PostExportCheck(None, skipped=why)
    shapes = tuple(shapes) if shapes else default_check_shapes(max_len)
    too_long = [s for _, s in shapes if s > max_len]
    if too_long:
        raise UsageError(f"check shape sequence length {too_long[0]} exceeds the model's maximum {max_len}",
                         fix="choose shorter --check-shapes")
    check = _judge(converted.reference, converted.spec, converted.onnx_path, config, shapes, tolerances)
    manifest["parity"] = parity_entry(check.report, check.shapes)
    write_manifest(converted.output_dir, manifest)
    return check


def _judge(reference, spec, onnx_path, config, shapes, tolerances) -> PostExportCheck:
    t0 = time.perf_counter()
    cases = [make_inputs(spec, batch, seq, config.vocab_size, seed=i, pad_token_id=config.pad_token_id or 0)
             for i, (batch, seq) in enumerate(shapes)]
    report = check_onnxruntime(reference, spec, onnx_path, cases, tolerances or Tolerances())
    return PostExportCheck(report, tuple(shapes), time.perf_counter() - t0)


def check_export_dir(model_dir, shapes=None, tolerances: Tolerances | None = None) -> PostExportCheck:
    """The post-export check of an export directory (e.g. an optimized one, :func:`yoso_deploy.workflow.optimize`):
    its PyTorch reference (the manifest's ``source_model``) loaded once, the same cases and judgement as
    :func:`check_export`. The manifest is not written (the caller records the verdict)."""
    from ..manifest import load_manifest, manifest_spec, model_file, require_source_model_dir
    from ..modeling import load_model

    manifest = load_manifest(model_dir)
    reference = load_model(require_source_model_dir(manifest, model_dir), task=manifest["task"],
                           attention=manifest["attention"], seed=manifest["seed"])
    max_len = int(manifest["max_sequence_length"])
    shapes = tuple(shapes) if shapes else default_check_shapes(max_len)
    too_long = [s for _, s in shapes if s > max_len]
    if too_long:
        raise UsageError(f"check shape sequence length {too_long[0]} exceeds the model's maximum {max_len}",
                         fix="choose shorter --check-shapes")
    return _judge(reference, manifest_spec(manifest), model_file(manifest, model_dir), reference.config, shapes,
                  tolerances)


def failure_message(check: PostExportCheck) -> str:
    first = check.report.first_failure()
    return (f"ONNX Runtime disagrees with the PyTorch reference ({first.backend} {first.case}, first at {first.name}: "
            f"{first.error}); the export is marked failed in {MANIFEST_FILE}")
