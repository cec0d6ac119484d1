"""Pure-PyTorch implementations of the two YOSO ops, exactly per ``plugins/OPS.md``.

These functions are the reference every other backend (the ONNX Runtime library, the CUDA
kernels, the TensorRT plugins) is compared against. They run on any device PyTorch supports and
need no compiled extension.

* :func:`fast_hash` -- ``com.yoso::FastHash``: randomized Hadamard hashing into ``num_hash`` codes
  of ``hash_code_len`` bits per token. Bit-exact with the C++ kernels because the Walsh-Hadamard
  butterflies are evaluated in the order the contract fixes (stride D/2 first, then D/4, ..., 1).
* :func:`lsh_cumulation` -- ``com.yoso::LSHCumulation``: bucket sums of the values of unmasked keys,
  read back by unmasked queries and averaged over the hash functions.

Both are also registered as ``torch.library`` custom ops (``yoso::fast_hash``,
``yoso::lsh_cumulation``) so that the exporter sees one opaque node per op and can translate it to
the ``com.yoso`` domain (see ``yoso_deploy/export``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from ..constants import OP_DOMAIN, OP_VERSION  # noqa: F401 - re-exported
from ..errors import UsageError


def _contract_limits() -> dict:
    """The op contract's limits from their one source, ``plugins/common/yoso_limits.h`` (the header the
    native code compiles): the copy installed next to this module, else the source checkout's."""
    here = Path(__file__).resolve()
    for path in (here.with_name("yoso_limits.h"), here.parents[2] / "plugins" / "common" / "yoso_limits.h"):
        if path.is_file():
            limits = dict(re.findall(r"^constexpr int (k\w+) = (\d+);", path.read_text(), re.M))
            return {name: int(value) for name, value in limits.items()}
    raise ImportError("yoso_deploy is incomplete: yoso_limits.h (the op contract's limits) is neither next to "
                      f"{here.name} nor in plugins/common of a source checkout; reinstall yoso-deploy")


_LIMITS = _contract_limits()
MAX_HASH_DIM = _LIMITS["kMaxHashDim"]  # largest D the contract allows
MAX_HASH_CODE_LEN = _LIMITS["kMaxHashCodeLen"]  # 2**30 buckets; larger tables cannot be indexed by int32 codes
MAX_CUDA_HASH_CODE_LEN = _LIMITS["kMaxCudaHashCodeLen"]  # the CUDA backend's LSHCumulation (not the contract's)
# The reference evaluates LSHCumulation one block of hash functions at a time so that the
# gathered rows of a block stay below this many floats.
_TABLE_BUDGET = 1 << 24


def is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def hash_dim_for(head_dim: int, hash_code_len: int) -> int:
    """The hashing width D for a head dim: the smallest power of two >= max(head_dim, tau)."""
    return next_power_of_two(max(int(head_dim), int(hash_code_len)))


def codes_per_part(hash_dim: int, hash_code_len: int) -> int:
    """How many ``hash_code_len``-bit codes one Hadamard projection of width D yields."""
    return hash_dim // hash_code_len


