"""Op-level tests of libyoso_ort.so (com.yoso::FastHash / LSHCumulation, CPU execution provider).

Every test drives the compiled library through a tiny hand-made ONNX graph and compares it with
the PyTorch reference in ``yoso_deploy.modeling.ops``: FastHash codes must be bit-identical,
LSHCumulation outputs equal to rounding. Malformed inputs must be rejected with an ONNX Runtime
error that names the problem, without crashing the process.

The library is located with ``yoso_deploy.ort_library_path()`` (``$YOSO_ORT_LIBRARY`` first); a
missing library is a test failure (the package build must produce it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import onnxruntime as ort
from onnx import TensorProto, helper

from yoso_deploy import ort_library_path
from yoso_deploy.modeling import ops

F32, I32, F64, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.DOUBLE, TensorProto.INT64
NP = {F32: np.float32, I32: np.int32, F64: np.float64, I64: np.int64}

LSH_TOL = 1e-5


# ------------------------------------------------------------------------------------------------
# Library, graphs and sessions
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lib() -> str:
    return str(ort_library_path())  # raises LibraryNotFoundError (a failure) when not built


def _value_info(name: str, elem: int, rank: int | None):
    # Dynamic dims (the shapes are runtime inputs of the op); rank None leaves even the rank open
    # so that the op itself, not ONNX Runtime's feed check, sees inputs of the wrong rank.
    if rank is None:
        return helper.make_tensor_value_info(name, elem, None)
    return helper.make_tensor_value_info(name, elem, [f"{name}_{i}" for i in range(rank)])


def _model(op: str, inputs, out_elem: int, out_rank: int = 4, **attrs):
    """A one-node graph. inputs: [(name, elem_type, rank)]; a name of "" leaves the slot empty.

    Graph inputs are declared without a rank (see _value_info); the ranks only document intent.
    """
    node = helper.make_node(
        op, [n for n, _, _ in inputs], ["out"], domain=ops.OP_DOMAIN, **attrs
    )
    graph = helper.make_graph(
        [node],
        f"test_{op}",
        [_value_info(n, t, None) for n, t, _ in inputs if n],
        [_value_info("out", out_elem, out_rank)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.OP_DOMAIN, ops.OP_VERSION)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def _session(lib: str, model: bytes, threads: int = 2):
    so = ort.SessionOptions()
    so.register_custom_ops_library(lib)
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


_SESSIONS: dict = {}


def _cached(lib: str, key, build):
    if key not in _SESSIONS:
        _SESSIONS[key] = _session(lib, build())
    return _SESSIONS[key]


FH_INPUTS = [("x", F32, 4), ("mask", I32, 2), ("signs", F32, 4)]
LSH_INPUTS = [
    ("query_codes", I32, 4),
    ("key_codes", I32, 4),
    ("query_mask", I32, 2),
    ("key_mask", I32, 2),
    ("value", F32, 4),
]


def fast_hash_session(lib, num_hash, tau, inputs=FH_INPUTS, **extra):
    attrs = {"num_hash": num_hash, "hash_code_len": tau, **extra}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    key = ("FastHash", tuple(inputs), tuple(sorted(attrs.items())))
    return _cached(lib, key, lambda: _model("FastHash", inputs, I32, **attrs))


def lsh_session(lib, tau, inputs=LSH_INPUTS, **extra):
    attrs = {"hash_code_len": tau, **extra}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    key = ("LSHCumulation", tuple(inputs), tuple(sorted(attrs.items())))
    return _cached(lib, key, lambda: _model("LSHCumulation", inputs, F32, **attrs))


def run_fast_hash(lib, x, mask, signs, num_hash, tau):
    sess = fast_hash_session(lib, num_hash, tau)
    return sess.run(None, {"x": x, "mask": mask, "signs": signs})[0]


def run_lsh(lib, qc, kc, qm, km, v, tau):
    sess = lsh_session(lib, tau)
    feeds = {"query_codes": qc, "key_codes": kc, "query_mask": qm, "key_mask": km, "value": v}
    return sess.run(None, feeds)[0]


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def make_signs(h, m, tau, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ops.draw_signs(h, m, tau, d, generator=g).numpy()


def make_mask(b, s, rng, pad=True):
    """Random right padding per batch row (first row full), like tokenizer masks."""
    mask = np.ones((b, s), dtype=np.int32)
    if pad and s > 1:
        for i in range(1, b):
            mask[i, rng.integers(1, s + 1):] = 0
    return mask


def make_x(shape, rng, kind="normal"):
    if kind == "normal":
        x = rng.standard_normal(shape).astype(np.float32)
    elif kind == "ties":
        # Small integers: many Hadamard sums are exactly +-0, exercising the "> 0" rule.
        x = rng.integers(-1, 2, size=shape).astype(np.float32)
    else:  # "scaled": wide dynamic range, rounding happens in every stage
        x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 8, size=shape)).astype(np.float32)
    if shape[2] > 2:
        x[..., 1, :] = 0.0  # an all-zero token
    return x


def ref_fast_hash(x, mask, signs, m, tau):
    return ops.fast_hash(torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(signs), m, tau).numpy()


def ref_lsh(qc, kc, qm, km, v, tau):
    """ops.lsh_cumulation where its dense 2^tau table is affordable, else an independent check."""
    b, h, _, _ = qc.shape
    if b * h * (1 << tau) * max(1, v.shape[-1]) <= 1 << 22:
        t = torch.from_numpy
        return ops.lsh_cumulation(t(qc), t(kc), t(qm), t(km), t(v), tau).numpy()
    return collision_lsh(qc, kc, qm, km, v)


def collision_lsh(qc, kc, qm, km, v):
    """OPS.md's formula via explicit collision counts (float64), independent of bucket tables."""
    m = qc.shape[-1]
    match = (qc[:, :, :, None, :] == kc[:, :, None, :, :]).sum(-1)  # [B,H,Sq,Sk]
    w = match * km[:, None, None, :] * qm[:, None, :, None]
    return (w.astype(np.float64) @ v.astype(np.float64) / m).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# FastHash: bit-identical codes
