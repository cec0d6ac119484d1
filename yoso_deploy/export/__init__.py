"""Export of the reference YOSO models to ONNX with ``com.yoso`` custom ops."""

from .exporter import (
    DEFAULT_OPSET,
    MANIFEST,
    ExportError,
    ExportResult,
    ParityError,
    check_parity,
    default_model_dir,
    export,
    load_manifest,
)
from .schemas import register_schemas
from .spec import IOSpec, TensorSpec, io_spec, make_inputs

__all__ = [
    "DEFAULT_OPSET",
    "MANIFEST",
    "ExportError",
    "ExportResult",
    "IOSpec",
    "ParityError",
    "TensorSpec",
    "check_parity",
    "default_model_dir",
    "export",
    "io_spec",
    "load_manifest",
    "make_inputs",
    "register_schemas",
]
