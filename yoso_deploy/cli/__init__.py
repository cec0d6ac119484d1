"""The ``yoso-deploy`` command line: a thin layer over the library -- parse, call one library function, print.

One module per command group: :mod:`.export` (export, quantize), :mod:`.check` (validate, bench),
:mod:`.run` (run, qa), :mod:`.engine` (build-engine), :mod:`.serving` (serve, triton-repo, batch); the group,
its error boundary and exit codes in :mod:`.main`; shared options in :mod:`.options`. Start-up imports click and
the light shared modules only (no torch, transformers, onnx or onnxruntime) -- each command imports what it
needs after parsing. ``yoso_deploy.cli:main`` is the console script.
"""

from .main import main

__all__ = ["main"]
