"""The SIMD (x86-64 AVX2+FMA) CPU kernels of libyoso_ort.so against the reference and the scalar path.

libyoso_ort.so picks its CPU kernels at run time (plugins/cpu/yoso_cpu_kernels.h): the AVX2+FMA
kernels when the CPU has them, the portable scalar kernels otherwise or when the environment
variable ``YOSO_FORCE_SCALAR`` is set to a non-empty value other than ``0`` (read on every op call).
Every test here runs both ways ("default" = whatever this CPU selects, "scalar" = forced):

* FastHash must be bit-identical to ``yoso_deploy.modeling.ops.fast_hash`` for every width D the
  contract allows (the AVX2 code has separate in-register paths for D = 8..64 and a memory path for
  D >= 128; D < 8 is scalar), with token counts that are not multiples of the SIMD blocks, tau not
  dividing D, padding masks and values that stress the rounding (ties, +-0, wide ranges, inf/NaN).
* LSHCumulation must equal the reference to rounding, for value widths Dv that are not multiples
  of 8 (masked tail vectors) and for several block/chunk configurations; since both paths add in the
  same order (keys in key order into a bucket, hash functions in order into a query), their outputs
  must also be identical to each other.

Every op call also checks *which* kernel ran, from the library's kernel report (``YOSO_KERNEL_REPORT``,
tests/kernel_report.py): "default" must run the AVX2 kernels (D >= 8; the dense LSHCumulation tables)
when /proc/cpuinfo lists AVX2 and FMA, "scalar" the portable ones; otherwise "SIMD vs scalar" could
compare the scalar kernels with themselves. On a CPU without AVX2+FMA the "default" cases and the
SIMD-vs-scalar comparisons are skipped with that reason (shown in pytest's summary), never passed.
"""


from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import onnxruntime as ort
from onnx import TensorProto, helper

from support import kernel_report
from yoso_deploy import ort_library_path
from yoso_deploy.modeling import ops

pytestmark = pytest.mark.native

F32, I32 = TensorProto.FLOAT, TensorProto.INT32
LSH_TOL = 1e-5

MODES = ["default", "scalar"]
HAS_AVX2 = kernel_report.cpu_has_avx2_fma()
_REPORT: list = []  # the module's kernel report (one kernel_report.Report), set by the lib fixture


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> str:
    _REPORT[:] = [kernel_report.Report(tmp_path_factory.mktemp("simd") / "kernels.txt")]
    _SESSIONS.clear()  # sessions of this module are created with the report on
    return str(ort_library_path())


def require_avx2():
    if not HAS_AVX2:
        pytest.skip(kernel_report.NO_AVX2_REASON)


@pytest.fixture(params=MODES)
def mode(request, monkeypatch) -> str:
    if request.param == "scalar":
        monkeypatch.setenv("YOSO_FORCE_SCALAR", "1")
    else:
        require_avx2()  # "default" would be the scalar kernels again (covered by "scalar")
        monkeypatch.delenv("YOSO_FORCE_SCALAR", raising=False)
    return request.param


def expected_kernel(op: str, d: int = 0, compact: bool = False) -> str:
    """The kernel the library must pick now: AVX2 when the CPU has it and YOSO_FORCE_SCALAR is not set
    (FastHash needs D >= 8; LSHCumulation's compact tables for large tau are scalar only)."""
    forced = os.environ.get("YOSO_FORCE_SCALAR", "") not in ("", "0")
    simd = HAS_AVX2 and not forced
    if op == "FastHash":
        return "avx2" if simd and d >= 8 else "scalar"
    if compact:
        return "scalar-compact"
    return "avx2-dense" if simd else "scalar-dense"


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
        check_kernel("LSHCumulation", expected_kernel("LSHCumulation", compact=compact))
    return out


# ------------------------------------------------------------------------------------------------
# Data and references
# ------------------------------------------------------------------------------------------------