def num_parts(num_hash: int, hash_dim: int, hash_code_len: int) -> int:
    """P = ceil(m / floor(D / tau)): how many independent projections FastHash needs."""
    return -(-num_hash // codes_per_part(hash_dim, hash_code_len))


def check_hash_params(num_hash: int, hash_code_len: int, hash_dim: int) -> None:
    """Raise ``ValueError`` naming the problem if (m, tau, D) violate the op contract."""
    if not isinstance(num_hash, int) or num_hash <= 0:
        raise UsageError(f"num_hash must be a positive integer, got {num_hash!r}")
    if not isinstance(hash_code_len, int) or not 0 < hash_code_len <= MAX_HASH_CODE_LEN:
        raise UsageError(
            f"hash_code_len must be an integer in [1, {MAX_HASH_CODE_LEN}], got {hash_code_len!r}"
        )
    if not is_power_of_two(hash_dim) or hash_dim > MAX_HASH_DIM:
        raise UsageError(
            f"the hashed dimension D must be a power of two <= {MAX_HASH_DIM}, got {hash_dim}; "
            "zero-pad the head dimension to the next power of two"
        )
    if hash_code_len > hash_dim:
        raise UsageError(
            f"hash_code_len ({hash_code_len}) must not exceed the hashed dimension D ({hash_dim}); "
            "pad D further or use shorter codes"
        )


def draw_signs(
    num_heads: int,
    num_hash: int,
    hash_code_len: int,
    hash_dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw the random +-1 diagonals ``signs[H, 3, P, D]`` (float32) that define the hash functions."""
    check_hash_params(num_hash, hash_code_len, hash_dim)
    p = num_parts(num_hash, hash_dim, hash_code_len)
    bits = torch.randint(0, 2, (num_heads, 3, p, hash_dim), generator=generator, device=device)
    return bits.to(torch.float32) * 2.0 - 1.0


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform over the last axis, butterfly order per the contract.

    Stride D/2 first, then D/4, ..., 1; each butterfly maps (a[i], a[i+s]) -> (a[i]+a[i+s],
    a[i]-a[i+s]). One IEEE add or subtract per output element per stage, so any implementation
    that keeps this order produces bit-identical results. (Two buffers are used in turn, each stage
    writing its sums and differences straight into the other: no temporaries.)
    """
    d = x.shape[-1]
    lead = x.shape[:-1]
    src = x.contiguous()
    if d == 1:
        return src.clone()
    dst = torch.empty_like(src)
    s = d // 2
    while s >= 1:
        y = src.reshape(*lead, d // (2 * s), 2, s)
        z = dst.view(*lead, d // (2 * s), 2, s)
        a = y[..., 0, :]
        b = y[..., 1, :]
        torch.add(a, b, out=z[..., 0, :])
        torch.sub(a, b, out=z[..., 1, :])
        src, dst = dst, (src if src is not x else torch.empty_like(src))
        s //= 2
    return src


def _check_fast_hash_args(x, mask, signs, num_hash, hash_code_len):
    if x.dim() != 4:
        raise UsageError(f"FastHash: x must have rank 4 [B,H,S,D], got shape {tuple(x.shape)}")
    b, h, s, d = x.shape
    check_hash_params(num_hash, hash_code_len, d)
    p = num_parts(num_hash, d, hash_code_len)
    if mask is not None and tuple(mask.shape) != (b, s):
        raise UsageError(f"FastHash: mask must have shape [B,S]=({b},{s}), got {tuple(mask.shape)}")
    if tuple(signs.shape) != (h, 3, p, d):
        raise UsageError(
            f"FastHash: signs must have shape [H,3,P,D]=({h},3,{p},{d}) for num_hash={num_hash}, "
            f"hash_code_len={hash_code_len}; got {tuple(signs.shape)}"
        )


def fast_hash_projections(x: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """The pre-sign values ``t`` of FastHash: float32 ``[B,H,P,S,D]``, ``t = WHT(s3*WHT(s2*WHT(s1*x)))``.

    Bit ``i`` of code ``f = p*per_part + j`` is ``t[b,h,p,s,j*tau+i] > 0`` (plugins/OPS.md section 1).
    """
    t = x.to(torch.float32).unsqueeze(2)  # [B,H,1,S,D]
    sg = signs.to(device=x.device, dtype=torch.float32)[None, :, :, :, None, :]  # [1,H,3,P,1,D]
    t = fwht(t * sg[:, :, 0])  # [B,H,P,S,D]
    t = fwht(t * sg[:, :, 1])
    return fwht(t * sg[:, :, 2])


def code_bit_values(t: torch.Tensor, num_hash: int, hash_code_len: int) -> torch.Tensor:
    """``t`` ``[B,H,P,S,D]`` -> ``[B,H,S,m,tau]``: the value whose sign is bit ``i`` of code ``f``."""
    b, h, p, s, d = t.shape
    per_part = codes_per_part(d, hash_code_len)
    v = t[..., : per_part * hash_code_len].reshape(b, h, p, s, per_part, hash_code_len)
    return v.permute(0, 1, 3, 2, 4, 5).reshape(b, h, s, p * per_part, hash_code_len)[:, :, :, :num_hash]


def codes_from_bit_values(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[B,H,S,m,tau]`` bit values -> int32 codes ``[B,H,S,m]`` (``sum_i [v_i > 0] 2^i``), 0 where masked."""
    tau = v.shape[-1]
    weights = torch.bitwise_left_shift(
        torch.ones(tau, dtype=torch.int32, device=v.device), torch.arange(tau, dtype=torch.int32, device=v.device)
    )
    codes = ((v > 0).to(torch.int32) * weights).sum(-1, dtype=torch.int32)
    if mask is not None:
        codes = codes * (mask != 0).to(torch.int32)[:, None, :, None]
    return codes.contiguous()


def fast_hash(
    x: torch.Tensor,
    mask: torch.Tensor,
    signs: torch.Tensor,
    num_hash: int,
    hash_code_len: int,
) -> torch.Tensor:
    """``com.yoso::FastHash``: x[B,H,S,D], mask[B,S], signs[H,3,P,D] -> int32 codes[B,H,S,m]."""
    _check_fast_hash_args(x, mask, signs, num_hash, hash_code_len)
    t = fast_hash_projections(x, signs)
    return codes_from_bit_values(code_bit_values(t, num_hash, hash_code_len), mask)


def lsh_cumulation(
    query_codes: torch.Tensor,
    key_codes: torch.Tensor,
    query_mask: torch.Tensor,
    key_mask: torch.Tensor,
    value: torch.Tensor,
    hash_code_len: int,
) -> torch.Tensor:
    """``com.yoso::LSHCumulation`` -> float[B,H,Sq,Dv] (accumulated in fp32, returned in value's dtype)."""
    if query_codes.dim() != 4 or key_codes.dim() != 4 or value.dim() != 4:
        raise UsageError("LSHCumulation: query_codes, key_codes and value must have rank 4")
    b, h, sq, m = query_codes.shape
    sk = key_codes.shape[2]
    dv = value.shape[-1]
    if tuple(key_codes.shape) != (b, h, sk, m):
        raise UsageError(
            f"LSHCumulation: key_codes must have shape [B,H,Sk,m]=({b},{h},Sk,{m}), "
            f"got {tuple(key_codes.shape)}"
        )
    if tuple(value.shape) != (b, h, sk, dv):
        raise UsageError(
            f"LSHCumulation: value must have shape [B,H,Sk,Dv]=({b},{h},{sk},Dv), got {tuple(value.shape)}"
        )
    if tuple(query_mask.shape) != (b, sq) or tuple(key_mask.shape) != (b, sk):
        raise UsageError("LSHCumulation: masks must have shapes [B,Sq] and [B,Sk]")
    if not 0 < hash_code_len <= MAX_HASH_CODE_LEN:
        raise UsageError(f"LSHCumulation: hash_code_len must be in [1, {MAX_HASH_CODE_LEN}]")
    buckets = 1 << hash_code_len
    for name, codes in (("query_codes", query_codes), ("key_codes", key_codes)):
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= buckets):
            raise UsageError(
                f"LSHCumulation: {name} holds a code outside [0, 2^{hash_code_len}) = [0, {buckets})"
            )
    out = torch.zeros(b, h, sq, dv, dtype=torch.float32, device=value.device)
    if m == 0 or out.numel() == 0:
        return out.to(value.dtype)
    v = torch.where((key_mask != 0)[:, None, :, None], value.to(torch.float32), 0.0)
    # Buckets are addressed by a compact id per (b, h, f, code) that occurs, so memory stays linear
    # in the sequence length whatever tau is (a dense 2^tau table per hash function would not).
    rows = max(1, b * h * (sq + sk))
    chunk = max(1, min(m, _TABLE_BUDGET // max(1, rows * dv)))
    slot = torch.arange(b * h, device=value.device).view(b, h, 1, 1)
    for f0 in range(0, m, chunk):
        f1 = min(m, f0 + chunk)
        nf = f1 - f0
        fidx = torch.arange(nf, device=value.device).view(1, 1, nf, 1)
        base = (slot * nf + fidx) << hash_code_len  # [B*H slots x nf hash functions] x 2^tau codes
        kid = base + key_codes[..., f0:f1].permute(0, 1, 3, 2).to(torch.int64)  # [B,H,nf,Sk]
        qid = base + query_codes[..., f0:f1].permute(0, 1, 3, 2).to(torch.int64)  # [B,H,nf,Sq]
        uniq, inverse = torch.unique(torch.cat([kid.reshape(-1), qid.reshape(-1)]), return_inverse=True)
        kc, qc = inverse[: kid.numel()], inverse[kid.numel():]
        table = torch.zeros(uniq.numel(), dv, dtype=torch.float32, device=value.device)
        table.index_add_(0, kc, v[:, :, None].expand(b, h, nf, sk, dv).reshape(-1, dv))
        out += table[qc].view(b, h, nf, sq, dv).sum(2)
    out = out / m
    out = torch.where((query_mask != 0)[:, None, :, None], out, 0.0)
    return out.to(value.dtype)


def _expectation_kernel(qn: torch.Tensor, kn: torch.Tensor, hash_code_len: int) -> torch.Tensor:
    """(1 - arccos(qn.kn)/pi)^tau for unit-norm rows qn[..., Sq, D], kn[..., Sk, D]."""
    cos = torch.matmul(qn, kn.transpose(-1, -2)).clamp(-1.0, 1.0)
    return (1.0 - torch.acos(cos) / math.pi) ** hash_code_len


class _ExpectationKernel(torch.autograd.Function):
    """The YOSO-E kernel with YOSO's surrogate gradient (the paper's, as transformers' ``YosoCumulation``).

    The exact derivative of (1 - arccos(c)/pi)^tau has a 1/sqrt(1 - c^2) factor that explodes as
    c -> +-1 (and ``clamp`` zeroes it past +-1), which makes training unstable. YOSO replaces
    d w / d c by (tau/2) * w, i.e. grad_qn = ((dL/dw) * w) @ ((tau/2) kn) and symmetrically for kn.
    The forward is :func:`_expectation_kernel`, so values are bit-identical to inference.
    """

    @staticmethod
    def forward(ctx, qn, kn, hash_code_len):
        w = _expectation_kernel(qn, kn, hash_code_len)
        ctx.save_for_backward(qn, kn, w)
        ctx.hash_code_len = hash_code_len
        return w

    @staticmethod
    def backward(ctx, grad):
        qn, kn, w = ctx.saved_tensors
        g = grad * w * (ctx.hash_code_len / 2.0)
        grad_q = torch.matmul(g, kn) if ctx.needs_input_grad[0] else None
        grad_k = torch.matmul(g.transpose(-1, -2), qn) if ctx.needs_input_grad[1] else None
        return grad_q, grad_k, None


def _wants_surrogate_grad(qn: torch.Tensor, kn: torch.Tensor) -> bool:
    """True only in eager autograd with a gradient to record (never while tracing or exporting)."""
    if not torch.is_grad_enabled() or not (qn.requires_grad or kn.requires_grad):
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return not (is_exporting is not None and is_exporting())


def expectation_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    query_mask: torch.Tensor,
    key_mask: torch.Tensor,
    hash_code_len: int,
) -> torch.Tensor:
    """YOSO-E collision probabilities (1 - arccos(q^.k^)/pi)^tau, zeroed for masked rows/columns.

    When a gradient is being recorded (training) the kernel goes through
    :class:`_ExpectationKernel`, whose forward is this same expression and whose backward is
    YOSO's surrogate; inference, tracing and export see the plain expression.
    """
    # Normalised in float32 (eps 1e-12 underflows to 0 in float16: a zero row would give NaN).
    qn = torch.nn.functional.normalize(query.float(), p=2, dim=-1).to(query.dtype)
    kn = torch.nn.functional.normalize(key.float(), p=2, dim=-1).to(key.dtype)
    if _wants_surrogate_grad(qn, kn):
        w = _ExpectationKernel.apply(qn, kn, hash_code_len)
    else:
        w = _expectation_kernel(qn, kn, hash_code_len)
    qm = query_mask.to(w.dtype)[:, None, :, None]
    km = key_mask.to(w.dtype)[:, None, None, :]
    return w * qm * km


# --------------------------------------------------------------------------------------------
# torch.library registrations: one opaque node per op for torch.export / torch.onnx.
# --------------------------------------------------------------------------------------------


def register_ops(suffix: str, fast_hash_fn, lsh_cumulation_fn) -> None:
    """Register ``yoso::fast_hash{suffix}`` and ``yoso::lsh_cumulation{suffix}`` (fake kernels for
    torch.export, and LSHCumulation's gradient: the op itself with queries and keys swapped) over one
    implementation of the contract's functions (the reference's below, or native_ops' kernels)."""

    @torch.library.custom_op(f"yoso::fast_hash{suffix}", mutates_args=())
    def _fast_hash_op(
        x: torch.Tensor, mask: torch.Tensor, signs: torch.Tensor, num_hash: int, hash_code_len: int
    ) -> torch.Tensor:
        return fast_hash_fn(x, mask, signs, num_hash, hash_code_len)

    @_fast_hash_op.register_fake
    def _(x, mask, signs, num_hash, hash_code_len):
        return x.new_empty((x.shape[0], x.shape[1], x.shape[2], num_hash), dtype=torch.int32)

    @torch.library.custom_op(f"yoso::lsh_cumulation{suffix}", mutates_args=())
    def _lsh_cumulation_op(
        query_codes: torch.Tensor,
        key_codes: torch.Tensor,
        query_mask: torch.Tensor,
        key_mask: torch.Tensor,
        value: torch.Tensor,
        hash_code_len: int,
    ) -> torch.Tensor:
        return lsh_cumulation_fn(query_codes, key_codes, query_mask, key_mask, value, hash_code_len)

    @_lsh_cumulation_op.register_fake
    def _(query_codes, key_codes, query_mask, key_mask, value, hash_code_len):
        return value.new_empty((value.shape[0], value.shape[1], query_codes.shape[2], value.shape[3]))

    def setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1], inputs[2], inputs[3])
        ctx.hash_code_len = inputs[5]

    def backward(ctx, grad):
        # d out[q] / d value[k] = (1/m) * #{f : codes match} for unmasked q, k: the transpose of the
        # forward map, i.e. LSHCumulation with the roles of queries and keys swapped.
        qc, kc, qm, km = ctx.saved_tensors
        grad_value = _lsh_cumulation_op(kc, qc, km, qm, grad.contiguous(), ctx.hash_code_len)
        return None, None, None, None, grad_value, None

    torch.library.register_autograd(f"yoso::lsh_cumulation{suffix}", backward, setup_context=setup)


register_ops("", fast_hash, lsh_cumulation)
