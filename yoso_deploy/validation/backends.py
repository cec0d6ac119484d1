"""Which backends ``yoso-deploy validate`` can run here, and their polygraphy runners.

Names: ``torch`` (the PyTorch reference), ``ort-cpu`` / ``ort-cuda`` (ONNX Runtime with ``libyoso_ort.so``),
``trt`` (a TensorRT engine), and the portable ones, opt-in: ``ort-portable`` (stock ONNX Runtime without
the library: the export's function bodies run) and ``openvino`` (OpenVINO on the CPU at float32 inference
precision, the bodies inlined; its runner's ``precision`` is what it really ran at, and ``validate`` reports
it). The portable ones need an export with bodies (``--portable functions`` or ``inline``; an
expectation-attention export has no custom op at all); their hash codes are bit-identical to the library's and
float outputs agree to ~1e-6.

:func:`backend_status` says which can run and why not for the others; :func:`make_ort_runner` and
:func:`make_portable_runner` build the runners :func:`polygraphy` ``Comparator.run`` drives.
"""

from __future__ import annotations

import importlib.util
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import CONFIG_FILE, ENGINE_FILE, VALIDATE_BACKENDS
from ..errors import UsageError
from ..manifest import expand_path, require_source_model_dir

PORTABLE_BACKENDS = ("ort-portable", "openvino")
BACKENDS = ("torch", "ort-cpu", "ort-cuda", "trt") + PORTABLE_BACKENDS
DEFAULT_BACKENDS = VALIDATE_BACKENDS  # the portable ones are opt-in (their bodies are slow)


class ValidationError(UsageError):
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
        if (p / CONFIG_FILE).is_file():
            return p, ""
        return None, f"--reference {str(reference)!r} holds no config.json; pass the checkpoint directory"
    try:
        return require_source_model_dir(manifest, model_dir), ""
    except FileNotFoundError as e:
        return None, str(e)


def backend_status(model_dir: Path, manifest: dict, reference: str | Path | None = None) -> dict[str, Backend]:
    """Which backends can run here, and why not for the others."""
    from .. import _native

    out = {}
    ref, why = reference_dir(manifest, reference, model_dir)
    out["torch"] = Backend("torch", ref is not None, why)
    try:
        import onnxruntime as ort

        from ..runtime import check_runtime_version

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
    engine = Path(model_dir) / ENGINE_FILE
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


def polygraphy():
    try:
        from polygraphy.backend.onnxrt import OnnxrtRunner
        from polygraphy.comparator import Comparator
        from polygraphy.logger import G_LOGGER
    except ImportError as e:  # pragma: no cover - polygraphy is a dependency
        raise ValidationError("polygraphy is not installed; pip install 'polygraphy>=0.49'") from e
    return OnnxrtRunner, Comparator, G_LOGGER


def make_ort_runner(onnx_model: Path | bytes, provider: str, name: str, intra_op_threads: int | None = None):
    """A polygraphy ``OnnxrtRunner`` whose session has libyoso_ort.so registered (``onnx_model``: path or bytes)."""
    OnnxrtRunner = polygraphy()[0]
    from ..runtime import CPU, CUDA, create_session

    providers = [CUDA, CPU] if provider == "cuda" else [CPU]
    return OnnxrtRunner(lambda: create_session(onnx_model, providers=providers, intra_op_threads=intra_op_threads), name=name)


def _export_has_bodies(manifest: dict) -> tuple[bool, str]:
    if not manifest.get("custom_ops"):
        return True, ""  # no com.yoso node: expectation attention, or an inline export
    mode = manifest.get("portable", "off")  # exports older than --portable carry no bodies
    if mode in ("functions", "inline"):
        return True, ""
    return False, ("the export has no function bodies (made with --portable off or before it existed); "
                   "re-export with 'yoso-deploy export --portable functions'")


def portable_backend_status(manifest: dict) -> dict[str, tuple[bool, str]]:
    """``{"ort-portable": (available, reason), "openvino": (available, reason)}`` for an export's manifest."""
    ok, why = _export_has_bodies(manifest)
    out = {}
    if importlib.util.find_spec("onnxruntime") is None:
        out["ort-portable"] = (False, "onnxruntime is not installed")
    else:
        out["ort-portable"] = (ok, why)
    if importlib.util.find_spec("openvino") is None:
        out["openvino"] = (False, "OpenVINO is not installed; pip install 'yoso-deploy[openvino]'")
    else:
        out["openvino"] = (ok, why)
    return out


def make_ort_portable_runner(onnx_path: str | Path, name: str = "ort-portable", intra_op_threads: int | None = None):
    """polygraphy ``OnnxrtRunner`` over a stock ONNX Runtime session (no custom-op library)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from ..backends.portable import create_portable_session

    return OnnxrtRunner(lambda: create_portable_session(onnx_path, intra_op_threads=intra_op_threads), name=name)


def make_openvino_runner(onnx_path: str | Path, name: str = "openvino", threads: int | None = None,
                         device: str = "CPU", config: dict | None = None):
    """A polygraphy runner (``BaseRunner``) that runs the export in OpenVINO.

    ``config``: OpenVINO properties passed to :func:`~yoso_deploy.backends.portable.compile_openvino` (its
    default is f32 inference precision). Once activated, the runner's ``precision`` is the inference
    precision the compiled model really runs at (``"f32"``, ``"bf16"``, ... or ``"unknown"``; ``None`` before).
    """
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    from ..backends.portable import compile_openvino, openvino_precision, run_openvino

    class OpenVinoRunner(BaseRunner):
        def __init__(self):
            super().__init__(name=name, prefix="openvino-runner")
            self.precision: str | None = None  # read back from the compiled model on activation

        def activate_impl(self):
            self.compiled = compile_openvino(onnx_path, device=device, threads=threads, config=config)
            self.precision = openvino_precision(self.compiled)

        def get_input_metadata_impl(self):
            from polygraphy.datatype import DataType

            meta = TensorMetadata()
            for port in self.compiled.inputs:
                shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
                dtype = DataType.from_dtype(np.dtype(port.get_element_type().to_dtype()))
                meta.add(port.get_any_name(), dtype=dtype, shape=shape)
            return meta

        def infer_impl(self, feed_dict):
            start = time.perf_counter()
            out = OrderedDict(run_openvino(self.compiled, feed_dict))
            self.inference_time = time.perf_counter() - start
            return out

        def deactivate_impl(self):
            del self.compiled

    return OpenVinoRunner()


def make_portable_runner(backend: str, onnx_path: str | Path, threads: int | None = None):
    """The runner of one of :data:`PORTABLE_BACKENDS` for ``onnx_path``."""
    if backend == "ort-portable":
        return make_ort_portable_runner(onnx_path, name=backend, intra_op_threads=threads)
    if backend == "openvino":
        return make_openvino_runner(onnx_path, name=backend, threads=threads)
    raise UsageError(f"unknown portable backend {backend!r}; choose one of {', '.join(PORTABLE_BACKENDS)}")