# ------------------------------------------------------------------------------------------------

FH_CASES = [
    # (B, H, S, D, m, tau, kind)
    (1, 1, 1, 8, 4, 2, "normal"),  # S = 1
    (1, 2, 13, 64, 16, 8, "normal"),  # S = 13, tau | D, m > per_part (P = 2)
    (2, 2, 300, 32, 32, 6, "normal"),  # S = 300, padding, tau does not divide D (per_part 5, P 7)
    (2, 3, 17, 64, 3, 4, "ties"),  # m < per_part, many exact zeros
    (2, 2, 9, 16, 20, 3, "scaled"),  # tau does not divide D, m > per_part
    (1, 1, 5, 1, 3, 1, "normal"),  # D = 1
    (2, 1, 6, 2, 5, 2, "ties"),  # D = 2, tau = D
    (1, 2, 7, 4, 7, 3, "normal"),
    (1, 1, 4, 8, 9, 8, "ties"),  # tau = D
    (2, 1, 11, 128, 40, 7, "normal"),
    (1, 2, 3, 1024, 40, 30, "normal"),  # D = 1024, tau = 30 (per_part 34, P 2)
    (1, 1, 3, 1024, 64, 10, "scaled"),
]


@pytest.mark.parametrize("b,h,s,d,m,tau,kind", FH_CASES)
def test_fast_hash_bit_identical(lib, b, h, s, d, m, tau, kind):
    rng = np.random.default_rng(b * 1000 + s * 10 + d)
    x = make_x((b, h, s, d), rng, kind)
    mask = make_mask(b, s, rng)
    signs = make_signs(h, m, tau, d, seed=d + m)
    got = run_fast_hash(lib, x, mask, signs, m, tau)
    want = ref_fast_hash(x, mask, signs, m, tau)
    assert got.dtype == np.int32 and got.shape == (b, h, s, m)
    np.testing.assert_array_equal(got, want)
    assert (got >= 0).all() and (got < (1 << tau)).all()
    assert (got.transpose(0, 2, 1, 3)[mask == 0] == 0).all()  # masked tokens -> 0


