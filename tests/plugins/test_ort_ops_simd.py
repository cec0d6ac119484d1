"""The SIMD (x86-64 AVX-512 F+BW, AVX2+FMA) CPU kernels of libyoso_ort.so against the reference and the
scalar path.

libyoso_ort.so picks its CPU kernels at run time (plugins/cpu/yoso_cpu_kernels.h): AVX-512 when the CPU
has AVX-512F and AVX-512BW, AVX2+FMA otherwise, the portable scalar kernels last. The environment
variable ``YOSO_CPU_ISA=scalar|avx2|avx512`` asks for a path (an unsupported one falls back to the best
the CPU has); ``YOSO_FORCE_SCALAR`` set to a non-empty value other than ``0`` forces the scalar kernels
whatever ``YOSO_CPU_ISA`` says. Both are read on every op call. Every test here runs once per path
("scalar", "avx2", "avx512", forced with ``YOSO_CPU_ISA``):

* FastHash must be bit-identical to ``yoso_deploy.modeling.ops.fast_hash`` (and so to the scalar path)
  for every width D the contract allows (the AVX2 code has in-register paths for D = 8..64 and a memory
  path for D >= 128, D < 8 is scalar; the AVX-512 code has 16-token block paths for D = 1..64 and a
  memory path for D >= 128), with token counts that are not multiples of the SIMD blocks, tau not
  dividing D, padding masks and values that stress the rounding (ties, +-0, wide ranges, inf/NaN), and
  over random shapes.
* LSHCumulation must equal the reference to rounding, for value widths Dv that are not multiples
  of 8 or 16 (masked tail vectors), Sk = 0 and several block/chunk configurations; since all paths add
  in the same order (keys in key order into a bucket, hash functions in order into a query), their
  outputs must also be identical to each other, bit for bit.

Every op call also checks *which* kernel ran, from the library's kernel report (``YOSO_KERNEL_REPORT``,
tests/support/kernel_report.py): the path's kernels (AVX2: FastHash needs D >= 8; LSHCumulation's
compact tables for large tau and Sk = 0 are scalar on every path), so that "SIMD vs scalar" never
compares the scalar kernels with themselves. On a CPU without AVX2+FMA (AVX-512F+BW) the avx2 (avx512)
cases are skipped with that reason (shown in pytest's summary, -ra), never passed.
"""


from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import onnxruntime as ort
from onnx import TensorProto, helper

from support import REPO, kernel_report
from yoso_deploy import ort_library_path
from yoso_deploy.modeling import ops

pytestmark = pytest.mark.native

F32, I32 = TensorProto.FLOAT, TensorProto.INT32
LSH_TOL = 1e-5

MODES = list(kernel_report.ISAS)  # the paths, forced with YOSO_CPU_ISA
HAS_AVX2 = kernel_report.cpu_has_avx2_fma()
HAS_AVX512 = kernel_report.cpu_has_avx512()
SUPPORTED = kernel_report.supported_isas()
_REPORT: list = []  # the module's kernel report (one kernel_report.Report), set by the lib fixture


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> str:
    _REPORT[:] = [kernel_report.Report(tmp_path_factory.mktemp("simd") / "kernels.txt")]
    _SESSIONS.clear()  # sessions of this module are created with the report on
    return str(ort_library_path())


def require_avx2():
    if not HAS_AVX2:
        pytest.skip(kernel_report.NO_AVX2_REASON)


def require_avx512():
    if not HAS_AVX512:
        pytest.skip(kernel_report.NO_AVX512_REASON)


def require_isa(isa: str):
    if isa == "avx2":
        require_avx2()
    elif isa == "avx512":
        require_avx512()


def use_isa(monkeypatch, isa: str):
    """Force a path with YOSO_CPU_ISA (and no YOSO_FORCE_SCALAR)."""
    monkeypatch.delenv("YOSO_FORCE_SCALAR", raising=False)
    monkeypatch.setenv("YOSO_CPU_ISA", isa)


@pytest.fixture(params=MODES)
def mode(request, monkeypatch) -> str:
    require_isa(request.param)  # else the library would fall back to a path another mode covers
    use_isa(monkeypatch, request.param)
    return request.param


@pytest.fixture(params=[m for m in MODES if m != "scalar"])
def simd_mode(request, monkeypatch) -> str:
    """The SIMD paths only (for comparisons with the scalar path)."""
    require_isa(request.param)
    use_isa(monkeypatch, request.param)
    return request.param


def expected_kernel(op: str, d: int = 0, compact: bool = False, sk: int = 1) -> str:
    """The kernel the library must pick now (kernel_report.active_isa models its dispatch)."""
    isa = kernel_report.active_isa()
    if op == "FastHash":
        return kernel_report.fast_hash_kernel(isa, d)
    return kernel_report.lsh_kernel(isa, sk=sk, compact=compact)


