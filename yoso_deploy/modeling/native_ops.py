"""The two YOSO ops on our native kernels, as PyTorch ops: ``libyoso_kernels.so`` through ctypes.

``load_model(..., attention="lsh", kernels="native")`` makes every LSH layer call these ops instead
of the pure-PyTorch reference (:mod:`yoso_deploy.modeling.ops`, which stays the default and the
reference everything is tested against):

* CPU tensors run the AVX2 (or portable scalar) kernels of ``plugins/cpu`` -- the ones inside
  ``libyoso_ort.so`` -- on a pool of ``torch.get_num_threads()`` threads;
* CUDA tensors run the CUDA kernels of ``plugins/cuda`` on torch's current stream of the tensor's
  device, with a workspace from torch's caching allocator (so the ops can be captured into CUDA
  graphs; the synchronising check of mask/sign/code values is then skipped, see
  ``plugins/cuda/yoso_cuda_plan.h``; ``YOSO_CUDA_CHECK_INPUTS=0`` skips it always).

Semantics and error messages are those of ``plugins/OPS.md``: the C library validates every input
with ``plugins/common/yoso_validate.h`` and its messages (the ones ONNX Runtime reports) are raised
as ``ValueError``; CUDA errors and out-of-memory as ``RuntimeError``. The ops are
``torch.library`` custom ops (``yoso::fast_hash_native``, ``yoso::lsh_cumulation_native``) with fake
(meta) implementations, so ``torch.compile`` traces them; LSHCumulation has the same autograd
formula as the reference (the gradient w.r.t. ``value`` is LSHCumulation with queries and keys
swapped, computed by the native kernels too); FastHash's integer codes have no gradient.

Beyond the reference: float16 ``x`` / ``value`` are widened to float32 on the CPU (exact; the CPU
kernels compute in float32, the output is rounded back once), and run natively in float16 on CUDA.
"""

from __future__ import annotations

import ctypes
import threading

import torch

from ..errors import UnavailableError, UsageError
from . import ops as _reference  # also registers yoso::fast_hash / yoso::lsh_cumulation (ops_for)

KERNEL_MODES = ("torch", "native")
ABI_VERSION = 1

_STATUS_OK, _STATUS_INVALID, _STATUS_RUNTIME, _STATUS_UNAVAILABLE = 0, 1, 2, 3
_DEVICE_CPU, _DEVICE_CUDA = 0, 1
_DTYPES = {torch.float32: 0, torch.float16: 1, torch.int32: 2, torch.int64: 3, torch.bfloat16: 4, torch.float64: 5}
_DTYPE_OTHER = 6
_ERROR_BYTES = 4096


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("rank", ctypes.c_int32), ("dtype", ctypes.c_int32)]


class _Exec(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_index", ctypes.c_int32),
                ("num_threads", ctypes.c_int32), ("check_inputs", ctypes.c_int32),
                ("stream", ctypes.c_void_p), ("workspace", ctypes.c_void_p),
                ("workspace_bytes", ctypes.c_size_t)]


def check_kernels(kernels: str) -> str:
    """``kernels`` if it is one of :data:`KERNEL_MODES`, else a ``ValueError`` naming the choices."""
    if kernels not in KERNEL_MODES:
        raise UsageError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNEL_MODES)} "
                         "('torch': the pure-PyTorch reference ops, 'native': libyoso_kernels.so)")
    return kernels


# --------------------------------------------------------------------------------------------
# The library
# --------------------------------------------------------------------------------------------

_lib = None
_lib_lock = threading.Lock()