def test_fast_hash_every_power_of_two_width(lib):
    rng = np.random.default_rng(7)
    for d in (1, 2, 4, 8, 16, 32, 64, 256):
        for tau in sorted({1, min(d, 3), min(d, 5), min(d, 30)}):
            m = 2 * (d // tau) + 1
            x = make_x((2, 2, 5, d), rng)
            mask = make_mask(2, 5, rng)
            signs = make_signs(2, m, tau, d, seed=d * 31 + tau)
            got = run_fast_hash(lib, x, mask, signs, m, tau)
            want = ref_fast_hash(x, mask, signs, m, tau)
            np.testing.assert_array_equal(got, want, err_msg=f"D={d} tau={tau}")


def test_fast_hash_nonfinite_inputs(lib):
    # NaN and +-inf propagate through the butterflies; comparisons with NaN give bit 0.
    rng = np.random.default_rng(3)
    x = make_x((1, 1, 6, 16), rng)
    x[0, 0, 2, 3] = np.nan
    x[0, 0, 3, 0] = np.inf
    x[0, 0, 4, 5] = -np.inf
    mask = np.ones((1, 6), np.int32)
    signs = make_signs(1, 8, 4, 16)
    got = run_fast_hash(lib, x, mask, signs, 8, 4)
    np.testing.assert_array_equal(got, ref_fast_hash(x, mask, signs, 8, 4))


@pytest.mark.parametrize("b,s", [(0, 5), (2, 0), (0, 0)])
def test_fast_hash_empty(lib, b, s):
    x = np.zeros((b, 2, s, 8), np.float32)
    mask = np.ones((b, s), np.int32)
    signs = make_signs(2, 4, 2, 8)
    got = run_fast_hash(lib, x, mask, signs, 4, 2)
    assert got.shape == (b, 2, s, 4) and got.dtype == np.int32


def test_fast_hash_single_thread_matches(lib):
    rng = np.random.default_rng(11)
    x = make_x((2, 4, 64, 32), rng)
    mask = make_mask(2, 64, rng)
    signs = make_signs(4, 12, 5, 32)
    model = _model("FastHash", FH_INPUTS, I32, num_hash=12, hash_code_len=5)
    one = _session(lib, model, threads=1).run(None, {"x": x, "mask": mask, "signs": signs})[0]
    two = run_fast_hash(lib, x, mask, signs, 12, 5)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(two, ref_fast_hash(x, mask, signs, 12, 5))


# ------------------------------------------------------------------------------------------------
# LSHCumulation: equal to rounding
# ------------------------------------------------------------------------------------------------


def lsh_inputs(b, h, sq, sk, m, dv, tau, rng, pad=True, narrow_codes=False):
    hi = min(1 << tau, 6) if narrow_codes else (1 << tau)  # narrow: many collisions
    qc = rng.integers(0, hi, size=(b, h, sq, m), dtype=np.int32)
    kc = rng.integers(0, hi, size=(b, h, sk, m), dtype=np.int32)
    qm = make_mask(b, sq, rng, pad)
    km = make_mask(b, sk, rng, pad)
    v = rng.standard_normal((b, h, sk, dv)).astype(np.float32)
    return qc, kc, qm, km, v


LSH_CASES = [
    # (B, H, Sq, Sk, m, Dv, tau, narrow)
    (1, 1, 7, 7, 4, 8, 3, False),
    (2, 3, 13, 29, 8, 16, 4, True),  # Sq != Sk, padding, many collisions
    (2, 2, 40, 17, 16, 1, 5, True),  # Dv = 1
    (2, 4, 33, 50, 6, 48, 8, True),  # Dv = 48 (not a multiple of 32)
    (2, 4, 200, 200, 8, 48, 8, False),  # several parallel tasks
    (1, 2, 30, 40, 5, 48, 20, True),  # tau = 20: compact (sorted) bucket table
    (2, 1, 25, 31, 3, 7, 30, True),  # tau = 30
    (1, 1, 9, 300, 2, 3, 30, False),  # tau = 30, no collisions at all
]


@pytest.mark.parametrize("b,h,sq,sk,m,dv,tau,narrow", LSH_CASES)
def test_lsh_cumulation_matches_reference(lib, b, h, sq, sk, m, dv, tau, narrow):
    rng = np.random.default_rng(sq * 100 + sk + tau)
    qc, kc, qm, km, v = lsh_inputs(b, h, sq, sk, m, dv, tau, rng, narrow_codes=narrow)
    got = run_lsh(lib, qc, kc, qm, km, v, tau)
    want = ref_lsh(qc, kc, qm, km, v, tau)
    assert got.dtype == np.float32 and got.shape == (b, h, sq, dv)
    assert np.abs(got - want).max(initial=0.0) <= LSH_TOL
    assert (got.transpose(0, 2, 1, 3)[qm == 0] == 0).all()  # masked queries exactly 0


def test_lsh_cumulation_agrees_with_collision_counts(lib):
    # Independent of the reference's bucket tables: sum over colliding (query, key, f) triples.
    rng = np.random.default_rng(21)
    qc, kc, qm, km, v = lsh_inputs(2, 3, 21, 34, 7, 9, 3, rng, narrow_codes=True)
    got = run_lsh(lib, qc, kc, qm, km, v, 3)
    assert np.abs(got - collision_lsh(qc, kc, qm, km, v)).max() <= LSH_TOL


def test_lsh_dense_and_compact_tables_agree(lib):
    # The same codes hashed with tau = 6 use the dense 2^tau x Dv table, with tau = 24 the compact
    # one (sorted occupied buckets); both add each bucket's keys in key order: identical sums.
    rng = np.random.default_rng(4)
    qc, kc, qm, km, v = lsh_inputs(2, 2, 37, 45, 6, 33, 6, rng, narrow_codes=True)
    dense = run_lsh(lib, qc, kc, qm, km, v, 6)
    compact = run_lsh(lib, qc, kc, qm, km, v, 24)
    np.testing.assert_array_equal(dense, compact)


def test_lsh_cumulation_all_keys_masked(lib):
    rng = np.random.default_rng(5)
    qc, kc, qm, km, v = lsh_inputs(2, 2, 6, 9, 4, 5, 3, rng)
    km[:] = 0
    got = run_lsh(lib, qc, kc, qm, km, v, 3)
    np.testing.assert_array_equal(got, np.zeros_like(got))


@pytest.mark.parametrize(
    "b,sq,sk",
    [(0, 5, 5), (2, 0, 5), (2, 5, 0), (0, 0, 0)],
)
def test_lsh_cumulation_empty(lib, b, sq, sk):
    rng = np.random.default_rng(1)
    qc, kc, qm, km, v = lsh_inputs(b, 2, sq, sk, 3, 4, 4, rng, pad=False)
    got = run_lsh(lib, qc, kc, qm, km, v, 4)
    assert got.shape == (b, 2, sq, 4)
    np.testing.assert_array_equal(got, np.zeros_like(got))  # Sk = 0: zeros


def test_hash_then_cumulate_graph(lib):
    """FastHash -> LSHCumulation wired as in an exported attention layer (§3 of OPS.md)."""
    b, h, s, d, dv, m, tau = 2, 2, 24, 32, 24, 16, 5
    hash_attrs = {"domain": ops.OP_DOMAIN, "num_hash": m, "hash_code_len": tau}
    nodes = [
        helper.make_node("FastHash", ["q", "mask", "signs"], ["qc"], **hash_attrs),
        helper.make_node("FastHash", ["k", "mask", "signs"], ["kc"], **hash_attrs),
        helper.make_node(
            "LSHCumulation", ["qc", "kc", "mask", "mask", "v"], ["out"], domain=ops.OP_DOMAIN, hash_code_len=tau
        ),
    ]
    inputs = [_value_info("q", F32, 4), _value_info("k", F32, 4), _value_info("mask", I32, 2),
              _value_info("signs", F32, 4), _value_info("v", F32, 4)]
    graph = helper.make_graph(nodes, "attn", inputs, [_value_info("out", F32, 4)])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.OP_DOMAIN, ops.OP_VERSION)]
    )
    model.ir_version = 8
    rng = np.random.default_rng(2)
    q, k = make_x((b, h, s, d), rng), make_x((b, h, s, d), rng)
    v = rng.standard_normal((b, h, s, dv)).astype(np.float32)
    mask = make_mask(b, s, rng)
    signs = make_signs(h, m, tau, d)
    feeds = {"q": q, "k": k, "mask": mask, "signs": signs, "v": v}
    got = _session(lib, model.SerializeToString()).run(None, feeds)[0]
    qc, kc = ref_fast_hash(q, mask, signs, m, tau), ref_fast_hash(k, mask, signs, m, tau)
    want = ref_lsh(qc, kc, mask, mask, v, tau)
    assert np.abs(got - want).max() <= LSH_TOL


