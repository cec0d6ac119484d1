"""Running exported YOSO models with ONNX Runtime: sessions, task models, the QA pipeline."""

from .session import (
    CPU,
    CUDA,
    ProviderUnavailableError,
    RuntimeVersionError,
    UnsupportedPrecisionError,
    check_runtime_version,
    create_session,
    resolve_providers,
    session_options,
)

__all__ = [
    "CPU",
    "CUDA",
    "ProviderUnavailableError",
    "RuntimeVersionError",
    "UnsupportedPrecisionError",
    "check_runtime_version",
    "create_session",
    "resolve_providers",
    "session_options",
]