def library() -> ctypes.CDLL:
    """``libyoso_kernels.so``, loaded once (``$YOSO_KERNELS_LIBRARY`` names another build)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            from .._native import kernels_library_path

            path = kernels_library_path()
            lib = ctypes.CDLL(str(path))
            lib.yoso_kernels_abi_version.restype = ctypes.c_int32
            lib.yoso_kernels_has_cuda.restype = ctypes.c_int32
            lib.yoso_kernels_build_info.restype = ctypes.c_char_p
            abi = lib.yoso_kernels_abi_version()
            if abi != ABI_VERSION:
                raise UnavailableError(f"{path} has C ABI version {abi}, this package needs {ABI_VERSION}: "
                                   "reinstall yoso-deploy (or point YOSO_KERNELS_LIBRARY at a matching build)")
            T, E = ctypes.POINTER(_Tensor), ctypes.POINTER(_Exec)
            err = [ctypes.c_char_p, ctypes.c_size_t]
            size = ctypes.POINTER(ctypes.c_size_t)
            for name, args in (
                ("yoso_fast_hash_workspace_size", [E, T, T, T, ctypes.c_int64, ctypes.c_int64, size, *err]),
                ("yoso_fast_hash", [E, T, T, T, ctypes.c_int64, ctypes.c_int64, T, *err]),
                ("yoso_lsh_cumulation_workspace_size", [E, T, T, T, T, T, ctypes.c_int64, size, *err]),
                ("yoso_lsh_cumulation", [E, T, T, T, T, T, ctypes.c_int64, T, *err]),
            ):
                fn = getattr(lib, name)
                fn.argtypes = args
                fn.restype = ctypes.c_int32
            _lib = lib
    return _lib


def build_info() -> dict:
    """What ``libyoso_kernels.so`` was built with (``cuda``, ``cuda_architectures``, ...)."""
    import json

    return json.loads(library().yoso_kernels_build_info().decode())


def has_cuda() -> bool:
    """Whether ``libyoso_kernels.so`` holds the CUDA kernels."""
    return bool(library().yoso_kernels_has_cuda())


# --------------------------------------------------------------------------------------------
# Calling convention
# --------------------------------------------------------------------------------------------


class _Args:
    """ctypes descriptors of torch tensors, kept alive for the duration of one call."""

    def __init__(self):
        self._keep = []

    def tensor(self, t: torch.Tensor) -> ctypes.POINTER(_Tensor):
        shape = (ctypes.c_int64 * max(1, t.dim()))(*t.shape)
        desc = _Tensor(ctypes.c_void_p(t.data_ptr() if t.numel() else None), shape, t.dim(),
                       _DTYPES.get(t.dtype, _DTYPE_OTHER))
        self._keep += [t, shape, desc]
        return ctypes.pointer(desc)


def _raise(status: int, buf) -> None:
    msg = buf.value.decode("utf-8", "replace") or f"libyoso_kernels.so failed with status {status}"
    if status == _STATUS_INVALID:
        raise UsageError(msg)
    raise RuntimeError(msg)


def _check_devices(op: str, tensors: dict[str, torch.Tensor]) -> torch.device:
    names = list(tensors)
    first = tensors[names[0]].device
    for name in names[1:]:
        if tensors[name].device != first:
            raise UsageError(f"{op}: input '{name}' is on {tensors[name].device} but '{names[0]}' is on {first}. "
                             "Fix: move all inputs of the op to one device.")
    if first.type not in ("cpu", "cuda"):
        raise UsageError(f"{op}: the native kernels run on CPU and CUDA tensors, not on {first}. "
                         "Fix: use kernels='torch' (the pure-PyTorch reference) on this device.")
    return first


def _contiguous(*ts: torch.Tensor):
    return [t.contiguous() for t in ts]


def _run(op: str, device: torch.device, size_fn, run_fn, inputs: list, out: torch.Tensor, attrs: list) -> torch.Tensor:
    """Validate + run one op: the workspace-size query, then the launch (CUDA on torch's current stream)."""
    lib = library()
    args = _Args()
    descs = [args.tensor(t) for t in inputs]
    buf = ctypes.create_string_buffer(_ERROR_BYTES)
    ex = _Exec(_DEVICE_CPU, 0, max(1, torch.get_num_threads()), 1, None, None, 0)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        ex.device_type, ex.device_index = _DEVICE_CUDA, index
        ex.stream = ctypes.c_void_p(torch.cuda.current_stream(index).cuda_stream or None)
        with torch.cuda.device(index):
            nbytes = ctypes.c_size_t(0)
            status = getattr(lib, size_fn)(ctypes.byref(ex), *descs, *attrs, ctypes.byref(nbytes), buf, _ERROR_BYTES)
            if status != _STATUS_OK:
                _raise(status, buf)
            workspace = torch.empty(max(1, nbytes.value), dtype=torch.uint8, device=device)
            ex.workspace, ex.workspace_bytes = ctypes.c_void_p(workspace.data_ptr()), workspace.numel()
            status = getattr(lib, run_fn)(ctypes.byref(ex), *descs, *attrs, args.tensor(out), buf, _ERROR_BYTES)
    else:
        status = getattr(lib, run_fn)(ctypes.byref(ex), *descs, *attrs, args.tensor(out), buf, _ERROR_BYTES)
    if status != _STATUS_OK:
        _raise(status, buf)
    return out


def fast_hash(x: torch.Tensor, mask: torch.Tensor, signs: torch.Tensor, num_hash: int, hash_code_len: int) -> torch.Tensor:
    """``com.yoso::FastHash`` on the native kernels: x[B,H,S,D], mask[B,S] int32, signs[H,3,P,D] -> int32 codes[B,H,S,m]."""
    device = _check_devices("FastHash", {"x": x, "mask": mask, "signs": signs})
    if device.type == "cpu" and x.dtype == torch.float16:
        x = x.float()  # exact widening; the CPU kernels compute in float32 (as the contract does)
    x, mask, signs = _contiguous(x, mask, signs)
    shape = (*x.shape[:3], num_hash) if x.dim() == 4 and num_hash >= 1 else (0,)
    codes = torch.empty(shape, dtype=torch.int32, device=device)
    attrs = [int(num_hash), int(hash_code_len)]
    return _run("FastHash", device, "yoso_fast_hash_workspace_size", "yoso_fast_hash", [x, mask, signs], codes, attrs)


def lsh_cumulation(query_codes: torch.Tensor, key_codes: torch.Tensor, query_mask: torch.Tensor, key_mask: torch.Tensor,
                   value: torch.Tensor, hash_code_len: int) -> torch.Tensor:
    """``com.yoso::LSHCumulation`` on the native kernels -> value-typed output[B,H,Sq,Dv] (fp32 accumulation)."""
    device = _check_devices("LSHCumulation", {"query_codes": query_codes, "key_codes": key_codes,
                                              "query_mask": query_mask, "key_mask": key_mask, "value": value})
    out_dtype = value.dtype
    if device.type == "cpu" and value.dtype == torch.float16:
        value = value.float()  # accumulate in float32, round once at the end (as the contract says)
    inputs = _contiguous(query_codes, key_codes, query_mask, key_mask, value)
    qc, v = inputs[0], inputs[4]
    shape = (v.shape[0], v.shape[1], qc.shape[2], v.shape[3]) if qc.dim() == 4 and v.dim() == 4 else (0,)
    out = torch.empty(shape, dtype=v.dtype, device=device)
    _run("LSHCumulation", device, "yoso_lsh_cumulation_workspace_size", "yoso_lsh_cumulation", inputs, out,
         [int(hash_code_len)])
    return out if out.dtype == out_dtype else out.to(out_dtype)


# --------------------------------------------------------------------------------------------
# torch.library registrations
# --------------------------------------------------------------------------------------------


_reference.register_ops("_native", fast_hash, lsh_cumulation)


def _exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.jit.is_tracing() or bool(is_exporting is not None and is_exporting())


def ops_for(kernels: str):
    """The (fast_hash, lsh_cumulation) ops a layer calls for ``kernels`` ('torch' or 'native').

    While exporting (torch.export / tracing) the reference ops are used whatever ``kernels`` says:
    they are the ones the exporter translates to ``com.yoso`` nodes, and the graph is the same.
    """
    if kernels == "native" and not _exporting():
        return torch.ops.yoso.fast_hash_native, torch.ops.yoso.lsh_cumulation_native
    return torch.ops.yoso.fast_hash, torch.ops.yoso.lsh_cumulation


__all__ = ["KERNEL_MODES", "build_info", "check_kernels", "fast_hash", "has_cuda", "library", "lsh_cumulation",
           "ops_for"]
