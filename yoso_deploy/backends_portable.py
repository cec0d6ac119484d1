"""polygraphy runners for the portable backends ``ort-portable`` and ``openvino``.

``ort-portable``: stock ONNX Runtime without ``libyoso_ort.so`` (the export's function bodies run);
``openvino``: OpenVINO on the CPU (the bodies inlined). Both need an export with bodies
(``--portable functions`` or ``inline``; an expectation-attention export has no custom op at all).

For ``yoso_deploy.validate``: :data:`PORTABLE_BACKENDS` are the names, :func:`portable_backend_status`
says which can run (``{name: (available, reason)}``), and :func:`make_portable_runner` builds the
runner for one name. Hash codes from these runners are bit-identical to the library's; float
outputs agree to ~1e-6.
"""

from __future__ import annotations

import importlib.util
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

PORTABLE_BACKENDS = ("ort-portable", "openvino")


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

    from .portable import create_portable_session

    return OnnxrtRunner(lambda: create_portable_session(onnx_path, intra_op_threads=intra_op_threads), name=name)


def make_openvino_runner(onnx_path: str | Path, name: str = "openvino", threads: int | None = None,
                         device: str = "CPU"):
    """A polygraphy runner (``BaseRunner``) that runs the export in OpenVINO."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    from .portable import compile_openvino, run_openvino

    class OpenVinoRunner(BaseRunner):
        def __init__(self):
            super().__init__(name=name, prefix="openvino-runner")

        def activate_impl(self):
            self.compiled = compile_openvino(onnx_path, device=device, threads=threads)

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
    raise ValueError(f"unknown portable backend {backend!r}; choose one of {', '.join(PORTABLE_BACKENDS)}")
