"""Graph optimization of an export for the CPU (``yoso-deploy optimize``, ``export --optimize``).

Owns: the optimization levels (O1 ONNX Runtime's basic fusions made persistent; O2 + ONNX Runtime's transformer
fusions: SkipLayerNormalization, bias-GELU; O3 + the GELU approximation), and writing the optimized export with
its manifest. May import: the shared modules and :mod:`yoso_deploy.runtime` (the session options that register
the custom ops) -- never torch, transformers or onnxscript. The parity check of the result is the caller's
(:func:`yoso_deploy.workflow.optimize` runs ``validate`` where torch is installed).

    from yoso_deploy.optimization import optimize
    res = optimize("out/qa", "out/qa-o2", level="O2")
"""

from .optimize import LEVELS, OptimizeError, OptimizeResult, optimize

__all__ = ["LEVELS", "OptimizeError", "OptimizeResult", "optimize"]
