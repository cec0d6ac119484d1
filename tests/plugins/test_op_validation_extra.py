"""More malformed-input cases for libyoso_ort.so, beyond tests/plugins/test_ort_ops.py (issue 8).

tests/plugins/test_ort_ops.py already covers the common violations (one wrong rank per input, shape
mismatches, D = 12 / 2048, tau out of range, signs 0 / 0.5 / NaN, masks 2 / -1, codes -1 / 2^tau,
B = 0, S = 0). This file adds what it misses, for every input of both ops:

* ranks 0, 1, 2, 5 and 6 where they were untested, wrong element types for every input
  (refused when the session is created, naming the input), float16 (the CPU kernels are float32
  only: refusal at session creation is the only allowed outcome; float16 correctness of what runs on
  the CPU is in tests/modeling/test_fp16.py);
* D = 0, 3, 1000, 1025, 1536, tau > D for D = 1, 2, signs [H,2,P,D] / P too small;
* int64 attributes that would look valid after truncation to int32 (2^32 + 4), attributes of the
  wrong type, extra inputs/outputs on the node;
* values: signs -0.0, +-inf, 1 + ulp, a denormal, the *last* element bad; masks INT32_MIN/MAX;
  codes INT32_MIN/MAX, the tau = 30 and tau = 1 boundaries, bad codes of masked queries;
* empty tensors are still validated (B = 0 with D = 12 is an error), H = 0 and Dv = 0 are fine;
* huge sizes: an output whose byte size would overflow int64 (LSHCumulation with Sk = 0 lets the
  value width be 2^60 in an *empty* value tensor) is refused with a message, and outputs of
  2-256 TiB are refused cleanly by ONNX Runtime's allocator (tests named ``*allocation_failure*``;
  tests/plugins/test_sanitizers.py deselects those two because ASan's operator new aborts instead of
  throwing for > 1 TiB); the sessions keep working afterwards;
* the validation helpers themselves (``plugins/common/yoso_validate.h``) with dims that ONNX
  Runtime cannot even represent (products of 2^120, negative dims, int64 extremes), through the
  small C++ program ``tests/native/validation_test.cc`` built with ASan + UBSan.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from test_ort_ops import (
    F32,
    F64,
    FH_INPUTS,
    I32,
    I64,
    LSH_INPUTS,
    LSH_TOL,
    _model,
    _session,
    _value_info,
    expect_error,
    fast_hash_session,
    fh_feeds,
    lsh_feeds,
    lsh_session,
    make_signs,
    ref_fast_hash,
    ref_lsh,
)
from yoso_deploy import ort_library_path
from yoso_deploy.modeling import ops

pytestmark = pytest.mark.native

REPO = Path(__file__).resolve().parents[2]
F16, I8, U8, BOOL = TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL
INT32_MIN, INT32_MAX = np.iinfo(np.int32).min, np.iinfo(np.int32).max
LSH_NAMES = [n for n, _, _ in LSH_INPUTS]


@pytest.fixture(scope="module")
def lib() -> str:
    return str(ort_library_path())


def _lsh_args(feeds):
    return [feeds[n] for n in LSH_NAMES]


# ------------------------------------------------------------------------------------------------
# FastHash: ranks, shapes, values
# ------------------------------------------------------------------------------------------------

FH_BAD_EXTRA = {
    # name: (feeds modifier, expected message fragments); node num_hash=6, hash_code_len=4
    "x_rank0": (lambda f: f.update(x=np.array(1.0, np.float32)), ["'x'", "rank 4", "got rank 0"]),
    "x_rank1": (lambda f: f.update(x=f["x"].reshape(-1)), ["'x'", "rank 4", "got rank 1"]),
    "x_rank2": (lambda f: f.update(x=f["x"].reshape(20, 16)), ["'x'", "got rank 2"]),
    "x_rank6": (lambda f: f.update(x=f["x"][None, None]), ["'x'", "got rank 6"]),
    "mask_rank0": (lambda f: f.update(mask=np.array(1, np.int32)), ["'mask'", "rank 2", "got rank 0"]),
    "mask_rank3": (lambda f: f.update(mask=f["mask"][None]), ["'mask'", "rank 2", "got rank 3"]),
    "signs_rank0": (lambda f: f.update(signs=np.array(1.0, np.float32)), ["'signs'", "rank 4", "got rank 0"]),
    "signs_rank5": (lambda f: f.update(signs=f["signs"][None]), ["'signs'", "rank 4", "got rank 5"]),
    "mask_wrong_b_and_s": (lambda f: f.update(mask=np.ones((1, 9), np.int32)), ["'mask'", "[2,5]", "got [1,9]"]),
    "signs_two_diagonals": (
        lambda f: f.update(signs=np.ascontiguousarray(f["signs"][:, :2])), ["'signs'", "[2,3,2,16]", "got [2,2,2,16]"]
    ),
    "signs_four_diagonals": (
        lambda f: f.update(signs=np.ones((2, 4, 2, 16), np.float32)), ["'signs'", "got [2,4,2,16]"]
    ),
    "signs_too_few_parts": (lambda f: f.update(signs=make_signs(2, 4, 4, 16)), ["'signs'", "P = ", "got [2,3,1,16]"]),
    "d_zero": (
        lambda f: f.update(x=np.zeros((2, 2, 5, 0), np.float32), signs=np.zeros((2, 3, 2, 0), np.float32)),
        ["power of two", "D=0"],
    ),
    "d_3": (lambda f: f.update(x=np.zeros((2, 2, 5, 3), np.float32)), ["power of two", "D=3"]),
    "d_1000": (lambda f: f.update(x=np.zeros((2, 2, 5, 1000), np.float32)), ["power of two", "D=1000"]),
    "d_1025": (lambda f: f.update(x=np.zeros((2, 2, 5, 1025), np.float32)), ["power of two", "D=1025"]),
    "d_1536": (lambda f: f.update(x=np.zeros((2, 2, 5, 1536), np.float32)), ["D=1536"]),
    "d_4096_pow2_too_large": (lambda f: f.update(x=np.zeros((2, 2, 5, 4096), np.float32)), ["1024", "D=4096"]),
    "tau_gt_d_2": (lambda f: f.update(x=np.zeros((2, 2, 5, 2), np.float32)), ["must not exceed", "D=2"]),
    "tau_gt_d_1": (lambda f: f.update(x=np.zeros((2, 2, 5, 1), np.float32)), ["must not exceed", "D=1"]),
    # empty inputs are validated too
    "b0_bad_d": (
        lambda f: f.update(x=np.zeros((0, 2, 5, 12), np.float32), mask=np.zeros((0, 5), np.int32)),
        ["power of two", "D=12"],
    ),
    "b0_mask_mismatch": (
        lambda f: f.update(x=np.zeros((0, 2, 5, 16), np.float32), mask=np.ones((1, 5), np.int32)),
        ["'mask'", "[0,5]", "got [1,5]"],
    ),
    "s0_signs_mismatch": (
        lambda f: f.update(x=np.zeros((2, 2, 0, 16), np.float32), mask=np.zeros((2, 0), np.int32),
                           signs=make_signs(3, 6, 4, 16)),
        ["'signs'", "got [3,3,2,16]"],
    ),
    # values
    "signs_negative_zero": (lambda f: f["signs"].__setitem__((0, 0, 0, 0), -0.0), ["'signs'", "+1.0 or -1.0", "got -0"]),
    "signs_pos_inf": (lambda f: f["signs"].__setitem__((1, 1, 1, 1), np.inf), ["'signs'", "got inf"]),
    "signs_neg_inf": (lambda f: f["signs"].__setitem__((0, 2, 1, 15), -np.inf), ["'signs'", "got -inf"]),
    "signs_one_plus_ulp": (
        lambda f: f["signs"].__setitem__((0, 1, 0, 0), np.nextafter(np.float32(1), np.float32(2))),
        ["'signs'", "got 1.00000012"],
    ),
    "signs_denormal": (lambda f: f["signs"].__setitem__((0, 0, 1, 2), np.float32(1e-45)), ["'signs'", "got 1.4"]),
    "signs_minus_two": (lambda f: f["signs"].__setitem__((1, 0, 0, 0), -2.0), ["'signs'", "got -2"]),
    "signs_last_element": (
        lambda f: f["signs"].__setitem__((1, 2, 1, 15), 0.25), ["'signs'", "got 0.25", "flat index 191"]
    ),
    "mask_int32_min": (lambda f: f["mask"].__setitem__((1, 4), INT32_MIN), ["'mask'", f"got {INT32_MIN}", "flat index 9"]),
    "mask_int32_max": (lambda f: f["mask"].__setitem__((0, 0), INT32_MAX), ["'mask'", f"got {INT32_MAX}", "flat index 0"]),
    "mask_bad_on_padding": (
        lambda f: (f["mask"].__setitem__((1, slice(None)), 0), f["mask"].__setitem__((1, 3), 7)),
        ["'mask'", "got 7"],
    ),
}


@pytest.mark.parametrize("case", sorted(FH_BAD_EXTRA))
def test_fast_hash_rejects_more(lib, case):
    modify, needles = FH_BAD_EXTRA[case]
    feeds = fh_feeds(m=6, tau=4)
    modify(feeds)
    sess = fast_hash_session(lib, 6, 4)
    expect_error(lambda: sess.run(None, feeds), "INVALID_ARGUMENT", "FastHash", *needles)


def test_fast_hash_accepts_edges(lib):
    """Valid extremes: H = 0 (empty output), tau = D = 1, D = 1024 with tau = 30, NaN on padding."""
    sess = fast_hash_session(lib, 6, 4)
    f = fh_feeds(m=6, tau=4)
    out = sess.run(None, {"x": np.zeros((2, 0, 5, 16), np.float32), "mask": f["mask"],
                          "signs": np.zeros((0, 3, 2, 16), np.float32)})[0]
    assert out.shape == (2, 0, 5, 6) and out.dtype == np.int32

    rng = np.random.default_rng(0)
    for d, m, tau in ((1, 3, 1), (1024, 35, 30)):
        x = rng.standard_normal((1, 2, 3, d)).astype(np.float32)
        mask = np.array([[1, 0, 1]], np.int32)
        x[0, :, 1] = np.nan  # padded token full of NaN: must still hash to 0
        signs = make_signs(2, m, tau, d, seed=d)
        got = fast_hash_session(lib, m, tau).run(None, {"x": x, "mask": mask, "signs": signs})[0]
        np.testing.assert_array_equal(got, ref_fast_hash(x, mask, signs, m, tau))
        assert (got[:, :, 1] == 0).all()


# ------------------------------------------------------------------------------------------------
# FastHash: attributes, node arity, element types
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attrs,needles",
    [
        ({"num_hash": 2**31, "hash_code_len": 4}, ["num_hash", "2^31-1", f"got {2**31}"]),
        ({"num_hash": 2**32 + 6, "hash_code_len": 4}, ["num_hash", f"got {2**32 + 6}"]),  # int32 truncation = 6
        ({"num_hash": -(2**63), "hash_code_len": 4}, ["num_hash", f"got {-(2**63)}"]),
        ({"num_hash": 6, "hash_code_len": 2**32 + 4}, ["hash_code_len", f"got {2**32 + 4}"]),  # truncation = 4
        ({"num_hash": 6, "hash_code_len": 2**63 - 1}, ["hash_code_len", f"got {2**63 - 1}"]),
        ({"num_hash": 6.0, "hash_code_len": 4}, ["num_hash", "not an int"]),
        ({"num_hash": "6", "hash_code_len": 4}, ["num_hash", "not an int"]),
        ({"num_hash": [6], "hash_code_len": 4}, ["num_hash", "not an int"]),
        ({"num_hash": 6, "hash_code_len": 4.0}, ["hash_code_len", "not an int"]),
    ],
    ids=["m_2^31", "m_2^32+6", "m_int64_min", "tau_2^32+4", "tau_int64_max", "m_float", "m_string",
         "m_ints", "tau_float"],
)
def test_fast_hash_rejects_more_attributes(lib, attrs, needles):
    model = _model("FastHash", FH_INPUTS, I32, **attrs)
    expect_error(lambda: _session(lib, model), "FastHash", *needles)


def _node_model(op, n_inputs_extra=0, n_outputs=1, **attrs):
    base = FH_INPUTS if op == "FastHash" else LSH_INPUTS
    inputs = list(base) + [(f"extra{i}", F32, 1) for i in range(n_inputs_extra)]
    outs = ["out"] + [f"out{i}" for i in range(1, n_outputs)]
    node = helper.make_node(op, [n for n, _, _ in inputs], outs, domain=ops.OP_DOMAIN, **attrs)
    graph = helper.make_graph(
        [node], "arity", [_value_info(n, t, None) for n, t, _ in inputs],
        [_value_info(o, I32 if op == "FastHash" else F32, 4) for o in outs],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.OP_DOMAIN, ops.OP_VERSION)]
    )
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("op", ["FastHash", "LSHCumulation"])
@pytest.mark.parametrize("extra_in,outs", [(1, 1), (0, 2)], ids=["extra_input", "two_outputs"])
def test_node_arity_refused(lib, op, extra_in, outs):
    attrs = {"num_hash": 6, "hash_code_len": 4} if op == "FastHash" else {"hash_code_len": 4}
    model = _node_model(op, extra_in, outs, **attrs)
    msg = expect_error(lambda: _session(lib, model), op)
    assert ("input size" in msg) if extra_in else ("output size" in msg or "expects 1 output" in msg), msg


def _type_refused(lib, op, inputs, out_elem, attrs):
    """Session creation must refuse the element type, naming the input and 'type'; returns the message."""
    model = _model(op, inputs, out_elem, **attrs)
    try:
        _session(lib, model)
    except Exception as e:  # noqa: BLE001 - ORT raises several pybind exception types
        msg = str(e)
        bad = [n for (n, t, _), (_, t0, _) in zip(inputs, FH_INPUTS if op == "FastHash" else LSH_INPUTS) if t != t0]
        assert "type" in msg.lower() and all(f"({n})" in msg or f"'{n}'" in msg for n in bad), msg
        return msg
    raise AssertionError(
        f"{op} accepted {[(n, t) for n, t, _ in inputs]} on the CPU: the CPU kernels are float32 only. If float16 "
        "CPU kernels were added, replace this test with a correctness test (see tests/modeling/test_fp16.py)")


FH_WRONG_TYPES = {
    "x_int32": [("x", I32, 4), ("mask", I32, 2), ("signs", F32, 4)],
    "x_int64": [("x", I64, 4), ("mask", I32, 2), ("signs", F32, 4)],
    "mask_float": [("x", F32, 4), ("mask", F32, 2), ("signs", F32, 4)],
    "mask_bool": [("x", F32, 4), ("mask", BOOL, 2), ("signs", F32, 4)],
    "mask_int8": [("x", F32, 4), ("mask", I8, 2), ("signs", F32, 4)],
    "signs_int32": [("x", F32, 4), ("mask", I32, 2), ("signs", I32, 4)],
    "signs_float16": [("x", F32, 4), ("mask", I32, 2), ("signs", F16, 4)],
    "all_double": [("x", F64, 4), ("mask", F64, 2), ("signs", F64, 4)],
}


@pytest.mark.parametrize("case", sorted(FH_WRONG_TYPES))
def test_fast_hash_wrong_element_types_refused(lib, case):
    model = _model("FastHash", FH_WRONG_TYPES[case], I32, num_hash=6, hash_code_len=4)
    msg = expect_error(lambda: _session(lib, model), "FastHash")
    bad = [n for (n, t, _), (_, t0, _) in zip(FH_WRONG_TYPES[case], FH_INPUTS) if t != t0]
    assert "type" in msg.lower() and f"({bad[0]})" in msg, msg


def test_fast_hash_float16_x_refused_on_cpu(lib):
    """OPS.md allows float16 x; the CPU kernels are float32 only, so the CPU session must refuse it."""
    inputs = [("x", F16, 4), ("mask", I32, 2), ("signs", F32, 4)]
    msg = _type_refused(lib, "FastHash", inputs, I32, {"num_hash": 6, "hash_code_len": 4})
    assert "float16" in msg, msg


# ------------------------------------------------------------------------------------------------
# LSHCumulation
# ------------------------------------------------------------------------------------------------


def _set(name, index, value):
    return lambda f: f[name].__setitem__(index, value)


LSH_BAD_EXTRA = {
    # name: (hash_code_len of the node, feeds modifier, expected fragments); feeds from lsh_feeds()
    "qc_rank0": (4, lambda f: f.update(query_codes=np.array(0, np.int32)), ["'query_codes'", "got rank 0"]),
    "qc_rank2": (4, lambda f: f.update(query_codes=f["query_codes"].reshape(12, 8)), ["'query_codes'", "got rank 2"]),
    "kc_rank1": (4, lambda f: f.update(key_codes=f["key_codes"].reshape(-1)), ["'key_codes'", "got rank 1"]),
    "qm_rank0": (4, lambda f: f.update(query_mask=np.array(1, np.int32)), ["'query_mask'", "rank 2", "got rank 0"]),
    "km_rank3": (4, lambda f: f.update(key_mask=f["key_mask"][None]), ["'key_mask'", "got rank 3"]),
    "value_rank5": (4, lambda f: f.update(value=f["value"][None]), ["'value'", "rank 4", "got rank 5"]),
    "value_rank0": (4, lambda f: f.update(value=np.array(0.0, np.float32)), ["'value'", "got rank 0"]),
    "h_mismatch_value": (4, lambda f: f.update(value=f["value"][:, :1]), ["'value'", "[2,2,7,Dv]", "got [2,1,7,5]"]),
    "b_mismatch_key_mask": (4, lambda f: f.update(key_mask=np.ones((3, 7), np.int32)), ["'key_mask'", "[2,7]", "got [3,7]"]),
    "m_mismatch_query": (
        4, lambda f: f.update(query_codes=np.zeros((2, 2, 6, 5), np.int32)), ["'key_codes'", "[2,2,Sk,5]", "got [2,2,7,4]"]
    ),
    "m_zero_empty_batch": (
        4,
        lambda f: f.update(query_codes=np.zeros((0, 2, 6, 0), np.int32), key_codes=np.zeros((0, 2, 7, 0), np.int32),
                           query_mask=np.zeros((0, 6), np.int32), key_mask=np.zeros((0, 7), np.int32),
                           value=np.zeros((0, 2, 7, 5), np.float32)),
        ["'query_codes'", "m >= 1"],
    ),
    "b0_value_mismatch": (
        4,
        lambda f: f.update(query_codes=np.zeros((0, 2, 6, 4), np.int32), key_codes=np.zeros((0, 2, 7, 4), np.int32),
                           query_mask=np.zeros((0, 6), np.int32), key_mask=np.zeros((0, 7), np.int32),
                           value=np.zeros((0, 2, 8, 5), np.float32)),
        ["'value'", "got [0,2,8,5]"],
    ),
    "qc_int32_min": (4, _set("query_codes", (0, 0, 0, 0), INT32_MIN), ["'query_codes'", f"got {INT32_MIN}"]),
    "kc_int32_max": (4, _set("key_codes", (1, 1, 6, 3), INT32_MAX), ["'key_codes'", f"got {INT32_MAX}", "flat index 111"]),
    "tau30_code_2^30": (30, _set("key_codes", (0, 1, 2, 1), 1 << 30), ["'key_codes'", "[0, 1073741824)", "got 1073741824"]),
    "tau1_code_2": (1, _set("query_codes", (1, 0, 5, 2), 2), ["'query_codes'", "[0, 2)", "got 2"]),
    "qc_bad_on_masked_query": (
        4,
        lambda f: (f["query_mask"].__setitem__((1, 5), 0), f["query_codes"].__setitem__((1, 1, 5, 0), 99)),
        ["'query_codes'", "got 99"],
    ),
    "qm_int32_min": (4, _set("query_mask", (1, 5), INT32_MIN), ["'query_mask'", f"got {INT32_MIN}", "flat index 11"]),
    "km_int32_max": (4, _set("key_mask", (0, 3), INT32_MAX), ["'key_mask'", f"got {INT32_MAX}"]),
}


@pytest.mark.parametrize("case", sorted(LSH_BAD_EXTRA))
def test_lsh_cumulation_rejects_more(lib, case):
    tau, modify, needles = LSH_BAD_EXTRA[case]
    feeds = lsh_feeds(tau=min(tau, 4))  # codes in [0, 16): valid for every node tau >= 4
    if tau < 4:
        feeds["query_codes"] %= 1 << tau
        feeds["key_codes"] %= 1 << tau
    modify(feeds)
    feeds = {k: np.ascontiguousarray(v) if v.ndim else v for k, v in feeds.items()}  # (keeps rank 0)
    sess = lsh_session(lib, tau)
    expect_error(lambda: sess.run(None, feeds), "INVALID_ARGUMENT", "LSHCumulation", *needles)


def test_lsh_cumulation_code_boundaries_accepted(lib):
    """The largest legal codes (2^30 - 1 at tau = 30, 1 at tau = 1) are used, not refused."""
    for tau in (30, 1):
        f = lsh_feeds(tau=1)
        top = (1 << tau) - 1
        f["query_codes"][:] = top
        f["key_codes"][..., ::2] = top
        got = lsh_session(lib, tau).run(None, f)[0]
        want = ref_lsh(*_lsh_args(f), tau)
        assert np.abs(got - want).max() <= LSH_TOL, tau


def test_lsh_cumulation_accepts_empty_heads_and_width(lib):
    f = lsh_feeds()
    sess = lsh_session(lib, 4)
    out = sess.run(None, {**f, "query_codes": np.zeros((2, 0, 6, 4), np.int32),
                          "key_codes": np.zeros((2, 0, 7, 4), np.int32), "value": np.zeros((2, 0, 7, 5), np.float32)})[0]
    assert out.shape == (2, 0, 6, 5)
    out = sess.run(None, {**f, "value": np.zeros((2, 2, 7, 0), np.float32)})[0]
    assert out.shape == (2, 2, 6, 0) and out.dtype == np.float32


@pytest.mark.parametrize(
    "index,elem",
    [(0, F32), (0, TensorProto.INT16), (1, I64), (1, F32), (2, I64), (2, BOOL), (3, U8), (4, I32), (4, F64)],
    ids=["qc_float", "qc_int16", "kc_int64", "kc_float", "qm_int64", "qm_bool", "km_uint8", "value_int32",
         "value_double"],
)
def test_lsh_cumulation_wrong_element_types_refused(lib, index, elem):
    inputs = list(LSH_INPUTS)
    inputs[index] = (inputs[index][0], elem, inputs[index][2])
    model = _model("LSHCumulation", inputs, F32, hash_code_len=4)
    msg = expect_error(lambda: _session(lib, model), "LSHCumulation")
    assert "type" in msg.lower() and f"({inputs[index][0]})" in msg, msg


def test_lsh_cumulation_float16_value_refused_on_cpu(lib):
    inputs = LSH_INPUTS[:4] + [("value", F16, 4)]
    msg = _type_refused(lib, "LSHCumulation", inputs, F16, {"hash_code_len": 4})
    assert "float16" in msg, msg


@pytest.mark.parametrize(
    "tau,needles",
    [(2**32 + 4, [f"got {2**32 + 4}"]), (2**31, [f"got {2**31}"]), (-(2**63), [f"got {-(2**63)}"]),
     (4.0, ["not an int"]), ("4", ["not an int"])],
    ids=["2^32+4", "2^31", "int64_min", "float", "string"],
)
def test_lsh_cumulation_rejects_more_attributes(lib, tau, needles):
    model = _model("LSHCumulation", LSH_INPUTS, F32, hash_code_len=tau)
    expect_error(lambda: _session(lib, model), "LSHCumulation", "hash_code_len", *needles)


# ------------------------------------------------------------------------------------------------
# Huge sizes
# ------------------------------------------------------------------------------------------------


def _lsh_huge_width(sq: int, dv: int):
    """Sk = 0, so value [1,1,0,dv] is empty (no memory) while the output [1,1,sq,dv] is huge."""
    return {
        "query_codes": np.zeros((1, 1, sq, 2), np.int32),
        "key_codes": np.zeros((1, 1, 0, 2), np.int32),
        "query_mask": np.ones((1, sq), np.int32),
        "key_mask": np.ones((1, 0), np.int32),
        "value": np.zeros((1, 1, 0, dv), np.float32),
    }


@pytest.mark.parametrize("sq,dv", [(4, 2**60), (16, 2**60), (2**10, 2**53)])
def test_lsh_cumulation_output_size_overflow_refused(lib, sq, dv):
    # B*H*Sq*Dv*4 bytes >= 2^64: must be refused with a message, never wrapped into a small buffer.
    sess = lsh_session(lib, 4)
    expect_error(lambda: sess.run(None, _lsh_huge_width(sq, dv)), "INVALID_ARGUMENT", "LSHCumulation",
                 "would overflow a 64-bit size", f"{dv}")
    f = lsh_feeds()
    assert np.abs(sess.run(None, f)[0] - ref_lsh(*_lsh_args(f), 4)).max() <= LSH_TOL  # still usable


def _overcommit_always() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1"
    except OSError:
        return False


def test_lsh_cumulation_huge_output_allocation_failure(lib):
    # 256 TiB output (2^46 floats): fits int64, but exceeds x86-64's 128 TiB user address space, so
    # no allocator can succeed (whatever vm.overcommit_memory says) -> an ORT error naming the op.
    sess = lsh_session(lib, 4)
    expect_error(lambda: sess.run(None, _lsh_huge_width(1, 2**46)), "LSHCumulation")
    f = lsh_feeds()
    assert np.abs(sess.run(None, f)[0] - ref_lsh(*_lsh_args(f), 4)).max() <= LSH_TOL


def test_fast_hash_huge_output_allocation_failure(lib):
    # 2^18 tokens x 2^21 codes x 4 bytes = 2 TiB of codes from 27 MiB of inputs (FastHash's inputs
    # bound its output well below the address space, so this relies on the allocator refusing).
    if _overcommit_always():
        pytest.skip("vm.overcommit_memory=1: a 2 TiB allocation would succeed and be written (OOM)")
    m, s = 2**21, 2**18
    sess = _session(lib, _model("FastHash", FH_INPUTS, I32, num_hash=m, hash_code_len=1))
    feeds = {"x": np.ones((1, 1, s, 1), np.float32), "mask": np.ones((1, s), np.int32),
             "signs": np.ones((1, 3, m, 1), np.float32)}
    expect_error(lambda: sess.run(None, feeds), "FastHash")
    feeds = {"x": np.ones((1, 1, 3, 1), np.float32), "mask": np.ones((1, 3), np.int32),
             "signs": np.ones((1, 3, m, 1), np.float32)}
    got = sess.run(None, feeds)[0]
    assert got.shape == (1, 1, 3, m) and (got == 1).all()  # x = +1, all signs +1, D = 1: bit set


# ------------------------------------------------------------------------------------------------
# The validation helpers themselves (C++), with dims ONNX Runtime cannot represent
# ------------------------------------------------------------------------------------------------


def _clean_env():
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # the sanitizer run preloads libasan into python, not into g++
    return env


def test_validation_helpers_cpp(tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    assert cxx, "a C++ compiler (g++ or $CXX) is required to test plugins/common/yoso_validate.h"
    src = REPO / "tests" / "native" / "validation_test.cc"
    inc = REPO / "plugins" / "common"
    flags = ["-std=c++17", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-fno-omit-frame-pointer"]
    key = hashlib.sha256()
    for p in [src, *sorted(inc.glob("*.h"))]:
        key.update(p.name.encode() + p.read_bytes())
    key.update(" ".join([cxx, *flags]).encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yoso-deploy" / "native-tests"
    exe = cache / f"validation_test-{key.hexdigest()[:16]}"
    if not exe.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp_exe = tmp_path / "validation_test"
        r = subprocess.run([cxx, *flags, f"-I{inc}", str(src), "-o", str(tmp_exe)], capture_output=True,
                           text=True, env=_clean_env(), timeout=300)
        assert r.returncode == 0, f"compiling {src} failed:\n{r.stderr[-4000:]}"
        os.replace(shutil.copy2(tmp_exe, cache / f".{exe.name}.{os.getpid()}"), exe)
    r = subprocess.run([str(exe)], capture_output=True, text=True, env=_clean_env(), timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"validation_test failed (rc {r.returncode}):\n{out[-4000:]}"
    assert "runtime error" not in out and "AddressSanitizer" not in out, out[-4000:]
    assert "ALL OK" in out, out[-2000:]
    print(out.strip().splitlines()[-1])
