"""Model-local ONNX functions ``com.yoso::FastHash`` / ``com.yoso::LSHCumulation`` in standard ops.

An export carries, next to its ``com.yoso`` nodes, one ``FunctionProto`` per op whose body
implements ``plugins/OPS.md`` with standard ONNX operators only. A runtime with our kernels
registered (ONNX Runtime + ``libyoso_ort.so``, TensorRT + ``libyoso_trt.so``) runs the kernels — a
registered kernel is preferred over a model-local function of the same domain and name — and any
other ONNX runtime expands the body, so the model runs everywhere ONNX does (slowly: see
``docs/perf/portable.md``). Three modes (:data:`PORTABLE_MODES`, ``yoso-deploy export --portable``):

* ``functions`` (default): the graph keeps its ``com.yoso`` nodes and the model carries the bodies;
* ``off``: no bodies (the model needs our library or plugins);
* ``inline``: the bodies are expanded into the graph (``onnx.inliner``): no ``com.yoso`` node is
  left, for runtimes that do not read model-local functions (OpenVINO).

FastHash body (O(S); bit-identical codes)
    The hashed axis goes first: ``x[B,H,S,D]`` becomes ``t[P, D, L]`` with ``L = H·B·S`` (one column
    per head and token, one block per part). A butterfly stage of stride ``s`` is a reshape to the
    view ``[P, D/2s, 2, s·L]`` and one ``MatMul`` by ``[[1, 1], [1, −1]]``: each output is the sum of
    two exact products (±1), i.e. exactly the contract's IEEE add or subtract — with or without FMA,
    in any summation order — so evaluating the stages in the contract's order (stride D/2 first)
    gives a bit-identical ``t`` and therefore bit-identical codes. The ``3·log2(D)`` stages are
    unrolled for the model's ``D`` (the only value a body is specialised to; ``num_hash`` and
    ``hash_code_len`` come from the node's attributes); the sign diagonals are ``Mul``s. Bits
    ``t > 0`` are weighted by ``2^i`` in ``int32`` and summed per code. Work per token and head:
    ``3·log2(D)·P·D`` adds, like the library, but each stage streams the whole tensor through memory.

LSHCumulation body (O(m·(S log S + S·Dv)) time, O(B·H·S·(m + Dv)) memory; within 1e-6 of the library)
    A ``Loop`` over the ``m`` hash functions keeps the float tables at one hash function's size.
    Per hash function and ``(b, h)``, one ``TopK`` sorts the int32 integers ``2·kc`` (keys),
    ``2·qc+1`` and ``2·qc−1`` (each query twice); a ``CumSum`` of the "is a key" flags in that order
    gives, scattered back with ``ScatterElements`` (a permutation: no write conflicts), every query's
    number of keys with code ``≤ qc`` (``hi``) and ``< qc`` (``lo``), and the keys in code order.
    The values (masked keys replaced by 0 with ``Where``, so an inf/NaN behind the mask cannot leak)
    are gathered in that order behind a zero row and prefix-summed in float64 (``E[k]`` = sum of the
    first ``k``); the query's bucket sum is ``E[hi] − E[lo]`` (two row ``Gather``s). The float64 sum
    over the hash functions is divided by ``m`` and rounded to the value type once. No dense ``2^τ``
    table (``τ`` may be 30) and no ``ScatterND(add)`` (ONNX Runtime's kernel adds in parallel without
    atomics and is wrong with more than one thread).

Checks
    Every contract constraint a standard op can test is tested: ranks, shapes (masks vs. ``B``/``S``,
    ``signs`` = ``[H,3,P,D]``, ``m`` agreeing, ``Sk`` agreeing), ``1 ≤ τ ≤ 30``, ``τ ≤ D``, ``m ≥ 1``,
    masks in ``{0, 1}``, codes in ``[0, 2^τ)``, ``signs`` exactly ``±1``, and ``D`` equal to the width
    the body was built for. A failed check is a ``Gather`` from a one-element table at index
    "number of violations", named after the check (``yoso_check_<op>_<what>``): ONNX Runtime and
    ``onnx.reference`` raise an error naming that node; the bodies never read out of bounds
    whatever the input. What they cannot do: print the offending value in the contract's words,
    and raise in runtimes whose ``Gather`` does not check indices (OpenVINO returns 0 for an
    out-of-range index, so a violated check there passes silently). A non-finite value of an
    unmasked key spreads through the prefix sums to the buckets after its own (the library keeps
    it in its bucket); a finite model never meets this.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
import onnx.shape_inference
from onnx import TensorProto, helper, numpy_helper

from ..errors import UsageError
from ..modeling.ops import MAX_HASH_CODE_LEN, MAX_HASH_DIM, OP_DOMAIN, OP_VERSION, is_power_of_two
from .options import DEFAULT_PORTABLE, PORTABLE_MODES  # noqa: E402

CHECK_PREFIX = "yoso_check_"
BODY_PREFIX = {"FastHash": "yoso_fh_", "LSHCumulation": "yoso_lc_"}


class PortableError(UsageError):
    """The functions cannot be built or attached (bad mode, inconsistent com.yoso nodes)."""


class _Body:
    """A tiny builder of node lists with unique value names (no dependency beyond onnx.helper)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}{hint}_{self._n}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, hint: str = "", **attrs):
        outs = [self._name(hint or op_type.lower()) for _ in range(outputs)]
        node = helper.make_node(op_type, list(inputs), outs, name=name or self._name(op_type), **attrs)
        self.nodes.append(node)
        return outs[0] if outputs == 1 else outs

    def const(self, value, dtype=np.int64, hint: str = "c") -> str:
        arr = np.asarray(value, dtype=dtype)
        out = self._name(hint)
        self.nodes.append(helper.make_node("Constant", [], [out], name=self._name("Constant"),
                                           value=numpy_helper.from_array(arr, out)))
        return out

    def attr_int(self, attr: str) -> str:
        """An int64 ``[1]`` tensor holding the enclosing function's integer attribute ``attr``."""
        out = self._name(attr)
        node = helper.make_node("Constant", [], [out], name=self._name("Constant"))
        node.attribute.append(helper.make_attribute_ref("value_int", onnx.AttributeProto.INT, ref_attr_name=attr))
        self.nodes.append(node)
        return self.op("Reshape", out, self.const([1]), hint=attr)

    def alias(self, value: str, name: str) -> str:
        """Give ``value`` a fixed name (for outputs and for values a Loop body reads)."""
        self.nodes.append(helper.make_node("Identity", [value], [name], name=self._name("Identity")))
        return name

    def dims(self, shape: str, *idx: int) -> list[str]:
        """``[1]`` int64 tensors with entries ``idx`` of the shape tensor ``shape``."""
        return [self.op("Slice", shape, self.const([i]), self.const([i + 1]), hint="dim") for i in idx]

    def concat(self, *parts: str) -> str:
        return parts[0] if len(parts) == 1 else self.op("Concat", *parts, axis=0, hint="shape")

    def mul(self, *parts: str) -> str:
        out = parts[0]
        for p in parts[1:]:
            out = self.op("Mul", out, p)
        return out

    def reshape(self, x: str, *parts: str) -> str:
        """Reshape to the concatenation of ``[1]`` dims, zeros meaning zero (``allowzero``)."""
        return self.op("Reshape", x, self.concat(*parts), allowzero=1)

    def check(self, op: str, what: str, valid: str) -> str:
        """Raise (in ONNX Runtime / onnx.reference) unless every entry of bool ``valid`` is true.

        Returns an int64 scalar zero that the caller must feed into the op's result, so no
        optimiser can drop the check.
        """
        bad = self.op("Cast", self.op("Not", valid), to=TensorProto.INT64)
        count = self.op("ReduceSum", self.op("Reshape", bad, self.const([-1])), keepdims=0)  # 0 for empty inputs
        return self.op("Gather", self.const([0]), count, axis=0, name=f"{CHECK_PREFIX}{op}_{what}", hint="ok")

    def in_set01(self, x: str) -> str:
        return self.op("Or", self.op("Equal", x, self.const(0, np.int32)), self.op("Equal", x, self.const(1, np.int32)))

    def rank_is(self, x: str, rank: int) -> str:
        return self.op("Equal", self.op("Size", self.op("Shape", x)), self.const(rank))


