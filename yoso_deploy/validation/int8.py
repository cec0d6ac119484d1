"""``yoso-deploy validate`` on an int8 export: the int8 criteria against the fp32 export and the PyTorch reference.

:func:`yoso_deploy.validation.validate.compare` hands a manifest with a ``quantization`` object here. The int8
export runs in ONNX Runtime's CPU provider (``libyoso_ort.so`` registered) on an in-memory copy whose
probes (every layer's codes, hidden states) are graph outputs, through polygraphy like every other
backend; next to it, in the same ``Comparator.run``, the fp32 export it was quantized from (the
manifest's ``quantization.source_export``). The PyTorch reference (``source_model``, or ``--reference``)
runs with its own codes. Each reference judges the int8 run by :mod:`yoso_deploy.validation.int8_criteria` (output
and hidden-state cosine, max abs, code agreement per layer, task agreement); fp32 tolerances do not
apply to int8 by design. A reference that is not there is skipped with its reason; at least one must be.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..manifest import approximation_info, check_usable, load_manifest, manifest_spec, model_file, source_export_dir
from . import backends as v
from .int8_criteria import DEFAULT_THRESHOLDS, Int8Report, Int8Thresholds, RunValues, judge_int8, values_from_probes
from .report import ValidationResult, write_report

INT8_BACKEND = "ort-cpu"


def _instrumented(path: Path):
    import onnx

    from ..export.probes import ProbeError, find_probes, instrument

    proto = onnx.load(str(path))
    try:
        probes = find_probes(proto)
        return instrument(proto, probes).SerializeToString(), probes
    except ProbeError:
        return proto.SerializeToString(), None


def compare_int8(model_dir: Path, manifest: dict, backends, cases: list[dict], case_desc: list, reference=None,
                 report_dir=None, verbose: bool = False, allow_failed_export: bool = False,
                 intra_op_threads: int | None = None, thresholds: Int8Thresholds = DEFAULT_THRESHOLDS):
    """Judge the int8 export at ``model_dir`` on ``cases`` (see the module doc); returns a ``ValidationResult``."""
    t0 = time.perf_counter()
    _, Comparator, G_LOGGER = v.polygraphy()
    check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
    spec = manifest_spec(manifest)
    requested = list(backends or v.DEFAULT_BACKENDS)
    unknown = [b for b in requested if b not in v.BACKENDS]
    if unknown:
        raise v.ValidationError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(v.BACKENDS)}")
    status = v.backend_status(model_dir, manifest, reference)
    for b in status:
        if b not in requested:
            status[b] = v.Backend(b, False, "not requested")
        elif b not in ("torch", INT8_BACKEND) and status[b].available:
            status[b] = v.Backend(b, False, "int8 exports are validated on ONNX Runtime's CPU provider (ort-cpu), "
                                            "the backend they are made for")
    if not status[INT8_BACKEND].available:
        raise v.ValidationError(f"an int8 export runs on ort-cpu, which is not available "
                                f"({status[INT8_BACKEND].reason or 'not requested'}); request --backends torch,ort-cpu")
    fp32_dir = source_export_dir(manifest, model_dir)
    fp32_manifest, fp32_why = None, ""
    if fp32_dir is None:
        src = approximation_info(manifest).get("source_export")
        fp32_why = (f"the fp32 source export {src!r} is not there any more (quantization.source_export in the "
                    "manifest); keep it next to the int8 export to compare against it")
    else:
        fp32_manifest = load_manifest(fp32_dir)
    use_torch = status["torch"].available
    if fp32_manifest is None and not use_torch:
        raise v.ValidationError(f"nothing to compare the int8 export with: {fp32_why}; torch: {status['torch'].reason}")

    int8_bytes, int8_probes = _instrumented(model_file(manifest, model_dir))
    runners = [v.make_ort_runner(int8_bytes, "cpu", f"{INT8_BACKEND} int8", intra_op_threads)]
    fp32_probes = None
    if fp32_manifest is not None:
        fp32_bytes, fp32_probes = _instrumented(model_file(fp32_manifest, fp32_dir))
        runners.append(v.make_ort_runner(fp32_bytes, "cpu", f"{INT8_BACKEND} fp32", intra_op_threads))
    severity = G_LOGGER.module_severity
    if not verbose:
        G_LOGGER.module_severity = G_LOGGER.CRITICAL
    try:
        run_results = Comparator.run(runners, data_loader=cases)
    finally:
        G_LOGGER.module_severity = severity
    names = spec.output_names[: len(spec.outputs)]

    def runs(runner_name, probes) -> list[RunValues]:
        return [values_from_probes(probes, {k: np.asarray(x) for k, x in OrderedDict(out).items()}, names)
                for out in run_results[runner_name]]

    got = runs(f"{INT8_BACKEND} int8", int8_probes)
    report = Int8Report()
    q = manifest.get("quantization")
    report.notes.append(f"int8 export: {_describe(q)}" if q else
                        f"approximate export: optimization {manifest['optimization'].get('level')} "
                        f"({manifest['optimization'].get('description', '')}), judged by the int8 criteria")
    if fp32_manifest is not None:
        ref = runs(f"{INT8_BACKEND} fp32", fp32_probes)
        report.comparisons += judge_int8(spec.task, list(zip(cases, got, ref)), f"{INT8_BACKEND} int8", "fp32 export",
                                         thresholds)
    else:
        report.notes.append(f"not compared with the fp32 export: {fp32_why}")
    if use_torch:
        from ..modeling import load_model
        from .parity import capture_torch_backend

        model = load_model(v.reference_dir(manifest, reference, model_dir)[0], task=manifest["task"],
                           attention=manifest["attention"], seed=manifest["seed"])
        ref = []
        for feeds in cases:
            probes, values = capture_torch_backend(model, spec, feeds)
            ref.append(values_from_probes(probes, values, names))
        report.comparisons += judge_int8(spec.task, list(zip(cases, got, ref)), f"{INT8_BACKEND} int8", "torch",
                                         thresholds)
    else:
        report.notes.append(f"not compared with the PyTorch reference: {status['torch'].reason}")
    status[INT8_BACKEND] = v.Backend(INT8_BACKEND, True, "int8 export" + (" and its fp32 source export"
                                                                         if fp32_manifest is not None else ""))
    result = ValidationResult(str(model_dir), "fp32 export + torch" if fp32_manifest is not None and use_torch
                                else ("fp32 export" if fp32_manifest is not None else "torch"),
                                dict(status), case_desc, report, time.perf_counter() - t0)
    if report_dir is not None:
        write_report(result, Path(report_dir).expanduser())
    return result


def _describe(q: dict) -> str:
    parts = [q.get("method", "?"), f"Q/K {q.get('qk', 'int8')}", f"weights {q.get('weight_type')}",
             f"activations {q.get('activation_type')}"]
    if q.get("per_channel"):
        parts.append("per-channel")
    if q.get("reduce_range"):
        parts.append("reduce-range")
    if q.get("preset"):
        parts.append(f"preset {q['preset']}")
    n_q, n_x = len(q.get("quantized_nodes", [])), len(q.get("excluded_nodes", []))
    parts.append(f"{n_q} projections int8, {n_x} fp32")
    return ", ".join(parts)