def test_several_session_options_share_the_library(lib):
    rng = np.random.default_rng(9)
    x = make_x((1, 2, 10, 16), rng)
    mask = np.ones((1, 10), np.int32)
    signs = make_signs(2, 6, 4, 16)
    model = _model("FastHash", FH_INPUTS, I32, num_hash=6, hash_code_len=4)
    sessions = [_session(lib, model) for _ in range(3)]  # three registrations, all alive
    outs = [s.run(None, {"x": x, "mask": mask, "signs": signs})[0] for s in sessions]
    del sessions[0]
    outs.append(_session(lib, model).run(None, {"x": x, "mask": mask, "signs": signs})[0])
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])


def test_build_info_sidecar(lib):
    info = Path(lib).with_name("yoso_ort_build.json")
    assert info.is_file(), "the build must install yoso_ort_build.json next to the library"
    data = json.loads(info.read_text())
    assert isinstance(data["ort_api_version"], int) and data["ort_api_version"] >= 1
    assert data["ort_headers_version"].startswith("1.")
    assert isinstance(data["cuda"], bool)  # true only in -DYOSO_BUILD_CUDA=ON builds


def test_register_refuses_older_runtime(lib):
    """RegisterCustomOps on a runtime without the headers' API version fails with a clear status.

    Simulated with a fake OrtApiBase (ctypes) that serves the real API tables only below the
    version the library was built for and claims to be ONNX Runtime 1.0.0.
    """
    import ctypes

    cands = sorted((Path(ort.__file__).parent / "capi").glob("libonnxruntime.so*"))
    if not cands:
        pytest.skip("this onnxruntime package ships no libonnxruntime.so")
    ortlib = ctypes.CDLL(str(cands[0]))
    get_api_t = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)
    version_t = ctypes.CFUNCTYPE(ctypes.c_void_p)

    class OrtApiBase(ctypes.Structure):
        _fields_ = [("GetApi", get_api_t), ("GetVersionString", version_t)]

    ortlib.OrtGetApiBase.restype = ctypes.POINTER(OrtApiBase)
    real = ortlib.OrtGetApiBase().contents
    yoso = ctypes.CDLL(lib)
    yoso.RegisterCustomOps.restype = ctypes.c_void_p
    yoso.RegisterCustomOps.argtypes = [ctypes.c_void_p, ctypes.POINTER(OrtApiBase)]

    info = Path(lib).with_name("yoso_ort_build.json")
    built_for = json.loads(info.read_text())["ort_api_version"] if info.is_file() else 21
    version = ctypes.create_string_buffer(b"1.0.0")
    fake = OrtApiBase(
        get_api_t(lambda v: real.GetApi(v) if v < built_for else None),
        version_t(lambda: ctypes.addressof(version)),
    )
    status = yoso.RegisterCustomOps(None, ctypes.byref(fake))
    assert status, "RegisterCustomOps accepted a runtime without its API version"
    table = ctypes.cast(real.GetApi(1), ctypes.POINTER(ctypes.c_void_p))
    get_code = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(table[1])
    get_message = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(table[2])
    msg = get_message(status).decode()
    assert get_code(status) == 1  # ORT_FAIL
    assert f"needs ONNX Runtime API >= {built_for}" in msg
    assert "this runtime is 1.0.0" in msg and "upgrade onnxruntime" in msg
    # (the OrtStatus is left unreleased: ReleaseStatus sits deep in the OrtApi table)


