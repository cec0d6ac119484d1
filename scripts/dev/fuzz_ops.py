#!/usr/bin/env python3
"""Fuzz the com.yoso ops of libyoso_ort.so against the PyTorch reference (issue 8).

Two fuzzers; tests/plugins/test_fuzz_ops.py runs both briefly in CI, this script runs them for longer.

``valid``
    Well-formed random cases: B 0-3, H 1-3, Sq 0-40, Sk 0-40, D a power of two 1-128,
    tau 1..min(D, 16), m 1-40, Dv 1-70, random 0/1 masks (any pattern, all-0 and all-1 rows
    included), data of three kinds (normal; small integers with many exact zeros; a wide dynamic
    range). FastHash codes of queries and keys must be bit-identical to
    ``yoso_deploy.modeling.ops.fast_hash``; LSHCumulation on those codes must match
    ``ops.lsh_cumulation`` to ``1e-5 * max|value|``. Driven by hypothesis (``--iterations`` examples,
    ``--seed``); sessions are cached per attribute set.

``malformed``
    Random mutations (1-3 per case) of small valid cases: ranks 0-6, dims changed to 0 / 1 /
    random / not a power of two / mismatched between inputs, element types of the graph inputs,
    attribute values (negative, 0, 31, 2^31, 2^32 + 4, int64 extremes, missing, float or string
    typed), NaN and +-inf data, signs other than +-1, masks other than 0/1, codes outside
    [0, 2^tau), empty batches with huge other dims, and (unless ``--no-huge``) outputs too large to
    allocate or to index. Every case must end either in an ONNX Runtime error whose message names
    the op or the offending input, or in a result equal to the reference (for inputs the contract
    allows). A crash ends the process with a signal: run it in a subprocess (the test does) or
    watch the exit status. With ``--verbose`` each case is printed before it runs, so the last
    line of a crashed run names the culprit.

Usage::

    python scripts/dev/fuzz_ops.py                                  # both, 2000 cases each, seed 0
    python scripts/dev/fuzz_ops.py --mode malformed --iterations 100000 --seed 7
    python scripts/dev/fuzz_ops.py --mode valid --iterations 5000 --seed 3
    # under the sanitizers (build as in tests/plugins/test_sanitizers.py; ASan's operator new aborts on
    # the > 1 TiB requests of the huge-output mutations instead of throwing, hence --no-huge):
    YOSO_ORT_LIBRARY=$ASAN_BUILD/plugins/libyoso_ort.so \\
    LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)" \\
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 python scripts/dev/fuzz_ops.py --no-huge

Exit status: 0 when every case passed; 1 at the first mismatch, unexplained error or
accepted-but-invalid input (the case is printed); death by signal on a crash. The last line of a
successful run is a summary (``fuzz_ops malformed: N cases, R refused, A accepted ...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from yoso_deploy import ort_library_path
from yoso_deploy.modeling import ops

F32, F16, F64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE
I32, I64, I8, U8, BOOL = TensorProto.INT32, TensorProto.INT64, TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL
NP = {F32: np.float32, F16: np.float16, F64: np.float64, I32: np.int32, I64: np.int64, I8: np.int8,
      U8: np.uint8, BOOL: np.bool_}
FH_INPUTS = [("x", F32), ("mask", I32), ("signs", F32)]
LSH_INPUTS = [("query_codes", I32), ("key_codes", I32), ("query_mask", I32), ("key_mask", I32), ("value", F32)]
INPUTS = {"FastHash": FH_INPUTS, "LSHCumulation": LSH_INPUTS}
OUT_ELEM = {"FastHash": I32, "LSHCumulation": F32}
LSH_REL_TOL = 1e-5
INT32_MIN, INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)


# ------------------------------------------------------------------------------------------------
# Graphs and sessions
# ------------------------------------------------------------------------------------------------


def one_node_model(op: str, inputs: list[tuple[str, int]], attrs: dict) -> bytes:
    """A graph with one com.yoso node; graph inputs have no declared rank (the op sees any rank). The
    output is declared with the type the op gives it (LSHCumulation: value's), as a well-formed graph
    does: the ops' shape inference tells ONNX Runtime that type, and a graph that contradicts it is
    refused by ONNX Runtime's own type check before our kernels are involved."""
    node = helper.make_node(op, [n for n, _ in inputs], ["out"], domain=ops.OP_DOMAIN, **attrs)
    out_elem = dict(inputs).get("value", F32) if op == "LSHCumulation" else OUT_ELEM[op]
    graph = helper.make_graph(
        [node], f"fuzz_{op}", [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
        [helper.make_tensor_value_info("out", out_elem, None)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.OP_DOMAIN, ops.OP_VERSION)]
    )
    model.ir_version = 8
    return model.SerializeToString()


class Sessions:
    """Sessions keyed by (op, input element types, attributes); bounded so long runs stay small."""

    def __init__(self, lib: str | None = None, threads: int = 2, limit: int = 64):
        self.lib = lib or str(ort_library_path())
        self.threads = threads
        self.limit = limit
        self.cache: dict = {}
        self.created = 0

    def get(self, op: str, inputs: list[tuple[str, int]], attrs: dict):
        key = (op, tuple(inputs), tuple(sorted((k, repr(v)) for k, v in attrs.items())))
        sess = self.cache.get(key)
        if sess is None:
            so = ort.SessionOptions()
            so.register_custom_ops_library(self.lib)
            so.intra_op_num_threads = self.threads
            so.log_severity_level = 4
            sess = ort.InferenceSession(one_node_model(op, inputs, attrs), so, providers=["CPUExecutionProvider"])
            self.created += 1
            if len(self.cache) >= self.limit:
                self.cache.clear()
            self.cache[key] = sess
        return sess


# ------------------------------------------------------------------------------------------------
# Valid cases: library == reference
# ------------------------------------------------------------------------------------------------

KINDS = ("normal", "ties", "scaled")
MASKS = ("random", "right_pad", "ones", "zeros")


@dataclasses.dataclass(frozen=True)
class ValidCase:
    b: int
    h: int
    sq: int
    sk: int
    d: int
    tau: int
    m: int
    dv: int
    kind: str
    masks: str
    seed: int


def valid_cases():
    """The hypothesis strategy of :class:`ValidCase` (ranges of the module docstring)."""
    from hypothesis import strategies as st

    @st.composite
    def case(draw):
        d = 1 << draw(st.integers(0, 7))
        return ValidCase(
            b=draw(st.integers(0, 3)), h=draw(st.integers(1, 3)), sq=draw(st.integers(0, 40)),
            sk=draw(st.integers(0, 40)), d=d, tau=draw(st.integers(1, min(d, 16))), m=draw(st.integers(1, 40)),
            dv=draw(st.integers(1, 70)), kind=draw(st.sampled_from(KINDS)), masks=draw(st.sampled_from(MASKS)),
            seed=draw(st.integers(0, 2**32 - 1)),
        )

    return case()


def _data(shape, kind, rng):
    if kind == "ties":
        return rng.integers(-1, 2, size=shape).astype(np.float32)
    x = rng.standard_normal(shape)
    if kind == "scaled":
        x = x * 10.0 ** rng.integers(-8, 8, size=shape)
    return x.astype(np.float32)


def _mask(b, s, mode, rng):
    if mode == "ones":
        return np.ones((b, s), np.int32)
    if mode == "zeros":
        return np.zeros((b, s), np.int32)
    if mode == "right_pad":
        mask = np.ones((b, s), np.int32)
        for i in range(b):
            mask[i, rng.integers(0, s + 1):] = 0
        return mask
    return rng.integers(0, 2, size=(b, s)).astype(np.int32)


def check_valid(case: ValidCase, sessions: Sessions) -> dict:
    """Runs one valid case through the library and the reference; raises AssertionError on a mismatch."""
    rng = np.random.default_rng(case.seed)
    gen = torch.Generator().manual_seed(case.seed)
    b, h, d, m, tau = case.b, case.h, case.d, case.m, case.tau
    xq, xk = _data((b, h, case.sq, d), case.kind, rng), _data((b, h, case.sk, d), case.kind, rng)
    mq, mk = _mask(b, case.sq, case.masks, rng), _mask(b, case.sk, case.masks, rng)
    signs = ops.draw_signs(h, m, tau, d, generator=gen).numpy()
    scale = float(10.0 ** rng.integers(-3, 4))
    value = (rng.standard_normal((b, h, case.sk, case.dv)) * scale).astype(np.float32)

    fh = sessions.get("FastHash", FH_INPUTS, {"num_hash": m, "hash_code_len": tau})
    codes = []
    for x, mask in ((xq, mq), (xk, mk)):
        got = fh.run(None, {"x": x, "mask": mask, "signs": signs})[0]
        want = ops.fast_hash(torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(signs), m, tau).numpy()
        assert got.dtype == np.int32 and got.shape == want.shape, (got.dtype, got.shape, want.shape, case)
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)
            raise AssertionError(f"FastHash codes differ at {len(bad)} positions, first {bad[0].tolist()}: "
                                 f"lib {got[tuple(bad[0])]} ref {want[tuple(bad[0])]} ({case})")
        codes.append(got)

    lsh = sessions.get("LSHCumulation", LSH_INPUTS, {"hash_code_len": tau})
    got = lsh.run(None, {"query_codes": codes[0], "key_codes": codes[1], "query_mask": mq, "key_mask": mk,
                         "value": value})[0]
    t = torch.from_numpy
    want = ops.lsh_cumulation(t(codes[0]), t(codes[1]), t(mq), t(mk), t(value), tau).numpy()
    assert got.dtype == np.float32 and got.shape == want.shape == (b, h, case.sq, case.dv), (got.shape, case)
    err = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
    vmax = float(np.abs(value).max(initial=0.0))
    assert err <= LSH_REL_TOL * vmax, f"LSHCumulation max abs err {err:.3g} > {LSH_REL_TOL} * {vmax:.3g} ({case})"
    assert (got.transpose(0, 2, 1, 3)[mq == 0] == 0).all(), f"masked queries not zero ({case})"
    return {"err": err / vmax if vmax else 0.0}


