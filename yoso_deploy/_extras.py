"""Optional dependencies (package extras) and the one-line error for a missing one.

The base install (``pip install yoso-deploy``) is the runtime: onnxruntime, numpy, tokenizers, click.
Everything else is an extra, as in Optimum:

* ``[export]``: torch, transformers, onnx, onnxscript, safetensors -- export, the PyTorch reference, the
  transformers.pipeline integration;
* ``[validate]``: polygraphy, matplotlib -- ``validate`` and the plots of ``bench`` (with ``[export]`` for
  the torch reference);
* ``[quantize]``: onnx -- ``yoso-deploy quantize`` (int8; onnxruntime.quantization, no torch);
* ``[gpu]``: onnxruntime-gpu, tensorrt -- CUDA machines only;
* ``[serve]``: ray[serve] -- ``yoso-deploy serve``; ``[batch]``: ray[data] -- ``yoso-deploy batch --ray``;
* ``[triton]``: tritonclient[http] (+ grpcio, protobuf for Triton's ModelConfig schema) -- checking
  ``triton-repo`` configs, the tritonclient examples;
* ``[all]``: every extra but ``[gpu]``.
"""

from __future__ import annotations

import importlib

EXTRA_OF_MODULE = {
    "torch": "export",
    "transformers": "export",
    "onnx": "export",
    "onnxscript": "export",
    "onnx_ir": "export",
    "safetensors": "export",
    "polygraphy": "validate",
    "matplotlib": "validate",
    "tensorrt": "gpu",
    "ray": "serve",
    "starlette": "serve",
    "pyarrow": "batch",
    "tritonclient": "triton",
}


# Commands that need more than the extra of the one module found missing: name all they need at once.
COMMAND_EXTRAS = {
    "quantize": "quantize",  # onnx (for onnxruntime.quantization), not the whole [export]
    "validate": "export,validate",  # polygraphy runs the backends; the PyTorch reference judges them
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` to run."""


def missing_extra(exc: BaseException, feature: str | None = None, extras: str | None = None) -> MissingExtraError | None:
    """A :class:`MissingExtraError` for ``exc`` if it is (or was raised ``from``) an ImportError of an
    extra's module, else None. ``extras`` names what to install instead of that module's extra."""
    if isinstance(exc, MissingExtraError):
        return exc
    seen = 0
    while not isinstance(exc, ImportError) and exc is not None and seen < 8:  # an error raised `from` one
        exc, seen = exc.__cause__, seen + 1
    if not isinstance(exc, ImportError):
        return None
    top = (getattr(exc, "name", None) or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    what = f"{feature} needs" if feature else "this needs"
    extra = extras or extra
    return MissingExtraError(f"{what} {top}, which is not installed; install the extra{'s' if ',' in extra else ''}: "
                             f"pip install 'yoso-deploy[{extra}]'")


def require(module: str, feature: str):
    """``import module`` or raise :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        err = missing_extra(e, feature)
        if err is None:
            raise
        raise err from e