# ------------------------------------------------------------------------------------------------
# Malformed inputs: rejected with a message naming the problem, never a crash
# ------------------------------------------------------------------------------------------------


def expect_error(fn, *needles):
    with pytest.raises(Exception) as info:
        fn()
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in error message: {msg}"
    return msg


def fh_feeds(b=2, h=2, s=5, d=16, m=6, tau=4, rng=None):
    rng = rng or np.random.default_rng(0)
    return {
        "x": make_x((b, h, s, d), rng),
        "mask": make_mask(b, s, rng),
        "signs": make_signs(h, m, tau, d),
    }


FH_BAD = {
    # name: (num_hash, tau, feeds modifier, expected message fragments)
    "x_rank3": (6, 4, lambda f: f.update(x=f["x"][0]), ["FastHash", "'x'", "rank 4"]),
    "x_rank5": (6, 4, lambda f: f.update(x=f["x"][None]), ["'x'", "rank 4", "got rank 5"]),
    "mask_rank1": (6, 4, lambda f: f.update(mask=f["mask"][0]), ["'mask'", "rank 2"]),
    "signs_rank3": (6, 4, lambda f: f.update(signs=f["signs"][0]), ["'signs'", "rank 4"]),
    "d_not_pow2": (6, 4, lambda f: f.update(x=np.zeros((2, 2, 5, 12), np.float32)), ["power of two", "D=12"]),
    "d_too_large": (
        6, 4, lambda f: f.update(x=np.zeros((2, 2, 5, 2048), np.float32)),
        ["power of two", "1024", "D=2048"],
    ),
    "tau_gt_d": (
        6, 8, lambda f: f.update(x=np.zeros((2, 2, 5, 4), np.float32)),
        ["hash_code_len", "must not exceed", "D=4"],
    ),
    "signs_wrong_p": (
        6, 4, lambda f: f.update(signs=make_signs(2, 12, 4, 16)),
        ["'signs'", "[2,3,2,16]", "got [2,3,3,16]"],
    ),
    "signs_wrong_h": (6, 4, lambda f: f.update(signs=make_signs(3, 6, 4, 16)), ["'signs'", "got [3,3,2,16]"]),
    "signs_wrong_d": (6, 4, lambda f: f.update(signs=make_signs(2, 6, 4, 32)), ["'signs'", "[2,3,2,16]"]),
    "signs_not_pm1": (
        6, 4, lambda f: f["signs"].__setitem__((1, 2, 0, 3), 0.5),
        ["'signs'", "+1.0 or -1.0", "0.5"],
    ),
    "signs_zero": (
        6, 4, lambda f: f["signs"].__setitem__((0, 0, 0, 0), 0.0),
        ["'signs'", "+1.0 or -1.0", "index 0"],
    ),
    "signs_nan": (6, 4, lambda f: f["signs"].__setitem__((0, 1, 1, 2), np.nan), ["'signs'", "nan"]),
    "mask_two": (6, 4, lambda f: f["mask"].__setitem__((1, 2), 2), ["'mask'", "0 or 1", "got 2"]),
    "mask_neg": (6, 4, lambda f: f["mask"].__setitem__((0, 0), -1), ["'mask'", "0 or 1", "got -1"]),
    "mask_wrong_b": (
        6, 4, lambda f: f.update(mask=np.ones((3, 5), np.int32)),
        ["'mask'", "[2,5]", "got [3,5]"],
    ),
    "mask_wrong_s": (
        6, 4, lambda f: f.update(mask=np.ones((2, 4), np.int32)),
        ["'mask'", "[2,5]", "got [2,4]"],
    ),
}