def check_kernel(op: str, want: str) -> dict:
    lines = _REPORT[0].new()
    assert len(lines) == 1 and lines[0]["op"] == op, f"expected one {op} report line, got {lines}"
    got = lines[0]
    assert got["kernel"] == want, f"{op} ran the {got['kernel']!r} kernel, expected {want!r}: {got}"
    assert got["cpu_avx2_fma"] == int(HAS_AVX2), f"library's CPU detection disagrees with /proc/cpuinfo: {got}"
    return got


# ------------------------------------------------------------------------------------------------
# Graphs and sessions
# ------------------------------------------------------------------------------------------------


def _model(op: str, inputs, out_elem: int, **attrs) -> bytes:
    node = helper.make_node(op, [n for n, _ in inputs], ["out"], domain=ops.OP_DOMAIN, **attrs)
    graph = helper.make_graph(
        [node],
        f"simd_{op}",
        [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
        [helper.make_tensor_value_info("out", out_elem, None)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ops.OP_DOMAIN, ops.OP_VERSION)],
    )
    model.ir_version = 8
    return model.SerializeToString()


_SESSIONS: dict = {}


def _session(lib: str, model: bytes, threads: int):
    key = (model, threads)
    if key not in _SESSIONS:
        so = ort.SessionOptions()
        so.register_custom_ops_library(lib)
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        with kernel_report.reporting(_REPORT[0].path):  # read by the kernels when they are created
            _SESSIONS[key] = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def run_fast_hash(lib, x, mask, signs, m, tau, threads=2):
    """FastHash through ORT; asserts the kernel report names the kernel this CPU and mode must use."""
    model = _model("FastHash", [("x", F32), ("mask", I32), ("signs", F32)], I32, num_hash=m, hash_code_len=tau)
    sess = _session(lib, model, threads)
    _REPORT[0].new()
    out = sess.run(None, {"x": x, "mask": mask, "signs": signs})[0]
    if out.size:
        check_kernel("FastHash", expected_kernel("FastHash", d=x.shape[-1]))
    return out


def run_lsh(lib, qc, kc, qm, km, v, tau, threads=2, compact=False):
    """LSHCumulation through ORT; asserts the kernel report names the kernel this CPU and mode must use."""
    inputs = [("query_codes", I32), ("key_codes", I32), ("query_mask", I32), ("key_mask", I32), ("value", F32)]
    model = _model("LSHCumulation", inputs, F32, hash_code_len=tau)
    feeds = {"query_codes": qc, "key_codes": kc, "query_mask": qm, "key_mask": km, "value": v}
    sess = _session(lib, model, threads)
    _REPORT[0].new()
    out = sess.run(None, feeds)[0]
    if out.size:
        check_kernel("LSHCumulation", expected_kernel("LSHCumulation", compact=compact, sk=kc.shape[2]))
    return out


# ------------------------------------------------------------------------------------------------
# Data and references
# ------------------------------------------------------------------------------------------------


def make_mask(b, s, rng):
    """Row 0 full, the other rows right-padded, plus a hole in the middle of the last row."""
    mask = np.ones((b, s), dtype=np.int32)
    for i in range(1, b if s else 0):
        mask[i, rng.integers(1, s + 1):] = 0
    if b > 1 and s > 4:
        mask[-1, s // 3] = 0
    return mask


def make_x(shape, rng, kind):
    if kind == "normal":
        x = rng.standard_normal(shape).astype(np.float32)
    elif kind == "ties":  # small integers: many exact +-0 sums
        x = rng.integers(-1, 2, size=shape).astype(np.float32)
    elif kind == "scaled":  # wide dynamic range: rounding in every stage
        x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 8, size=shape)).astype(np.float32)
    else:  # "special": +-0, +-inf, NaN and denormals sprinkled in
        x = rng.standard_normal(shape).astype(np.float32)
        flat = x.reshape(-1)
        idx = rng.permutation(flat.size)
        picks = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40]
        for i, v in zip(idx[: 3 * len(picks)], picks * 3):
            flat[i] = v
    if shape[2] > 2:
        x[..., 1, :] = 0.0  # an all-zero token
    return x


def make_signs(h, m, tau, d, seed):
    return ops.draw_signs(h, m, tau, d, generator=torch.Generator().manual_seed(seed)).numpy()


def ref_fast_hash(x, mask, signs, m, tau):
    t = torch.from_numpy
    return ops.fast_hash(t(x), t(mask), t(signs), m, tau).numpy()


