"""One error family: every exception yoso-deploy raises on purpose derives from :class:`YosoDeployError`.

    try:
        pipeline("out/qa")(question=q, context=c)
    except YosoDeployError as e:      # anything yoso-deploy can name: a bad input, a missing file, a refused export
        print(e)                      # "<what is wrong> -- <how to fix it>"

The classes below are the kinds of error; each stage defines its own subclasses where callers need to tell
them apart (``ManifestError``, ``InputError``, ``ProtocolError``, ...). Each kind also derives from the
built-in exception a Python caller would expect (``ValueError`` for a bad value, ``FileNotFoundError`` for a
missing file, ``ImportError`` for a missing extra, ...), so ``except ValueError`` keeps working.

The command line prints a :class:`YosoDeployError` as one line ``error: <message>`` and exits 2
(:class:`CheckFailedError`, a verdict rather than an error: exit 1); any other exception is a bug in
yoso-deploy and keeps its traceback.

Optional dependencies (package extras) are named here too, with the one-line error for a missing one
(:func:`missing_extra`, :func:`require`). The base install (``pip install yoso-deploy``) is the runtime:
onnxruntime, numpy, tokenizers, click. Everything else is an extra, as in Optimum:

* ``[export]``: torch, transformers, onnx, onnxscript, safetensors -- export, the PyTorch reference, the
  transformers.pipeline integration;
* ``[validate]``: polygraphy, matplotlib -- ``validate`` and the plots of ``bench`` (with ``[export]`` for
  the torch reference);
* ``[quantize]``: onnx -- ``yoso-deploy quantize`` (int8; onnxruntime.quantization, no torch);
* ``[gpu]``: onnxruntime-gpu, tensorrt -- CUDA machines only;
* ``[serve]``: uvicorn, starlette -- ``yoso-deploy serve`` (the asgi engine); ``[ray]``: ray[serve] --
  ``serve --engine ray``; ``[batch]``: ray[data] -- ``yoso-deploy batch --ray``;
* ``[triton]``: tritonclient[http] (+ grpcio, protobuf for Triton's ModelConfig schema) -- checking
  ``triton-repo`` configs, the tritonclient examples;
* ``[all]``: every extra but ``[gpu]``.

This module imports only the standard library: every layer may use it.
"""

from __future__ import annotations

import importlib


class YosoDeployError(Exception):
    """Base of every error yoso-deploy raises for a reason it can name.

    ``YosoDeployError(what, fix=how)`` reads ``"<what> — <how>"``; a message may also carry its fix itself."""

    def __init__(self, message: str = "", *args, fix: str | None = None):
        self.what = str(message)
        self.fix = fix
        super().__init__(f"{message} — {fix}" if fix else message, *args)

    def __reduce__(self):  # picklable across processes (Ray, multiprocessing) whatever a subclass's __init__ takes
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


def _rebuild(cls, text: str, state: dict):
    err = cls.__new__(cls, text)
    YosoDeployError.__init__(err, text)
    err.__dict__.update(state)
    return err


class UsageError(YosoDeployError, ValueError):
    """An argument, option or input value that cannot work (the message names it and what would)."""


class OptionError(YosoDeployError, TypeError):
    """An option a function or pipeline does not have."""


class NotFoundError(YosoDeployError, FileNotFoundError):
    """A file or directory that is not there (the message names it and the command that makes it)."""


class UnavailableError(YosoDeployError, RuntimeError):
    """Something this machine or installation lacks: a provider, a library, TensorRT, a GPU."""


class MissingExtraError(YosoDeployError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` to run."""


class CheckFailedError(YosoDeployError, RuntimeError):
    """A check ran and its verdict is FAIL (post-export parity, int8 criteria, validation): not a usage error,
    the model disagrees. The files are kept and marked failed; the CLI exits 1."""


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
    "ray": "ray",
    "uvicorn": "serve",
    "starlette": "serve",
    "pyarrow": "batch",
    "tritonclient": "triton",
}


# Commands that need more than the extra of the one module found missing: name all they need at once.
COMMAND_EXTRAS = {
    "quantize": "quantize",  # onnx (for onnxruntime.quantization), not the whole [export]
    "validate": "export,validate",  # polygraphy runs the backends; the PyTorch reference judges them
    "batch": "batch",  # batch --ray: Ray Data (ray[data]), not Ray Serve
}


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


__all__ = ["CheckFailedError", "MissingExtraError", "NotFoundError", "OptionError", "UnavailableError",
           "UsageError", "YosoDeployError", "missing_extra", "require"]