@pytest.mark.parametrize("case", sorted(FH_BAD))
def test_fast_hash_rejects(lib, case):
    m, tau, modify, needles = FH_BAD[case]
    feeds = fh_feeds(m=6, tau=4)
    modify(feeds)
    sess = fast_hash_session(lib, m, tau)
    expect_error(lambda: sess.run(None, feeds), "INVALID_ARGUMENT", *needles)


@pytest.mark.parametrize(
    "attrs,needles",
    [
        ({"num_hash": 0, "hash_code_len": 4}, ["num_hash", "got 0"]),
        ({"num_hash": -3, "hash_code_len": 4}, ["num_hash", "got -3"]),
        ({"num_hash": 6, "hash_code_len": 0}, ["hash_code_len", "[1, 30]", "got 0"]),
        ({"num_hash": 6, "hash_code_len": -1}, ["hash_code_len", "got -1"]),
        ({"num_hash": 6, "hash_code_len": 31}, ["hash_code_len", "got 31"]),
        ({"hash_code_len": 4}, ["num_hash", "missing"]),
        ({"num_hash": 6}, ["hash_code_len", "missing"]),
    ],
)
def test_fast_hash_rejects_attributes(lib, attrs, needles):
    # Reported when the kernel is created (session creation), before any data is seen.
    model = _model("FastHash", FH_INPUTS, I32, **attrs)
    expect_error(lambda: _session(lib, model), "FastHash", *needles)


def test_fast_hash_rejects_wrong_dtypes(lib):
    # Declared types are checked by ONNX Runtime when the session is created.
    # The message must name the offending input and its type: "(x)", not just any "x" in the text.
    for inputs, name, type_name in (
        ([("x", F64, 4), ("mask", I32, 2), ("signs", F32, 4)], "x", "tensor(double)"),
        ([("x", F32, 4), ("mask", I64, 2), ("signs", F32, 4)], "mask", "tensor(int64)"),
        ([("x", F32, 4), ("mask", I32, 2), ("signs", F64, 4)], "signs", "tensor(double)"),
    ):
        model = _model("FastHash", inputs, I32, num_hash=6, hash_code_len=4)
        msg = expect_error(lambda: _session(lib, model), f"({name})", type_name, "FastHash")
        assert "type" in msg.lower()
        others = {"x", "mask", "signs"} - {name}
        assert not any(f"({o})" in msg for o in others), msg


def test_fast_hash_rejects_missing_input(lib):
    two = _model("FastHash", FH_INPUTS[:2], I32, num_hash=6, hash_code_len=4)
    expect_error(lambda: _session(lib, two), "FastHash", "expects 3 inputs", "got 2")
    inputs = [FH_INPUTS[0], ("", I32, 2), FH_INPUTS[2]]  # an empty (omitted optional) slot
    empty_slot = _model("FastHash", inputs, I32, num_hash=6, hash_code_len=4)
    expect_error(lambda: _session(lib, empty_slot), "FastHash", "'mask'", "missing")


def lsh_feeds(b=2, h=2, sq=6, sk=7, m=4, dv=5, tau=4, rng=None):
    rng = rng or np.random.default_rng(0)
    qc, kc, qm, km, v = lsh_inputs(b, h, sq, sk, m, dv, tau, rng)
    return {"query_codes": qc, "key_codes": kc, "query_mask": qm, "key_mask": km, "value": v}


def _set(name, index, value):
    return lambda f: f[name].__setitem__(index, value)