def make_mask(b, s, rng):
    """Row 0 full, the other rows right-padded, plus a hole in the middle of the last row."""
    mask = np.ones((b, s), dtype=np.int32)
    for i in range(1, b):
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
    require_avx2()  # compares the AVX2 kernel with the scalar one
    rng = np.random.default_rng(5)
    x = make_x((2, 4, 333, 64), rng, "scaled")
    mask = make_mask(2, 333, rng)
    signs = make_signs(4, 64, 9, 64, seed=3)
    monkeypatch.delenv("YOSO_FORCE_SCALAR", raising=False)
    outs = [run_fast_hash(lib, x, mask, signs, 64, 9, threads=t) for t in (1, 2, 3)]
    monkeypatch.setenv("YOSO_FORCE_SCALAR", "1")
    outs.append(run_fast_hash(lib, x, mask, signs, 64, 9, threads=2))
    monkeypatch.setenv("YOSO_FORCE_SCALAR", "0")  # "0" means: do not force
    outs.append(run_fast_hash(lib, x, mask, signs, 64, 9, threads=2))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    np.testing.assert_array_equal(outs[0], ref_fast_hash(x, mask, signs, 64, 9))


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
def test_lsh_cumulation_simd_and_scalar_identical(lib, monkeypatch, b, h, sq, sk, m, dv, tau, narrow):
    require_avx2()
    rng = np.random.default_rng(sq * 17 + sk + dv * 3 + tau)
    qc, kc, qm, km, v = lsh_inputs(b, h, sq, sk, m, dv, tau, rng, narrow)
    compact = tau in COMPACT_TAUS
    monkeypatch.delenv("YOSO_FORCE_SCALAR", raising=False)
    fast = run_lsh(lib, qc, kc, qm, km, v, tau, compact=compact)
    one_thread = run_lsh(lib, qc, kc, qm, km, v, tau, threads=1, compact=compact)
    monkeypatch.setenv("YOSO_FORCE_SCALAR", "1")
    scalar = run_lsh(lib, qc, kc, qm, km, v, tau, compact=compact)
    np.testing.assert_array_equal(fast, scalar)
    np.testing.assert_array_equal(fast, one_thread)


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
    """The library detects AVX2+FMA exactly when /proc/cpuinfo lists them, picks the AVX2 kernels then
    (unless YOSO_FORCE_SCALAR), and splits a yoso-4096 layer at S = 4096 into many tasks."""
    L, m, tau = layer4096, S4096["m"], S4096["tau"]
    monkeypatch.delenv("YOSO_FORCE_SCALAR", raising=False)
    fh_model = _model("FastHash", [("x", F32), ("mask", I32), ("signs", F32)], I32, num_hash=m, hash_code_len=tau)
    lsh_inputs_ = [("query_codes", I32), ("key_codes", I32), ("query_mask", I32), ("key_mask", I32), ("value", F32)]
    lsh_model = _model("LSHCumulation", lsh_inputs_, F32, hash_code_len=tau)
    _REPORT[0].new()
    _session(lib, fh_model, 2).run(None, {"x": L["q"], "mask": L["mask"], "signs": L["signs"]})
    _session(lib, lsh_model, 2).run(None, {"query_codes": L["qc"], "key_codes": L["kc"], "query_mask": L["mask"],
                                           "key_mask": L["mask"], "value": L["v"]})
    fh, lsh = _REPORT[0].new()
    print(f"kernel report: {fh}\n               {lsh}")
    assert fh["cpu_avx2_fma"] == lsh["cpu_avx2_fma"] == int(HAS_AVX2), (fh, HAS_AVX2)
    assert (fh["kernel"], lsh["kernel"]) == (("avx2", "avx2-dense") if HAS_AVX2 else ("scalar", "scalar-dense"))
    assert (fh["B"], fh["H"], fh["S"], fh["D"], fh["m"], fh["tau"]) == (1, 12, 4096, 64, 64, 9)
    assert fh["tasks"] >= 100 and lsh["tasks"] >= 12, (fh, lsh)  # 49,152 rows; 12 (b, h) slices
    if not HAS_AVX2:
        import warnings

        warnings.warn(kernel_report.NO_AVX2_REASON)


def test_force_scalar_env_documented():
    """YOSO_FORCE_SCALAR is part of the documented interface (header and benchmark script)."""
    root = Path(__file__).resolve().parents[2]
    assert "YOSO_FORCE_SCALAR" in (root / "plugins/cpu/yoso_cpu_kernels.h").read_text()
    assert "YOSO_FORCE_SCALAR" in (root / "scripts/bench/bench_ops.py").read_text()
