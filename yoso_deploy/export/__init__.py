"""Export of the reference YOSO models to ONNX with ``com.yoso`` custom ops.

Names are resolved lazily (PEP 562), so ``from yoso_deploy.export import load_manifest`` or importing
``yoso_deploy.export.spec`` does not import torch, onnx or the exporter (which imports
``yoso_deploy.parity``, which imports ``yoso_deploy.export.spec``: no import cycle either).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "DEFAULT_OPSET": ".exporter",
    "ExportError": ".exporter",
    "ExportResult": ".exporter",
    "ParityError": ".exporter",
    "check_parity": ".exporter",
    "default_model_dir": ".exporter",
    "export": ".exporter",
    "register_schemas": ".schemas",
    "IOSpec": "..iospec",
    "TensorSpec": "..iospec",
    "io_spec": "..iospec",
    "make_inputs": "..iospec",
    # the manifest lives in yoso_deploy.manifest (torch-free); re-exported for old imports
    "MANIFEST": "..manifest",
    "load_manifest": "..manifest",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name], __name__)
    except ImportError as e:  # torch / onnx / onnxscript missing: name the extra to install
        from .._extras import missing_extra

        err = missing_extra(e, "exporting")
        if err is None:
            raise
        raise err from e
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