LSH_BAD = {
    "qc_rank3": (lambda f: f.update(query_codes=f["query_codes"][0]), ["'query_codes'", "rank 4"]),
    "kc_rank5": (lambda f: f.update(key_codes=f["key_codes"][None]), ["'key_codes'", "rank 4"]),
    "qm_rank3": (lambda f: f.update(query_mask=f["query_mask"][None]), ["'query_mask'", "rank 2"]),
    "km_rank1": (lambda f: f.update(key_mask=f["key_mask"][0]), ["'key_mask'", "rank 2"]),
    "value_rank3": (lambda f: f.update(value=f["value"][0]), ["'value'", "rank 4"]),
    "qc_negative": (_set("query_codes", (1, 0, 2, 3), -1), ["'query_codes'", "[0, 16)", "got -1"]),
    "qc_too_large": (_set("query_codes", (0, 1, 0, 0), 16), ["'query_codes'", "[0, 16)", "got 16"]),
    "kc_too_large": (_set("key_codes", (1, 1, 6, 3), 1 << 30), ["'key_codes'", "got 1073741824"]),
    "kc_negative_masked_key": (
        lambda f: (f["key_mask"].__setitem__((0, 6), 0), f["key_codes"].__setitem__((0, 0, 6, 0), -5)),
        ["'key_codes'", "got -5"],
    ),
    "qm_two": (_set("query_mask", (1, 3), 2), ["'query_mask'", "0 or 1", "got 2"]),
    "km_neg": (_set("key_mask", (0, 0), -1), ["'key_mask'", "0 or 1", "got -1"]),
    "b_mismatch": (
        lambda f: f.update(key_codes=f["key_codes"][:1]),
        ["'key_codes'", "[2,2,Sk,4]", "got [1,2,7,4]"],
    ),
    "h_mismatch": (lambda f: f.update(key_codes=f["key_codes"][:, :1]), ["'key_codes'", "got [2,1,7,4]"]),
    "m_mismatch": (lambda f: f.update(key_codes=f["key_codes"][..., :3]), ["'key_codes'", "got [2,2,7,3]"]),
    "sk_mismatch_value": (
        lambda f: f.update(value=f["value"][:, :, :5]),
        ["'value'", "[2,2,7,Dv]", "got [2,2,5,5]"],
    ),
    "b_mismatch_value": (lambda f: f.update(value=f["value"][:1]), ["'value'", "got [1,2,7,5]"]),
    "sq_mismatch_mask": (
        lambda f: f.update(query_mask=f["query_mask"][:, :5]),
        ["'query_mask'", "[2,6]", "got [2,5]"],
    ),
    "sk_mismatch_mask": (
        lambda f: f.update(key_mask=np.ones((2, 8), np.int32)),
        ["'key_mask'", "[2,7]", "got [2,8]"],
    ),
    "b_mismatch_mask": (
        lambda f: f.update(query_mask=np.ones((1, 6), np.int32)),
        ["'query_mask'", "got [1,6]"],
    ),
    "m_zero": (
        lambda f: f.update(query_codes=f["query_codes"][..., :0], key_codes=f["key_codes"][..., :0]),
        ["'query_codes'", "m >= 1"],
    ),
}


@pytest.mark.parametrize("case", sorted(LSH_BAD))
def test_lsh_cumulation_rejects(lib, case):
    modify, needles = LSH_BAD[case]
    feeds = lsh_feeds()
    modify(feeds)
    feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
    sess = lsh_session(lib, 4)
    expect_error(lambda: sess.run(None, feeds), "INVALID_ARGUMENT", "LSHCumulation", *needles)


@pytest.mark.parametrize(
    "tau,needles", [(0, ["got 0"]), (31, ["got 31"]), (-2, ["got -2"]), (None, ["missing"])]
)
def test_lsh_cumulation_rejects_attributes(lib, tau, needles):
    attrs = {} if tau is None else {"hash_code_len": tau}
    model = _model("LSHCumulation", LSH_INPUTS, F32, **attrs)
    expect_error(lambda: _session(lib, model), "LSHCumulation", "hash_code_len", *needles)


def test_lsh_cumulation_rejects_wrong_dtypes(lib):
    for i, bad in ((4, F64), (0, I64), (3, F32)):
        inputs = list(LSH_INPUTS)
        inputs[i] = (inputs[i][0], bad, inputs[i][2])
        model = _model("LSHCumulation", inputs, F32, hash_code_len=4)
        msg = expect_error(lambda: _session(lib, model), inputs[i][0])
        assert "type" in msg.lower()


def test_lsh_cumulation_rejects_missing_input(lib):
    model = _model("LSHCumulation", LSH_INPUTS[:4], F32, hash_code_len=4)
    expect_error(lambda: _session(lib, model), "LSHCumulation", "expects 5 inputs", "got 4")


def test_sessions_still_work_after_errors(lib):
    """Failed runs leave the (cached) sessions and the process usable."""
    feeds = fh_feeds(m=6, tau=4)
    got = fast_hash_session(lib, 6, 4).run(None, feeds)[0]
    np.testing.assert_array_equal(got, ref_fast_hash(feeds["x"], feeds["mask"], feeds["signs"], 6, 4))
    lf = lsh_feeds()
    got = lsh_session(lib, 4).run(None, lf)[0]
    want = ref_lsh(*(lf[k] for k in ("query_codes", "key_codes", "query_mask", "key_mask", "value")), 4)
    assert np.abs(got - want).max() <= LSH_TOL


# ------------------------------------------------------------------------------------------------
# Output shape inference (OrtCustomOp::InferOutputShapeFn)
# ------------------------------------------------------------------------------------------------


