"""Graph rewrites of an exported model that keep its values (onnx only: the optimizer uses them without torch).

:func:`reduce_l2_as_sum` writes ``ReduceL2(x)`` (the attention output's ``F.normalize``) as ``Sqrt(ReduceSum(x * x))``,
the same formula. ONNX Runtime's symbolic shape inference -- the first step of its transformer optimizer
(``onnxruntime.transformers.optimizer``) -- has no rule for ReduceL2 with its axes as an input (opset 18), so it
loses the shapes of everything after it and skips the SkipLayerNormalization fusions; ReduceSum it knows. The
output keeps its name, so probes and value names are unchanged.
"""

from __future__ import annotations

import onnx
from onnx import helper


def reduce_l2_as_sum(model: onnx.ModelProto) -> int:
    """Rewrite every standard-domain ``ReduceL2`` of the main graph in place; returns how many were rewritten."""
    out, n = [], 0
    for node in model.graph.node:
        if node.op_type != "ReduceL2" or node.domain not in ("", "ai.onnx"):
            out.append(node)
            continue
        n += 1
        x, y = node.input[0], node.output[0]
        base = node.name or y
        square = helper.make_node("Mul", [x, x], [f"{y}__square"], name=f"{base}__square")
        total = helper.make_node("ReduceSum", [f"{y}__square", *node.input[1:]], [f"{y}__sumsq"], name=f"{base}__sum")
        total.attribute.extend(node.attribute)  # keepdims, noop_with_empty_axes: same meaning for ReduceSum
        root = helper.make_node("Sqrt", [f"{y}__sumsq"], [y], name=f"{base}__sqrt")
        for extra in (square, total, root):
            extra.metadata_props.extend(node.metadata_props)
        out += [square, total, root]
    if n:
        del model.graph.node[:]
        model.graph.node.extend(out)
    return n