def _sum_checks(b: _Body, checks: list[str]) -> str:
    out = checks[0]
    for c in checks[1:]:
        out = b.op("Add", out, c)
    return b.op("Cast", out, to=TensorProto.INT32, hint="checks")


def fast_hash_function(hash_dim: int, opset: int) -> onnx.FunctionProto:
    """``com.yoso::FastHash`` as a function of standard ops, unrolled for hashed width ``hash_dim``."""
    d = int(hash_dim)
    if not is_power_of_two(d) or d > MAX_HASH_DIM:
        raise PortableError(f"FastHash body: the hashed width D must be a power of two <= {MAX_HASH_DIM}, got {d}")
    b = _Body(BODY_PREFIX["FastHash"])
    x, mask, signs = "x", "mask", "signs"
    tau, m = b.attr_int("hash_code_len"), b.attr_int("num_hash")
    shx = b.op("Shape", x)
    checks = [b.check("FastHash", "x_rank_4", b.rank_is(x, 4)),
              b.check("FastHash", "mask_rank_2", b.rank_is(mask, 2)),
              b.check("FastHash", "signs_rank_4", b.rank_is(signs, 4))]
    B, H, S, D = b.dims(shx, 0, 1, 2, 3)
    dconst = b.const([d])
    checks.append(b.check("FastHash", f"D_is_{d}", b.op("Equal", D, dconst)))
    checks.append(b.check("FastHash", "hash_code_len_in_1_30", b.op("And", b.op("GreaterOrEqual", tau, b.const([1])),
                                                                   b.op("LessOrEqual", tau, b.const([MAX_HASH_CODE_LEN])))))
    checks.append(b.check("FastHash", "hash_code_len_le_D", b.op("LessOrEqual", tau, dconst)))
    checks.append(b.check("FastHash", "num_hash_ge_1", b.op("GreaterOrEqual", m, b.const([1]))))
    per_part = b.op("Div", dconst, b.op("Max", tau, b.const([1])), hint="per_part")
    pp1 = b.op("Max", per_part, b.const([1]))
    parts = b.op("Div", b.op("Add", m, b.op("Sub", pp1, b.const([1]))), pp1, hint="parts")  # ceil(m / per_part)
    checks.append(b.check("FastHash", "mask_shape_is_B_S", b.op("Equal", b.op("Shape", mask), b.concat(B, S))))
    checks.append(b.check("FastHash", "signs_shape_is_H_3_P_D",
                          b.op("Equal", b.op("Shape", signs), b.concat(H, b.const([3]), parts, dconst))))
    checks.append(b.check("FastHash", "mask_is_0_or_1", b.in_set01(mask)))
    checks.append(b.check("FastHash", "signs_are_plus_minus_1",
                          b.op("Equal", b.op("Abs", signs), b.const(1.0, np.float32))))

    n = b.mul(B, S)
    width = b.mul(H, n)  # L = H·N: one column per head and token
    t = b.op("Cast", x, to=TensorProto.FLOAT, hint="xf")  # float16 widens exactly
    # [B,H,S,D] -> [H,B,S,D] (whole S·D blocks) -> [H·N, D] -> [D, H·N]: two transposes ONNX Runtime
    # runs 6x faster than the one 4-d permutation [3, 1, 0, 2].
    t = b.op("Transpose", t, perm=[1, 0, 2, 3], hint="xh")
    t = b.op("Transpose", b.reshape(t, width, dconst), perm=[1, 0], hint="xt")
    t = b.reshape(t, b.const([1]), dconst, H, n)  # [1, D, H, N]
    # signs[H,3,P,D] -> [3, P, D, H, 1]; t is [P, D, H, N]: part p, entry i, head h, token.
    sg = b.op("Unsqueeze", b.op("Transpose", signs, perm=[1, 2, 3, 0]), b.const([4]), hint="sg")
    butterfly = b.const([[1.0, 1.0], [1.0, -1.0]], np.float32, hint="butterfly")
    for rnd in range(3):
        t = b.op("Mul", t, b.op("Gather", sg, b.const(rnd), axis=0, hint=f"signs{rnd}"))  # [P, D, H, N]
        s = d // 2
        while s >= 1:
            # Stage of stride s on the view [P, D/2s, 2, s·L]: [[1, 1], [1, -1]] @ (a; b) = (a + b; a - b).
            # The products are exact (±1) and each output sums two of them, so every entry is the
            # one IEEE add or subtract of the contract, FMA or not, in any summation order.
            t = b.reshape(t, parts, b.const([d // (2 * s), 2]), b.mul(b.const([s]), width))
            t = b.op("MatMul", butterfly, t, hint="stage")
            s //= 2
        t = b.reshape(t, parts, dconst, H, n)
    used = b.mul(per_part, tau)
    bits = b.op("Slice", t, b.const([0]), used, b.const([1]), hint="used")  # [P, per_part·τ, H, N]
    bits = b.op("Cast", b.op("Greater", bits, b.const(0.0, np.float32)), to=TensorProto.INT32, hint="bits")
    bits = b.reshape(bits, parts, per_part, tau, width)
    pow2 = b.op("Slice", b.const([1 << i for i in range(MAX_HASH_CODE_LEN)], np.int32), b.const([0]), tau)
    weights = b.reshape(pow2, tau, b.const([1]))
    codes = b.op("ReduceSum", b.op("Mul", bits, weights), b.const([2]), keepdims=0, hint="codes")  # [P, per_part, L]
    codes = b.reshape(codes, b.mul(parts, per_part), H, B, S)  # code f = p·per_part + j
    codes = b.op("Slice", codes, b.const([0]), m, b.const([0]))
    codes = b.op("Transpose", codes, perm=[2, 1, 3, 0], hint="codes_bhsm")  # [B, H, S, m]
    keep = b.op("Add", mask, _sum_checks(b, checks))  # the checks' zeros feed the result
    keep = b.op("Unsqueeze", keep, b.const([1, 3]), hint="keep")
    b.alias(b.op("Mul", codes, keep), "codes")
    return helper.make_function(
        OP_DOMAIN, "FastHash", [x, mask, signs], ["codes"], b.nodes,
        [helper.make_opsetid("", opset)], attributes=["num_hash", "hash_code_len"],
        doc_string=f"plugins/OPS.md section 1 in standard ops, specialised to D = {d} (see yoso_deploy/export/functions.py)",
    )


def _loop_body() -> onnx.GraphProto:
    """One hash function f: acc += E[hi] − E[lo] (see the module docstring). Reads outer-scope values."""
    g = _Body(BODY_PREFIX["LSHCumulation"] + "f_")
    f, cond, acc = "lc_f", "lc_cond", "lc_acc"
    merged = g.op("Gather", "lc_merged", f, axis=0, hint="merged")  # [N, Sk+2Sq] int32
    _, morder = g.op("TopK", merged, "lc_M", axis=1, largest=0, sorted=1, outputs=2, hint="morder")
    key_b = g.op("Less", morder, "lc_Sk", hint="is_key")
    before = g.op("CumSum", g.op("Cast", key_b, to=TensorProto.INT64), g.const(1), exclusive=1, hint="keys_before")
    # For every element (original order): the number of keys sorted before it.
    counts = g.op("ScatterElements", "lc_zeros_m", morder, before, axis=1, hint="counts")
    hi = g.op("Slice", counts, "lc_Sk", "lc_SkSq", g.const([1]), hint="hi")  # keys with code <= qc
    lo = g.op("Slice", counts, "lc_SkSq", "lc_M", g.const([1]), hint="lo")  # keys with code < qc
    # The keys in sorted order (1-based; slot 0 stays 0 = the zero row of lc_v0; non-keys go to slot Sk+1).
    slots = g.op("Where", key_b, g.op("Add", before, g.const(1)), "lc_Sk1", hint="slots")
    korder = g.op("ScatterElements", "lc_zeros_k", slots, g.op("Add", morder, g.const(1)), axis=1, hint="korder")
    korder = g.op("Slice", korder, g.const([0]), "lc_Sk1", g.const([1]))  # [N, Sk+1]
    # Row gathers from [N·(Sk+1), Dv] tables with row offsets n·(Sk+1) (plain Gather runs everywhere).
    vs = g.op("Gather", "lc_v0", g.op("Add", korder, "lc_offsets"), axis=0, hint="vsorted")  # [N, Sk+1, Dv]
    e = g.op("CumSum", vs, g.const(1), hint="prefix")  # E[k] = sum of the k first keys, float64
    e = g.op("Reshape", e, "lc_table_shape", allowzero=1, hint="prefix_rows")
    take = lambda i: g.op("Gather", e, g.op("Add", i, "lc_offsets"), axis=0)  # noqa: E731 - [N, Sq, Dv]
    g.alias(g.op("Add", acc, g.op("Sub", take(hi), take(lo))), "lc_acc_out")
    g.alias(cond, "lc_cond_out")
    graph = helper.make_graph(
        g.nodes, "lsh_cumulation_per_hash",
        [helper.make_tensor_value_info(f, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond, TensorProto.BOOL, []),
         helper.make_tensor_value_info(acc, TensorProto.DOUBLE, ["N", "Sq", "Dv"])],
        [helper.make_tensor_value_info("lc_cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("lc_acc_out", TensorProto.DOUBLE, ["N", "Sq", "Dv"])],
    )
    return graph


def lsh_cumulation_function(opset: int) -> onnx.FunctionProto:
    """``com.yoso::LSHCumulation`` as a function of standard ops (sort-based, float64 prefix sums)."""
    b = _Body(BODY_PREFIX["LSHCumulation"])
    qc, kc, qm, km, v = "query_codes", "key_codes", "query_mask", "key_mask", "value"
    tau = b.attr_int("hash_code_len")
    checks = [b.check("LSHCumulation", f"{n}_rank_{r}", b.rank_is(n, r))
              for n, r in ((qc, 4), (kc, 4), (qm, 2), (km, 2), (v, 4))]
    shq, shk, shv = b.op("Shape", qc), b.op("Shape", kc), b.op("Shape", v)
    B, H, Sq, M = b.dims(shq, 0, 1, 2, 3)
    Sk, Mk = b.dims(shk, 2, 3)
    Dv = b.dims(shv, 3)[0]
    eq = lambda a, c: b.op("Equal", a, c)  # noqa: E731
    checks += [
        b.check("LSHCumulation", "key_codes_shape_is_B_H_Sk_m", eq(shk, b.concat(B, H, Sk, M))),
        b.check("LSHCumulation", "value_shape_is_B_H_Sk_Dv", eq(shv, b.concat(B, H, Sk, Dv))),
        b.check("LSHCumulation", "query_mask_shape_is_B_Sq", eq(b.op("Shape", qm), b.concat(B, Sq))),
        b.check("LSHCumulation", "key_mask_shape_is_B_Sk", eq(b.op("Shape", km), b.concat(B, Sk))),
        b.check("LSHCumulation", "num_hash_ge_1", b.op("GreaterOrEqual", M, b.const([1]))),
        b.check("LSHCumulation", "hash_code_len_in_1_30", b.op("And", b.op("GreaterOrEqual", tau, b.const([1])),
                                                              b.op("LessOrEqual", tau, b.const([MAX_HASH_CODE_LEN])))),
        b.check("LSHCumulation", "query_mask_is_0_or_1", b.in_set01(qm)),
        b.check("LSHCumulation", "key_mask_is_0_or_1", b.in_set01(km)),
    ]
    del Mk
    pow2 = b.const([1 << i for i in range(MAX_HASH_CODE_LEN + 1)], np.int32)
    buckets = b.op("Gather", pow2, b.op("Min", tau, b.const([MAX_HASH_CODE_LEN])), axis=0, hint="buckets")
    for name, codes in (("query_codes", qc), ("key_codes", kc)):
        ok = b.op("And", b.op("GreaterOrEqual", codes, b.const(0, np.int32)), b.op("Less", codes, buckets))
        checks.append(b.check("LSHCumulation", f"{name}_in_0_2pow_tau", ok))
    n = b.mul(B, H)
    # Codes [B,H,S,m] -> [m, N, S]; the sort keys of all hash functions at once, int32 (a code < 2^30
    # gives 2c+1 < 2^31): keys 2c, queries 2c+1 (for hi) and 2c-1 (for lo) -> [m, N, Sk+2Sq].
    kcT = b.op("Reshape", b.op("Transpose", kc, perm=[3, 0, 1, 2]), b.concat(M, n, Sk), allowzero=1, hint="kcT")
    qcT = b.op("Reshape", b.op("Transpose", qc, perm=[3, 0, 1, 2]), b.concat(M, n, Sq), allowzero=1, hint="qcT")
    two, one = b.const(2, np.int32), b.const(1, np.int32)
    q2 = b.op("Mul", qcT, two)
    b.alias(b.op("Concat", b.op("Mul", kcT, two), b.op("Add", q2, one), b.op("Sub", q2, one), axis=2), "lc_merged")
    kmask = b.op("Unsqueeze", b.op("Cast", km, to=TensorProto.BOOL), b.const([1, 3]))
    vd = b.op("Where", kmask, b.op("Cast", v, to=TensorProto.DOUBLE), b.const(0.0, np.float64), hint="vmasked")
    zero_row = b.op("ConstantOfShape", b.concat(n, b.const([1]), Dv), value=numpy_helper.from_array(np.zeros(1, np.float64)))
    b.alias(Sk, "lc_Sk")
    b.alias(b.op("Add", Sk, b.const([1])), "lc_Sk1")
    b.alias(b.concat(b.mul(n, "lc_Sk1"), Dv), "lc_table_shape")
    v0 = b.op("Concat", zero_row, b.reshape(vd, n, Sk, Dv), axis=1)  # [N, 1+Sk, Dv]: row 0 of each (b, h) is 0
    b.alias(b.op("Reshape", v0, "lc_table_shape", allowzero=1), "lc_v0")
    rows = b.op("Range", b.const(0), b.op("Squeeze", n, b.const([0])), b.const(1))
    b.alias(b.op("Unsqueeze", b.op("Mul", rows, "lc_Sk1"), b.const([1])), "lc_offsets")  # [N, 1]
    b.alias(b.op("Add", Sk, Sq), "lc_SkSq")
    b.alias(b.op("Add", "lc_SkSq", Sq), "lc_M")
    zeros64 = numpy_helper.from_array(np.zeros(1, np.int64))
    b.alias(b.op("ConstantOfShape", b.concat(n, "lc_M"), value=zeros64), "lc_zeros_m")
    b.alias(b.op("ConstantOfShape", b.concat(n, b.op("Add", Sk, b.const([2]))), value=zeros64), "lc_zeros_k")
    acc0 = b.op("ConstantOfShape", b.concat(n, Sq, Dv), value=numpy_helper.from_array(np.zeros(1, np.float64)),
                hint="acc0")
    trips = b.op("Squeeze", M, b.const([0]), hint="trips")
    acc = b.op("Loop", trips, b.const(True, np.bool_), acc0, body=_loop_body(), hint="acc")
    out = b.op("Div", acc, b.op("Cast", M, to=TensorProto.DOUBLE))
    out = b.op("CastLike", out, v, hint="out")
    out = b.reshape(out, B, H, Sq, Dv)
    qkeep = b.op("Add", qm, _sum_checks(b, checks))  # the checks' zeros feed the result
    qkeep = b.op("Unsqueeze", b.op("Cast", qkeep, to=TensorProto.BOOL), b.const([1, 3]))
    b.alias(b.op("Where", qkeep, out, b.op("CastLike", b.const(0.0, np.float32), v)), "output")
    return helper.make_function(
        OP_DOMAIN, "LSHCumulation", [qc, kc, qm, km, v], ["output"], b.nodes,
        [helper.make_opsetid("", opset)], attributes=["hash_code_len"],
        doc_string="plugins/OPS.md section 2 in standard ops (see yoso_deploy/export/functions.py)",
    )


def _model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise PortableError("the model imports no default ONNX opset; cannot build the function bodies")


def _hash_dims(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> set[int]:
    """The hashed width D of every FastHash node: the last dim of its ``signs`` (an initializer), else inferred."""
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    dims, unknown = set(), []
    for n in nodes:
        sd = inits.get(n.input[2]) if len(n.input) > 2 else None
        if sd is not None and len(sd) == 4:
            dims.add(int(sd[3]))
        else:
            unknown.append(n)
    if unknown:
        from .schemas import register_schemas

        register_schemas()
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {vi.name: vi.type.tensor_type for vi in list(inferred.graph.value_info) + list(inferred.graph.input)}
        for n in unknown:
            t = types.get(n.input[0])
            dim = t.shape.dim[3] if t is not None and len(t.shape.dim) == 4 else None
            if dim is None or not dim.HasField("dim_value"):
                raise PortableError(f"FastHash node {n.name!r}: the hashed width D (last dim of x) is not static; "
                                    "the function body needs it (export with --portable off)")
            dims.add(int(dim.dim_value))
    return dims


def attach_functions(model: onnx.ModelProto, mode: str = DEFAULT_PORTABLE) -> onnx.ModelProto:
    """Give an export its portable form (in place, and returned): see :data:`PORTABLE_MODES`.

    ``functions`` adds one model-local function per ``com.yoso`` op the graph uses (replacing any
    already there); ``inline`` adds them and expands every call, leaving no ``com.yoso`` node and no
    ``com.yoso`` opset import; ``off`` removes them. A graph without ``com.yoso`` nodes (expectation
    attention) is already portable and gets no function. The mode is also recorded in the model's
    metadata (``yoso.portable``).
    """
    if mode not in PORTABLE_MODES:
        raise PortableError(f"unknown portable mode {mode!r}; choose one of {', '.join(PORTABLE_MODES)}")
    keep = [f for f in model.functions if f.domain != OP_DOMAIN]
    del model.functions[:]
    model.functions.extend(keep)
    used = {n.op_type: [] for n in model.graph.node if n.domain == OP_DOMAIN}
    for n in model.graph.node:
        if n.domain == OP_DOMAIN:
            used[n.op_type].append(n)
    unknown = sorted(set(used) - {"FastHash", "LSHCumulation"})
    if unknown:
        raise PortableError(f"the graph has {OP_DOMAIN} ops without a portable body: {', '.join(unknown)}")
    if used and mode != "off":
        opset = _model_opset(model)
        if "FastHash" in used:
            dims = _hash_dims(model, used["FastHash"])
            if len(dims) != 1:
                raise PortableError(f"FastHash nodes hash different widths D {sorted(dims)}; one function body "
                                    "serves one D (export with --portable off)")
            model.functions.append(fast_hash_function(dims.pop(), opset))
        if "LSHCumulation" in used:
            model.functions.append(lsh_cumulation_function(opset))
        if model.ir_version < 8:  # model-local functions need IR 8
            model.ir_version = 8
        if mode == "inline":
            inlined = onnx.inliner.inline_selected_functions(
                model, [(OP_DOMAIN, "FastHash"), (OP_DOMAIN, "LSHCumulation")], exclude=False)
            model.CopyFrom(inlined)
            left = [f for f in model.functions if f.domain != OP_DOMAIN]
            del model.functions[:]
            model.functions.extend(left)
            imports = [i for i in model.opset_import if i.domain != OP_DOMAIN]
            del model.opset_import[:]
            model.opset_import.extend(imports)
    meta = {p.key: p.value for p in model.metadata_props}
    meta["yoso.portable"] = mode
    del model.metadata_props[:]
    for k, val in meta.items():
        model.metadata_props.add(key=k, value=val)
    return model


def portable_manifest(mode: str, model: onnx.ModelProto) -> dict:
    """Manifest fields of an export in ``mode``: ``portable``, and no ``custom_ops`` once inlined."""
    fields = {"portable": mode}
    if not any(n.domain == OP_DOMAIN for n in model.graph.node):
        fields["custom_ops"] = []
    return fields


def op_model(op: str, *, hash_code_len: int, num_hash: int | None = None, hash_dim: int | None = None,
             opset: int = 18, portable: str = DEFAULT_PORTABLE, value_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """A model of one ``com.yoso`` node with dynamic shapes (tests, benchmarks, op-level checks).

    FastHash: inputs ``x [B,H,S,D]`` (``value_type``), ``mask [B,S]``, ``signs [H,3,P,D]``; output ``codes``.
    LSHCumulation: inputs ``query_codes``, ``key_codes``, ``query_mask``, ``key_mask``, ``value``; output ``output``.
    """
    vi = helper.make_tensor_value_info
    if op == "FastHash":
        if num_hash is None or hash_dim is None:
            raise PortableError("op_model('FastHash') needs num_hash and hash_dim")
        node = helper.make_node("FastHash", ["x", "mask", "signs"], ["codes"], domain=OP_DOMAIN,
                                num_hash=int(num_hash), hash_code_len=int(hash_code_len))
        inputs = [vi("x", value_type, ["B", "H", "S", int(hash_dim)]), vi("mask", TensorProto.INT32, ["B", "S"]),
                  vi("signs", TensorProto.FLOAT, ["H", 3, "P", int(hash_dim)])]
        outputs = [vi("codes", TensorProto.INT32, ["B", "H", "S", int(num_hash)])]
    elif op == "LSHCumulation":
        node = helper.make_node("LSHCumulation", ["query_codes", "key_codes", "query_mask", "key_mask", "value"],
                                ["output"], domain=OP_DOMAIN, hash_code_len=int(hash_code_len))
        inputs = [vi("query_codes", TensorProto.INT32, ["B", "H", "Sq", "m"]),
                  vi("key_codes", TensorProto.INT32, ["B", "H", "Sk", "m"]),
                  vi("query_mask", TensorProto.INT32, ["B", "Sq"]), vi("key_mask", TensorProto.INT32, ["B", "Sk"]),
                  vi("value", value_type, ["B", "H", "Sk", "Dv"])]
        outputs = [vi("output", value_type, ["B", "H", "Sq", "Dv"])]
    else:
        raise PortableError(f"unknown op {op!r}; choose FastHash or LSHCumulation")
    graph = helper.make_graph([node], f"yoso_{op}", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(OP_DOMAIN, OP_VERSION)])
    model.ir_version = 10
    return attach_functions(model, portable)  # FastHash: D is read from x (signs is an input here)
