"""Locating the compiled custom-op libraries that ship inside the package."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .constants import KERNELS_LIBRARY_ENV as _ENV_KERNELS
from .constants import KERNELS_LIBRARY_NAME, ORT_BUILD_INFO, ORT_LIBRARY_NAME
from .constants import ORT_LIBRARY_ENV as _ENV_ORT
from .errors import NotFoundError


class LibraryNotFoundError(NotFoundError):
    """The compiled library is missing from the installation."""


def _candidates(name: str):
    yield Path(__file__).resolve().parent / "lib" / name
    from importlib import metadata  # only when the library is not inside the package (~0.1 s to import)
    # Editable installs (scikit-build-core "redirect" mode) place the built files in
    # site-packages while the Python sources stay in the checkout; the RECORD knows where.
    try:
        files = metadata.distribution("yoso-deploy").files or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == name:
            yield Path(f.locate()).resolve()


def _find(name: str, env: str) -> Path:
    override = os.environ.get(env)
    if override:
        p = Path(override)
        if not p.is_file():
            raise LibraryNotFoundError(f"{env}={override!r} does not name a file; unset it or point it at {name}")
        return p
    tried = []
    for p in _candidates(name):
        if p.is_file():
            return p
        tried.append(str(p))
    raise LibraryNotFoundError(
        f"{name} is not installed (looked in: {', '.join(tried) or 'nowhere'}). Reinstall the package "
        f"so it is built ('pip install .' with a C++17 compiler and CMake), or set {env} to its path."
    )


def ort_library_path() -> Path:
    """Path of ``libyoso_ort.so``, the ONNX Runtime custom-op library (``$YOSO_ORT_LIBRARY`` overrides)."""
    return _find(ORT_LIBRARY_NAME, _ENV_ORT)


def kernels_library_path() -> Path:
    """Path of ``libyoso_kernels.so``, the kernels' C ABI for the native PyTorch ops (``$YOSO_KERNELS_LIBRARY`` overrides)."""
    return _find(KERNELS_LIBRARY_NAME, _ENV_KERNELS)


def ort_build_info() -> dict:
    """What ``libyoso_ort.so`` was built against (``ort_api_version``, ``ort_headers_version``, ...)."""
    info = ort_library_path().with_name(ORT_BUILD_INFO)
    if not info.is_file():
        return {}
    return json.loads(info.read_text())
