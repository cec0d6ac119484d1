"""Parity of every available backend against the PyTorch reference (``yoso-deploy validate``).

The backends run through polygraphy (``Comparator.run``): ONNX Runtime through ``OnnxrtRunner``
with a session factory that registers ``libyoso_ort.so`` (polygraphy cannot register custom-op
libraries itself, NVIDIA/TensorRT#4487), TensorRT through ``TrtRunner``. What each backend computed
is then judged against the PyTorch reference by :mod:`yoso_deploy.parity`:

* LSH exports: the backend runs an in-memory copy of ``model.onnx`` whose every FastHash input and
  output, LSHCumulation value input and output, and encoder-layer output is also a graph output; the
  reference runs with the backend's hash codes injected layer by layer; codes are judged tie-aware
  and every tensor within fp32 tolerances (plugins/OPS.md section 5);
* expectation exports: outputs and hidden states are compared directly;
* int8 exports (``yoso-deploy quantize``): int8 criteria against the fp32 export and the reference
  (:mod:`yoso_deploy.validate_int8`).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .backends_portable import PORTABLE_BACKENDS, make_portable_runner, portable_backend_status
from .iospec import IOSpec, make_inputs
from .int8_parity import DEFAULT_THRESHOLDS as DEFAULT_INT8_THRESHOLDS
from .int8_parity import Int8Thresholds
from .manifest import check_usable, expand_path, load_manifest, manifest_spec, quantization_info, require_source_model_dir
from .parity import DEFAULT_ATOL, DEFAULT_HIDDEN_RTOL, DEFAULT_RTOL, ParityReport, Tolerances

BACKENDS = ("torch", "ort-cpu", "ort-cuda", "trt") + PORTABLE_BACKENDS
DEFAULT_BACKENDS = ("torch", "ort-cpu", "ort-cuda", "trt")  # the portable ones are opt-in (their bodies are slow)


class ValidationError(RuntimeError):
    """Validation could not run (bad arguments, nothing to compare)."""


@dataclass
class Backend:
    name: str
    available: bool
    reason: str = ""


def reference_dir(manifest: dict, reference: str | Path | None, model_dir: str | Path) -> tuple[Path | None, str]:
    """The PyTorch reference checkpoint (``reference`` if given, else the export's source model) and, when
    there is none, why."""
    if reference:
        p = expand_path(reference)
        if (p / "config.json").is_file():
            return p, ""
        return None, f"--reference {str(reference)!r} holds no config.json; pass the checkpoint directory"
    try:
        return require_source_model_dir(manifest, model_dir), ""
    except FileNotFoundError as e:
        return None, str(e)


def backend_status(model_dir: Path, manifest: dict, reference: str | Path | None = None) -> dict[str, Backend]:
    """Which backends can run here, and why not for the others."""
    from . import _native

    out = {}
    ref, why = reference_dir(manifest, reference, model_dir)
    out["torch"] = Backend("torch", ref is not None, why)
    try:
        import onnxruntime as ort

        from .runtime import check_runtime_version

        if manifest.get("custom_ops"):
            _native.ort_library_path()
            check_runtime_version()
        providers = ort.get_available_providers()
        out["ort-cpu"] = Backend("ort-cpu", True)
        if "CUDAExecutionProvider" not in providers:
            out["ort-cuda"] = Backend("ort-cuda", False, "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu on a CUDA machine)")
        elif manifest.get("custom_ops") and not _native.ort_build_info().get("cuda"):
            out["ort-cuda"] = Backend("ort-cuda", False, "libyoso_ort.so was built without CUDA kernels")
        else:
            out["ort-cuda"] = Backend("ort-cuda", True)
    except Exception as e:  # noqa: BLE001 - any failure makes ORT unavailable, with its reason
        out["ort-cpu"] = Backend("ort-cpu", False, str(e).splitlines()[0])
        out["ort-cuda"] = Backend("ort-cuda", False, str(e).splitlines()[0])
    engine = Path(model_dir) / "model.plan"
    if importlib.util.find_spec("tensorrt") is None:
        out["trt"] = Backend("trt", False, "the TensorRT runtime (Python package 'tensorrt') is not installed; it needs an NVIDIA GPU")
    elif manifest.get("attention") == "lsh":
        out["trt"] = Backend("trt", False, "tie-aware LSH parity needs every FastHash output, which an engine built from "
                                           "model.onnx does not expose; validate TensorRT with an expectation export")
    elif not engine.is_file():
        out["trt"] = Backend("trt", False, f"no engine {engine}; build one with 'yoso-deploy build-engine --model {model_dir}'")
    else:
        out["trt"] = Backend("trt", True)
    for name, (ok, why) in portable_backend_status(manifest).items():
        out[name] = Backend(name, ok, why)
    return out


def _polygraphy():
    try:
        from polygraphy.backend.onnxrt import OnnxrtRunner
        from polygraphy.comparator import Comparator
        from polygraphy.logger import G_LOGGER
    except ImportError as e:  # pragma: no cover - polygraphy is a dependency
        raise ValidationError("polygraphy is not installed; pip install 'polygraphy>=0.49'") from e
    return OnnxrtRunner, Comparator, G_LOGGER


def make_ort_runner(onnx_model: Path | bytes, provider: str, name: str, intra_op_threads: int | None = None):
    """A polygraphy ``OnnxrtRunner`` whose session has libyoso_ort.so registered (``onnx_model``: path or bytes)."""
    OnnxrtRunner = _polygraphy()[0]
    from .runtime import CPU, CUDA, create_session

    providers = [CUDA, CPU] if provider == "cuda" else [CPU]
    return OnnxrtRunner(lambda: create_session(onnx_model, providers=providers, intra_op_threads=intra_op_threads), name=name)


def parse_tolerances(values, default: float) -> tuple[float, dict[str, float]]:
    """``["1e-4", "start_logits=1e-3"]`` -> (1e-4, {"start_logits": 1e-3})."""
    base, per = default, {}
    for v in values or ():
        if "=" in str(v):
            name, _, num = str(v).partition("=")
            per[name.strip()] = float(num)
        else:
            base = float(v)
    return base, per


@dataclass
class ValidationResult:
    model_dir: str
    reference: str
    backends: dict
    cases: list
    report: ParityReport = field(default_factory=ParityReport)
    seconds: float = 0.0

    @property
    def results(self):
        return self.report.comparisons

    @property
    def passed(self) -> bool:
        return self.report.passed

    def failures(self):
        return self.report.failures()

    def first_failure(self):
        return self.report.first_failure()

    def table(self) -> str:
        return self.report.table()

    def to_json(self) -> dict:
        first = self.report.first_failure()
        return {"model_dir": self.model_dir, "reference": self.reference, "passed": self.passed,
                "first_failure": None if first is None else f"{first.backend} {first.case} {first.name}: {first.error}",
                "seconds": round(self.seconds, 2), "notes": self.report.notes,
                "backends": {k: asdict(v) for k, v in self.backends.items()}, "inputs": self.cases,
                "cases": self.report.cases()}


def load_inputs(path: str | Path, spec: IOSpec) -> list[dict[str, np.ndarray]]:
    """Inputs from ``.npz`` (one case) or JSON (an object, or a list of objects, name -> nested list)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"--inputs file {str(p)!r} does not exist")
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


