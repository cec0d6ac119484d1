"""Parity of every available backend against the PyTorch reference, through polygraphy.

polygraphy's ``OnnxrtRunner`` cannot register custom-op libraries by itself (NVIDIA/TensorRT#4487);
it does accept a callable that builds the session, so we hand it one that registers
``libyoso_ort.so``. The PyTorch reference is a polygraphy runner of ours (:class:`TorchRunner`),
so ``Comparator.run`` drives every backend on the same inputs and ``SimpleCompareFunc`` judges
each output.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .export import load_manifest
from .export.spec import IOSpec, TensorSpec, make_inputs

BACKENDS = ("torch", "ort-cpu", "ort-cuda", "trt")
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


class ValidationError(RuntimeError):
    """Validation could not run (bad arguments, nothing to compare)."""


def manifest_spec(manifest: dict) -> IOSpec:
    ts = lambda items: [TensorSpec(**t) for t in items]  # noqa: E731
    return IOSpec(manifest["task"], ts(manifest["inputs"]), ts(manifest["outputs"]), ts(manifest.get("debug_outputs", [])))


@dataclass
class Backend:
    name: str
    available: bool
    reason: str = ""


def _torch_reference_dir(manifest: dict, reference: str | Path | None) -> Path | None:
    p = Path(reference) if reference else Path(manifest.get("source_model", ""))
    return p if str(p) and (p / "config.json").is_file() else None


def backend_status(model_dir: Path, manifest: dict, reference: str | Path | None = None) -> dict[str, Backend]:
    """Which backends can run here, and why not for the others."""
    from . import _native

    out = {}
    ref = _torch_reference_dir(manifest, reference)
    out["torch"] = Backend("torch", ref is not None,
                           "" if ref else f"source checkpoint {manifest.get('source_model')!r} not found; pass --reference DIR")
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
    elif not engine.is_file():
        out["trt"] = Backend("trt", False, f"no engine {engine}; build one with 'yoso-deploy build-engine --model {model_dir}'")
    else:
        out["trt"] = Backend("trt", True)
    return out


def _polygraphy():
    try:
        from polygraphy.backend.base import BaseRunner
        from polygraphy.backend.onnxrt import OnnxrtRunner
        from polygraphy.comparator import Comparator, SimpleCompareFunc
        from polygraphy.logger import G_LOGGER
    except ImportError as e:  # pragma: no cover - polygraphy is a dependency
        raise ValidationError("polygraphy is not installed; pip install 'polygraphy>=0.49'") from e
    return BaseRunner, OnnxrtRunner, Comparator, SimpleCompareFunc, G_LOGGER


def make_torch_runner(reference_dir: Path, manifest: dict, debug_codes: bool):
    """A polygraphy runner that runs the PyTorch reference model of an export."""
    BaseRunner = _polygraphy()[0]
    from polygraphy.common import TensorMetadata

    from .modeling import load_model
    from .parity import torch_outputs

    class TorchRunner(BaseRunner):
        def __init__(self):
            super().__init__(name="torch", prefix="torch-runner")

        def activate_impl(self):
            self.model = load_model(reference_dir, task=manifest["task"], attention=manifest["attention"],
                                    seed=manifest["seed"])
            self.spec = manifest_spec(manifest)

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for t in self.spec.inputs:
                meta.add(t.name, dtype=np.dtype(t.dtype), shape=[d if isinstance(d, int) else -1 for d in t.dims])
            return meta

        def infer_impl(self, feed_dict):
            start = time.perf_counter()
            out = OrderedDict(torch_outputs(self.model, self.spec, feed_dict, debug_codes=debug_codes))
            self.inference_time = time.perf_counter() - start
            return out

        def deactivate_impl(self):
            del self.model

    return TorchRunner()


def make_ort_runner(onnx_path: Path, provider: str, name: str, intra_op_threads: int | None = None):
    OnnxrtRunner = _polygraphy()[1]
    from .runtime import CPU, CUDA, create_session

    providers = [CUDA, CPU] if provider == "cuda" else [CPU]
    return OnnxrtRunner(lambda: create_session(onnx_path, providers=providers, intra_op_threads=intra_op_threads), name=name)


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
class OutputResult:
    backend: str
    output: str
    max_abs: float
    mean_abs: float
    max_rel: float
    mean_rel: float
    identical: float | None
    atol: float
    rtol: float
    passed: bool


@dataclass
class ValidationResult:
    model_dir: str
    reference: str
    backends: dict
    cases: list
    results: list[OutputResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def failures(self) -> list[OutputResult]:
        return [r for r in self.results if not r.passed]

    def table(self) -> str:
        from .parity import format_table

        rows = [[r.backend, r.output, f"{r.max_abs:.3e}", f"{r.mean_abs:.3e}", f"{r.max_rel:.3e}",
                 "" if r.identical is None else f"{100 * r.identical:.2f}%", f"{r.atol:.0e}/{r.rtol:.0e}",
                 "ok" if r.passed else "FAIL"] for r in self.results]
        return format_table(["backend", "output", "max abs", "mean abs", "max rel", "identical", "atol/rtol", "status"], rows)

    def to_json(self) -> dict:
        return {"model_dir": self.model_dir, "reference": self.reference, "passed": self.passed,
                "backends": {k: asdict(v) for k, v in self.backends.items()}, "cases": self.cases,
                "results": [asdict(r) for r in self.results]}


def load_inputs(path: str | Path, spec: IOSpec) -> list[dict[str, np.ndarray]]:
    """Inputs from ``.npz`` (one case) or JSON (an object, or a list of objects, name -> nested list)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--inputs file {str(p)!r} does not exist")
    if p.suffix == ".npz":
        with np.load(p) as z:
            cases = [{k: z[k] for k in z.files}]
    else:
        data = json.loads(p.read_text())
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
) -> ValidationResult:
    """Run the export's inputs through every requested, available backend and compare with the first.

    ``backends`` defaults to all; the first available one in the list (``torch`` by default) is the
    reference. ``atol``/``rtol`` are a float or ``{output: float}`` (with key ``"*"`` as default).
    Hash codes (debug outputs) are always compared exactly.
    """
    _, _, Comparator, SimpleCompareFunc, G_LOGGER = _polygraphy()
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    spec = manifest_spec(manifest)
    requested = list(backends or BACKENDS)
    unknown = [b for b in requested if b not in BACKENDS]
    if unknown:
        raise ValidationError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    status = backend_status(model_dir, manifest, reference)
    for b in status:
        if b not in requested:
            status[b] = Backend(b, False, "not requested")
    runnable = [b for b in requested if status[b].available]
    if len(runnable) < 2:
        why = "; ".join(f"{b}: {status[b].reason}" for b in requested if not status[b].available)
        raise ValidationError(f"need at least two available backends to compare, have {runnable or 'none'} ({why})")
    onnx_path = model_dir / manifest.get("model_file", "model.onnx")
    has_codes = bool(spec.debug_outputs)
    runners = []
    for b in runnable:
        if b == "torch":
            runners.append(make_torch_runner(_torch_reference_dir(manifest, reference), manifest, has_codes))
        elif b == "ort-cpu":
            runners.append(make_ort_runner(onnx_path, "cpu", "ort-cpu"))
        elif b == "ort-cuda":
            runners.append(make_ort_runner(onnx_path, "cuda", "ort-cuda"))
        elif b == "trt":
            from .trt import make_trt_runner

            runners.append(make_trt_runner(model_dir / "model.plan", name="trt"))

    if inputs is not None:
        cases = load_inputs(inputs, spec)
        case_desc = [{k: list(v.shape) for k, v in c.items()} for c in cases]
    else:
        cases, case_desc = [], []
        for b in batches:
            for s in seq_lens:
                if s > manifest["max_sequence_length"]:
                    raise ValidationError(f"--seq-len {s} exceeds the model's maximum {manifest['max_sequence_length']}")
                cases.append(make_inputs(spec, int(b), int(s), _vocab_size(model_dir), seed=seed + len(cases)))
                case_desc.append({"batch": int(b), "seq_len": int(s)})

    base_atol, per_atol = (atol, {}) if not isinstance(atol, dict) else (atol.get("*", DEFAULT_ATOL), atol)
    base_rtol, per_rtol = (rtol, {}) if not isinstance(rtol, dict) else (rtol.get("*", DEFAULT_RTOL), rtol)
    names = [t.name for t in spec.outputs + spec.debug_outputs]
    atols = {n: (0.0 if n in {t.name for t in spec.debug_outputs} else per_atol.get(n, base_atol)) for n in names}
    rtols = {n: (0.0 if n in {t.name for t in spec.debug_outputs} else per_rtol.get(n, base_rtol)) for n in names}

    severity = G_LOGGER.module_severity
    if not verbose:
        G_LOGGER.module_severity = G_LOGGER.ERROR
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            run_results = Comparator.run(runners, data_loader=cases)
            # One compare function -> AccuracyResults holds one AccuracyResult: {(ref, other): [per-iteration]}.
            accuracy = Comparator.compare_accuracy(
                run_results, compare_func=SimpleCompareFunc(atol=atols, rtol=rtols, check_error_stat="elemwise")
            )[0]
    finally:
        G_LOGGER.module_severity = severity

    result = ValidationResult(str(model_dir), runnable[0], {k: v for k, v in status.items()}, case_desc)
    ref_name = runners[0].name
    ref_iters = dict(run_results.items())[ref_name]
    for (r0, r1), iterations in accuracy.items():
        other = r1 if r0 == ref_name else r0
        other_iters = dict(run_results.items())[other]
        for name in names:
            verdicts = [bool(it[name]) if name in it else False for it in iterations]
            stats = [_stats(ref_iters[i][name], other_iters[i][name]) for i in range(len(ref_iters))]
            result.results.append(OutputResult(
                backend=other, output=name,
                max_abs=max(s[0] for s in stats), mean_abs=float(np.mean([s[1] for s in stats])),
                max_rel=max(s[2] for s in stats), mean_rel=float(np.mean([s[3] for s in stats])),
                identical=(float(np.mean([s[4] for s in stats])) if stats[0][4] is not None else None),
                atol=atols[name], rtol=rtols[name], passed=all(v is not False for v in verdicts),
            ))
    if report_dir is not None:
        write_report(result, Path(report_dir))
    return result