def ref_lsh(qc, kc, qm, km, v, tau):
    b, h = qc.shape[:2]
    if b * h * (1 << tau) * max(1, v.shape[-1]) <= 1 << 22:
        t = torch.from_numpy
        return ops.lsh_cumulation(t(qc), t(kc), t(qm), t(km), t(v), tau).numpy()
    # Independent formula (float64 collision counts) where the reference's table is too large.
    m = qc.shape[-1]
    match = (qc[:, :, :, None, :] == kc[:, :, None, :, :]).sum(-1)
    w = match * km[:, None, None, :] * qm[:, None, :, None]
    return (w.astype(np.float64) @ v.astype(np.float64) / m).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# FastHash
# ------------------------------------------------------------------------------------------------

WIDTHS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024]


def _cases(d):
    """(tau, m) pairs: tau = 1, taus that do not divide D, tau = D, the yoso default 9, tau = 30;
    m = 1 (one code), one part exactly, and several parts with a partial last one."""
    out = []
    for tau in sorted({t for t in (1, 3, 7, 9, d, 30) if t <= min(d, 30)}):
        per_part = d // tau
        ms = {per_part, 2 * per_part + 1} if d >= 128 else {1, per_part, 2 * per_part + 1}
        out += [(tau, m) for m in sorted(ms) if m <= 200]
    return out


@pytest.mark.parametrize("d", WIDTHS)
def test_fast_hash_bit_identical_every_width(lib, mode, d):
    rng = np.random.default_rng(1000 + d)
    s = 13 if d >= 256 else 37  # not a multiple of 8 (or of any task size)
    for tau, m in _cases(d):
        x = make_x((2, 3, s, d), rng, ["normal", "ties", "scaled"][m % 3])
        mask = make_mask(2, s, rng)
        signs = make_signs(3, m, tau, d, seed=d * 7 + tau * 3 + m)
        got = run_fast_hash(lib, x, mask, signs, m, tau)
        want = ref_fast_hash(x, mask, signs, m, tau)
        np.testing.assert_array_equal(got, want, err_msg=f"{mode} D={d} tau={tau} m={m}")


@pytest.mark.parametrize("kind", ["normal", "ties", "scaled", "special"])
@pytest.mark.parametrize("d", [8, 16, 32, 64, 128])
def test_fast_hash_value_kinds(lib, mode, d, kind):
    rng = np.random.default_rng(d + len(kind))
    m, tau = 20, min(d, 6)
    x = make_x((1, 2, 29, d), rng, kind)
    mask = make_mask(1, 29, rng)
    signs = make_signs(2, m, tau, d, seed=d)
    np.testing.assert_array_equal(run_fast_hash(lib, x, mask, signs, m, tau), ref_fast_hash(x, mask, signs, m, tau))


@pytest.mark.parametrize("s", [1, 7, 9, 100, 1001])
def test_fast_hash_yoso4096_config(lib, mode, s):
    """The production shape (H=12, head dim 64, m=64, tau=9: per_part 7, P 10), odd token counts."""
    rng = np.random.default_rng(s)
    b, h, d, m, tau = 2, 12, 64, 64, 9
    x = make_x((b, h, s, d), rng, "normal")
    mask = make_mask(b, s, rng)
    signs = make_signs(h, m, tau, d, seed=0)
    got = run_fast_hash(lib, x, mask, signs, m, tau)
    np.testing.assert_array_equal(got, ref_fast_hash(x, mask, signs, m, tau))
    assert (got.transpose(0, 2, 1, 3)[mask == 0] == 0).all()


def test_fast_hash_threads_and_paths_agree(lib, monkeypatch):
    require_avx2()  # compares the SIMD kernels with the scalar one
    rng = np.random.default_rng(5)
    x = make_x((2, 4, 333, 64), rng, "scaled")
    mask = make_mask(2, 333, rng)
    signs = make_signs(4, 64, 9, 64, seed=3)
    monkeypatch.delenv("YOSO_CPU_ISA", raising=False)
    monkeypatch.delenv("YOSO_FORCE_SCALAR", raising=False)
    outs = [run_fast_hash(lib, x, mask, signs, 64, 9, threads=t) for t in (1, 2, 3)]  # the best path
    for isa in SUPPORTED:
        use_isa(monkeypatch, isa)
        outs.append(run_fast_hash(lib, x, mask, signs, 64, 9, threads=2))
    monkeypatch.delenv("YOSO_CPU_ISA", raising=False)
    monkeypatch.setenv("YOSO_FORCE_SCALAR", "1")
    outs.append(run_fast_hash(lib, x, mask, signs, 64, 9, threads=2))
    monkeypatch.setenv("YOSO_FORCE_SCALAR", "0")  # "0" means: do not force
    outs.append(run_fast_hash(lib, x, mask, signs, 64, 9, threads=2))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    np.testing.assert_array_equal(outs[0], ref_fast_hash(x, mask, signs, 64, 9))


