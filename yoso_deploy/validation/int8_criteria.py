"""Judging an int8 export: criteria that suit quantization (numpy only; no torch, no onnx).

The fp32 parity of :mod:`yoso_deploy.validation.parity` asks "does the backend compute the PyTorch model?" and
answers with fp32 tolerances and tie-aware codes. An int8 export computes something else *by design*:
every quantized projection rounds its weights (and activations) to 8 bits, ~0.5-1 % relative error per
GEMM, and the LSH codes move wherever a pre-sign value is smaller than that error (not only within
float32 rounding of 0). So an int8 export is judged by how *close* it is, against a reference run
(the fp32 export in ONNX Runtime, or the PyTorch reference):

* **outputs**, per input case -- cosine similarity of each model output with the reference's
  (token-level outputs over unmasked tokens only), and the largest absolute difference relative to the
  reference's largest magnitude (``max |a - r| / max |r|``; loose by default: a moved hash code moves
  single tokens' outputs far, so this catches gross errors only);
* over all cases together (every unmasked token of every input counts once: the worst few tokens of a
  short input are not a rate):

  * **hidden states** -- cosine similarity of the embeddings' and every encoder layer's output;
  * **codes** -- the *code agreement rate* of every layer and role (query, key): the fraction of hash
    codes identical to the reference's;
  * **task agreement** -- per decision output, the fraction of the task's decisions the int8 export
    makes as the reference does: QA start and end argmax per row (unmasked tokens), class argmax per
    row (sequence classification, multiple choice), label argmax per unmasked token (token
    classification, fill-mask); the feature-extraction task has none. A decision the reference itself
    barely makes (its runner-up within ``tie_margin`` of the row's score range) is a *near-tie*, counted
    apart; fewer than ``min_decisions`` decisive decisions are reported, not judged.

Default thresholds (:class:`Int8Thresholds`; docs/performance.md "int8 quantization" gives the measurements they come
from) pass every correct int8 export measured here -- dynamic and static, Q/K projections int8 or fp32,
tiny test models, the default model, yoso-4096 sizes at S 4096 -- and fail a deliberately wrong scale
(tests/quantization/test_quantize.py).

:func:`judge_int8` returns :class:`Int8Check` records, :class:`Int8Report` groups them; both have the
interface of :class:`yoso_deploy.validation.parity.Comparison` / ``ParityReport`` that ``validate`` and the CLI use
(``backend``, ``case``, ``name``, ``layer``, ``error``, ``ok``; ``passed``, ``failures()``,
``first_failure()``, ``table()``, ``cases()``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import CheckFailedError, UsageError
from .report import CheckReport, format_table

# The task's decisions: output name -> "sequence" (argmax over the unmasked tokens of each row), "row"
# (argmax over the last axis per row), "token" (argmax over the last axis per unmasked token).
TASK_DECISIONS = {
    "qa": {"start_logits": "sequence", "end_logits": "sequence"},
    "sequence-classification": {"logits": "row"},
    "multiple-choice": {"logits": "row"},
    "token-classification": {"logits": "token"},
    "mlm": {"logits": "token"},
    "base": {},
}


class Int8Failure(CheckFailedError):
    """An int8 criterion that is not met."""

    kind = "int8"


@dataclass(frozen=True)
class Int8Thresholds:
    """Default thresholds of the int8 judgement (``yoso-deploy validate`` / ``quantize`` options override them)."""

    min_output_cosine: float = 0.99  # each model output, each case
    max_abs_rel: float = 1.0  # max |a - r| / max |r| of each model output, each case (gross errors only)
    min_hidden_cosine: float = 0.999  # embeddings and every layer output, all cases pooled
    min_code_agreement: float = 0.90  # each layer and role, all cases pooled
    min_task_agreement: float = 0.90  # all cases together, each decision output, decisive decisions
    min_decisions: int = 20  # fewer decisive decisions are reported, not judged (too few to estimate a rate)
    tie_margin: float = 0.05  # a decision is a near-tie when the reference's runner-up is this close (x row range)

    def to_json(self) -> dict:
        return asdict(self)


DEFAULT_THRESHOLDS = Int8Thresholds()


@dataclass
class Int8Check:
    """One int8 criterion of one backend against one reference on one case (or ``all`` cases)."""

    backend: str  # e.g. "ort-cpu int8"
    against: str  # "fp32 export" | "torch"
    case: str  # "BxS" or "all"
    kind: str  # "output" | "hidden" | "codes" | "task"
    name: str
    layer: int | None = None
    value: float = float("nan")  # cosine, or agreement rate
    threshold: float = float("nan")
    max_abs: float | None = None
    max_abs_rel: float | None = None
    max_abs_rel_threshold: float | None = None
    agree: int | None = None
    total: int | None = None
    near_ties: int | None = None  # task agreement: differing decisions the reference itself barely made
    note: str = ""  # e.g. why a criterion was not judged
    error: Int8Failure | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    passed = ok

    def row(self) -> list[str]:
        what = {"output": "cosine", "hidden": "cosine", "codes": "code agreement", "task": "task agreement"}[self.kind]
        counts = f"{self.agree:,} / {self.total:,}" if self.total is not None else ""
        if self.near_ties:
            counts += f" (+{self.near_ties:,} near-ties)"
        mx = "" if self.max_abs is None else f"{self.max_abs:.3g} ({self.max_abs_rel:.3g} of max|ref|)"
        lim = f">= {self.threshold:g}" + (f"; <= {self.max_abs_rel_threshold:g}" if self.max_abs_rel_threshold is not None else "")
        status = "FAIL" if not self.ok else (f"({self.note})" if self.note else "ok")
        return [self.name, what, _fmt(self.value), counts, mx, lim, status]

    def to_json(self) -> dict:
        d = asdict(self)
        d["error"] = None if self.error is None else {"kind": self.error.kind, "message": str(self.error)}
        d["passed"] = self.ok
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6f}" if v > 0.999 else f"{v:.4f}"


HEADERS = ["check", "measure", "value", "agree / total", "max abs", "threshold", "status"]


@dataclass
class Int8Report(CheckReport):
    """Every :class:`Int8Check` of a run (the interface of ``parity.ParityReport``: both are ``CheckReport``s)."""

    def table(self) -> str:
        blocks = []
        groups: dict[tuple, list[Int8Check]] = {}
        for c in self.comparisons:
            groups.setdefault((c.backend, c.against, c.case), []).append(c)
        for (backend, against, case), comps in groups.items():
            verdict = "ok" if all(c.ok for c in comps) else "FAIL"
            title = f"{backend} vs {against}, " + ("all inputs" if case == "all" else f"input {case}")
            lines = [f"{title} (int8 criteria): {verdict}"]
            lines += ["  " + x for x in format_table(HEADERS, [c.row() for c in comps]).splitlines()]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + ("\n" + "\n".join(f"note: {n}" for n in self.notes) if self.notes else "")

    def cases(self) -> list[dict]:
        groups: dict[tuple, dict] = {}
        for c in self.comparisons:
            g = groups.setdefault((c.backend, c.against, c.case), {"backend": c.backend, "against": c.against,
                                                                   "case": c.case, "passed": True, "checks": []})
            g["passed"] = g["passed"] and c.ok
            g["checks"].append(c.to_json())
        return list(groups.values())

    def summary(self) -> dict:
        """The smallest value of each criterion per reference (for the manifest and reports)."""
        out: dict = {}
        for c in self.comparisons:
            key = {"output": "min_output_cosine", "hidden": "min_hidden_cosine", "codes": "min_code_agreement",
                   "task": "min_task_agreement"}[c.kind]
            d = out.setdefault(c.against, {})
            if not math.isnan(c.value):
                d[key] = min(d.get(key, 1.0), round(float(c.value), 6))
            if c.max_abs_rel is not None:
                d["max_abs_rel"] = max(d.get("max_abs_rel", 0.0), round(float(c.max_abs_rel), 6))
        return out


# ------------------------------------------------------------------------------------------------
# Measures
# ------------------------------------------------------------------------------------------------


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays (flattened, float64); 1.0 when both are zero."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0 or not (np.isfinite(na) and np.isfinite(nb)):
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def token_mask(feeds: dict) -> np.ndarray:
    """``attention_mask`` as booleans ``[rows, S]`` (multiple choice: batch x choices rows)."""
    m = np.asarray(feeds.get("attention_mask", np.ones_like(feeds["input_ids"])))
    return m.reshape(-1, m.shape[-1]) != 0


def token_values(arr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Token-level outputs ``[B, S]`` / ``[B, S, F]`` -> the unmasked tokens' values; others unchanged."""
    arr = np.asarray(arr)
    rows, s = mask.shape
    if arr.ndim == 2 and arr.shape == (rows, s):
        return arr[mask]
    if arr.ndim >= 3 and arr.shape[-2] == s and int(np.prod(arr.shape[:-2])) == rows:
        return arr.reshape(rows, s, arr.shape[-1])[mask]
    return arr


