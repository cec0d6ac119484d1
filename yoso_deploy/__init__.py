"""yoso-deploy: YOSO models from PyTorch to ONNX Runtime and TensorRT."""

__version__ = "0.1.0"

from ._native import LibraryNotFoundError, ort_build_info, ort_library_path

__all__ = ["__version__", "LibraryNotFoundError", "ort_build_info", "ort_library_path"]