def _typed_model(op: str, inputs, **attrs) -> bytes:
    """op followed by Identity, graph inputs with the given dims and the graph output declared with a
    type only: the output's shape ONNX Runtime reports can only come from the op's shape inference."""
    node = helper.make_node(op, [n for n, _, _ in inputs], ["r"], domain=ops.OP_DOMAIN, **attrs)
    ident = helper.make_node("Identity", ["r"], ["out"])
    out_elem = I32 if op == "FastHash" else inputs[4][1]
    graph = helper.make_graph(
        [node, ident], f"infer_{op}", [helper.make_tensor_value_info(n, t, dims) for n, t, dims in inputs],
        [helper.make_tensor_value_info("out", out_elem, None)])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.OP_DOMAIN, ops.OP_VERSION)])
    model.ir_version = 8
    return model.SerializeToString()


def test_shape_inference_gives_typed_shaped_outputs(lib):
    """ONNX Runtime learns each op's output type and shape at load time, symbolic sizes carried over:
    FastHash int32 [B, H, S, num_hash], LSHCumulation value's type [B, H, Sq, Dv]."""
    fh = _typed_model("FastHash", [("x", F32, ["B", 2, "S", 16]), ("mask", I32, ["B", "S"]),
                                   ("signs", F32, [2, 3, 2, 16])], num_hash=6, hash_code_len=4)
    out = _session(lib, fh).get_outputs()[0]
    assert (out.type, out.shape) == ("tensor(int32)", ["B", 2, "S", 6])
    lsh = _typed_model("LSHCumulation", [("query_codes", I32, ["B", 2, "Sq", 4]), ("key_codes", I32, ["B", 2, "Sk", 4]),
                                         ("query_mask", I32, ["B", "Sq"]), ("key_mask", I32, ["B", "Sk"]),
                                         ("value", F32, ["B", 2, "Sk", 5])], hash_code_len=4)
    sess = _session(lib, lsh)
    out = sess.get_outputs()[0]
    assert (out.type, out.shape) == ("tensor(float)", ["B", 2, "Sq", 5])
    # The inferred shape is the one the kernel produces.
    feeds = lsh_feeds(b=2, h=2, sq=6, sk=7, m=4, dv=5, tau=4)
    assert sess.run(None, feeds)[0].shape == (2, 2, 6, 5)


def test_shape_inference_without_input_shapes_knows_rank_and_constant_sizes(lib):
    """Inputs without shapes: the outputs still have rank 4 and the attribute's / value's last size;
    the unknown sizes get names of their own (never a claim that two unknown sizes are equal)."""
    fh = _typed_model("FastHash", [("x", F32, None), ("mask", I32, None), ("signs", F32, None)],
                      num_hash=6, hash_code_len=4)
    shape = _session(lib, fh).get_outputs()[0].shape
    assert len(shape) == 4 and shape[3] == 6, shape
    assert all(isinstance(d, str) for d in shape[:3]) and len(set(shape[:3])) == 3, shape


def test_shape_inference_leaves_violations_to_the_run_time_check(lib):
    """Sizes known at load time that break the contract (signs' P for D = 16, tau = 4, m = 6 is 2, not 3)
    set no output shape, and running the node reports the contract's message."""
    bad = _typed_model("FastHash", [("x", F32, ["B", 2, "S", 16]), ("mask", I32, ["B", "S"]),
                                    ("signs", F32, [2, 3, 3, 16])], num_hash=6, hash_code_len=4)
    sess = _session(lib, bad)
    assert sess.get_outputs()[0].shape != ["B", 2, "S", 6]
    feeds = fh_feeds(b=2, h=2, s=5, d=16, m=6, tau=4)
    feeds["signs"] = np.ones((2, 3, 3, 16), np.float32)
    expect_error(lambda: sess.run(None, feeds), "'signs' (input 2) must have shape [H,3,P,D] = [2,3,2,16]")


def test_float16_on_the_cpu_is_refused_with_the_fix(lib):
    """float16 x / value run on the CUDA execution provider only (plugins/OPS.md): on the CPU the library
    refuses the node at session creation, naming the input and the fix."""
    F16 = TensorProto.FLOAT16
    fh = _model("FastHash", [("x", F16, 4), ("mask", I32, 2), ("signs", F32, 4)], I32, num_hash=6, hash_code_len=4)
    expect_error(lambda: _session(lib, fh), "FastHash: input 'x' (input 0) is float16",
                 "only the CUDA execution provider", "--dtype fp32")
    inputs = list(LSH_INPUTS[:4]) + [("value", F16, 4)]
    lsh = _model("LSHCumulation", inputs, F16, hash_code_len=4)
    expect_error(lambda: _session(lib, lsh), "LSHCumulation: input 'value' (input 4) is float16",
                 "only the CUDA execution provider")
    # Attribute errors still come first.
    bad = _model("FastHash", [("x", F16, 4), ("mask", I32, 2), ("signs", F32, 4)], I32, num_hash=0, hash_code_len=4)
    expect_error(lambda: _session(lib, bad), "'num_hash' must be in [1, 2^31-1]; got 0")