def random_fast_hash_case(seed: int):
    """Random sizes: every D the contract allows up to 256 (1..8 are below one 16-lane vector), tau and m
    from 1 up (parts with a partial last one), token counts 1..40 (blocks that end mid-vector and at head
    boundaries), 1-3 batch rows and heads, padding masks, 1-3 threads (task boundaries move)."""
    rng = np.random.default_rng(7000 + seed)
    d = int(rng.choice([1, 2, 4, 8, 16, 32, 64, 64, 128, 256]))
    tau = int(rng.integers(1, min(d, 30) + 1))
    per_part = d // tau
    m = int(rng.integers(1, min(3 * per_part + 2, 80) + 1))
    b, h, s = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 41))
    x = make_x((b, h, s, d), rng, ["normal", "ties", "scaled", "special"][seed % 4])
    mask = make_mask(b, s, rng)
    signs = make_signs(h, m, tau, d, seed=seed)
    return x, mask, signs, m, tau, int(rng.integers(1, 4))


@pytest.mark.parametrize("seed", range(16))
def test_fast_hash_random_shapes_bit_identical_to_scalar(lib, monkeypatch, mode, seed):
    x, mask, signs, m, tau, threads = random_fast_hash_case(seed)
    got = run_fast_hash(lib, x, mask, signs, m, tau, threads=threads)
    use_isa(monkeypatch, "scalar")
    scalar = run_fast_hash(lib, x, mask, signs, m, tau, threads=threads)
    where = f"{mode} x={x.shape} tau={tau} m={m} threads={threads}"
    np.testing.assert_array_equal(got, scalar, err_msg=f"{where}: differs from the scalar path")
    np.testing.assert_array_equal(got, ref_fast_hash(x, mask, signs, m, tau), err_msg=f"{where}: differs from ops")
    assert (got.transpose(0, 2, 1, 3)[mask == 0] == 0).all()


# ------------------------------------------------------------------------------------------------
# LSHCumulation
# ------------------------------------------------------------------------------------------------


def lsh_inputs(b, h, sq, sk, m, dv, tau, rng, narrow=False):
    hi = min(1 << tau, 6) if narrow else (1 << tau)
    qc = rng.integers(0, hi, size=(b, h, sq, m), dtype=np.int32)
    kc = rng.integers(0, hi, size=(b, h, sk, m), dtype=np.int32)
    qm = make_mask(b, sq, rng)
    km = make_mask(b, sk, rng)
    v = rng.standard_normal((b, h, sk, dv)).astype(np.float32)
    return qc, kc, qm, km, v


LSH_CASES = [
    # (B, H, Sq, Sk, m, Dv, tau, narrow)
    (2, 3, 37, 45, 8, 1, 4, True),  # Dv = 1 (one masked vector)
    (2, 2, 29, 31, 6, 3, 5, False),
    (1, 2, 50, 41, 9, 7, 3, True),  # Dv = 7
    (2, 2, 33, 35, 11, 8, 6, False),  # Dv = 8 exactly (one full vector)
    (2, 2, 40, 24, 5, 9, 4, True),  # Dv = 9: a 16-wide chunk with 7 masked lanes
    (1, 3, 19, 57, 17, 15, 7, False),
    (2, 2, 64, 64, 13, 17, 8, True),  # Dv = 17: full chunk + 1-column chunk
    (2, 1, 31, 77, 20, 20, 9, False),
    (1, 2, 45, 45, 33, 33, 5, True),  # m = 33: several blocks of hash functions, last one partial
    (2, 2, 70, 90, 64, 64, 9, False),  # the yoso-4096 widths
    (1, 1, 26, 300, 16, 65, 9, False),  # Dv = 65
    (1, 2, 20, 520, 7, 100, 9, False),  # more keys than buckets: table cleared wholesale
    (1, 1, 17, 23, 5, 24, 12, True),  # tau = 12 (4096-row tables, one function per block)
    (1, 2, 30, 40, 5, 48, 20, True),  # tau = 20: the compact (sorted) tables, not the SIMD path
]
COMPACT_TAUS = {20}  # the cases above that use the compact tables (scalar on every CPU)


@pytest.mark.parametrize("b,h,sq,sk,m,dv,tau,narrow", LSH_CASES)
def test_lsh_cumulation_matches_reference(lib, mode, b, h, sq, sk, m, dv, tau, narrow):
    rng = np.random.default_rng(sq * 131 + sk * 7 + dv + tau)
    qc, kc, qm, km, v = lsh_inputs(b, h, sq, sk, m, dv, tau, rng, narrow)
    got = run_lsh(lib, qc, kc, qm, km, v, tau, compact=tau in COMPACT_TAUS)
    want = ref_lsh(qc, kc, qm, km, v, tau)
    assert got.dtype == np.float32 and got.shape == (b, h, sq, dv)
    assert np.abs(got - want).max(initial=0.0) <= LSH_TOL
    assert (got.transpose(0, 2, 1, 3)[qm == 0] == 0).all()  # masked queries exactly 0


