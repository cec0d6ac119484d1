"""PyTorch -> ONNX: the reference YOSO models converted with ``com.yoso`` custom ops.

Owns the conversion (:mod:`.exporter`: torch.export + the ops' translation, opset, parameter names, the
manifest), the ops' ONNX schemas (:mod:`.schemas`), their standard-ONNX function bodies (:mod:`.functions`),
the probed values of an exported graph (:mod:`.probes`), opset conversion (:mod:`.opset`) and the ops'
``onnx.reference`` implementations (:mod:`.onnx_reference`). May import: the shared modules and
:mod:`yoso_deploy.modeling`. The post-export check is :mod:`yoso_deploy.validation`'s; the whole job
(convert, check, quantize, publish) is :func:`yoso_deploy.workflow.export`.

Names are resolved lazily (PEP 562): ``from yoso_deploy.export.probes import find_probes`` or
``from yoso_deploy.export import io_spec`` imports neither torch nor the exporter.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "DEFAULT_OPSET": ".options",
    "ConvertResult": ".exporter",
    "ExportError": ".options",
    "convert": ".exporter",
    "default_model_dir": ".exporter",
    "register_schemas": ".schemas",
    "IOSpec": "..iospec",
    "TensorSpec": "..iospec",
    "io_spec": "..iospec",
    "make_inputs": "..iospec",
}
_MOVED = {"export": "yoso_deploy.workflow.export", "ExportResult": "yoso_deploy.workflow.ExportResult",
          "ParityError": "yoso_deploy.workflow.ParityError", "load_manifest": "yoso_deploy.manifest.load_manifest",
          "MANIFEST": "yoso_deploy.constants.MANIFEST_FILE"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _MOVED:
        raise AttributeError(f"yoso_deploy.export.{name} is now {_MOVED[name]} (the export job: convert, check, "
                             "publish); import it from there")
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name], __name__)
    except ImportError as e:  # torch / onnx / onnxscript missing: name the extra to install
        from ..errors import missing_extra

        err = missing_extra(e, "exporting")
        if err is None:
            raise
        raise err from e
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
