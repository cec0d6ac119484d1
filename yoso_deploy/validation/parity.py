"""Parity of an exported model with the PyTorch reference: tie-aware for LSH, layer by layer.

Why not plain elementwise tolerances. LSH is discontinuous: a FastHash pre-sign value ``t`` within
rounding of 0 flips one bit between two correct implementations (ONNX Runtime's and PyTorch's
GEMMs round differently, ~1e-7 relative), which moves a token to another bucket for one hash
function. At S = 4096 x 12 heads x 64 hashes x 9 bits some flips are certain, and one flip moves the
outputs far past any fp32 tolerance. So parity is judged in two parts (plugins/OPS.md section 5):

1. **Codes.** Every FastHash input and output of the export becomes an extra graph output on an
   in-memory copy of the model (:func:`find_probes`, :func:`instrument`). For every layer and both
   roles (query, key):

   * *kernel*: the reference FastHash applied to the backend's own FastHash input must give the
     backend's codes bit for bit (the op itself is exact, whatever its inputs);
   * *drift*: the backend's pre-sign values ``t`` (the reference projection of the backend's input,
     which the contract makes bit-identical to the backend's own) differ from the reference's own
     by at most the **tie bound** ``beta`` derived from float32 rounding of the Q/K projection and
     of the three Walsh-Hadamard transforms (:func:`tie_bound`);
   * *ties*: a code where the reference's own code differs from the backend's may differ only in
     bits whose reference ``|t| <= beta`` (a near-tie); any other difference fails and is named by
     layer, role, row, head, token and hash function.

2. **Outputs, with the backend's codes injected.** The reference runs with the backend's codes
   injected layer by layer (a hook in the reference attention, ``code_hook``), so both sides
   attend over the same buckets; then every model output and every encoder layer's output hidden
   state (also extra graph outputs) must agree within fp32 tolerances: elementwise
   ``|a - b| <= atol + rtol |b|`` and, for hidden states, a per-channel relative error
   ``||a[:, c] - b[:, c]|| / ||b[:, c]|| <= hidden_rtol`` that sees a corruption of one channel
   (a LayerNorm weight x 1.001) which no elementwise bound on values of size ~1 can.

3. **The task head, tensor by tensor.** The graph's record of probes also names the head's tensors
   (every module output inside ``classifier``/``qa_outputs``/``cls``/``pre_classifier`` and every
   ``Linear``'s input, where a functional activation's output shows); the code-injected reference run
   captures the same module outputs/inputs with forward hooks. Each must agree within the elementwise
   bound and, scaled to the tensor's own magnitude, ``||a - r||_2 / ||r||_2 <= head_rtol`` (relative RMS
   error over the whole tensor): with the codes injected both sides differ by float32 rounding only
   (relative ~1e-6 at S = 4096), while one weight column x 1.01 moves a 768-wide Linear's output by
   ~1e-2 / sqrt(768) ~ 4e-4 relative, which the logits (a few values of a large size) hide.

Expectation (YOSO-E) exports have no codes: outputs and hidden states are compared directly.

One comparison record (:class:`Comparison`) and one renderer serve the post-export check and
``yoso-deploy validate``; failures carry a typed error (:class:`ShapeMismatch`,
:class:`ToleranceExceeded`, :class:`CodeMismatch`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from ..constants import DEFAULT_ATOL, DEFAULT_HIDDEN_RTOL, DEFAULT_RTOL  # noqa: E402,F401 - re-exported
from ..errors import CheckFailedError
from ..export.probes import GraphProbes, LayerProbe, ProbeError, find_probes, instrument  # noqa: F401 (re-exports)
from ..export.wrapper import ExportWrapper, attention_modules, to_numpy, torch_outputs  # noqa: F401 (re-exports)
from ..iospec import IOSpec
from .report import (
    CheckReport,
    format_table,  # noqa: F401 (re-exported)
)

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11}
DEFAULT_HEAD_RTOL = 1e-5  # parity: relative RMS error of each task-head tensor (hash codes injected)


# ------------------------------------------------------------------------------------------------
# Errors and records
# ------------------------------------------------------------------------------------------------


class ParityFailure(CheckFailedError):
    """One check that failed; :attr:`kind` says which sort."""

    kind = "parity"


class ShapeMismatch(ParityFailure):
    kind = "shape"


class ToleranceExceeded(ParityFailure):
    kind = "tolerance"


class CodeMismatch(ParityFailure):
    kind = "codes"


@dataclass(frozen=True)
class Tolerances:
    """``atol``/``rtol``: a float or ``{output: float}`` (key ``"*"`` = default). ``hidden_rtol``: per-channel
    relative error of hidden states. ``head_rtol``: relative RMS error ``||a - r|| / ||r||`` of each task-head
    tensor (the elementwise bound is ``"hidden_states"``'s). ``tie_bound_scale`` multiplies the derived tie bound (1 = the
    float32 rounding bound of plugins/OPS.md section 5; raise it only for a backend that computes the
    projections in lower precision, e.g. TF32)."""

    atol: float | dict = DEFAULT_ATOL
    rtol: float | dict = DEFAULT_RTOL
    hidden_rtol: float = DEFAULT_HIDDEN_RTOL
    tie_bound_scale: float = 1.0
    head_rtol: float = DEFAULT_HEAD_RTOL

    @staticmethod
    def _pick(value, name: str, default: float) -> float:
        if isinstance(value, dict):
            return float(value.get(name, value.get("*", default)))
        return float(value)

    def atol_for(self, name: str) -> float:
        return self._pick(self.atol, name, DEFAULT_ATOL)

    def rtol_for(self, name: str) -> float:
        return self._pick(self.rtol, name, DEFAULT_RTOL)


@dataclass
class CodeStats:
    """Exact counts for one layer and role (query or key) of one case."""

    compared: int  # codes of unmasked tokens
    identical: int
    near_ties: int  # differing codes whose differing bits are all near-ties
    non_ties: int  # differing codes with a bit that is not a near-tie
    kernel_mismatches: int  # codes the backend's FastHash got wrong for its own input
    drift_violations: int  # pre-sign values further from the reference's than the tie bound
    max_tie_ratio: float  # largest |t| / bound over the bits that differ (0 when none)
    max_drift_ratio: float  # largest |t_backend - t_reference| / bound
    where: str = ""  # the first failing code, when one fails

    def summary(self) -> str:
        s = f"{self.identical:,} / {self.compared:,} identical, {self.near_ties:,} near-tie{'s' if self.near_ties != 1 else ''}"
        if self.near_ties:
            s += f" (max {self.max_tie_ratio:.2g} of bound)"
        if self.non_ties:
            s += f", {self.non_ties:,} NOT ties"
        s += f"; t drift max {self.max_drift_ratio:.2g} of bound"
        if self.drift_violations:
            s += f" ({self.drift_violations:,} beyond)"
        if self.kernel_mismatches:
            s += f"; kernel wrong on {self.kernel_mismatches:,} codes of its own input"
        return s


@dataclass
class Comparison:
    """One check of one backend on one input case: a model output, a hidden state, or a layer's codes."""

    backend: str
    case: str  # "BxS", e.g. "2x512"
    kind: str  # "codes" | "tensor" (a layer's query/key/value/attention) | "hidden" | "head" | "output"
    name: str  # "layer 0 query", "layer 0 value", "hidden_states.1 (layer 0)", "head classifier.dense output", "start_logits"
    layer: int | None = None  # encoder layer the check belongs to (hidden_states.k -> layer k-1; None: outputs)
    max_abs: float = float("nan")
    mean_abs: float = float("nan")
    max_rel: float = float("nan")
    channel_rel: float | None = None  # hidden states only
    tensor_rel: float | None = None  # head tensors only: ||a - r||_2 / ||r||_2
    head_rtol: float | None = None
    atol: float = 0.0
    rtol: float = 0.0
    hidden_rtol: float | None = None
    codes: CodeStats | None = None
    error: ParityFailure | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def passed(self) -> bool:
        return self.error is None

    def detail(self) -> str:
        if self.codes is not None:
            return self.codes.summary()
        if self.kind in ("hidden", "tensor") and self.channel_rel is not None:
            return f"channel rel {self.channel_rel:.2e} (<= {self.hidden_rtol:.0e}); atol {self.atol:.0e} rtol {self.rtol:.0e}"
        if self.kind == "head" and self.tensor_rel is not None:
            return f"tensor rel {self.tensor_rel:.2e} (<= {self.head_rtol:.0e}); atol {self.atol:.0e} rtol {self.rtol:.0e}"
        if isinstance(self.error, ShapeMismatch):
            return str(self.error)
        return f"atol {self.atol:.0e} rtol {self.rtol:.0e}"

    def row(self) -> list[str]:
        """This check's cells in its section of :meth:`ParityReport.table`."""
        num = (lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2e}")  # noqa: E731
        status = "ok" if self.ok else "FAIL"
        if self.kind == "codes":
            st = self.codes
            if st is None:
                return [self.name, "", "", "", "", status + f"  {self.error}"]
            ties = f"{st.near_ties:,}" + (f" (max {st.max_tie_ratio:.2g})" if st.near_ties else "")
            if st.non_ties:
                ties += f", {st.non_ties:,} NOT ties"
            drift = f"{st.max_drift_ratio:.2g}" + (f" ({st.drift_violations:,} beyond)" if st.drift_violations else "")
            kernel = "exact" if not st.kernel_mismatches else f"{st.kernel_mismatches:,} wrong"
            return [self.name, f"{st.identical:,} / {st.compared:,}", ties, drift, kernel,
                    status + (f"  {st.where}" if st.where else "")]
        tol = f"{self.atol:.0e}/{self.rtol:.0e}" + (f", ch {self.hidden_rtol:.0e}" if self.hidden_rtol is not None else "")
        rel = "" if self.channel_rel is None else f"ch {self.channel_rel:.2e}"
        if self.tensor_rel is not None:
            rel, tol = f"tensor {self.tensor_rel:.2e}", tol + (f", tensor {self.head_rtol:.0e}" if self.head_rtol is not None else "")
        cells = [self.name, num(self.max_abs), num(self.mean_abs), num(self.max_rel), rel, tol]
        return cells + [status if self.ok or isinstance(self.error, ToleranceExceeded) else f"{status}  {self.error}"]

    def to_json(self) -> dict:
        d = asdict(self)
        d["error"] = None if self.error is None else {"kind": self.error.kind, "message": str(self.error)}
        d["passed"] = self.ok
        for k in ("max_abs", "mean_abs", "max_rel"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None if math.isnan(d[k]) else str(d[k])
        return d


CODE_HEADERS = ["codes", "identical / compared", "near-ties (max |t|/bound)", "t drift (max/bound)", "kernel", "status"]
TENSOR_HEADERS = ["tensor", "max abs", "mean abs", "max rel", "rel error", "atol/rtol", "status"]


@dataclass
class ParityReport(CheckReport):
    """All comparisons of a parity run; :meth:`cases` groups them per (backend, case)."""

    def table(self) -> str:
        """One block per (backend, case): the hash-code checks, then the hidden states and outputs."""
        blocks = []
        groups: dict[tuple, list[Comparison]] = {}
        for c in self.comparisons:
            groups.setdefault((c.backend, c.case), []).append(c)
        for (backend, case), comps in groups.items():
            codes = [c for c in comps if c.kind == "codes"]
            tensors = [c for _, c in sorted(((math.inf if c.layer is None else c.layer, i), c)
                                            for i, c in enumerate(comps) if c.kind != "codes")]
            verdict = "ok" if all(c.ok for c in comps) else "FAIL"
            how = " (its hash codes injected into the reference)" if codes else ""
            lines = [f"{backend} vs torch, input {case}{how}: {verdict}"]
            if codes:
                lines += ["  " + x for x in format_table(CODE_HEADERS, [c.row() for c in codes]).splitlines()]
            if tensors:
                lines += ["  " + x for x in format_table(TENSOR_HEADERS, [c.row() for c in tensors]).splitlines()]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + ("\n" + "\n".join(f"note: {n}" for n in self.notes) if self.notes else "")

    def summary_lines(self) -> list[str]:
        """One line per (backend, case): verdict, hash codes identical / near-ties, the largest tensor error."""
        groups: dict[tuple, list[Comparison]] = {}
        for c in self.comparisons:
            groups.setdefault((c.backend, c.case), []).append(c)
        lines = []
        for (backend, case), comps in groups.items():
            codes = [c.codes for c in comps if c.codes is not None]
            parts = []
            if codes:
                same, total = sum(s.identical for s in codes), sum(s.compared for s in codes)
                ties, bad = sum(s.near_ties for s in codes), sum(s.non_ties for s in codes)
                parts.append(f"codes {same:,}/{total:,} identical, {ties:,} near-ties" + (f", {bad:,} NOT ties" if bad else ""))
            tensors = [c for c in comps if c.kind != "codes" and not math.isnan(c.max_abs)]
            if tensors:
                worst = max(tensors, key=lambda c: c.max_abs)
                parts.append(f"max abs {worst.max_abs:.1e} ({worst.name})")
            verdict = "ok" if all(c.ok for c in comps) else "FAIL"
            lines.append(f"{backend} {case}: {verdict}" + (f" -- {'; '.join(parts)}" if parts else ""))
        return lines

    def cases(self) -> list[dict]:
        groups: dict[tuple, dict] = {}
        for c in self.comparisons:
            g = groups.setdefault((c.backend, c.case), {"backend": c.backend, "case": c.case, "passed": True,
                                                        "codes": [], "layer_tensors": [], "hidden_states": [],
                                                        "head_tensors": [], "outputs": []})
            g["passed"] = g["passed"] and c.ok
            g[{"codes": "codes", "tensor": "layer_tensors", "hidden": "hidden_states", "head": "head_tensors",
               "output": "outputs"}[c.kind]].append(c.to_json())
        return list(groups.values())



def case_name(feeds: dict[str, np.ndarray]) -> str:
    return "x".join(str(d) for d in np.asarray(feeds["input_ids"]).shape)


# ------------------------------------------------------------------------------------------------
# Elementwise comparisons
# ------------------------------------------------------------------------------------------------


def compare_tensor(backend: str, case: str, kind: str, name: str, reference: np.ndarray, actual: np.ndarray,
                   atol: float, rtol: float, hidden_rtol: float | None = None, layer: int | None = None) -> Comparison:
    """``actual`` vs ``reference``: elementwise ``|a - r| <= atol + rtol |r|``; for hidden states and layer tensors
    (``kind`` "hidden"/"tensor", features on the last axis) also ``||a[..., c] - r[..., c]|| / ||r[..., c]|| <=
    hidden_rtol`` for every feature ``c``."""
    per_channel = kind in ("hidden", "tensor")
    c = Comparison(backend, case, kind, name, layer=layer, atol=atol, rtol=rtol,
                   hidden_rtol=hidden_rtol if per_channel else None)
    if actual is None:
        c.error = ShapeMismatch(f"{name}: the backend produced no such output")
        return c
    actual, reference = np.asarray(actual), np.asarray(reference)
    if actual.shape != reference.shape:
        c.error = ShapeMismatch(f"{name}: shape {list(actual.shape)} != reference {list(reference.shape)}")
        return c
    a, r = actual.astype(np.float64), reference.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - r)
        rel = diff / np.maximum(np.abs(r), 1e-12)
    finite = bool(np.isfinite(a).all() or not np.isfinite(r).all())
    c.max_abs = float(np.nanmax(diff, initial=0.0)) if diff.size else 0.0
    c.mean_abs = float(np.nanmean(diff)) if diff.size else 0.0
    c.max_rel = float(np.nanmax(rel, initial=0.0)) if rel.size else 0.0
    bad = ~(diff <= atol + rtol * np.abs(r))
    problems = []
    if not finite:
        problems.append("non-finite values where the reference has none")
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        problems.append(f"{int(bad.sum()):,} of {bad.size:,} elements beyond atol {atol:g} + rtol {rtol:g}, first at "
                        f"{list(idx)} ({a[idx]:.6g} vs {r[idx]:.6g})")
    if per_channel and r.ndim >= 2 and r.size:
        flat_d = (a - r).reshape(-1, r.shape[-1])
        flat_r = r.reshape(-1, r.shape[-1])
        per = np.linalg.norm(flat_d, axis=0) / np.maximum(np.linalg.norm(flat_r, axis=0), 1e-30)
        c.channel_rel = float(np.nanmax(per)) if per.size else 0.0
        if hidden_rtol is not None and not c.channel_rel <= hidden_rtol:
            ch = int(np.nanargmax(per))
            problems.append(f"channel {ch} relative error {c.channel_rel:.3g} > {hidden_rtol:g}")
    if problems:
        c.error = ToleranceExceeded(f"{name}: " + "; ".join(problems))
    return c


