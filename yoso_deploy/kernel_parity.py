"""Comparing two runs of LSH attention -- e.g. the native kernels on CUDA against the PyTorch
reference on the CPU -- with ties in mind.

FastHash is discontinuous: when two correct runs see inputs that differ by rounding (another GEMM,
another summation order in an earlier layer), a projection value within rounding of zero can take
the other sign and flip one bit of a code. So codes are compared bit for bit and every differing
bit must be *explained as a tie*: its pre-sign value ``t`` is tiny relative to its row,

    |t| <= tie_rtol * D * ||x_row||_2

where ``x_row`` is the hashed (zero-padded) vector and ``D * ||x_row||_2`` is the RMS of the row's
transformed values (the three unnormalised Walsh-Hadamard transforms scale the norm by D^1.5
exactly, so the D values have RMS D * ||x||). A perturbation of relative size eps moves a value by
about eps times that RMS, so with inputs that differ by fp32 rounding (eps ~ 1e-6) every flip has a
ratio far below the default ``tie_rtol = 1e-4``, while a wrong kernel flips bits whose ratio is of
order 1 (a random value is below 1e-4 of the RMS with probability ~1e-4). The ratio uses the larger
of the two runs' values when both inputs are given: a real tie is near zero in both.

:func:`compare_codes` is the one function the device check (``scripts/device_check.py``) and the
native-model tests (``tests/test_native_model.py``) call; the shared tie-aware parity of
``yoso_deploy.parity`` (issue 12) can replace it there as long as it takes the same arguments and
returns an object with ``ok``, ``differing_codes`` and ``summary()``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from .modeling import ops

DEFAULT_TIE_RTOL = 1e-4


@dataclass
class CodeComparison:
    """How two code tensors of one FastHash call differ."""

    name: str
    total_codes: int
    differing_codes: int
    differing_bits: int
    tie_bits: int            # differing bits explained as ties
    unexplained_bits: int    # differing bits that are not ties (or could not be checked)
    worst_tie_ratio: float   # largest |t| / (D ||x||) over the differing bits (0 if none)
    tie_rtol: float
    checked: bool            # whether pre-sign values were available to explain the differences
    examples: list = field(default_factory=list)  # a few (b, h, s, f, bit, ratio) of the worst bits

    @property
    def ok(self) -> bool:
        return self.unexplained_bits == 0

    def summary(self) -> str:
        if self.differing_codes == 0:
            return f"{self.name}: {self.total_codes} codes bit-identical"
        how = (f"{self.tie_bits} ties, {self.unexplained_bits} NOT ties (worst |t|/(D|x|) = {self.worst_tie_ratio:.2e}, "
               f"tie bound {self.tie_rtol:.0e})" if self.checked else "no pre-sign values to explain them")
        return (f"{self.name}: {self.differing_codes} of {self.total_codes} codes differ "
                f"({100 * self.differing_codes / max(1, self.total_codes):.4f}%), {self.differing_bits} bits: {how}")

    def as_dict(self) -> dict:
        return {"name": self.name, "total_codes": self.total_codes, "differing_codes": self.differing_codes,
                "differing_bits": self.differing_bits, "tie_bits": self.tie_bits,
                "unexplained_bits": self.unexplained_bits, "worst_tie_ratio": self.worst_tie_ratio,
                "tie_rtol": self.tie_rtol, "checked": self.checked, "ok": self.ok, "examples": self.examples}


def pre_sign_values(x: torch.Tensor, head: torch.Tensor, signs: torch.Tensor, num_hash: int,
                    hash_code_len: int) -> torch.Tensor:
    """The values whose signs give the code bits, for selected rows.

    ``x`` [N, D]: hashed vectors; ``head`` [N]: their head index; ``signs`` [H, 3, P, D]. Returns
    [N, m, tau] float32: entry (n, f, i) decides bit i of code f (OPS.md FastHash steps 1-5).
    """
    n, d = x.shape
    per_part = ops.codes_per_part(d, hash_code_len)
    sg = signs.to(device=x.device, dtype=torch.float32)[head.to(x.device)]  # [N, 3, P, D]
    t = x.to(torch.float32)[:, None, :]  # [N, 1, D] -> broadcast over parts
    for k in range(3):
        t = ops.fwht(t * sg[:, k])  # [N, P, D]
    t = t[..., : per_part * hash_code_len].reshape(n, -1, hash_code_len)  # [N, P*per_part, tau]
    return t[:, :num_hash]


def compare_codes(name: str, ref_codes: torch.Tensor, got_codes: torch.Tensor, *, signs: torch.Tensor | None = None,
                  ref_x: torch.Tensor | None = None, got_x: torch.Tensor | None = None, num_hash: int | None = None,
                  hash_code_len: int | None = None, tie_rtol: float = DEFAULT_TIE_RTOL,
                  max_examples: int = 5) -> CodeComparison:
    """Codes [B,H,S,m] of two runs; differing bits are explained with the hashed inputs [B,H,S,D].

    Without ``signs`` and an input (``ref_x`` and/or ``got_x``) the differences are counted but not
    explained (every differing bit counts as unexplained).
    """
    ref = ref_codes.detach().to("cpu", torch.int32)
    got = got_codes.detach().to("cpu", torch.int32)
    if ref.shape != got.shape:
        raise ValueError(f"{name}: code shapes differ: {tuple(ref.shape)} vs {tuple(got.shape)}")
    diff = ref != got
    n_codes = int(diff.sum())
    xor = (ref ^ got)[diff]
    n_bits = int(sum(int(b) for b in _popcount(xor))) if n_codes else 0
    xs = [x for x in (ref_x, got_x) if x is not None]
    checked = bool(xs) and signs is not None and hash_code_len is not None
    result = CodeComparison(name, ref.numel(), n_codes, n_bits, 0, n_bits if n_codes else 0, 0.0, tie_rtol, checked)
    if n_codes == 0 or not checked:
        return result
    m = ref.shape[-1] if num_hash is None else num_hash
    idx = diff.nonzero()  # [n, 4]: b, h, s, f
    rows = idx[:, :3].unique(dim=0)
    ratio = torch.zeros(idx.shape[0], hash_code_len, dtype=torch.float64)
    for x in xs:
        xc = x.detach().to("cpu", torch.float32)
        sel = xc[rows[:, 0], rows[:, 1], rows[:, 2]]  # [R, D]
        t = pre_sign_values(sel, rows[:, 1], signs.detach().cpu(), m, hash_code_len)  # [R, m, tau]
        scale = (sel.shape[-1] * sel.norm(dim=-1)).to(torch.float64)  # RMS of the transformed row
        # row of each differing code in `rows`
        key = lambda r: (r[:, 0] * ref.shape[1] + r[:, 1]) * ref.shape[2] + r[:, 2]  # noqa: E731
        pos = torch.searchsorted(key(rows), key(idx[:, :3]))
        vals = t[pos, idx[:, 3]].abs().to(torch.float64)  # [n, tau]
        r = vals / scale[pos, None].clamp_min(torch.finfo(torch.float64).tiny)
        r[scale[pos] == 0] = float("inf")  # a zero row hashes to code 0 on every correct backend
        ratio = torch.maximum(ratio, r)
    bits = ((xor[:, None] >> torch.arange(hash_code_len, dtype=torch.int32)) & 1).bool()  # [n, tau]
    flipped = ratio[bits]
    ties = int((flipped <= tie_rtol).sum())
    result.tie_bits = ties
    result.unexplained_bits = int(flipped.numel()) - ties
    result.worst_tie_ratio = float(flipped.max()) if flipped.numel() else 0.0
    worst = torch.where(bits, ratio, torch.full_like(ratio, -1.0))
    order = worst.max(dim=1).values.argsort(descending=True)[:max_examples]
    for i in order.tolist():
        bit = int(worst[i].argmax())
        b, h, s, f = (int(v) for v in idx[i])
        result.examples.append({"b": b, "h": h, "s": s, "f": f, "bit": bit, "ratio": float(worst[i, bit])})
    return result


def _popcount(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.int64) & 0xFFFFFFFF
    count = torch.zeros_like(x)
    while bool((x != 0).any()):
        count += x & 1
        x = x >> 1
    return count


@dataclass
class TensorComparison:
    name: str
    max_abs: float
    mean_abs: float
    max_rel: float           # max |a - b| / max(|b|) over the tensor
    rows_over_atol: int      # rows (last axis) with an element off by more than atol
    rows: int
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.atol

    def summary(self) -> str:
        return (f"{self.name}: max abs {self.max_abs:.3e}, mean abs {self.mean_abs:.3e}, max rel {self.max_rel:.3e}; "
                f"{self.rows_over_atol} of {self.rows} rows over atol {self.atol:.0e}")

    def as_dict(self) -> dict:
        return {"name": self.name, "max_abs": self.max_abs, "mean_abs": self.mean_abs, "max_rel": self.max_rel,
                "rows_over_atol": self.rows_over_atol, "rows": self.rows, "atol": self.atol, "ok": self.ok}


def compare_tensors(name: str, ref: torch.Tensor, got: torch.Tensor, atol: float) -> TensorComparison:
    a = ref.detach().to("cpu", torch.float32)
    b = got.detach().to("cpu", torch.float32)
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.numel() == 0:
        return TensorComparison(name, 0.0, 0.0, 0.0, 0, 0, atol)
    err = (a - b).abs()
    rows = err.reshape(-1, a.shape[-1]) if a.dim() else err.reshape(1, 1)
    return TensorComparison(name, float(err.max()), float(err.mean()), float(err.max() / a.abs().max().clamp_min(1e-30)),
                            int((rows.max(dim=1).values > atol).sum()), rows.shape[0], atol)


@contextlib.contextmanager
def capture_lsh_layers(model):
    """Records, per LSH layer of a reference model, what its ops saw and produced.

    Yields a list with one dict per layer, filled by the forward: ``q``, ``k`` (the hashed inputs,
    [B,H,S,D], zero-padded to D), ``v`` [B,H,S,d], ``q_codes``, ``k_codes`` and ``signs``. Uses
    forward hooks on the layers' ``query`` / ``key`` / ``value`` projections and the layers'
    ``code_sink``; nothing is changed in the model.
    """
    base = model.yoso if hasattr(model, "yoso") else model
    layers = [layer.attention.self for layer in base.encoder.layer]
    records = [dict() for _ in layers]
    handles = []

    def heads(att, y):
        b, s, _ = y.shape
        return y.detach().view(b, s, att.num_heads, att.head_dim).transpose(1, 2)

    for att, rec in zip(layers, records):
        pad = att.hash_dim - att.head_dim
        for name in ("query", "key", "value"):
            def hook(module, args, out, att=att, rec=rec, name=name, pad=pad):
                y = heads(att, out)
                if name != "value" and pad:
                    y = torch.nn.functional.pad(y, (0, pad))
                rec[name[0]] = y.contiguous()
            handles.append(getattr(att, name).register_forward_hook(hook))
        att.code_sink = []
    try:
        yield records
    finally:
        for h in handles:
            h.remove()
        for att, rec in zip(layers, records):
            if att.code_sink:
                rec["q_codes"], rec["k_codes"] = att.code_sink[0]
            rec["signs"] = att.signs.detach()
            rec["num_hash"], rec["hash_code_len"] = att.num_hash, att.hash_code_len
            att.code_sink = None


__all__ = ["DEFAULT_TIE_RTOL", "CodeComparison", "TensorComparison", "capture_lsh_layers", "compare_codes",
           "compare_tensors", "pre_sign_values"]
