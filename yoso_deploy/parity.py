"""Running the PyTorch reference and an exported model on the same inputs, and comparing them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .export.spec import IOSpec


def attention_modules(model):
    base = model.yoso if hasattr(model, "yoso") else model
    return [layer.attention.self for layer in base.encoder.layer]


class ExportWrapper(torch.nn.Module):
    """Positional-input, tuple-output view of a reference model, as the ONNX graph sees it.

    With ``debug_codes`` the LSH hash codes of every layer (queries, keys) follow the model outputs.
    """

    def __init__(self, model, spec: IOSpec, debug_codes: bool = False):
        super().__init__()
        self.model = model
        self.input_names = spec.input_names
        self.n_outputs = len(spec.outputs)
        self.debug_codes = bool(spec.debug_outputs) and debug_codes

    def forward(self, *args):
        kwargs = dict(zip(self.input_names, args))
        sinks = []
        if self.debug_codes:
            for att in attention_modules(self.model):
                att.code_sink = []
                sinks.append(att.code_sink)
        try:
            out = self.model(**kwargs, return_dict=False)
        finally:
            for att in attention_modules(self.model):
                att.code_sink = None
        outputs = tuple(out[: self.n_outputs])
        for sink in sinks:
            outputs += tuple(sink[0])
        return outputs


def torch_outputs(model, spec: IOSpec, feeds: dict[str, np.ndarray], debug_codes: bool = False) -> dict[str, np.ndarray]:
    wrapper = ExportWrapper(model, spec, debug_codes).eval()
    device = next(model.parameters()).device
    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in spec.input_names]
    with torch.no_grad():
        outs = wrapper(*args)
    names = spec.output_names if wrapper.debug_codes else [t.name for t in spec.outputs]
    return {n: np.ascontiguousarray(o.detach().float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy())
            for n, o in zip(names, outs)}


@dataclass
class Comparison:
    name: str
    max_abs: float
    mean_abs: float
    max_rel: float
    identical: float | None  # fraction of identical elements, for integer outputs
    tolerance: float
    ok: bool

    def row(self) -> list[str]:
        ident = "" if self.identical is None else f"{100 * self.identical:.2f}%"
        return [self.name, f"{self.max_abs:.3e}", f"{self.mean_abs:.3e}", f"{self.max_rel:.3e}", ident,
                f"{self.tolerance:.0e}", "ok" if self.ok else "FAIL"]


def compare_outputs(reference: dict, actual: dict, atol: float = 1e-4, rtol: float = 0.0) -> list[Comparison]:
    """Per-output errors; integer outputs (hash codes) must be identical, floats within atol + rtol*|ref|."""
    rows = []
    for name, ref in reference.items():
        if name not in actual:
            rows.append(Comparison(name, float("inf"), float("inf"), float("inf"), None, atol, False))
            continue
        got = actual[name]
        if got.shape != ref.shape:
            rows.append(Comparison(f"{name} (shape {got.shape} != {ref.shape})", float("inf"), float("inf"), float("inf"), None, atol, False))
            continue
        if np.issubdtype(ref.dtype, np.integer):
            same = float(np.mean(got == ref)) if ref.size else 1.0
            diff = np.abs(got.astype(np.int64) - ref.astype(np.int64))
            rows.append(Comparison(name, float(diff.max(initial=0)), float(diff.mean()) if diff.size else 0.0, 0.0, same, 0.0, same == 1.0))
            continue
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        rel = diff / np.maximum(np.abs(ref.astype(np.float64)), 1e-12)
        finite = bool(np.isfinite(got).all() or not np.isfinite(ref).all())
        ok = finite and bool((diff <= atol + rtol * np.abs(ref)).all())
        rows.append(Comparison(name, float(diff.max(initial=0)), float(diff.mean()) if diff.size else 0.0,
                               float(rel.max(initial=0)), None, atol, ok))
    return rows


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


COMPARISON_HEADERS = ["output", "max abs", "mean abs", "max rel", "identical", "atol", "status"]