def compare(
    model_dir: str | Path,
    backends: list[str] | None = None,
    batches=(1, 4),
    seq_lens=(16, 128),
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
) -> ValidationResult:
    """Run the export on every requested, available backend and judge each against the PyTorch reference.

    ``backends`` defaults to :data:`DEFAULT_BACKENDS` (``ort-portable`` and ``openvino``, the export's
    standard-ONNX function bodies in stock ONNX Runtime and OpenVINO, are opt-in); ``torch`` (the reference) must be available (``reference``: its
    checkpoint, default the export's ``source_model``). ``atol``/``rtol``: a float or ``{output: float}``
    (key ``"*"`` = default; ``"hidden_states"`` applies to layer tensors). See :mod:`yoso_deploy.parity`.
    An int8 export (manifest ``quantization``) is judged by the int8 criteria instead (``int8_thresholds``,
    default :data:`yoso_deploy.int8_parity.DEFAULT_THRESHOLDS`) against its fp32 export and the reference:
    :mod:`yoso_deploy.validate_int8`.
    """
    t_start = time.perf_counter()
    _, Comparator, G_LOGGER = _polygraphy()
    model_dir = expand_path(model_dir)
    manifest = load_manifest(model_dir)
    check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
    spec = manifest_spec(manifest)
    quantized = quantization_info(manifest) is not None
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

    if quantized:  # int8 criteria against the fp32 export and the PyTorch reference (yoso_deploy.validate_int8)
        from .validate_int8 import compare_int8

        return compare_int8(model_dir, manifest, requested, cases, case_desc, reference=reference, report_dir=report_dir,
                            verbose=verbose, allow_failed_export=allow_failed_export,
                            intra_op_threads=intra_op_threads, thresholds=int8_thresholds or DEFAULT_INT8_THRESHOLDS)

    from .modeling import load_model
    from .parity import instrumented_model, judge_backend, reference_forward

    onnx_path = model_dir / manifest.get("model_file", "model.onnx")
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
            from .trt import make_trt_runner

            runners.append(make_trt_runner(model_dir / "model.plan", name="trt"))

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
    tol = Tolerances(atol=atol, rtol=rtol, hidden_rtol=hidden_rtol, tie_bound_scale=tie_bound_scale)
    report = ParityReport()
    if probes.hidden_note:
        report.notes.append(f"hidden states not compared: {probes.hidden_note}")
    cached: dict[int, tuple] = {}
    for runner_name, iterations in run_results.items():
        for i, (feeds, out) in enumerate(zip(cases, iterations)):
            values = {k: np.asarray(v) for k, v in OrderedDict(out).items()}
            ref = None
            if not lsh:
                if i not in cached:
                    cached[i] = reference_forward(model, spec, feeds)
                ref = cached[i]
            report.comparisons += judge_backend(model, spec, probes if (lsh or probes.hidden_states) else None,
                                                runner_name, feeds, values, tol, reference=ref)
    result = ValidationResult(str(model_dir), "torch", dict(status), case_desc, report,
                              time.perf_counter() - t_start)
    if report_dir is not None:
        write_report(result, Path(report_dir).expanduser())
    return result


def _vocab_size(model_dir: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text())
    return int(cfg["vocab_size"])


def write_report(result: ValidationResult, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "validation.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    lines = [f"# Validation of `{result.model_dir}`", "", f"Reference: **{result.reference}**; verdict: "
             f"**{'PASS' if result.passed else 'FAIL'}** ({result.seconds:.1f} s)", "",
             "| backend | available | reason |", "|---|---|---|"]
    lines += [f"| {b.name} | {'yes' if b.available else 'no'} | {b.reason} |" for b in result.backends.values()]
    lines += ["", "```", result.table(), "```", ""]
    (report_dir / "validation.md").write_text("\n".join(lines))