def _vocab_size(model_dir: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text())
    return int(cfg["vocab_size"])


def _stats(ref: np.ndarray, got: np.ndarray):
    if ref.shape != got.shape:
        return (math.inf, math.inf, math.inf, math.inf, 0.0 if np.issubdtype(ref.dtype, np.integer) else None)
    a, b = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(a - b)
    rel = diff / np.maximum(np.abs(a), 1e-12)
    ident = float(np.mean(ref == got)) if np.issubdtype(ref.dtype, np.integer) and ref.size else (
        1.0 if np.issubdtype(ref.dtype, np.integer) else None)
    return (float(diff.max(initial=0)), float(diff.mean()) if diff.size else 0.0,
            float(rel.max(initial=0)), float(rel.mean()) if rel.size else 0.0, ident)


def write_report(result: ValidationResult, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "validation.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    lines = [f"# Validation of `{result.model_dir}`", "", f"Reference: **{result.reference}**; verdict: "
             f"**{'PASS' if result.passed else 'FAIL'}**", "", "| backend | available | reason |", "|---|---|---|"]
    lines += [f"| {b.name} | {'yes' if b.available else 'no'} | {b.reason} |" for b in result.backends.values()]
    lines += ["", "```", result.table(), "```", ""]
    (report_dir / "validation.md").write_text("\n".join(lines))
