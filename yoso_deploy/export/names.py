"""Initializer names an export keeps: the checkpoint's parameter names, so reports name real weights.

torch.onnx (dynamo) names parameters after the traced module path (``model.yoso.encoder...``, the
``model.`` being :class:`~yoso_deploy.export.wrapper.ExportWrapper`'s attribute), folds the
transpose of every ``Linear`` weight into a new constant (``val_25``...) and merges initializers
with equal contents (a randomly initialised checkpoint's LayerNorm weights are all ones, its biases
all zeros, so every layer ends up reading ``embeddings.LayerNorm.weight``). This pass undoes that,
using only facts it can check: a node's module scope (torch.onnx's ``pkg.torch.onnx.name_scopes``
metadata) says which module it belongs to, and an initializer is given that module's parameter name
only if its values equal the parameter (transposed, for a MatMul weight).

Resulting names: the checkpoint's own (``yoso.encoder.layer.0.attention.self.query.bias``); a
``Linear`` weight stored transposed for ``MatMul`` gets ``.T`` (``...query.weight.T``, shape
``[in, out]``); an initializer shared by several modules is copied so each module reads its own.
"""

from __future__ import annotations

import ast

import numpy as np
import onnx
from onnx import numpy_helper

_PREFIX = "model."  # ExportWrapper.model


def _scope(node) -> str:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(p.value)[:-1] if isinstance(s, str) and s]
            except (ValueError, SyntaxError):
                return ""
            return scopes[-1] if scopes else ""
    return ""


def _expected(node, slot: int, scope: str) -> tuple[str, bool] | None:
    """(parameter name, stored transposed) that input ``slot`` of ``node`` is, judging by the op."""
    op = node.op_type
    if op == "MatMul" and slot == 1:
        return f"{scope}.weight", True
    if op in ("Gemm", "Conv") and slot == 1:
        return f"{scope}.weight", False
    if op in ("Gemm", "Conv") and slot == 2:
        return f"{scope}.bias", False
    if op == "Add":
        return f"{scope}.bias", False
    if op == "LayerNormalization" and slot in (1, 2):
        return f"{scope}.{'weight' if slot == 1 else 'bias'}", False
    if op == "Gather" and slot == 0:
        return f"{scope}.weight", False
    return None


def restore_parameter_names(model: onnx.ModelProto, module) -> dict[str, str]:
    """Rename (and where shared, copy) the initializers of ``model`` after ``module``'s parameters, in place.

    ``module`` is the traced :class:`ExportWrapper`. Returns {new name: old name} for what changed.
    """
    g = model.graph
    params = {n: t.detach().cpu() for n, t in list(module.named_parameters()) + list(module.named_buffers())}
    inits = {i.name: i for i in g.initializer}
    arrays: dict[str, np.ndarray] = {}

    def array(name):
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    def matches(init_name: str, param: str, transposed: bool) -> bool:
        t = params.get(param)
        if t is None:
            return False
        a = array(init_name)
        want = t.numpy()
        if transposed:
            if want.ndim != 2:
                return False
            want = want.T
        return a.shape == want.shape and a.dtype == want.dtype and np.array_equal(a, want)

    # 1. Which name each (node, slot) reading an initializer should see.
    wanted: dict[tuple[int, int], str] = {}
    for ni, node in enumerate(g.node):
        scope = _scope(node)
        for slot, name in enumerate(node.input):
            if name not in inits:
                continue
            exp = _expected(node, slot, scope) if scope else None
            if exp is not None and matches(name, exp[0], exp[1]):
                base = exp[0][len(_PREFIX):] if exp[0].startswith(_PREFIX) else exp[0]
                wanted[(ni, slot)] = base + (".T" if exp[1] else "")
            elif name.startswith(_PREFIX) and name in params:
                wanted[(ni, slot)] = name[len(_PREFIX):]

    # 2. Apply: the first reader of an initializer renames it, later readers wanting another name get a copy.
    renamed: dict[str, str] = {}  # old -> new (the original initializer's new name)
    copies: dict[str, onnx.TensorProto] = {}
    taken = set(inits)
    for (ni, slot), new in sorted(wanted.items()):
        node = g.node[ni]
        old = node.input[slot]
        if old == new:
            continue
        if old not in renamed and new not in taken:
            renamed[old] = new
            taken.add(new)
        if renamed.get(old) == new:
            node.input[slot] = new
            continue
        if new in taken and new not in copies and new not in renamed.values():
            continue  # a different tensor already has this name: leave this reader alone
        if new not in copies:
            t = onnx.TensorProto()
            t.CopyFrom(inits[old])
            t.name = new
            copies[new] = t
            taken.add(new)
        node.input[slot] = new
    for old, new in renamed.items():
        inits[old].name = new
        for node in g.node:  # readers not covered above (e.g. a Shape of a weight) follow the rename
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
    g.initializer.extend(copies.values())
    return {**{new: old for old, new in renamed.items()}, **{new: "(copy)" for new in copies}}
