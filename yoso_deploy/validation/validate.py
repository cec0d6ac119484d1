"""Parity of every available backend against the PyTorch reference (``yoso-deploy validate``).

The backends run through polygraphy (``Comparator.run``): ONNX Runtime through ``OnnxrtRunner``
with a session factory that registers ``libyoso_ort.so`` (polygraphy cannot register custom-op
libraries itself, NVIDIA/TensorRT#4487), TensorRT through ``TrtRunner``. What each backend computed
is then judged against the PyTorch reference by :mod:`yoso_deploy.validation.parity`:

* LSH exports: the backend runs an in-memory copy of ``model.onnx`` whose every FastHash input and
  output, LSHCumulation value input and output, and encoder-layer output is also a graph output; the
  reference runs with the backend's hash codes injected layer by layer; codes are judged tie-aware
  and every tensor within fp32 tolerances (plugins/OPS.md section 5); the task head's tensors (every
  module output and Linear input inside ``classifier``/``qa_outputs``/``cls``) are graph outputs too and
  must agree with the reference's, relative to their own size (``head_rtol``);
* expectation exports: outputs and hidden states are compared directly;
* int8 exports (``yoso-deploy quantize``): int8 criteria against the fp32 export and the reference
  (:mod:`yoso_deploy.validation.int8`).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..constants import CONFIG_FILE, ENGINE_FILE, VALIDATE_BATCHES, VALIDATE_SEQ_LENS
from ..errors import CheckFailedError, NotFoundError
from ..iospec import IOSpec, make_inputs
from ..manifest import approximation_info, check_usable, expand_path, load_manifest, manifest_spec, model_file
from .backends import (
    BACKENDS,
    DEFAULT_BACKENDS,
    PORTABLE_BACKENDS,
    Backend,
    ValidationError,
    backend_status,
    make_ort_runner,
    make_portable_runner,
    polygraphy,
    reference_dir,
)
from .int8_criteria import DEFAULT_THRESHOLDS as DEFAULT_INT8_THRESHOLDS
from .int8_criteria import Int8Thresholds
from .parity import DEFAULT_ATOL, DEFAULT_HEAD_RTOL, DEFAULT_HIDDEN_RTOL, DEFAULT_RTOL, ParityReport, Tolerances
from .report import ValidationResult, write_report


def parse_tolerances(values, default: float) -> tuple[float, dict[str, float]]:
    """``["1e-4", "start_logits=1e-3"]`` -> (1e-4, {"start_logits": 1e-3})."""
    base, per = default, {}
    for v in values or ():
        name, _, num = str(v).rpartition("=")
        try:
            value = float(num)
        except ValueError:
            raise ValidationError(f"tolerance {v!r} is not a number", fix="write 1e-4 or OUTPUT=1e-4") from None
        if name:
            per[name.strip()] = value
        else:
            base = value
    return base, per


def load_inputs(path: str | Path, spec: IOSpec) -> list[dict[str, np.ndarray]]:
    """Inputs from ``.npz`` (one case) or JSON (an object, or a list of objects, name -> nested list)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFoundError(f"--inputs file {str(p)!r} does not exist")
    if p.suffix == ".npz":
        with np.load(p) as z:
            cases = [{k: z[k] for k in z.files}]
    else:
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValidationError(f"--inputs {str(p)!r} is not valid JSON ({e}); give .npz or JSON name -> nested list") from e
        cases = data if isinstance(data, list) else [data]
    out = []
    for case in cases:
        feeds = {}
        for t in spec.inputs:
            if t.name not in case:
                raise ValidationError(f"--inputs case lacks {t.name!r} (needs {', '.join(spec.input_names)})")
            arr = np.asarray(case[t.name], dtype=t.dtype)
            if arr.ndim != len(t.dims):
                raise ValidationError(f"--inputs {t.name!r} has rank {arr.ndim}, expected {len(t.dims)} {t.dims}")
            feeds[t.name] = arr
        out.append(feeds)
    return out


PRECISION_NOTE = "inference precision"  # every note of precision_notes() holds it (the CLI prints these lines)


