"""ONNX schemas for ``com.yoso::FastHash`` and ``com.yoso::LSHCumulation`` (per ``plugins/OPS.md``).

Registering them lets ``onnx.checker`` (full check) and ``onnx.shape_inference`` type and shape
the custom-op outputs, and lets onnxscript build the nodes during export. Registration is
process-wide and idempotent: call :func:`register_schemas` before using either.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto
from onnx.defs import OpSchema

from ..constants import OP_DOMAIN, OP_VERSION

_FLOAT_TYPES = ["tensor(float)", "tensor(float16)"]
_registered = False


def _dim_copy(dst, src):
    if src.HasField("dim_value"):
        dst.dim_value = src.dim_value
    elif src.HasField("dim_param"):
        dst.dim_param = src.dim_param


def _set_output(ctx, elem_type: int, dims):
    t = onnx.TypeProto()
    t.tensor_type.elem_type = elem_type
    shape = t.tensor_type.shape
    for d in dims:
        nd = shape.dim.add()
        if isinstance(d, int):
            nd.dim_value = d
        elif d is not None:
            _dim_copy(nd, d)
    ctx.set_output_type(0, t)


def _input_dims(ctx, i):
    t = ctx.get_input_type(i)
    if t is None or not t.tensor_type.HasField("shape"):
        return None
    return list(t.tensor_type.shape.dim)


def _attr_int(ctx, name):
    a = ctx.get_attribute(name)
    return None if a is None else a.i


def _infer_fast_hash(ctx):
    x = _input_dims(ctx, 0)
    m = _attr_int(ctx, "num_hash")
    if x is None or len(x) != 4:
        _set_output_unknown(ctx, TensorProto.INT32)
        return
    _set_output(ctx, TensorProto.INT32, [x[0], x[1], x[2], m])


def _infer_lsh_cumulation(ctx):
    qc = _input_dims(ctx, 0)
    v = _input_dims(ctx, 4)
    vt = ctx.get_input_type(4)
    elem = vt.tensor_type.elem_type if vt is not None else TensorProto.FLOAT
    if qc is None or v is None or len(qc) != 4 or len(v) != 4:
        _set_output_unknown(ctx, elem)
        return
    _set_output(ctx, elem, [v[0], v[1], qc[2], v[3]])


def _set_output_unknown(ctx, elem_type):
    t = onnx.TypeProto()
    t.tensor_type.elem_type = elem_type
    ctx.set_output_type(0, t)


def _param(name, type_str, doc=""):
    return OpSchema.FormalParameter(name, type_str, doc)


def register_schemas() -> None:
    global _registered
    if _registered:
        return
    existing = {(s.name, s.domain) for s in onnx.defs.get_all_schemas_with_history()}
    if ("FastHash", OP_DOMAIN) not in existing:
        fh = OpSchema(
            "FastHash",
            OP_DOMAIN,
            OP_VERSION,
            doc="YOSO randomized-Hadamard LSH codes; see plugins/OPS.md section 1.",
            inputs=[_param("x", "T"), _param("mask", "tensor(int32)"), _param("signs", "tensor(float)")],
            outputs=[_param("codes", "tensor(int32)")],
            type_constraints=[("T", _FLOAT_TYPES, "vectors to hash")],
            attributes=[
                OpSchema.Attribute("num_hash", OpSchema.AttrType.INT, "m, number of hash functions", required=True),
                OpSchema.Attribute("hash_code_len", OpSchema.AttrType.INT, "tau, bits per code", required=True),
            ],
        )
        fh.set_type_and_shape_inference_function(_infer_fast_hash)
        onnx.defs.register_schema(fh)
    if ("LSHCumulation", OP_DOMAIN) not in existing:
        lc = OpSchema(
            "LSHCumulation",
            OP_DOMAIN,
            OP_VERSION,
            doc="YOSO bucket cumulation of values by hash code; see plugins/OPS.md section 2.",
            inputs=[
                _param("query_codes", "tensor(int32)"),
                _param("key_codes", "tensor(int32)"),
                _param("query_mask", "tensor(int32)"),
                _param("key_mask", "tensor(int32)"),
                _param("value", "T"),
            ],
            outputs=[_param("output", "T")],
            type_constraints=[("T", _FLOAT_TYPES, "values and output")],
            attributes=[
                OpSchema.Attribute("hash_code_len", OpSchema.AttrType.INT, "tau, bits per code", required=True),
            ],
        )
        lc.set_type_and_shape_inference_function(_infer_lsh_cumulation)
        onnx.defs.register_schema(lc)
    _registered = True
