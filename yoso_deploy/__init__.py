"""yoso-deploy: YOSO models from PyTorch to ONNX Runtime and TensorRT.

The package is laid out by stage (docs/architecture.md); each stage's docstring says what it owns and what it
may import:

* ``modeling``      -- the PyTorch reference model (torch, transformers);
* ``export``        -- PyTorch -> ONNX with the com.yoso ops;
* ``validation``    -- parity with the reference (tie-aware), ``validate``, int8 criteria, reports;
* ``quantization``  -- int8 exports for CPU serving (torch-free);
* ``runtime``       -- sessions, tokenizer, task models and pipelines (onnxruntime, numpy, tokenizers only);
* ``backends``      -- TensorRT engines, the portable exports in stock ONNX Runtime and OpenVINO;
* ``serving``       -- the HTTP server core, Open Inference Protocol, Ray Serve, batch, Triton repository;
* ``bench``         -- latency benchmarks;
* ``cli``           -- the ``yoso-deploy`` command line, a thin layer over the library;
* ``workflow``      -- the end-to-end export job (convert, check, quantize, publish);
* ``hf``            -- the ``transformers.pipeline`` integration.

Shared by all: ``errors`` (one error family), ``constants`` (facts stated once), ``tasks`` (the task registry),
``manifest`` and ``iospec`` (an export's manifest and tensor specs).
"""

from ._native import LibraryNotFoundError, ort_build_info, ort_library_path
from .constants import __version__
from .errors import YosoDeployError

__all__ = ["__version__", "LibraryNotFoundError", "YosoDeployError", "ort_build_info", "ort_library_path"]
