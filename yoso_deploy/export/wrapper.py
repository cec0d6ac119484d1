"""The reference model as the ONNX graph sees it: positional inputs, a tuple of outputs.

:class:`ExportWrapper` is what ``torch.onnx.export`` traces; :func:`torch_outputs` runs the same
wrapper eagerly on numpy inputs (the reference side of parity checks and the ``torch`` backend of
``bench``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..iospec import IOSpec


def attention_modules(model):
    """The reference self-attention module of every encoder layer, in layer order."""
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


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return np.ascontiguousarray(t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy())


def torch_outputs(model, spec: IOSpec, feeds: dict[str, np.ndarray], debug_codes: bool = False) -> dict[str, np.ndarray]:
    """The reference model's outputs (by the export's output names) for numpy ``feeds``."""
    wrapper = ExportWrapper(model, spec, debug_codes).eval()
    device = next(model.parameters()).device
    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in spec.input_names]
    with torch.no_grad():
        outs = wrapper(*args)
    names = spec.output_names if wrapper.debug_codes else [t.name for t in spec.outputs]
    return {n: to_numpy(o) for n, o in zip(names, outs)}