def precision_notes(runners) -> list[str]:
    """Report lines for runners that know the inference precision they ran at (the openvino runner's
    ``precision``): ``"openvino: inference precision f32"``, and a warning line for anything but f32."""
    notes = []
    for r in runners:
        precision = getattr(r, "precision", None)
        if precision is None:
            continue
        notes.append(f"{r.name}: {PRECISION_NOTE} {precision}")
        if precision != "f32":
            notes.append(f"warning: {r.name} ran at {PRECISION_NOTE} {precision}, not f32: reduced precision flips "
                         "LSH hash bits (projections near zero change sign), so parity is expected to fail; "
                         "compile with INFERENCE_PRECISION_HINT f32 (compile_openvino's default)")
    return notes


class ValidationFailed(CheckFailedError):
    """A backend disagrees with the reference (``result`` holds the whole comparison)."""

    def __init__(self, result: ValidationResult):
        first = result.first_failure()
        super().__init__(f"validation FAILED for {first.backend}:{first.name} (input {first.case}): {first.error}")
        self.result = result


def validate(model_dir: str | Path, atol=(), rtol=(), hidden_rtol: float | None = None, **kwargs) -> ValidationResult:
    """:func:`compare` with the command line's tolerance spelling: ``atol``/``rtol`` are lists of ``"1e-4"``
    (global) or ``"start_logits=1e-3"`` (one output); ``hidden_rtol`` None means the default."""
    a, a_per = parse_tolerances(atol, DEFAULT_ATOL)
    r, r_per = parse_tolerances(rtol, DEFAULT_RTOL)
    return compare(model_dir, atol={"*": a, **a_per}, rtol={"*": r, **r_per},
                   hidden_rtol=DEFAULT_HIDDEN_RTOL if hidden_rtol is None else hidden_rtol, **kwargs)


