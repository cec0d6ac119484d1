"""ONNX Runtime sessions with ``libyoso_ort.so`` registered."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .._native import ort_build_info, ort_library_path
from ..errors import NotFoundError, UnavailableError, UsageError, YosoDeployError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_ALIASES = {"cpu": CPU, "cuda": CUDA, CPU.lower(): CPU, CUDA.lower(): CUDA}


class RuntimeVersionError(UnavailableError):
    """The installed onnxruntime is older than the API libyoso_ort.so was built against."""


class ProviderUnavailableError(UnavailableError):
    """A requested execution provider is not available in this onnxruntime build."""


class LibraryLoadError(UnavailableError):
    """libyoso_ort.so exists but ONNX Runtime cannot load it (not a shared library, wrong arch, ...)."""


class ModelLoadError(YosoDeployError, RuntimeError):
    """The ONNX model file cannot be parsed (corrupt or truncated)."""


class UnsupportedPrecisionError(UnavailableError):
    """The model's precision has no kernels on the requested providers (a float16 export on the CPU)."""


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_runtime_version() -> None:
    """Refuse an onnxruntime older than the headers the library was compiled with."""
    import onnxruntime as ort

    built = ort_build_info().get("ort_headers_version")
    if built and _version_tuple(ort.__version__) < _version_tuple(built):
        raise RuntimeVersionError(
            f"onnxruntime {ort.__version__} is older than {built}, the ONNX Runtime API libyoso_ort.so was "
            f"built against; upgrade with 'pip install -U \"onnxruntime>={built}\"'"
        )


def session_options(intra_op_threads: int | None = None, inter_op_threads: int | None = None):
    """``SessionOptions`` with the custom-op library registered and thread counts set."""
    import onnxruntime as ort

    check_runtime_version()
    so = ort.SessionOptions()
    lib = ort_library_path()
    try:
        so.register_custom_ops_library(str(lib))
    except Exception as e:  # onnxruntime's pybind Fail; only a failed dlopen is rephrased
        if "Failed to load library" not in str(e):
            raise
        raise LibraryLoadError(
            f"ONNX Runtime cannot load the custom-op library {str(lib)!r} ({str(e).strip().splitlines()[0]}); "
            "rebuild it with 'pip install -e .', or unset YOSO_ORT_LIBRARY / point it at a working libyoso_ort.so"
        ) from e
    if intra_op_threads is not None:
        if int(intra_op_threads) < 0:
            raise UsageError(f"intra_op_threads must be >= 0 (0 = all cores), got {intra_op_threads}")
        so.intra_op_num_threads = int(intra_op_threads)
    if inter_op_threads is not None:
        if int(inter_op_threads) < 0:
            raise UsageError(f"inter_op_threads must be >= 0, got {inter_op_threads}")
        so.inter_op_num_threads = int(inter_op_threads)
    return so


def resolve_providers(provider: str | list | tuple | None, device_id: int = 0,
                      gpu_mem_limit: int | None = None) -> list:
    """Provider names/aliases -> the ``providers`` argument of ``InferenceSession``.

    ``"cuda"`` becomes ``[("CUDAExecutionProvider", {device_id, gpu_mem_limit}), "CPUExecutionProvider"]``
    (CPU stays as ORT's fallback for nodes CUDA does not implement, never instead of CUDA).
    A provider this onnxruntime lacks raises :class:`ProviderUnavailableError`.
    """
    import onnxruntime as ort

    names = [provider] if isinstance(provider, str) or provider is None else list(provider)
    out, available = [], ort.get_available_providers()
    for p in names:
        name = PROVIDER_ALIASES.get(str(p or "cpu").lower(), p)
        if name not in available:
            raise ProviderUnavailableError(
                f"execution provider {name} is not available in this onnxruntime {ort.__version__} "
                f"(available: {', '.join(available)}); "
                + ("install onnxruntime-gpu and run on a machine with an NVIDIA GPU" if name == CUDA
                   else "check the provider name")
            )
        if name == CUDA:
            opts = {"device_id": int(device_id)}
            if gpu_mem_limit is not None:
                opts["gpu_mem_limit"] = int(gpu_mem_limit)
            out.append((CUDA, opts))
        elif name not in out:
            out.append(name)
    if any(isinstance(p, tuple) and p[0] == CUDA for p in out) and CPU not in out:
        out.append(CPU)
    return out