@pytest.mark.parametrize("b,h,sq,sk,m,dv,tau,narrow", LSH_CASES)
def test_lsh_cumulation_simd_and_scalar_identical(lib, monkeypatch, simd_mode, b, h, sq, sk, m, dv, tau, narrow):
    rng = np.random.default_rng(sq * 17 + sk + dv * 3 + tau)
    qc, kc, qm, km, v = lsh_inputs(b, h, sq, sk, m, dv, tau, rng, narrow)
    compact = tau in COMPACT_TAUS
    fast = run_lsh(lib, qc, kc, qm, km, v, tau, compact=compact)
    one_thread = run_lsh(lib, qc, kc, qm, km, v, tau, threads=1, compact=compact)
    use_isa(monkeypatch, "scalar")
    scalar = run_lsh(lib, qc, kc, qm, km, v, tau, compact=compact)
    monkeypatch.delenv("YOSO_CPU_ISA")
    monkeypatch.setenv("YOSO_FORCE_SCALAR", "1")
    forced = run_lsh(lib, qc, kc, qm, km, v, tau, compact=compact)
    np.testing.assert_array_equal(fast, scalar)
    np.testing.assert_array_equal(fast, one_thread)
    np.testing.assert_array_equal(forced, scalar)


def random_lsh_case(seed: int):
    """Random sizes: Dv 1..70 (below, at and between multiples of 8 and 16), tau 1..12 (dense tables),
    m 1..40 (blocks of hash functions with a partial last one), Sq 1..60, Sk 0..90 (Sk = 0 every
    fourth case), padding masks (a batch row without keys now and then), narrow codes (many collisions)."""
    rng = np.random.default_rng(9000 + seed)
    b, h = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sq, sk = int(rng.integers(1, 61)), (0 if seed % 4 == 3 else int(rng.integers(1, 91)))
    m, tau = int(rng.integers(1, 41)), int(rng.integers(1, 13))
    dv = int(rng.choice([1, 2, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47, 48, 63, 64, 65, 70]))
    qc, kc, qm, km, v = lsh_inputs(b, h, sq, sk, m, dv, tau, rng, narrow=bool(seed % 3 == 0))
    if sk and b > 1 and seed % 5 == 0:
        km[0, :] = 0  # no unmasked key in a batch row: zeros
    return qc, kc, qm, km, v, tau, int(rng.integers(1, 4))


@pytest.mark.parametrize("seed", range(16))
def test_lsh_cumulation_random_shapes_identical_to_scalar(lib, monkeypatch, mode, seed):
    qc, kc, qm, km, v, tau, threads = random_lsh_case(seed)
    got = run_lsh(lib, qc, kc, qm, km, v, tau, threads=threads)
    use_isa(monkeypatch, "scalar")
    scalar = run_lsh(lib, qc, kc, qm, km, v, tau, threads=threads)
    where = f"{mode} qc={qc.shape} kc={kc.shape} Dv={v.shape[-1]} tau={tau} threads={threads}"
    np.testing.assert_array_equal(got, scalar, err_msg=f"{where}: differs from the scalar path")
    assert np.abs(got - ref_lsh(qc, kc, qm, km, v, tau)).max(initial=0.0) <= LSH_TOL, where
    assert (got.transpose(0, 2, 1, 3)[qm == 0] == 0).all()
    if kc.shape[2] == 0:
        assert (got == 0).all()


def test_lsh_cumulation_key_and_query_masks(lib, mode):
    rng = np.random.default_rng(8)
    qc, kc, qm, km, v = lsh_inputs(3, 2, 41, 43, 12, 20, 6, rng, narrow=True)
    km[1, :] = 0  # a batch row without any key: zeros
    qm[2, ::2] = 0
    km[2, 1::3] = 0
    got = run_lsh(lib, qc, kc, qm, km, v, 6)
    assert np.abs(got - ref_lsh(qc, kc, qm, km, v, 6)).max() <= LSH_TOL
    assert (got[1] == 0).all()


