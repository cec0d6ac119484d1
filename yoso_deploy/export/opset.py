"""Opset of an exported graph, and the one downgrade torch.onnx cannot do for us (18 -> 17).

torch.onnx's torchlib implements opset 18 and converts other requests with the ONNX version
converter, which has no adapter for ``Split`` 18 -> 17 and fails on graphs with ``com.yoso`` nodes
(it printed a traceback and kept opset 18). Between 17 and 18 only a few standard ops changed; the
ones an exported YOSO graph contains are rewritten here and any other changed op is refused by name.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import UsageError

# Ops whose opset-18 form takes ``axes`` as an input where opset 17 (versions 1..13) has an attribute.
_REDUCE_AXES_INPUT = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                      "ReduceMin", "ReduceProd", "ReduceSumSquare"}


def model_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise UsageError("the model imports no default ONNX opset")


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    vals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def downgrade_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """Return ``model`` (opset 18) rewritten for ``target`` = 17; ``ValueError`` names what cannot be."""
    source = model_opset(model)
    if (source, target) != (18, 17):
        raise UsageError(f"only opset 18 -> 17 is converted here (the model has {source}, {target} was asked)")
    consts = _constant_values(model)
    shapes = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
            dims = vi.type.tensor_type.shape.dim
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    except Exception:  # noqa: BLE001 - shapes only help Split; without them uneven splits are refused
        pass
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for node in m.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: a for a in node.attribute}
        if node.op_type in _REDUCE_AXES_INPUT:
            if "noop_with_empty_axes" in attrs:
                if onnx.helper.get_attribute_value(attrs["noop_with_empty_axes"]) and (len(node.input) < 2 or not node.input[1]):
                    raise UsageError(f"{node.op_type} node {node.name!r} uses noop_with_empty_axes, which opset 17 lacks")
                node.attribute.remove(attrs["noop_with_empty_axes"])
            if len(node.input) > 1 and node.input[1]:
                axes = consts.get(node.input[1])
                if axes is None:
                    raise UsageError(f"{node.op_type} node {node.name!r} takes its axes at run time; opset 17 needs constant axes")
                node.attribute.append(onnx.helper.make_attribute("axes", [int(a) for a in np.asarray(axes).ravel()]))
                del node.input[1:]
        elif node.op_type == "Split":
            if "num_outputs" in attrs:
                node.attribute.remove(attrs["num_outputs"])
                if len(node.input) < 2 or not node.input[1]:
                    axis = int(onnx.helper.get_attribute_value(attrs["axis"])) if "axis" in attrs else 0
                    dims = shapes.get(node.input[0])
                    n = len(node.output)
                    size = dims[axis] if dims and -len(dims) <= axis < len(dims) else None
                    if size is None or size % n:
                        raise UsageError(f"Split node {node.name!r} splits a dimension of unknown or uneven size "
                                         f"into {n}; opset 17 splits only evenly")
        else:
            try:
                since = onnx.defs.get_schema(node.op_type, 18, node.domain).since_version
            except onnx.defs.SchemaError:
                since = 0
            if since == 18:
                raise UsageError(f"{node.op_type} node {node.name!r} needs opset 18")
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = target
    return m
