"""int8 quantization of an export for CPU serving (``yoso-deploy quantize``).

Owns: choosing the dense projections, ONNX Runtime's dynamic and static (QDQ) quantization, calibration in
this process with ``libyoso_ort.so`` registered, and the post-quantization check against the fp32 export.
May import: the shared modules, :mod:`yoso_deploy.runtime` (to run both exports), :mod:`yoso_deploy.export.probes`
(the probed values) and the int8 criteria of :mod:`yoso_deploy.validation.int8_criteria` -- never torch,
transformers or onnxscript (the ``[quantize]`` extra is onnx alone).

    from yoso_deploy.quantization import quantize
    res = quantize("out/qa", "out/qa-int8")                    # dynamic, Q/K projections int8
"""

from .quantize import (
    PRESETS,
    QuantizationCheckError,
    QuantizeError,
    QuantizeResult,
    quantize,
)

__all__ = ["PRESETS", "QuantizationCheckError", "QuantizeError", "QuantizeResult", "quantize"]