def test_lsh_cumulation_yoso4096_config(lib, mode):
    """H=12, m=64, tau=9, Dv=64 (both codes from FastHash, as in a layer), S not a multiple of 8."""
    rng = np.random.default_rng(4096)
    b, h, s, d, m, tau = 2, 12, 203, 64, 64, 9
    mask = make_mask(b, s, rng)
    signs = make_signs(h, m, tau, d, seed=1)
    q = rng.standard_normal((b, h, s, d)).astype(np.float32)
    k = q + 0.3 * rng.standard_normal((b, h, s, d)).astype(np.float32)  # correlated: real collisions
    v = rng.standard_normal((b, h, s, d)).astype(np.float32)
    qc, kc = run_fast_hash(lib, q, mask, signs, m, tau), run_fast_hash(lib, k, mask, signs, m, tau)
    np.testing.assert_array_equal(qc, ref_fast_hash(q, mask, signs, m, tau))
    got = run_lsh(lib, qc, kc, mask, mask, v, tau)
    assert np.abs(got - ref_lsh(qc, kc, mask, mask, v, tau)).max() <= LSH_TOL


# ------------------------------------------------------------------------------------------------
# yoso-4096 layer shapes at S = 4096 (the README's sizes), and the kernel choice itself
# ------------------------------------------------------------------------------------------------

S4096 = dict(b=1, h=12, s=4096, d=64, m=64, tau=9)


@pytest.fixture(scope="module")
def layer4096():
    """One yoso-4096 attention layer's op inputs at S = 4096 (45 padding tokens at the end), with the
    PyTorch reference's codes and output (computed once: ~3.5 s)."""
    b, h, s, d, m, tau = (S4096[k] for k in ("b", "h", "s", "d", "m", "tau"))
    rng = np.random.default_rng(40960)
    mask = np.ones((b, s), np.int32)
    mask[:, s - 45:] = 0
    signs = make_signs(h, m, tau, d, seed=0)
    q = rng.standard_normal((b, h, s, d)).astype(np.float32)
    k = q + 0.5 * rng.standard_normal((b, h, s, d)).astype(np.float32)  # correlated: real collisions
    v = rng.standard_normal((b, h, s, d)).astype(np.float32)
    qc, kc = ref_fast_hash(q, mask, signs, m, tau), ref_fast_hash(k, mask, signs, m, tau)
    return dict(q=q, k=k, v=v, mask=mask, signs=signs, qc=qc, kc=kc, out=ref_lsh(qc, kc, mask, mask, v, tau))


def test_fast_hash_yoso4096_layer_s4096(lib, mode, layer4096):
    L, m, tau = layer4096, S4096["m"], S4096["tau"]
    for x, want in ((L["q"], L["qc"]), (L["k"], L["kc"])):
        np.testing.assert_array_equal(run_fast_hash(lib, x, L["mask"], L["signs"], m, tau), want)


def test_lsh_cumulation_yoso4096_layer_s4096(lib, mode, layer4096):
    L = layer4096
    got = run_lsh(lib, L["qc"], L["kc"], L["mask"], L["mask"], L["v"], S4096["tau"])
    assert np.abs(got - L["out"]).max() <= LSH_TOL
    assert (got[:, :, -45:] == 0).all() and np.abs(got[:, :, :-45]).max() > 0


def test_kernel_report_names_the_simd_kernels_on_this_cpu(lib, monkeypatch, layer4096):
    """The library detects AVX2+FMA exactly when /proc/cpuinfo lists them, picks its best path by default
    (AVX-512 where the CPU has AVX-512F+BW, else AVX2), and splits a yoso-4096 layer at S = 4096 into many
    tasks."""
    L, m, tau = layer4096, S4096["m"], S4096["tau"]
    monkeypatch.delenv("YOSO_FORCE_SCALAR", raising=False)
    monkeypatch.delenv("YOSO_CPU_ISA", raising=False)
    fh_model = _model("FastHash", [("x", F32), ("mask", I32), ("signs", F32)], I32, num_hash=m, hash_code_len=tau)
    lsh_inputs_ = [("query_codes", I32), ("key_codes", I32), ("query_mask", I32), ("key_mask", I32), ("value", F32)]
    lsh_model = _model("LSHCumulation", lsh_inputs_, F32, hash_code_len=tau)
    _REPORT[0].new()
    _session(lib, fh_model, 2).run(None, {"x": L["q"], "mask": L["mask"], "signs": L["signs"]})
    _session(lib, lsh_model, 2).run(None, {"query_codes": L["qc"], "key_codes": L["kc"], "query_mask": L["mask"],
                                           "key_mask": L["mask"], "value": L["v"]})
    fh, lsh = _REPORT[0].new()
    print(f"kernel report: {fh}\n               {lsh}")
    best = kernel_report.best_isa()
    assert fh["cpu_avx2_fma"] == lsh["cpu_avx2_fma"] == int(HAS_AVX2), (fh, HAS_AVX2)
    assert (fh["kernel"], lsh["kernel"]) == (best, f"{best}-dense"), (fh, lsh, SUPPORTED)
    assert (fh["B"], fh["H"], fh["S"], fh["D"], fh["m"], fh["tau"]) == (1, 12, 4096, 64, 64, 9)
    assert fh["tasks"] >= 100 and lsh["tasks"] >= 12, (fh, lsh)  # 49,152 rows; 12 (b, h) slices
    import warnings

    if not HAS_AVX2:
        warnings.warn(kernel_report.NO_AVX2_REASON)
    elif not HAS_AVX512:
        warnings.warn(kernel_report.NO_AVX512_REASON)