def decision_rows(task: str, name: str, arr: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The task's decisions in one output: (scores ``[decisions, choices]`` float64, allowed ``[decisions,
    choices]`` bool), or None if the output decides nothing. The decision is the argmax over allowed choices."""
    how = TASK_DECISIONS.get(task, {}).get(name)
    if how is None:
        return None
    arr = np.asarray(arr, dtype=np.float64)
    if how == "sequence":  # [B, S]: argmax over the unmasked tokens of each row
        rows = arr.reshape(-1, arr.shape[-1])
        return rows, mask.reshape(rows.shape)
    if how == "row":  # [B, classes]
        rows = arr.reshape(-1, arr.shape[-1])
        return rows, np.ones(rows.shape, dtype=bool)
    rows = token_values(arr, mask)  # "token": [B, S, labels] -> one decision per unmasked token
    return rows, np.ones(rows.shape, dtype=bool)


def compare_decisions(ref: tuple, got: tuple, margin: float) -> tuple[int, int, int]:
    """(agree, near_ties, total): decisions equal to the reference's; differing ones where the reference's
    score of the other choice is within ``margin`` x the row's score range of its best (a near-tie: the
    reference itself barely prefers its choice, so any perturbation may flip it)."""
    r, allowed = ref
    a, _ = got
    r = np.where(allowed, r, -np.inf)
    a = np.where(allowed, a, -np.inf)
    ir, ia = r.argmax(-1), a.argmax(-1)
    same = ir == ia
    rows = np.arange(r.shape[0])
    lo = np.where(allowed, r, np.inf).min(-1)
    spread = np.maximum(r[rows, ir] - lo, 1e-30)
    near = ~same & (r[rows, ir] - r[rows, ia] <= margin * spread)
    return int(same.sum()), int(near.sum()), int(r.shape[0])


# ------------------------------------------------------------------------------------------------
# Judging one case
# ------------------------------------------------------------------------------------------------


@dataclass
class RunValues:
    """What one run produced on one case: outputs by name, hidden states in order, codes per layer and role."""

    outputs: dict
    hidden: list = field(default_factory=list)
    codes: dict = field(default_factory=dict)  # (layer, "query"|"key") -> int array [rows, H, S, m]


def values_from_probes(probes, values: dict, output_names) -> RunValues:
    """:class:`RunValues` from a probed run (``probes``: ``export.probes.GraphProbes`` or ``parity.torch_probes``)."""
    outputs = {n: values.get(n) for n in output_names}
    hidden = [values.get(n) for n in probes.hidden_states] if probes is not None else []
    if any(h is None for h in hidden):
        hidden = []  # a run without hidden states (none probed)
    codes = {}
    if probes is not None:
        for p in probes.layers:
            for role, name in (("query", p.query_codes), ("key", p.key_codes)):
                if values.get(name) is not None:  # expectation models have no codes
                    codes[(p.layer, role)] = values[name]
    return RunValues(outputs, hidden, codes)


def judge_case(task: str, feeds: dict, got: RunValues, ref: RunValues, backend: str, against: str,
               thresholds: Int8Thresholds = DEFAULT_THRESHOLDS) -> list[Int8Check]:
    """The model outputs of one case: cosine and max abs (codes, hidden states, task: :func:`judge_pooled`)."""
    case = "x".join(str(d) for d in np.asarray(feeds["input_ids"]).shape)
    mask = token_mask(feeds)
    th = thresholds
    out: list[Int8Check] = []
    for name, r in ref.outputs.items():
        a = got.outputs.get(name)
        c = Int8Check(backend, against, case, "output", name, threshold=th.min_output_cosine,
                      max_abs_rel_threshold=th.max_abs_rel)
        if a is None or r is None or np.shape(a) != np.shape(r):
            c.error = Int8Failure(f"{name}: missing or of shape {None if a is None else list(np.shape(a))}, "
                                  f"reference {None if r is None else list(np.shape(r))}")
            out.append(c)
            continue
        av, rv = token_values(a, mask).astype(np.float64), token_values(r, mask).astype(np.float64)
        c.value = cosine(av, rv)
        c.max_abs = float(np.max(np.abs(av - rv), initial=0.0)) if np.isfinite(av).all() else float("inf")
        c.max_abs_rel = c.max_abs / max(float(np.max(np.abs(rv), initial=0.0)), 1e-30)
        problems = []
        if not c.value >= th.min_output_cosine:
            problems.append(f"cosine {c.value:.6f} with the {against} below {th.min_output_cosine:g}")
        if not c.max_abs_rel <= th.max_abs_rel:
            problems.append(f"max abs difference {c.max_abs:.4g} is {c.max_abs_rel:.3g} of the {against}'s largest "
                            f"magnitude, above {th.max_abs_rel:g}")
        if problems:
            c.error = Int8Failure(f"{name}: " + "; ".join(problems))
        out.append(c)
    return out


def judge_pooled(cases: list[tuple[dict, RunValues, RunValues]], backend: str, against: str,
                 thresholds: Int8Thresholds = DEFAULT_THRESHOLDS) -> list[Int8Check]:
    """Code agreement of every layer and role and cosine of every hidden state, pooled over all cases (every
    unmasked token of every input counts once): a rate over many inputs, not the worst of a few tokens."""
    th = thresholds
    codes: dict[tuple, list] = {}  # key -> [agree, total, problem]
    hidden: dict[int, list] = {}  # k -> [dot, |a|^2, |r|^2, problem]
    n_hidden = None
    for feeds, got, ref in cases:
        mask = token_mask(feeds)
        for key, r in ref.codes.items():
            n = codes.setdefault(key, [0, 0, ""])
            a = got.codes.get(key)
            if a is None or np.shape(a) != np.shape(r):
                n[2] = n[2] or (f"codes missing or of shape {None if a is None else list(np.shape(a))}, reference "
                                f"{list(np.shape(r))}")
                continue
            keep = np.broadcast_to(mask[:, None, :, None], np.shape(r))  # [rows, H, S, m]
            n[0] += int(((np.asarray(a) == np.asarray(r)) & keep).sum())
            n[1] += int(keep.sum())
        if ref.hidden:
            n_hidden = len(ref.hidden)
            for k, r in enumerate(ref.hidden):
                n = hidden.setdefault(k, [0.0, 0.0, 0.0, ""])
                a = got.hidden[k] if k < len(got.hidden) else None
                if a is None or np.shape(a) != np.shape(r):
                    n[3] = n[3] or "missing or of another shape than the reference's"
                    continue
                av = token_values(a, mask).astype(np.float64).ravel()
                rv = token_values(r, mask).astype(np.float64).ravel()
                n[0] += float(av @ rv)
                n[1] += float(av @ av)
                n[2] += float(rv @ rv)
    out = []
    for (layer, role) in sorted(codes, key=lambda k: (k[0], k[1] != "query")):
        agree, total, problem = codes[(layer, role)]
        c = Int8Check(backend, against, "all", "codes", f"layer {layer} {role} codes", layer=layer,
                      threshold=th.min_code_agreement, agree=agree, total=total,
                      value=agree / total if total else float("nan"))
        if problem:
            c.error = Int8Failure(f"{c.name}: {problem}")
        elif not c.value >= th.min_code_agreement:
            c.error = Int8Failure(f"{c.name}: {agree:,} of {total:,} codes ({c.value:.4f}) equal the {against}'s, "
                                  f"below {th.min_code_agreement:g}")
        out.append(c)
    for k in sorted(hidden):
        dot, aa, rr, problem = hidden[k]
        name = f"hidden_states.{k}" + (" (embeddings)" if k == 0 else f" (layer {k - 1})")
        c = Int8Check(backend, against, "all", "hidden", name, layer=k - 1, threshold=th.min_hidden_cosine)
        c.value = 1.0 if aa == 0 and rr == 0 else (dot / np.sqrt(aa * rr) if aa > 0 and rr > 0 else 0.0)
        if problem:
            c.error = Int8Failure(f"{name}: {problem}")
        elif not c.value >= th.min_hidden_cosine:
            c.error = Int8Failure(f"{name}: cosine {c.value:.6f} with the {against} below {th.min_hidden_cosine:g}")
        out.append(c)
    if n_hidden is not None:
        short = [i for i, (_, got, _) in enumerate(cases) if len(got.hidden) != n_hidden]
        if short:
            out.append(Int8Check(backend, against, "all", "hidden", "hidden states", error=Int8Failure(
                f"hidden states: the backend returned {len(cases[short[0]][1].hidden)}, the {against} {n_hidden}")))
    return out


def judge_task(task: str, cases: list[tuple[dict, RunValues, RunValues]], backend: str, against: str,
               thresholds: Int8Thresholds = DEFAULT_THRESHOLDS) -> list[Int8Check]:
    """Task agreement over all cases, per decision output: the fraction of *decisive* decisions (those that
    are not near-ties of the reference, :func:`compare_decisions`) equal to the reference's."""
    counts: dict[str, list[int]] = {}
    for feeds, got, ref in cases:
        mask = token_mask(feeds)
        for name, r in ref.outputs.items():
            a = got.outputs.get(name)
            dr = decision_rows(task, name, r, mask) if r is not None else None
            if dr is None:
                continue
            n = counts.setdefault(name, [0, 0, 0])
            if a is None or np.shape(a) != np.shape(r):
                n[2] += dr[0].shape[0]
                continue
            same, near, total = compare_decisions(dr, decision_rows(task, name, a, mask), thresholds.tie_margin)
            n[0], n[1], n[2] = n[0] + same, n[1] + near, n[2] + total
    out = []
    for name, (same, near, total) in counts.items():
        what = {"sequence": "argmax over tokens per row", "row": "argmax per row", "token": "argmax per token"}[
            TASK_DECISIONS[task][name]]
        decisive = total - near
        c = Int8Check(backend, against, "all", "task", f"{name} ({what})", threshold=thresholds.min_task_agreement,
                      agree=same, total=decisive, near_ties=near,
                      value=same / decisive if decisive else float("nan"))
        if decisive < thresholds.min_decisions:
            c.note = f"not judged: {decisive} decisive decisions < {thresholds.min_decisions}"
        elif not c.value >= thresholds.min_task_agreement:
            c.error = Int8Failure(f"{name}: {same} of {decisive} decisive decisions ({c.value:.3f}) equal the "
                                  f"{against}'s ({near} near-ties of {total} not counted), below "
                                  f"{thresholds.min_task_agreement:g}")
        out.append(c)
    return out