def compare(
    model_dir: str | Path,
    backends: list[str] | None = None,
    batches=VALIDATE_BATCHES,
    seq_lens=VALIDATE_SEQ_LENS,
    atol=DEFAULT_ATOL,
    rtol=DEFAULT_RTOL,
    inputs: str | Path | None = None,
    reference: str | Path | None = None,
    report_dir: str | Path | None = None,
    seed: int = 0,
    verbose: bool = False,
    hidden_rtol: float = DEFAULT_HIDDEN_RTOL,
    tie_bound_scale: float = 1.0,
    allow_failed_export: bool = False,
    intra_op_threads: int | None = None,
    int8_thresholds: Int8Thresholds | None = None,
    head_rtol: float = DEFAULT_HEAD_RTOL,
) -> ValidationResult:
    """Run the export on every requested, available backend and judge each against the PyTorch reference.

    ``backends`` defaults to :data:`DEFAULT_BACKENDS` (``ort-portable`` and ``openvino``, the export's
    standard-ONNX function bodies in stock ONNX Runtime and OpenVINO, are opt-in); ``torch`` (the reference) must be available (``reference``: its
    checkpoint, default the export's ``source_model``). ``atol``/``rtol``: a float or ``{output: float}``
    (key ``"*"`` = default; ``"hidden_states"`` applies to layer and head tensors); ``head_rtol``: the relative RMS
    error allowed in each task-head tensor. See :mod:`yoso_deploy.validation.parity`.
    An int8 export (manifest ``quantization``) is judged by the int8 criteria instead (``int8_thresholds``,
    default :data:`yoso_deploy.validation.int8_criteria.DEFAULT_THRESHOLDS`) against its fp32 export and the reference:
    :mod:`yoso_deploy.validation.int8`.
    """
    t_start = time.perf_counter()
    _, Comparator, G_LOGGER = polygraphy()
    model_dir = expand_path(model_dir)
    manifest = load_manifest(model_dir)
    check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
    spec = manifest_spec(manifest)
    quantized = approximation_info(manifest) is not None  # int8 or O3: the int8 criteria against the exact export
    requested = list(backends or DEFAULT_BACKENDS)
    unknown = [b for b in requested if b not in BACKENDS]
    if unknown:
        raise ValidationError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    status = backend_status(model_dir, manifest, reference)
    for b in status:
        if b not in requested:
            status[b] = Backend(b, False, "not requested")
    runnable = [b for b in requested if status[b].available]
    others = [b for b in runnable if b != "torch"]
    if ("torch" not in runnable or not others) and not quantized:  # int8: the fp32 export may be the reference
        why = "; ".join(f"{b}: {status[b].reason}" for b in requested if not status[b].available)
        raise ValidationError(f"need the torch reference and at least one other available backend, have "
                              f"{runnable or 'none'} ({why})")

    if inputs is not None:
        cases = load_inputs(inputs, spec)
        case_desc = [{k: list(v.shape) for k, v in c.items()} for c in cases]
    else:
        cases, case_desc = [], []
        vocab = _vocab_size(model_dir)
        for b in batches:
            for s in seq_lens:
                if s > manifest["max_sequence_length"]:
                    raise ValidationError(f"--seq-len {s} exceeds the model's maximum {manifest['max_sequence_length']}")
                cases.append(make_inputs(spec, int(b), int(s), vocab, seed=seed + len(cases)))
                case_desc.append({"batch": int(b), "seq_len": int(s)})

    if quantized:  # int8 criteria against the fp32 export and the PyTorch reference (yoso_deploy.validation.int8)
        from .int8 import compare_int8

        return compare_int8(model_dir, manifest, requested, cases, case_desc, reference=reference, report_dir=report_dir,
                            verbose=verbose, allow_failed_export=allow_failed_export,
                            intra_op_threads=intra_op_threads, thresholds=int8_thresholds or DEFAULT_INT8_THRESHOLDS)

    from ..modeling import load_model
    from .parity import instrumented_model, judge_backend, reference_forward

    onnx_path = model_file(manifest, model_dir)
    proto, probes = instrumented_model(onnx_path)
    lsh = manifest.get("attention") == "lsh"
    onnx_bytes = proto.SerializeToString()
    del proto
    scratch = tempfile.TemporaryDirectory(prefix="yoso-validate-")
    instrumented_path = Path(scratch.name) / "instrumented.onnx"
    if any(b in PORTABLE_BACKENDS for b in others):  # these runtimes take a file
        instrumented_path.write_bytes(onnx_bytes)
    runners = []
    for b in others:
        if b in PORTABLE_BACKENDS:
            runners.append(make_portable_runner(b, instrumented_path, intra_op_threads))
        elif b == "ort-cpu":
            runners.append(make_ort_runner(onnx_bytes, "cpu", "ort-cpu", intra_op_threads))
        elif b == "ort-cuda":
            runners.append(make_ort_runner(onnx_bytes, "cuda", "ort-cuda", intra_op_threads))
        elif b == "trt":
            from ..backends.trt import make_trt_runner

            runners.append(make_trt_runner(model_dir / ENGINE_FILE, name="trt"))

    severity = G_LOGGER.module_severity
    if not verbose:
        G_LOGGER.module_severity = G_LOGGER.CRITICAL  # polygraphy's [W]/[E]/[I] lines only with --verbose
    try:
        run_results = Comparator.run(runners, data_loader=cases)
    finally:
        G_LOGGER.module_severity = severity
        scratch.cleanup()
    del onnx_bytes

    model = load_model(reference_dir(manifest, reference, model_dir)[0], task=manifest["task"],
                       attention=manifest["attention"], seed=manifest["seed"])
    tol = Tolerances(atol=atol, rtol=rtol, hidden_rtol=hidden_rtol, tie_bound_scale=tie_bound_scale,
                     head_rtol=head_rtol)
    report = ParityReport(notes=precision_notes(runners))
    if probes.hidden_note:
        report.notes.append(f"hidden states not compared: {probes.hidden_note}")
    if probes.head_note:
        report.notes.append(f"task head: {probes.head_note}")
    cached: dict[int, tuple] = {}
    for runner_name, iterations in run_results.items():
        for i, (feeds, out) in enumerate(zip(cases, iterations)):
            values = {k: np.asarray(v) for k, v in OrderedDict(out).items()}
            ref = None
            if not lsh:
                if i not in cached:
                    cached[i] = reference_forward(model, spec, feeds, heads=probes.heads)
                ref = cached[i]
            report.comparisons += judge_backend(model, spec, probes if (lsh or probes.hidden_states) else None,
                                                runner_name, feeds, values, tol, reference=ref)
    result = ValidationResult(str(model_dir), "torch", dict(status), case_desc, report,
                              time.perf_counter() - t_start)
    if report_dir is not None:
        write_report(result, Path(report_dir).expanduser())
    return result


def _vocab_size(model_dir: Path) -> int:
    cfg = json.loads((model_dir / CONFIG_FILE).read_text())
    return int(cfg["vocab_size"])