# Requests of YOSO_CPU_ISA (and YOSO_FORCE_SCALAR) and what each must run here: the request capped at the
# best path of this CPU; "", "auto", unknown values = the best; YOSO_FORCE_SCALAR wins over YOSO_CPU_ISA.
ISA_REQUESTS = [
    ({"YOSO_CPU_ISA": "scalar"}, "scalar"),
    ({"YOSO_CPU_ISA": "avx2"}, "avx2"),
    ({"YOSO_CPU_ISA": "avx512"}, "avx512"),
    ({"YOSO_CPU_ISA": "AVX512"}, "avx512"),
    ({"YOSO_CPU_ISA": "Avx2"}, "avx2"),
    ({"YOSO_CPU_ISA": "auto"}, "best"),
    ({"YOSO_CPU_ISA": ""}, "best"),
    ({"YOSO_CPU_ISA": "sse9"}, "best"),
    ({"YOSO_CPU_ISA": "avx512-and-more"}, "best"),
    ({}, "best"),
    ({"YOSO_FORCE_SCALAR": "1"}, "scalar"),
    ({"YOSO_FORCE_SCALAR": "1", "YOSO_CPU_ISA": "avx512"}, "scalar"),
    ({"YOSO_FORCE_SCALAR": "0", "YOSO_CPU_ISA": "avx2"}, "avx2"),
    ({"YOSO_FORCE_SCALAR": "", "YOSO_CPU_ISA": "avx512"}, "avx512"),
]


@pytest.mark.parametrize("env,want", ISA_REQUESTS, ids=lambda v: ",".join(f"{k}={x!r}" for k, x in v.items())
                         if isinstance(v, dict) else v)