def judge_int8(task: str, cases: list[tuple[dict, RunValues, RunValues]], backend: str, against: str,
               thresholds: Int8Thresholds = DEFAULT_THRESHOLDS) -> list[Int8Check]:
    """Every int8 criterion of ``backend`` against ``against`` over ``cases`` of (feeds, got, reference)."""
    checks = []
    for feeds, got, ref in cases:
        checks += judge_case(task, feeds, got, ref, backend, against, thresholds)
    return checks + judge_pooled(cases, backend, against, thresholds) + judge_task(task, cases, backend, against,
                                                                                   thresholds)


def parse_thresholds(items) -> Int8Thresholds:
    """``["min_hidden_cosine=0.99", ...]`` -> :class:`Int8Thresholds` (the defaults for the rest)."""
    from dataclasses import fields, replace

    known = {f.name: f.type for f in fields(Int8Thresholds)}
    values = {}
    for item in items or ():
        name, sep, num = str(item).partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise UsageError(f"bad --int8-threshold {item!r}: write NAME=VALUE with NAME one of {', '.join(known)}")
        try:
            values[name] = int(num) if name == "min_decisions" else float(num)
        except ValueError:
            raise UsageError(f"bad --int8-threshold {item!r}: {num!r} is not a number") from None
    return replace(DEFAULT_THRESHOLDS, **values)
