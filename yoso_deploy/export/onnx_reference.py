"""The two ``com.yoso`` ops as ``onnx.reference`` kernels (numpy, straight from ``plugins/OPS.md``).

``onnx.reference.ReferenceEvaluator(model, new_ops=REFERENCE_OPS)`` runs an export's ``com.yoso``
nodes with these kernels instead of the function bodies — a numpy implementation of the contract,
independent of the PyTorch reference, the C++ library and the bodies (the way onnxruntime-extensions
tests its custom ops). Without ``new_ops`` the evaluator expands the model-local functions, which is
how the tests run the bodies on a third runtime.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from ..errors import UsageError
from ..modeling.ops import MAX_HASH_CODE_LEN, MAX_HASH_DIM, OP_DOMAIN


def _wht(a: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh–Hadamard over the last axis, float32, stride D/2 first (OPS.md §1)."""
    d = a.shape[-1]
    s = d // 2
    while s >= 1:
        v = a.reshape(*a.shape[:-1], d // (2 * s), 2, s)
        lo, hi = v[..., 0, :], v[..., 1, :]
        a = np.stack((lo + hi, lo - hi), axis=-2).reshape(*a.shape[:-1], d)
        s //= 2
    return a


def _check_mask(op: str, name: str, mask: np.ndarray) -> None:
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise UsageError(f"{op}: {name} entries must be 0 or 1, found {sorted(set(np.unique(mask)) - {0, 1})[:3]}")


def fast_hash(x, mask, signs, num_hash: int, hash_code_len: int) -> np.ndarray:
    m, tau = int(num_hash), int(hash_code_len)
    if x.ndim != 4 or mask.ndim != 2 or signs.ndim != 4:
        raise UsageError(f"FastHash: ranks must be x 4, mask 2, signs 4; got {x.ndim}, {mask.ndim}, {signs.ndim}")
    b, h, s, d = x.shape
    if d < 1 or d & (d - 1) or d > MAX_HASH_DIM:
        raise UsageError(f"FastHash: D must be a power of two <= {MAX_HASH_DIM}, got {d}")
    if m < 1 or not 1 <= tau <= min(MAX_HASH_CODE_LEN, d):
        raise UsageError(f"FastHash: need num_hash >= 1 and 1 <= hash_code_len <= min(30, D); got {m}, {tau}, D={d}")
    per_part = d // tau
    p = -(-m // per_part)
    if mask.shape != (b, s):
        raise UsageError(f"FastHash: mask must be [B,S]=[{b},{s}], got {list(mask.shape)}")
    if signs.shape != (h, 3, p, d):
        raise UsageError(f"FastHash: signs must be [H,3,P,D]=[{h},3,{p},{d}], got {list(signs.shape)}")
    if signs.size and not np.isin(signs, (-1.0, 1.0)).all():
        raise UsageError("FastHash: signs entries must be exactly +1 or -1")
    _check_mask("FastHash", "mask", mask)
    t = x.astype(np.float32)[:, :, None]  # [B, H, 1, S, D]
    sg = signs.astype(np.float32)[None, :, :, :, None, :]  # [1, H, 3, P, 1, D]
    for r in range(3):
        t = _wht(t * sg[:, :, r])  # [B, H, P, S, D]
    bits = (t[..., : per_part * tau] > 0).astype(np.int64).reshape(b, h, p, s, per_part, tau)
    codes = (bits << np.arange(tau, dtype=np.int64)).sum(-1)  # [B, H, P, S, per_part]
    codes = codes.transpose(0, 1, 3, 2, 4).reshape(b, h, s, p * per_part)[..., :m]
    return (codes * (mask != 0)[:, None, :, None]).astype(np.int32)


def lsh_cumulation(qc, kc, qm, km, value, hash_code_len: int) -> np.ndarray:
    tau = int(hash_code_len)
    if qc.ndim != 4 or kc.ndim != 4 or value.ndim != 4 or qm.ndim != 2 or km.ndim != 2:
        raise UsageError("LSHCumulation: ranks must be codes 4, masks 2, value 4")
    b, h, sq, m = qc.shape
    sk, dv = kc.shape[2], value.shape[3]
    if kc.shape != (b, h, sk, m) or value.shape[:3] != (b, h, sk) or qm.shape != (b, sq) or km.shape != (b, sk):
        raise UsageError(f"LSHCumulation: inconsistent shapes {list(qc.shape)}, {list(kc.shape)}, "
                         f"{list(qm.shape)}, {list(km.shape)}, {list(value.shape)}")
    if m < 1 or not 1 <= tau <= MAX_HASH_CODE_LEN:
        raise UsageError(f"LSHCumulation: need m >= 1 and 1 <= hash_code_len <= 30; got {m}, {tau}")
    for name, c in (("query_codes", qc), ("key_codes", kc)):
        if c.size and (c.min() < 0 or c.max() >= (1 << tau)):
            raise UsageError(f"LSHCumulation: {name} holds a code outside [0, 2^{tau})")
    _check_mask("LSHCumulation", "query_mask", qm)
    _check_mask("LSHCumulation", "key_mask", km)
    out = np.zeros((b, h, sq, dv), np.float64)
    v = np.where((km != 0)[:, None, :, None], value.astype(np.float64), 0.0)
    for i in range(b):
        for j in range(h):
            for f in range(m):
                table: dict[int, np.ndarray] = {}
                for k in np.flatnonzero(km[i]):
                    c = int(kc[i, j, k, f])
                    table[c] = table.get(c, 0.0) + v[i, j, k]
                for q in np.flatnonzero(qm[i]):
                    row = table.get(int(qc[i, j, q, f]))
                    if row is not None:
                        out[i, j, q] += row
    return (out / m).astype(value.dtype)


class FastHash(OpRun):
    op_domain = OP_DOMAIN

    def _run(self, x, mask, signs, num_hash=None, hash_code_len=None):  # noqa: D102
        return (fast_hash(x, mask, signs, num_hash, hash_code_len),)


class LSHCumulation(OpRun):
    op_domain = OP_DOMAIN

    def _run(self, query_codes, key_codes, query_mask, key_mask, value, hash_code_len=None):  # noqa: D102
        return (lsh_cumulation(query_codes, key_codes, query_mask, key_mask, value, hash_code_len),)


REFERENCE_OPS = [FastHash, LSHCumulation]