def test_cpu_isa_env_selects_the_path(lib, monkeypatch, env, want):
    """The forced path is honoured for every op call (the kernel report names it); a path this CPU lacks
    falls back to the best one it has, with the skip reason printed for the path that cannot run here."""
    for k in ("YOSO_CPU_ISA", "YOSO_FORCE_SCALAR"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    best = kernel_report.best_isa()
    expect = best if want == "best" else kernel_report.ISAS[min(kernel_report.ISAS.index(want),
                                                                kernel_report.ISAS.index(best))]
    assert kernel_report.active_isa() == expect
    rng = np.random.default_rng(11)
    x = make_x((1, 2, 21, 64), rng, "normal")
    mask = make_mask(1, 21, rng)
    signs = make_signs(2, 16, 5, 64, seed=2)
    got = run_fast_hash(lib, x, mask, signs, 16, 5)  # asserts kernel == expect (D = 64)
    np.testing.assert_array_equal(got, ref_fast_hash(x, mask, signs, 16, 5))
    qc, kc, qm, km, v = lsh_inputs(1, 2, 19, 23, 7, 20, 6, rng)
    out = run_lsh(lib, qc, kc, qm, km, v, 6)  # asserts kernel == f"{expect}-dense"
    assert np.abs(out - ref_lsh(qc, kc, qm, km, v, 6)).max() <= LSH_TOL
    requested = env.get("YOSO_CPU_ISA", "").lower()
    if want != "best" and expect != want:
        pytest.skip(f"YOSO_CPU_ISA={requested} fell back to {expect} as it must: "
                    + (kernel_report.NO_AVX512_REASON if want == "avx512" else kernel_report.NO_AVX2_REASON))


def test_narrow_fast_hash_kernel_of_each_path(lib, monkeypatch):
    """D < 8: the AVX2 path runs (and reports) the scalar kernel, the AVX-512 path its own block kernel."""
    rng = np.random.default_rng(12)
    x = make_x((2, 2, 19, 4), rng, "normal")
    mask = make_mask(2, 19, rng)
    signs = make_signs(2, 3, 3, 4, seed=4)
    assert kernel_report.fast_hash_kernel("avx2", 4) == "scalar"
    assert kernel_report.fast_hash_kernel("avx512", 4) == "avx512"
    for isa in SUPPORTED:
        use_isa(monkeypatch, isa)
        got = run_fast_hash(lib, x, mask, signs, 3, 3)  # asserts the kernel of the path
        np.testing.assert_array_equal(got, ref_fast_hash(x, mask, signs, 3, 3), err_msg=isa)
    if not HAS_AVX512:
        pytest.skip(kernel_report.NO_AVX512_REASON)


# Mnemonics and operands that only an EVEX (AVX-512) encoding has: zmm registers, opmask registers,
# xmm/ymm 16..31, embedded broadcasts, and AVX-512-only instructions.
_EVEX = re.compile(
    r"%zmm|%k[0-7]\b|%[xy]mm(1[6-9]|2[0-9]|3[01])\b|\{1to\d+\}|"
    r"\b(vmovdq[au](8|16|32|64)|vpternlog[dq]|vperm[it]2|vpcmp[u]?[bwdq]\b|vcompress|vexpand|vpblendm|vblendm|"
    r"k(mov|or|and|andn|not|xor|xnor|shift[lr]|unpck|test|ortest|add)[bwdq]|"
    r"v(extract|insert)[fi](32x4|32x8|64x2|64x4)|vshuf[fi](32x4|64x2)|valign[dq]|vbroadcast[fi](32x4|32x8|64x2|64x4)|"
    r"vrndscale|vscalef|vgetexp|vgetmant|vfixupimm|vrange|vreduce|vpro[lr]v?[dq]|vpabsq|vpm(ax|in)[su]q|vpsraq|vpmullq|"
    r"vcvt[a-z]*2u|vcvtu)"
)


def _text_size(objdump: str, path) -> int | None:
    r = subprocess.run([objdump, "-h", str(path)], capture_output=True, text=True, timeout=60)
    m = re.search(r"^\s*\d+\s+\.text\s+([0-9a-f]+)", r.stdout, re.M)
    return int(m.group(1), 16) if m else None


def _with_symbols(objdump: str, lib: str):
    """``lib``, or -- when it is stripped, as the wheel installs it -- the unstripped copy CMake left in the
    build tree (``build/<wheel tag>/plugins``) if its code is the same (same .text size); else None."""
    def has_symbols(path) -> bool:
        r = subprocess.run(["nm", "-C", str(path)], capture_output=True, text=True, timeout=60)
        return r.returncode == 0 and "avx512" in r.stdout
    if shutil.which("nm") is None:
        return None
    if has_symbols(lib):
        return lib
    size = _text_size(objdump, lib)
    for cand in sorted(REPO.glob("build/*/plugins/libyoso_ort.so"), key=lambda p: -p.stat().st_mtime):
        if has_symbols(cand) and _text_size(objdump, cand) == size:
            return str(cand)
    return None


def test_no_avx512_instructions_outside_the_avx512_kernels(lib):
    """The library is built for the baseline ISA: AVX-512 instructions appear only in the functions of
    yoso_cpu_avx512.cc (symbols in yoso::cpu::simd::avx512 or named *_avx512), which run only after the
    run-time check (so an AVX2-only CPU never executes one). Needs objdump and the library's symbols: the
    installed library is stripped, so its unstripped twin in the build tree is read (same code)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed: cannot disassemble libyoso_ort.so")
    target = _with_symbols(objdump, lib)
    if target is None:
        pytest.skip(f"{lib} is stripped and no unstripped build of the same code is in build/*/plugins: cannot "
                    "attribute its AVX-512 instructions to functions")
    r = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", target], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    func, offenders, avx512_funcs = "?", {}, set()
    header = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    for line in r.stdout.splitlines():
        h = header.match(line)
        if h:
            func = h.group(1)
            continue
        if "\t" in line and _EVEX.search(line.split("\t", 1)[1]):
            if "avx512" in func:
                avx512_funcs.add(func)
            else:
                offenders.setdefault(func, line.strip())
    if not avx512_funcs and not offenders:
        pytest.skip(f"{target} has no AVX-512 code (built without the AVX-512 kernels, or not for x86-64)")
    assert not offenders, f"AVX-512 instructions outside the AVX-512 kernels of {target}: {offenders}"
    assert avx512_funcs, f"no AVX-512 kernel function found in {target}"


def test_cpu_isa_env_documented():
    """YOSO_FORCE_SCALAR and YOSO_CPU_ISA are part of the documented interface (header, docs, benchmarks)."""
    root = Path(__file__).resolve().parents[2]
    header = (root / "plugins/cpu/yoso_cpu_kernels.h").read_text()
    assert "YOSO_FORCE_SCALAR" in header and "YOSO_CPU_ISA" in header
    assert "YOSO_FORCE_SCALAR" in (root / "scripts/bench/bench_ops.py").read_text()
    assert "YOSO_CPU_ISA" in (root / "scripts/bench/bench_kernels_isa.py").read_text()
    assert "YOSO_CPU_ISA" in (root / "docs/performance.md").read_text()