def run_valid(iterations: int, seed: int | None, sessions: Sessions, log=print) -> dict:
    """``iterations`` hypothesis examples of :func:`check_valid` (``seed`` None: derandomized)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    stats = Counter()
    worst = [0.0]

    @settings(max_examples=iterations, deadline=None, derandomize=seed is None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(valid_cases())
    def prop(case):
        res = check_valid(case, sessions)
        stats["cases"] += 1
        stats["empty"] += int(case.b == 0 or case.sq == 0 or case.sk == 0)
        worst[0] = max(worst[0], res["err"])

    if seed is not None:
        prop = hseed(seed)(prop)
    t0 = time.perf_counter()
    prop()
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    stats["worst_rel_err"] = worst[0]
    log(f"fuzz_ops valid: {stats['cases']} cases ({stats['empty']} with an empty dim), "
        f"worst LSHCumulation error {worst[0]:.2e} x max|value|, {sessions.created} sessions, {stats['seconds']}s")
    return dict(stats)


# ------------------------------------------------------------------------------------------------
# Malformed cases: an error naming the op/input, or a correct result; never a crash
# ------------------------------------------------------------------------------------------------

ATTR_VALUES = [-(2**63), -(2**40), -1, 0, 1, 2, 29, 30, 31, 2**31 - 1, 2**31, 2**32 + 4, 2**63 - 1, None, 4.0, "x"]
CODE_VALUES = [-1, INT32_MIN, INT32_MAX, 1 << 30]
MASK_VALUES = [2, -1, 255, INT32_MIN, INT32_MAX]
SIGN_VALUES = [0.0, -0.0, 0.5, 2.0, -3.0, np.nan, np.inf, -np.inf, float(np.nextafter(np.float32(1), np.float32(2)))]
ELEM_TYPES = [F32, F16, F64, I32, I64, I8, U8, BOOL]


@dataclasses.dataclass
class Case:
    op: str
    attrs: dict
    arrays: dict  # name -> np.ndarray (already of the declared element type)
    elems: dict  # name -> onnx element type declared for the graph input
    notes: list

    def describe(self) -> str:
        shapes = ", ".join(f"{n}{list(a.shape)}:{np.dtype(a.dtype).name}" for n, a in self.arrays.items())
        return f"{self.op} attrs={self.attrs} {shapes} mutations={self.notes}"


def _base_case(rng) -> Case:
    op = "FastHash" if rng.random() < 0.5 else "LSHCumulation"
    b, h = int(rng.integers(0, 3)), int(rng.integers(1, 3))
    if op == "FastHash":
        d = 1 << int(rng.integers(0, 6))
        tau = int(rng.integers(1, min(d, 8) + 1))
        m = int(rng.integers(1, 12))
        s = int(rng.integers(0, 10))
        arrays = {"x": _data((b, h, s, d), "normal", rng), "mask": _mask(b, s, "random", rng),
                  "signs": ops.draw_signs(h, m, tau, d, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30)))).numpy()}
        attrs = {"num_hash": m, "hash_code_len": tau}
    else:
        tau = int(rng.integers(1, 31))
        m, sq, sk, dv = int(rng.integers(1, 6)), int(rng.integers(0, 9)), int(rng.integers(0, 9)), int(rng.integers(1, 9))
        hi = 1 << min(tau, 3) if rng.random() < 0.5 else 1 << tau  # few buckets: many collisions
        arrays = {
            "query_codes": rng.integers(0, hi, size=(b, h, sq, m)).astype(np.int32),
            "key_codes": rng.integers(0, hi, size=(b, h, sk, m)).astype(np.int32),
            "query_mask": _mask(b, sq, "random", rng), "key_mask": _mask(b, sk, "random", rng),
            "value": rng.standard_normal((b, h, sk, dv)).astype(np.float32),
        }
        attrs = {"hash_code_len": tau}
    return Case(op, attrs, arrays, dict(INPUTS[op]), [])


def _regen(name: str, shape, case: Case, rng):
    """A fresh array for input `name` with `shape`, values valid for its role."""
    shape = tuple(shape)
    if 0 in shape or int(np.prod(shape, dtype=np.float64)) > 1 << 18:
        # Empty, or too large to materialise: keep the (huge) dims but make the tensor empty.
        shape = (0,) + shape[1:] if 0 not in shape else shape
        return np.zeros(shape, np.float32 if name in ("x", "signs", "value") else np.int32)
    if name in ("x", "value"):
        return np.asarray(rng.standard_normal(shape), np.float32)  # (asarray: rank 0 stays an array)
    if name == "signs":
        return np.asarray(rng.integers(0, 2, size=shape) * 2 - 1, np.float32)
    if name.endswith("mask"):
        return np.asarray(rng.integers(0, 2, size=shape), np.int32)
    tau = case.attrs.get("hash_code_len")
    hi = 1 << min(tau, 30) if isinstance(tau, int) and 1 <= tau <= 30 else 4
    return np.asarray(rng.integers(0, hi, size=shape), np.int32)


def overcommit_always() -> bool:
    """vm.overcommit_memory = 1: any allocation "succeeds", so a TiB-sized output would be written
    (and the machine run out of memory) instead of being refused by the allocator."""
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _mutate(case: Case, rng, huge: bool) -> None:
    names = list(case.arrays)
    kinds = ["rank", "dim", "dim", "elem", "attr", "attr", "nonfinite", "values", "values", "empty_huge"]
    kind = "huge_output" if huge and rng.random() < 0.01 else rng.choice(kinds)
    name = str(rng.choice(names))
    a = case.arrays[name]
    if kind == "rank":
        r = int(rng.integers(0, 7))
        shape = list(a.shape[:r]) + [int(rng.integers(1, 4)) for _ in range(max(0, r - a.ndim))]
        case.arrays[name] = _regen(name, tuple(shape), case, rng)
        case.notes.append(f"rank {name}->{r}")
    elif kind == "dim" and a.ndim:
        axis = int(rng.integers(a.ndim))
        shape = list(a.shape)
        shape[axis] = int(rng.choice([0, 1, 3, 5, 12, 33, 1000, 2048, shape[axis] + 1, max(0, shape[axis] - 1)]))
        case.arrays[name] = _regen(name, tuple(shape), case, rng)
        case.notes.append(f"dim {name}[{axis}]->{shape[axis]}")
    elif kind == "elem":
        elem = int(rng.choice(ELEM_TYPES))
        case.elems[name] = elem
        case.notes.append(f"elem {name}->{TensorProto.DataType.Name(elem)}")
    elif kind == "attr":
        attr = str(rng.choice(list(case.attrs) + ["num_hash", "hash_code_len"]))
        val = ATTR_VALUES[int(rng.integers(len(ATTR_VALUES)))]
        if val is None:
            case.attrs.pop(attr, None)
        else:
            case.attrs[attr] = val
        case.notes.append(f"attr {attr}={val!r}")
    elif kind == "nonfinite":
        target = "x" if case.op == "FastHash" else "value"
        arr = case.arrays[target]
        if arr.size:
            flat = arr.reshape(-1).copy()
            idx = rng.integers(0, flat.size, size=int(rng.integers(1, 4)))
            flat[idx] = rng.choice([np.nan, np.inf, -np.inf], size=idx.size)
            case.arrays[target] = flat.reshape(arr.shape)
        case.notes.append(f"nonfinite {target}")
    elif kind == "values":
        pools = {"signs": SIGN_VALUES, "query_codes": CODE_VALUES, "key_codes": CODE_VALUES}
        target = str(rng.choice([n for n in names if n in pools or n.endswith("mask")]))
        pool = pools.get(target, MASK_VALUES)
        arr = case.arrays[target]
        if arr.size:
            flat = arr.reshape(-1).copy()
            i = int(rng.integers(flat.size))
            v = pool[int(rng.integers(len(pool)))]
            tau = case.attrs.get("hash_code_len")
            if target.endswith("codes") and rng.random() < 0.5 and isinstance(tau, int) and 1 <= tau <= 30:
                v = (1 << tau) - int(rng.integers(0, 2))  # at / just inside the boundary
            flat[i] = v
            case.arrays[target] = flat.reshape(arr.shape)
            case.notes.append(f"value {target}[{i}]={v!r}")
    elif kind == "empty_huge":
        # Empty tensors whose other dims are huge (up to 2^40): no memory, huge declared sizes; the
        # output stays empty (batch 0, or no queries), so nothing large may be allocated.
        big = int(1 << int(rng.integers(20, 41)))
        if case.op == "FastHash":
            x = case.arrays["x"]
            h = x.shape[1] if x.ndim > 1 else 1
            d = x.shape[-1] if x.ndim else 1
            case.arrays["x"] = np.zeros((0, h, big, d), np.float32)
            case.arrays["mask"] = np.zeros((0, big), np.int32)
        else:
            m = case.arrays["query_codes"].shape[-1] if case.arrays["query_codes"].ndim else 1
            if rng.random() < 0.5:  # batch 0; H, Sq, Sk, Dv up to 2^15 each
                h, sq, sk, dv = (int(1 << int(rng.integers(0, 16))) for _ in range(4))
                b, big = 0, max(h, sq, sk, dv)
            else:  # no queries and no keys; m and Dv huge
                b, h, sq, sk, dv, m = 1, 1, 0, 0, big, int(1 << int(rng.integers(0, 21)))
            case.arrays.update(
                query_codes=np.zeros((b, h, sq, m), np.int32), key_codes=np.zeros((b, h, sk, m), np.int32),
                query_mask=np.zeros((b, sq), np.int32), key_mask=np.zeros((b, sk), np.int32),
                value=np.zeros((b, h, sk, dv), np.float32))
        case.notes.append(f"empty_huge {big}")
    elif kind == "huge_output":
        if case.op == "LSHCumulation":  # Sk = 0: Dv free; output Sq * Dv floats: >= 2^48 bytes
            dv = int(1 << int(rng.integers(46, 61)))  # (past x86-64's address space) or int64 overflow
            sq = int(rng.integers(1, 9))
            case.arrays.update(
                query_codes=np.zeros((1, 1, sq, 2), np.int32), key_codes=np.zeros((1, 1, 0, 2), np.int32),
                query_mask=np.ones((1, sq), np.int32), key_mask=np.zeros((1, 0), np.int32),
                value=np.zeros((1, 1, 0, dv), np.float32))
            case.notes.append(f"huge_output Sq={sq} Dv=2^{dv.bit_length() - 1}")
        else:  # 2^18 tokens x 2^21 codes: 2 TiB of codes from 27 MiB of inputs (only when the
            # allocator refuses it: see overcommit_always)
            m, s = 2**21, 2**18
            case.attrs.update(num_hash=m, hash_code_len=1)
            case.arrays.update(x=np.ones((1, 1, s, 1), np.float32), mask=np.ones((1, s), np.int32),
                               signs=np.ones((1, 3, m, 1), np.float32))
            case.notes.append("huge_output 2 TiB codes")


def output_bytes(case: Case) -> int:
    """Upper bound of the output the library would allocate if it accepted the case (0 when the
    ranks are wrong, since the library then refuses before allocating)."""
    a = case.arrays
    if case.op == "FastHash":
        m = case.attrs.get("num_hash")
        if a["x"].ndim != 4 or not isinstance(m, int) or m < 0:
            return 0
        return 4 * int(np.prod(a["x"].shape[:3], dtype=object)) * m
    if a["query_codes"].ndim != 4 or a["value"].ndim != 4:
        return 0
    return 4 * int(np.prod(a["query_codes"].shape[:3], dtype=object)) * int(a["value"].shape[3])


# Outputs between these sizes could really be allocated (and written) on a big machine: cases that
# would need one are redrawn. Above 2^48 bytes (x86-64 user space is 2^47) no allocator can succeed.
OUTPUT_BUDGET = 1 << 26
IMPOSSIBLE_BYTES = 1 << 48


def _contract_allows(case: Case) -> str:
    """'' when the inputs satisfy OPS.md (so the library must compute them), else the first violation."""
    a, at = case.arrays, case.attrs
    if any(case.elems[n] != e for n, e in INPUTS[case.op]):
        return "element type"
    tau = at.get("hash_code_len")
    if not isinstance(tau, int) or isinstance(tau, bool) or not 1 <= tau <= 30:
        return "hash_code_len"
    if case.op == "FastHash":
        m = at.get("num_hash")
        if not isinstance(m, int) or not 1 <= m < 2**31:
            return "num_hash"
        x, mask, signs = a["x"], a["mask"], a["signs"]
        if x.ndim != 4 or mask.ndim != 2 or signs.ndim != 4:
            return "rank"
        b, h, s, d = x.shape
        if not ops.is_power_of_two(d) or d > 1024 or tau > d:
            return "D"
        if mask.shape != (b, s) or signs.shape != (h, 3, ops.num_parts(m, d, tau), d):
            return "shape"
        if not np.isin(mask, (0, 1)).all() or not np.isin(signs, (1.0, -1.0)).all():
            return "values"
        return ""
    qc, kc, qm, km, v = (a[n] for n, _ in LSH_INPUTS)
    if not (qc.ndim == kc.ndim == v.ndim == 4 and qm.ndim == km.ndim == 2):
        return "rank"
    b, h, sq, m = qc.shape
    sk = kc.shape[2]
    if m < 1 or kc.shape != (b, h, sk, m) or v.shape[:3] != (b, h, sk) or qm.shape != (b, sq) or km.shape != (b, sk):
        return "shape"
    for c in (qc, kc):
        if c.size and (c.min() < 0 or c.max() >= (1 << tau)):
            return "codes"
    if not np.isin(qm, (0, 1)).all() or not np.isin(km, (0, 1)).all():
        return "values"
    return ""


def _reference(case: Case):
    a, t = case.arrays, torch.from_numpy
    if case.op == "FastHash":
        return ops.fast_hash(t(a["x"].astype(np.float32)), t(a["mask"]), t(a["signs"]),
                             case.attrs["num_hash"], case.attrs["hash_code_len"]).numpy()
    args = [t(a[n]) for n, _ in LSH_INPUTS]
    args[4] = args[4].float()
    return ops.lsh_cumulation(*args, case.attrs["hash_code_len"]).numpy()


def check_malformed(case: Case, sessions: Sessions) -> str:
    """Runs one case; returns 'refused:<stage>' or 'accepted'; raises AssertionError on a failure."""
    inputs = [(n, case.elems[n]) for n, _ in INPUTS[case.op]]
    with np.errstate(all="ignore"):  # NaN/inf cast to an integer type on purpose
        feeds = {n: np.asarray(case.arrays[n]).astype(NP[case.elems[n]], copy=False) for n, _ in inputs}
    # The op's name, or an input/attribute named the way the messages quote it ('x' / (x)).
    names = [case.op] + [q.format(n) for n, _ in inputs for q in ("'{}'", "({})")] + ["'num_hash'", "'hash_code_len'"]
    stage = "session"
    try:
        sess = sessions.get(case.op, inputs, case.attrs)
        stage = "run"
        got = sess.run(None, feeds)[0]
    except Exception as e:  # noqa: BLE001 - classify below
        msg = str(e)
        if type(e).__module__.split(".")[0] != "onnxruntime":
            raise AssertionError(f"not an ONNX Runtime error at {stage}: {type(e).__name__}: {msg[:500]}") from e
        if not any(n in msg for n in names):
            raise AssertionError(f"error at {stage} names neither the op nor an input: {msg[:500]}") from e
        return f"refused:{stage}"
    why = _contract_allows(case)
    if why:
        raise AssertionError(f"the library accepted inputs the contract forbids ({why}); output {got.shape}")
    want = _reference(case)
    assert got.shape == want.shape, f"shape {got.shape} != reference {want.shape}"
    if case.op == "FastHash":
        assert np.array_equal(got, want), f"FastHash codes differ from the reference in {(got != want).sum()} places"
    else:
        v = case.arrays["value"]
        finite = np.abs(v[np.isfinite(v)]).max(initial=0.0)
        np.testing.assert_allclose(got, want, rtol=0, atol=LSH_REL_TOL * float(finite), equal_nan=True)
    return "accepted"


def run_malformed(iterations: int, seed: int, sessions: Sessions, huge: bool = True, verbose: bool = False,
                  log=print) -> dict:
    rng = np.random.default_rng(seed)
    stats: Counter = Counter()
    t0 = time.perf_counter()
    for i in range(iterations):
        for _attempt in range(20):
            case = _base_case(rng)
            for _ in range(int(rng.integers(1, 4))):
                _mutate(case, rng, huge)
            size = output_bytes(case)
            if size <= OUTPUT_BUDGET or size >= IMPOSSIBLE_BYTES or "huge_output 2 TiB codes" in case.notes:
                break
        else:
            case = _base_case(rng)
            case.notes.append("(20 redraws over the output budget)")
        if verbose:
            print(f"[{i}] {case.describe()}", flush=True)
        try:
            outcome = check_malformed(case, sessions)
        except AssertionError as e:
            raise AssertionError(f"case {i} (seed {seed}): {case.describe()}\n  {e}") from None
        stats[outcome] += 1
        stats[f"op:{case.op}"] += 1
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    refused = sum(v for k, v in stats.items() if k.startswith("refused"))
    log(f"fuzz_ops malformed: {iterations} cases (seed {seed}), {refused} refused "
        f"({stats['refused:session']} at session creation, {stats['refused:run']} at run), "
        f"{stats['accepted']} accepted and equal to the reference, 0 failures, {stats['seconds']}s")
    return dict(stats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["valid", "malformed", "both"], default="both")
    p.add_argument("--iterations", type=int, default=2000, help="cases per fuzzer (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--library", default=None, help="libyoso_ort.so to test (default: yoso_deploy.ort_library_path())")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads per session (default 2)")
    p.add_argument("--no-huge", action="store_true", help="skip the > 1 TiB output mutations (needed under ASan)")
    p.add_argument("--verbose", action="store_true", help="print every malformed case before running it")
    args = p.parse_args(argv)
    if args.iterations < 1:
        p.error("--iterations must be >= 1")
    ort.set_default_logger_severity(4)
    torch.set_num_threads(1)  # the reference's index_add_ is ~15x slower with contended threads
    huge = not args.no_huge
    if huge and overcommit_always():
        print("fuzz_ops: vm.overcommit_memory=1, huge-output mutations disabled (a TiB output would be "
              "allocated and written)", file=sys.stderr)
        huge = False
    sessions = Sessions(args.library, threads=args.threads)
    try:
        if args.mode in ("valid", "both"):
            run_valid(args.iterations, args.seed, sessions)
        if args.mode in ("malformed", "both"):
            run_malformed(args.iterations, args.seed, sessions, huge=huge, verbose=args.verbose)
    except AssertionError as e:
        print(f"FUZZ FAILURE: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