def compare_head(backend: str, case: str, name: str, reference: np.ndarray, actual: np.ndarray, atol: float,
                 rtol: float, head_rtol: float) -> Comparison:
    """A task-head tensor: the elementwise bound of :func:`compare_tensor` and, scaled to the tensor's
    magnitude, ``||a - r||_2 / ||r||_2 <= head_rtol`` over the whole tensor (a relative RMS error: robust to
    values near 0, where an elementwise relative error is rounding noise, yet 1 % of one weight column of a
    768-wide Linear is ~4e-4 of it). A backend tensor of the reference's size but another shape (a flattened
    view) is compared in the reference's shape. ``head_rtol`` is for float32 values; a float16 backend tensor
    (an fp16 export on a GPU) gets it scaled by the ratio of the unit roundoffs (2^13)."""
    if actual is not None and reference is not None:
        actual, reference = np.asarray(actual), np.asarray(reference)
        if actual.shape != reference.shape and actual.size == reference.size:
            actual = actual.reshape(reference.shape)
        if actual.dtype == np.float16:
            head_rtol = head_rtol * UNIT_ROUNDOFF["float16"] / UNIT_ROUNDOFF["float32"]
    c = compare_tensor(backend, case, "head", name, reference, actual, atol, rtol)
    c.head_rtol = head_rtol
    if isinstance(c.error, ShapeMismatch):
        return c
    a, r = np.asarray(actual, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        num, den = float(np.linalg.norm((a - r).ravel())), float(np.linalg.norm(r.ravel()))
    c.tensor_rel = num / den if den > 0 else (0.0 if num == 0 else math.inf)
    if not c.tensor_rel <= head_rtol:
        msg = f"relative RMS error {c.tensor_rel:.3g} > {head_rtol:g} (||diff|| {num:.3g}, ||reference|| {den:.3g})"
        c.error = ToleranceExceeded(f"{c.error}; {msg}" if c.error is not None else f"{name}: {msg}")
    return c


# ------------------------------------------------------------------------------------------------
# The tie bound and the code analysis (torch)
# ------------------------------------------------------------------------------------------------


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of n rounded operations."""
    return n * u / (1.0 - n * u)


def tie_bound(x, magnitude, input_error, hash_dim: int, in_features: int, unit_roundoff: float = UNIT_ROUNDOFF["float32"],
              scale: float = 1.0):
    """Bound on |t_A - t_B| for the FastHash pre-sign values of two correct float implementations.

    ``x`` ``[..., D]``: one FastHash input row (a token's query or key of one head, zero-padded to D);
    ``magnitude`` ``[..., D]``: ``|b_j| + sum_k |W_jk| |h_k|``, the size of the terms of the projection
    ``x_j = b_j + sum_k W_jk h_k`` (K = ``in_features`` products); ``input_error`` ``[..., D]`` or None:
    ``sum_k |W_jk| |h_A,k - h_B,k|`` from the measured difference of the two layer inputs.
    Returns ``beta [...]`` (one bound per row: it holds for every ``t`` of the row, all parts):

        e_j  = 2 gamma_{K+1} magnitude_j + input_error_j           (|x_A,j - x_B,j| <= e_j)
        beta = D^{3/2} (||e||_2 + 2 gamma_L (||x||_2 + ||e||_2)),   L = 3 log2 D butterfly stages

    because every row of T = H S3 H S2 H S1 has 2-norm D^{3/2} (H H^T = D I), so
    |T_i (x_A - x_B)| <= D^{3/2} ||x_A - x_B||_2, and each implementation's own rounding in the L
    stages adds at most gamma_L D^{3/2} ||x||_2 (each stage rounds once per element and multiplies
    the 2-norm by sqrt 2). See plugins/OPS.md section 5.
    """
    import torch

    e = 2.0 * gamma(in_features + 1, unit_roundoff) * magnitude
    if input_error is not None:
        e = e + input_error
    e_norm = torch.linalg.vector_norm(e.double(), dim=-1)
    x_norm = torch.linalg.vector_norm(x.double(), dim=-1)
    stages = 3 * max(1, int(round(math.log2(hash_dim))))
    beta = hash_dim**1.5 * (e_norm + 2.0 * gamma(stages, unit_roundoff) * (x_norm + e_norm))
    return beta * float(scale)


def _location(idx, what: str) -> str:
    b, h, s, f = (int(i) for i in idx)
    return f"{what} at row {b}, head {h}, token {s}, hash function {f}"


class CodeInjector:
    """``code_hook`` of the reference attention: judges the backend's codes of each layer, then injects them.

    ``values`` holds the backend's probe outputs (codes and FastHash inputs, by value name);
    ``hidden`` the backend's hidden states (layer inputs for the drift bound), or None.
    """

    def __init__(self, probes: GraphProbes, values: dict, hidden: list | None, backend: str, case: str,
                 tolerances: Tolerances):
        self.by_layer = {p.layer: p for p in probes.layers}
        self.values = values
        self.hidden = hidden
        self.backend = backend
        self.case = case
        self.tol = tolerances
        self.comparisons: list[Comparison] = []

    def __call__(self, module, hidden_states, qh, kh, mask, signs):
        import torch

        layer = module.layer_index
        probe = self.by_layer.get(layer)
        if probe is None:
            raise ProbeError(f"the export has no FastHash nodes for encoder layer {layer}")
        dh = None
        if self.hidden is not None and layer is not None and layer < len(self.hidden):
            hb = torch.from_numpy(np.asarray(self.hidden[layer])).to(hidden_states.dtype)
            if hb.shape == hidden_states.shape:
                dh = (hb - hidden_states).abs()
        injected = []
        for role, x_ref, lin, codes_name, x_name in (("query", qh, module.query, probe.query_codes, probe.query_input),
                                                     ("key", kh, module.key, probe.key_codes, probe.key_input)):
            codes_be = np.asarray(self.values[codes_name])
            x_be = np.asarray(self.values[x_name])
            name = f"layer {layer} {role}"
            c = Comparison(self.backend, self.case, "codes", name, layer=layer)
            want = (*x_ref.shape[:3], module.num_hash)
            if codes_be.shape != want or x_be.shape != tuple(x_ref.shape):
                c.error = ShapeMismatch(f"{name}: backend codes {list(codes_be.shape)} / FastHash input {list(x_be.shape)}, "
                                        f"reference {list(want)} / {list(x_ref.shape)}")
                self.comparisons.append(c)
                raise c.error
            self._tensor(f"layer {layer} {role} (FastHash input)", layer, x_ref, x_be)
            c.codes, c.error = self._judge(module, name, hidden_states, dh, lin, x_ref, mask, signs,
                                           torch.from_numpy(codes_be), torch.from_numpy(x_be))
            self.comparisons.append(c)
            injected.append(torch.from_numpy(codes_be.astype(np.int32, copy=False)).to(x_ref.device))
        return tuple(injected)

    def observe(self, module, value, context):
        """LSHCumulation's value input and output (computed from the injected codes) vs the backend's."""
        probe = self.by_layer[module.layer_index]
        self._tensor(f"layer {module.layer_index} value", module.layer_index, value, self.values[probe.value])
        self._tensor(f"layer {module.layer_index} attention (LSHCumulation output)", module.layer_index, context,
                     self.values[probe.context])

    def _tensor(self, name, layer, ref, got):
        """Compare a per-head tensor [B, H, S, d] feature by feature (heads merged: [B, S, H*d])."""
        ref = to_numpy(ref)
        got = np.asarray(got)
        merge = lambda a: np.ascontiguousarray(a.transpose(0, 2, 1, 3)).reshape(a.shape[0], a.shape[2], -1)  # noqa: E731
        if got.shape != ref.shape or ref.ndim != 4:
            self.comparisons.append(compare_tensor(self.backend, self.case, "tensor", name, ref, got, 0, 0, layer=layer))
            return
        self.comparisons.append(compare_tensor(
            self.backend, self.case, "tensor", name, merge(ref), merge(got), self.tol.atol_for("hidden_states"),
            self.tol.rtol_for("hidden_states"), self.tol.hidden_rtol, layer=layer))

    def _judge(self, module, name, hidden_states, dh, lin, x_ref, mask, signs, codes_be, x_be):
        import torch

        from ..modeling import ops

        m, tau, big_d = module.num_hash, module.hash_code_len, module.hash_dim
        heads, d = module.num_heads, module.head_dim
        unit = UNIT_ROUNDOFF.get(str(x_be.dtype).replace("torch.", ""), UNIT_ROUNDOFF["float32"])
        x_be = x_be.to(torch.float32)
        v_ref = ops.code_bit_values(ops.fast_hash_projections(x_ref, signs), m, tau)  # [B,H,S,m,tau]
        v_be = ops.code_bit_values(ops.fast_hash_projections(x_be, signs), m, tau)
        keep = (mask != 0)[:, None, :, None].expand(codes_be.shape)  # [B,H,S,m]

        # 1. the backend's FastHash is exact on its own input (masked tokens must be 0 too)
        kernel_bad = ops.codes_from_bit_values(v_be, mask) != codes_be

        # 2. the tie bound of each (row, head, token)
        def heads_padded(t):  # [B,S,E] -> [B,H,S,D]
            b, s = t.shape[:2]
            t = t.reshape(b, s, heads, d).transpose(1, 2)
            return torch.nn.functional.pad(t, (0, big_d - d)) if big_d > d else t

        w = lin.weight.detach().abs().float()
        mag = hidden_states.abs().float() @ w.T
        if lin.bias is not None:
            mag = mag + lin.bias.detach().abs().float()
        err = heads_padded(dh.float() @ w.T) if dh is not None else None
        beta = tie_bound(x_ref, heads_padded(mag) * (1 + 1e-3), err, big_d, w.shape[1], unit, self.tol.tie_bound_scale)
        beta = beta.clamp_min(1e-30)[..., None, None].float()  # [B,H,S,1,1]

        drift = (v_be - v_ref).abs() / beta
        drift = torch.where(keep[..., None], drift, torch.zeros_like(drift))
        drift_bad = (drift > 1.0).any(-1)

        # 3. the reference's own codes: differences only in near-tie bits
        own = ops.codes_from_bit_values(v_ref, mask)
        differ = (own != codes_be) & keep
        bits = torch.arange(tau, dtype=torch.int32)
        bit_differs = (((own ^ codes_be)[..., None] >> bits) & 1).bool() & differ[..., None]
        ratio = v_ref.abs() / beta
        non_tie = (bit_differs & (ratio > 1.0)).any(-1)
        tie_ratios = ratio[bit_differs]

        stats = CodeStats(
            compared=int(keep.sum()), identical=int(keep.sum() - differ.sum()),
            near_ties=int((differ & ~non_tie).sum()), non_ties=int(non_tie.sum()),
            kernel_mismatches=int(kernel_bad.sum()), drift_violations=int(drift_bad.sum()),
            max_tie_ratio=float(tie_ratios.max()) if tie_ratios.numel() else 0.0,
            max_drift_ratio=float(drift.max()) if drift.numel() else 0.0,
        )
        problems = []
        for bad, what in ((kernel_bad, "the backend's FastHash output is not the contract's for its own input "
                                       "(a wrong kernel, or signs that differ from the reference's)"),
                          (non_tie, "code differs in a bit that is not a near-tie"),
                          (drift_bad, "pre-sign values drift beyond the float32 tie bound")):
            if bad.any():
                problems.append(_location(torch.nonzero(bad)[0].tolist(), what))
        if problems:
            stats.where = problems[0]
            return stats, CodeMismatch(f"{name}: " + "; ".join(problems))
        return stats, None


# ------------------------------------------------------------------------------------------------
# Running the reference and judging a backend
# ------------------------------------------------------------------------------------------------


def reference_forward(model, spec: IOSpec, feeds: dict[str, np.ndarray], code_hook=None, heads=None):
    """The reference model on ``feeds`` -> (outputs by name, hidden states list), with an optional code hook.

    ``heads`` (:class:`~yoso_deploy.export.probes.HeadProbe` list): also capture those head modules' outputs
    or inputs with forward hooks and return ``(outputs, hidden, {head.value: array or None})`` (None: the
    reference has no such module)."""
    import torch

    device = next(model.parameters()).device
    kwargs = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in spec.input_names}
    atts = attention_modules(model)
    captured: dict[str, np.ndarray | None] = {}
    handles = []
    for h in heads or ():
        captured[h.value] = None
        try:
            module = model.get_submodule(h.module)
        except AttributeError:
            continue

        def hook(_module, args, output, h=h):
            t = output if h.role == "output" else (args[0] if args else None)
            if isinstance(t, torch.Tensor):
                captured[h.value] = to_numpy(t)

        handles.append(module.register_forward_hook(hook))
    for a in atts:
        a.code_hook = code_hook
    try:
        with torch.no_grad():
            out = model(**kwargs, output_hidden_states=True, return_dict=True)
    finally:
        for a in atts:
            a.code_hook = None
        for handle in handles:
            handle.remove()
    outputs = {t.name: to_numpy(out[t.name]) for t in spec.outputs}
    hidden = [to_numpy(h) for h in (out.hidden_states or ())]
    if heads is None:
        return outputs, hidden
    return outputs, hidden, captured


def judge_backend(model, spec: IOSpec, probes: GraphProbes | None, backend: str, feeds: dict[str, np.ndarray],
                  values: dict[str, np.ndarray], tolerances: Tolerances = Tolerances(), reference=None) -> list[Comparison]:
    """Compare one backend run (``values``: every output it produced, probes included) with the reference.

    LSH models (``model.yoso_attention == "lsh"``) need ``probes``: their codes are judged and injected.
    ``reference``: a cached ``reference_forward`` result for models without codes (with the head tensors
    when it was called with ``heads=probes.heads``). The task head's tensors (``probes.heads``) are compared
    with the run that has the backend's codes injected (:func:`compare_head`).
    """
    case = case_name(feeds)
    hidden_be = [values.get(n) for n in probes.hidden_states] if probes and probes.hidden_states else None
    heads = [h for h in probes.heads if h.value in values] if probes is not None else []
    head_ref: dict = {}
    injector = None
    comparisons: list[Comparison] = []
    if getattr(model, "yoso_attention", "lsh") == "lsh":
        if probes is None or not probes.layers:
            raise ProbeError("an LSH export must have com.yoso FastHash/LSHCumulation nodes to be judged")
        missing = [n for n in probes.names() if n not in values]
        if missing:
            raise ProbeError(f"backend {backend} did not return the probed values {missing[:4]}; run the instrumented model")
        injector = CodeInjector(probes, values, hidden_be, backend, case, tolerances)
        try:
            outputs, hidden, head_ref = reference_forward(model, spec, feeds, injector, heads=heads)
        except ParityFailure:  # codes could not even be injected (shape): report what was judged so far
            return injector.comparisons
        comparisons += injector.comparisons
    else:
        if reference is None or (heads and len(reference) < 3):
            reference = reference_forward(model, spec, feeds, heads=heads)
        outputs, hidden = reference[0], reference[1]
        head_ref = reference[2] if len(reference) > 2 else {}
    if hidden_be is not None:
        for k, (ref_h, got_h) in enumerate(zip(hidden, hidden_be)):
            name = f"hidden_states.{k}" + (" (embeddings)" if k == 0 else f" (layer {k - 1})")
            comparisons.append(compare_tensor(backend, case, "hidden", name, ref_h, got_h,
                                              tolerances.atol_for("hidden_states"), tolerances.rtol_for("hidden_states"),
                                              tolerances.hidden_rtol, layer=k - 1))
    for h in heads:
        if head_ref.get(h.value) is None:
            continue  # the reference has no such module (another head layout): nothing to compare with
        comparisons.append(compare_head(backend, case, f"head {h.label}", head_ref[h.value], values.get(h.value),
                                        tolerances.atol_for("hidden_states"), tolerances.rtol_for("hidden_states"),
                                        tolerances.head_rtol))
    for t in spec.outputs:
        comparisons.append(compare_tensor(backend, case, "output", t.name, outputs[t.name], values.get(t.name),
                                          tolerances.atol_for(t.name), tolerances.rtol_for(t.name)))
    return comparisons


def instrumented_model(onnx_model) -> tuple[onnx.ModelProto, GraphProbes]:
    """Load ``onnx_model`` (path or ModelProto), find its probes, return the instrumented copy and the probes."""
    proto = onnx_model if isinstance(onnx_model, onnx.ModelProto) else onnx.load(str(onnx_model))
    probes = find_probes(proto)
    return instrument(proto, probes), probes


def check_onnxruntime(model, spec: IOSpec, onnx_model, cases: list[dict], tolerances: Tolerances = Tolerances(),
                      backend: str = "ort-cpu", session_factory=None) -> ParityReport:
    """ONNX Runtime (libyoso_ort.so registered) on an instrumented copy of the export vs the reference."""
    proto, probes = instrumented_model(onnx_model)
    if session_factory is None:
        from ..runtime import create_session

        session_factory = create_session
    sess = session_factory(proto.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    report = ParityReport()
    if probes.hidden_note:
        report.notes.append(f"hidden states not compared: {probes.hidden_note}")
    if probes.head_note:
        report.notes.append(f"task head: {probes.head_note}")
    for feeds in cases:
        values = dict(zip(names, sess.run(names, {n: feeds[n] for n in spec.input_names})))
        report.comparisons += judge_backend(model, spec, probes, backend, feeds, values, tolerances)
    return report


# ------------------------------------------------------------------------------------------------
# A PyTorch model as the backend (e.g. the native CUDA kernels against the CPU reference)
# ------------------------------------------------------------------------------------------------


def torch_probes(num_layers: int) -> GraphProbes:
    """Probe names of a PyTorch backend run captured by :func:`capture_torch_backend`."""
    layers = [LayerProbe(i, f"layer.{i}.query_codes", f"layer.{i}.key_codes", f"layer.{i}.query_input",
                         f"layer.{i}.key_input", f"layer.{i}.value", f"layer.{i}.context") for i in range(num_layers)]
    return GraphProbes(layers, [f"hidden_states.{k}" for k in range(num_layers + 1)])


class _Recorder:
    """``code_hook`` that lets a model hash with its own kernels and records what its ops saw and made."""

    def __init__(self):
        self.values: dict[str, np.ndarray] = {}

    def __call__(self, module, hidden_states, qh, kh, mask, signs):
        from ..modeling import native_ops

        fast_hash = native_ops.ops_for(getattr(module, "kernels", "torch"))[0]
        qc = fast_hash(qh, mask, signs, module.num_hash, module.hash_code_len)
        kc = fast_hash(kh, mask, signs, module.num_hash, module.hash_code_len)
        i = module.layer_index
        for name, t in (("query_input", qh), ("key_input", kh), ("query_codes", qc), ("key_codes", kc)):
            self.values[f"layer.{i}.{name}"] = to_numpy(t)
        return qc, kc

    def observe(self, module, value, context):
        self.values[f"layer.{module.layer_index}.value"] = to_numpy(value)
        self.values[f"layer.{module.layer_index}.context"] = to_numpy(context)


def capture_torch_backend(model, spec: IOSpec, feeds: dict[str, np.ndarray]) -> tuple[GraphProbes, dict]:
    """Run a PyTorch model (any device, any ``kernels``) and return its probes and values, as an ONNX
    backend's instrumented run would: every layer's FastHash inputs and codes, LSHCumulation value and
    output, hidden states and outputs."""
    rec = _Recorder()
    outputs, hidden = reference_forward(model, spec, feeds, code_hook=rec)
    values = {**rec.values, **outputs, **{f"hidden_states.{k}": h for k, h in enumerate(hidden)}}
    return torch_probes(len(attention_modules(model))), values


def check_torch_backend(reference_model, backend_model, spec: IOSpec, cases: list[dict],
                        tolerances: Tolerances = Tolerances(), backend: str = "torch-native") -> ParityReport:
    """``backend_model`` (e.g. ``kernels="native"`` on CUDA) judged against ``reference_model`` exactly as
    an export is: tie-aware codes, its codes injected, every layer tensor, hidden state and output."""
    report = ParityReport()
    for feeds in cases:
        probes, values = capture_torch_backend(backend_model, spec, feeds)
        report.comparisons += judge_backend(reference_model, spec, probes, backend, feeds, values, tolerances)
    return report