def _model_bytes(model) -> bytes | None:
    """The serialized model for in-memory sources (bytes, or an ``onnx.ModelProto`` -- duck-typed, so onnx
    is not imported here); ``None`` for a path."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    return None


def _optimized_cache_path(model_path: Path | None, data: bytes | None, cache_dir: Path, level_name: str) -> Path:
    import onnxruntime as ort

    h = hashlib.sha256()
    if data is not None:
        h.update(data)
    else:
        with open(model_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    h.update(f"{ort.__version__}|{level_name}|{ort_library_path().stat().st_size}".encode())
    stem = model_path.stem if model_path is not None else "model"
    return cache_dir / f"{stem}.{h.hexdigest()[:16]}.opt.onnx"


def _inference_session(source, so, providers, what: str):
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph, InvalidProtobuf

    try:
        return ort.InferenceSession(source if isinstance(source, bytes) else str(source), sess_options=so,
                                    providers=providers)
    except InvalidProtobuf as e:
        raise ModelLoadError(
            f"{what} is not a valid ONNX model (the file is corrupt or truncated: "
            f"{str(e).strip().splitlines()[0]}); re-export it with 'yoso-deploy export'"
        ) from e
    except Exception as e:  # noqa: BLE001 -- only the float16 refusal is translated, the rest re-raised
        msg = str(e)
        if "which only the CUDA execution provider of libyoso_ort.so runs" in msg or (
                isinstance(e, InvalidGraph) and "tensor(float16)" in msg
                and ("(FastHash)" in msg or "(LSHCumulation)" in msg)):
            # The CPU kernels refuse a float16 com.yoso node at session creation (older libraries: ONNX
            # Runtime's type check); only the CUDA kernels take float16 (plugins/OPS.md).
            raise UnsupportedPrecisionError(
                f"{what} is a float16 export, and the CPU kernels of libyoso_ort.so (FastHash, "
                "LSHCumulation) are float32 only: run it with provider='cuda' (onnxruntime-gpu) or TensorRT, "
                "or export with --dtype fp32 for the CPU"
            ) from e
        raise


def create_session(
    model_path,
    providers: str | list | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    device_id: int = 0,
    gpu_mem_limit: int | None = None,
    optimized_cache_dir: str | Path | None = None,
):
    """An ``InferenceSession`` for an exported YOSO model with ``libyoso_ort.so`` registered.

    ``model_path``: a path (``~`` expanded), or the model in memory: ``bytes`` or an ``onnx.ModelProto``
    (e.g. a copy of ``model.onnx`` with extra graph outputs).

    ``providers``: ``"cpu"`` (default), ``"cuda"``, or a list of ORT provider names. A requested
    provider that is unavailable is an error, never a silent fallback.

    ``optimized_cache_dir``: the first session runs ORT's graph optimisations (extended level, which
    is hardware independent) and saves the optimised model there (keyed by the model's hash and
    the ORT version); later sessions load it with optimisations off, so start-up skips them.
    """
    import onnxruntime as ort

    data = _model_bytes(model_path)
    if data is None:
        model_path = Path(os.path.expanduser(os.fspath(model_path)))
        if not model_path.is_file():
            raise NotFoundError(f"ONNX model {str(model_path)!r} does not exist; export one with 'yoso-deploy export'")
        source, what, path = model_path, repr(str(model_path)), model_path
    else:
        source, what, path = data, "the in-memory model", None
    prov = resolve_providers(providers, device_id=device_id, gpu_mem_limit=gpu_mem_limit)
    so = session_options(intra_op_threads, inter_op_threads)
    if optimized_cache_dir is not None:
        cache_dir = Path(os.path.expanduser(os.fspath(optimized_cache_dir)))
        cache_dir.mkdir(parents=True, exist_ok=True)
        cached = _optimized_cache_path(path, data, cache_dir, "extended")
        if cached.is_file():
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            return _inference_session(cached, so, prov, repr(str(cached)))
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
        so.optimized_model_filepath = str(tmp)
        sess = _inference_session(source, so, prov, what)
        if tmp.is_file():
            os.replace(tmp, cached)  # atomic: concurrent creators never see a partial file
        return sess
    return _inference_session(source, so, prov, what)
