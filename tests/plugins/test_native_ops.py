"""The native PyTorch ops (yoso_deploy.modeling.native_ops: libyoso_kernels.so through ctypes) on CPU.

* FastHash codes bit-identical to the pure-PyTorch reference (ops.fast_hash) over D = 1..1024,
  tau 1..30, m around the part boundaries, S = 0, 1, 13, 4099, B = 0, mask patterns, float16 x, with the
  AVX2 kernels and with YOSO_FORCE_SCALAR=1;
* LSHCumulation equal to the reference to fp32 rounding (dense and compact tables, Sq != Sk, Sk = 0,
  all keys masked, odd Dv, float16 values);
* every invalid input raises ValueError with the message ONNX Runtime's library reports for it (the
  same validator), plus the dtype / device checks of the binding;
* autograd: LSHCumulation's value gradient equals the reference's; codes carry no gradient;
  torch.library.opcheck passes (schema, fake tensors, autograd registration);
* results do not depend on the thread count, and concurrent callers get the same results.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from yoso_deploy.modeling import native_ops, ops


def _case(seed, b, h, s, d, m, tau, mask="random"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, s, d, generator=g)
    if mask == "ones":
        mk = torch.ones(b, s, dtype=torch.int32)
    elif mask == "zeros":
        mk = torch.zeros(b, s, dtype=torch.int32)
    elif mask == "right-padded":
        mk = torch.ones(b, s, dtype=torch.int32)
        for i in range(b):
            mk[i, max(1, s - 1 - 3 * i):] = 0
    else:
        mk = torch.randint(0, 2, (b, s), generator=g, dtype=torch.int32)
    signs = ops.draw_signs(h, m, tau, d, generator=g)
    return x, mk, signs


def _lsh_tol(qc, kc, qm, km, v, tau):
    """Per-element bound: fp32 rounding of sums of |values| (the reference on |v|)."""
    return 2e-6 * ops.lsh_cumulation(qc, kc, qm, km, v.abs(), tau) + 1e-7


FAST_HASH_SHAPES = [
    (1, 1, 1, 1, 1, 1), (1, 2, 13, 2, 3, 1), (2, 3, 13, 4, 5, 3), (2, 2, 9, 8, 7, 4), (1, 3, 17, 16, 9, 16),
    (2, 2, 33, 32, 64, 9), (1, 12, 40, 64, 64, 9), (2, 3, 21, 64, 7, 8), (1, 2, 19, 128, 128, 9),
    (1, 2, 11, 256, 31, 8), (1, 2, 7, 512, 65, 30), (1, 1, 5, 1024, 100, 30), (1, 2, 4099, 64, 32, 9),
    (2, 1, 9, 16, 17, 1), (1, 2, 13, 64, 1, 5), (1, 1, 3, 32, 6, 30),
]


@pytest.mark.parametrize("scalar", [False, True], ids=["avx2", "scalar"])
@pytest.mark.parametrize("b,h,s,d,m,tau", FAST_HASH_SHAPES)
def test_fast_hash_codes_bit_identical(monkeypatch, scalar, b, h, s, d, m, tau):
    if scalar:
        monkeypatch.setenv("YOSO_FORCE_SCALAR", "1")
    for mode in ("random", "ones", "right-padded", "zeros"):
        x, mask, signs = _case(b * 1000 + s + d + m, b, h, s, d, m, tau, mode)
        got = native_ops.fast_hash(x, mask, signs, m, tau)
        want = ops.fast_hash(x, mask, signs, m, tau)
        assert got.dtype == torch.int32 and got.shape == (b, h, s, m)
        assert torch.equal(got, want), f"codes differ for {mode} mask, shape {(b, h, s, d)}, m={m}, tau={tau}"


def test_fast_hash_special_values_and_layouts():
    x, mask, signs = _case(1, 2, 3, 16, 32, 12, 5, "ones")
    x[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -0.0, float("-inf")])
    x[1, 2, 3] = 0.0  # a zero row: every bit compares +-0 > 0 -> 0
    assert torch.equal(native_ops.fast_hash(x, mask, signs, 12, 5), ops.fast_hash(x, mask, signs, 12, 5))
    # a non-contiguous view (the model's transposed heads) gives the same codes as its copy
    xt = torch.randn(2, 16, 3, 32).transpose(1, 2)
    assert not xt.is_contiguous()
    assert torch.equal(native_ops.fast_hash(xt, mask, signs, 12, 5), ops.fast_hash(xt.contiguous(), mask, signs, 12, 5))
    # float16 x is widened exactly
    xh = x.half()
    assert torch.equal(native_ops.fast_hash(xh, mask, signs, 12, 5), ops.fast_hash(xh, mask, signs, 12, 5))


@pytest.mark.parametrize("b,s", [(0, 5), (2, 0), (0, 0)])
def test_empty_batch_or_sequence(b, s):
    x, mask, signs = _case(3, b, 2, s, 16, 6, 4)
    codes = native_ops.fast_hash(x, mask, signs, 6, 4)
    assert codes.shape == (b, 2, s, 6)
    v = torch.randn(b, 2, s, 8)
    out = native_ops.lsh_cumulation(codes, codes, mask, mask, v, 4)
    assert out.shape == (b, 2, s, 8)
    assert torch.equal(out, ops.lsh_cumulation(codes, codes, mask, mask, v, 4))


LSH_SHAPES = [  # b, h, sq, sk, m, dv, tau
    (1, 1, 1, 1, 1, 1, 1), (2, 3, 13, 13, 8, 17, 6), (2, 2, 13, 40, 5, 3, 4), (1, 12, 64, 64, 64, 64, 9),
    (2, 2, 20, 7, 3, 100, 16), (1, 2, 9, 30, 4, 8, 30), (1, 2, 4099, 4099, 16, 32, 9), (1, 2, 33, 0, 4, 8, 5),
    (2, 2, 11, 5, 16, 33, 20),
]


@pytest.mark.parametrize("scalar", [False, True], ids=["avx2", "scalar"])
@pytest.mark.parametrize("b,h,sq,sk,m,dv,tau", LSH_SHAPES)
def test_lsh_cumulation_matches_reference(monkeypatch, scalar, b, h, sq, sk, m, dv, tau):
    if scalar:
        monkeypatch.setenv("YOSO_FORCE_SCALAR", "1")
    g = torch.Generator().manual_seed(sq * 7 + sk + m)
    qc = torch.randint(0, 1 << min(tau, 4), (b, h, sq, m), generator=g, dtype=torch.int32)
    kc = torch.randint(0, 1 << min(tau, 4), (b, h, sk, m), generator=g, dtype=torch.int32)
    if tau > 4:  # some codes in the high range too
        qc[..., ::3] += (1 << tau) - 16
        kc[..., ::3] += (1 << tau) - 16
    v = torch.randn(b, h, sk, dv, generator=g)
    for qmode, kmode in (("ones", "ones"), ("random", "right-padded"), ("random", "zeros")):
        qm = _case(1, b, 1, sq, 1, 1, 1, qmode)[1]
        km = _case(2, b, 1, sk, 1, 1, 1, kmode)[1]
        got = native_ops.lsh_cumulation(qc, kc, qm, km, v, tau)
        want = ops.lsh_cumulation(qc, kc, qm, km, v, tau)
        assert got.shape == want.shape and got.dtype == torch.float32
        bad = (got - want).abs() > _lsh_tol(qc, kc, qm, km, v, tau)
        assert not bad.any(), f"{int(bad.sum())} elements off ({qmode}/{kmode}); max {float((got - want).abs().max()):.3e}"
        assert torch.all(got[(qm == 0)[:, None, :, None].expand_as(got)] == 0), "masked queries must be exactly 0"


def test_lsh_cumulation_float16_values():
    g = torch.Generator().manual_seed(5)
    qc = torch.randint(0, 64, (2, 3, 50, 16), generator=g, dtype=torch.int32)
    kc = torch.randint(0, 64, (2, 3, 60, 16), generator=g, dtype=torch.int32)
    qm = torch.ones(2, 50, dtype=torch.int32)
    km = torch.ones(2, 60, dtype=torch.int32)
    km[1, 40:] = 0
    v = torch.randn(2, 3, 60, 24, generator=g).half()
    got = native_ops.lsh_cumulation(qc, kc, qm, km, v, 6)
    want = ops.lsh_cumulation(qc, kc, qm, km, v, 6)
    assert got.dtype == torch.float16
    # both accumulate in fp32 and round once: at most one fp16 ulp apart (sum order differs)
    ulp = torch.finfo(torch.float16).eps * want.float().abs().clamp_min(2 ** -14)
    assert ((got.float() - want.float()).abs() <= ulp).all()


# ---------------------------------------------------------------------------------------------
# Errors: the same messages as the ONNX Runtime library (one validator)
# ---------------------------------------------------------------------------------------------


def _ort_error(op: str, feeds: dict, attrs: dict) -> str:
    from onnx import TensorProto, helper

    from yoso_deploy.runtime import create_session

    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}
    inputs = [helper.make_tensor_value_info(n, types[a.dtype], None) for n, a in feeds.items()]
    node = helper.make_node(op, list(feeds), ["out"], domain="com.yoso", **attrs)
    out_type = TensorProto.INT32 if op == "FastHash" else TensorProto.FLOAT
    g = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("out", out_type, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.yoso", 1)])
    model.ir_version = 8
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
        f.write(model.SerializeToString())
        f.flush()
        try:  # attribute errors come at session creation, value and shape errors at run time
            create_session(f.name, intra_op_threads=1).run(None, feeds)
        except Exception as e:  # noqa: BLE001 - onnxruntime's error classes (InvalidArgument, RuntimeException, ...)
            return str(e)
    raise AssertionError(f"ONNX Runtime accepted the invalid {op} input")


def _fh_inputs():
    x, mask, signs = _case(7, 2, 2, 9, 16, 7, 4, "ones")
    return {"x": x, "mask": mask, "signs": signs}


def _lsh_inputs():
    g = torch.Generator().manual_seed(8)
    return {"query_codes": torch.randint(0, 16, (2, 2, 6, 3), generator=g, dtype=torch.int32),
            "key_codes": torch.randint(0, 16, (2, 2, 7, 3), generator=g, dtype=torch.int32),
            "query_mask": torch.ones(2, 6, dtype=torch.int32), "key_mask": torch.ones(2, 7, dtype=torch.int32),
            "value": torch.randn(2, 2, 7, 4, generator=g)}


def _bad_fast_hash():
    cases = {}
    t = _fh_inputs(); t["mask"][1, 3] = 2; cases["mask value"] = (t, {})  # noqa: E702
    t = _fh_inputs(); t["signs"].view(-1)[11] = 0.5; cases["sign value"] = (t, {})  # noqa: E702
    t = _fh_inputs(); t["x"] = t["x"][0]; cases["x rank"] = (t, {})  # noqa: E702
    t = _fh_inputs(); t["x"] = t["x"][..., :12].contiguous(); cases["D not a power of two"] = (t, {})  # noqa: E702
    t = _fh_inputs(); t["signs"] = t["signs"][:, :, :1].contiguous(); cases["signs shape"] = (t, {})  # noqa: E702
    t = _fh_inputs(); t["mask"] = t["mask"][:, :5].contiguous(); cases["mask shape"] = (t, {})  # noqa: E702
    cases["num_hash 0"] = (_fh_inputs(), {"num_hash": 0})
    cases["hash_code_len 31"] = (_fh_inputs(), {"hash_code_len": 31})
    cases["hash_code_len > D"] = (_fh_inputs(), {"hash_code_len": 17})
    return cases


def _bad_lsh():
    cases = {}
    t = _lsh_inputs(); t["key_codes"][0, 1, 2, 0] = 16; cases["key code out of range"] = (t, {})  # noqa: E702
    t = _lsh_inputs(); t["query_codes"][1, 0, 0, 2] = -1; cases["negative query code"] = (t, {})  # noqa: E702
    t = _lsh_inputs(); t["key_mask"][0, 0] = 3; cases["key mask value"] = (t, {})  # noqa: E702
    t = _lsh_inputs(); t["value"] = t["value"][:, :, :6].contiguous(); cases["value length"] = (t, {})  # noqa: E702
    t = _lsh_inputs(); t["query_mask"] = t["query_mask"][:1].contiguous(); cases["query mask shape"] = (t, {})  # noqa: E702
    t = _lsh_inputs(); t["key_codes"] = t["key_codes"][..., :2].contiguous(); cases["m mismatch"] = (t, {})  # noqa: E702
    t = _lsh_inputs(); t["value"] = t["value"][0]; cases["value rank"] = (t, {})  # noqa: E702
    cases["hash_code_len 0"] = (_lsh_inputs(), {"hash_code_len": 0})
    return cases


@pytest.mark.parametrize("case", list(_bad_fast_hash()))
def test_fast_hash_errors_match_onnxruntime(case):
    feeds, attrs = _bad_fast_hash()[case]
    attrs = {"num_hash": 7, "hash_code_len": 4, **attrs}
    with pytest.raises(ValueError) as e:
        native_ops.fast_hash(feeds["x"], feeds["mask"], feeds["signs"], attrs["num_hash"], attrs["hash_code_len"])
    msg = str(e.value)
    assert msg.startswith("FastHash") and "Fix:" in msg and "\n" not in msg
    assert msg in _ort_error("FastHash", {k: v.numpy() for k, v in feeds.items()}, attrs)


@pytest.mark.parametrize("case", list(_bad_lsh()))
def test_lsh_cumulation_errors_match_onnxruntime(case):
    feeds, attrs = _bad_lsh()[case]
    attrs = {"hash_code_len": 4, **attrs}
    with pytest.raises(ValueError) as e:
        native_ops.lsh_cumulation(*feeds.values(), attrs["hash_code_len"])
    msg = str(e.value)
    assert msg.startswith("LSHCumulation") and "Fix:" in msg and "\n" not in msg
    assert msg in _ort_error("LSHCumulation", {k: v.numpy() for k, v in feeds.items()}, attrs)


def test_binding_errors_name_dtype_and_device():
    t = _fh_inputs()
    with pytest.raises(ValueError, match=r"FastHash: input 'mask' \(input 1\) must be int32; got int64"):
        native_ops.fast_hash(t["x"], t["mask"].long(), t["signs"], 7, 4)
    with pytest.raises(ValueError, match=r"FastHash: input 'x' \(input 0\) must be float32; got bfloat16"):
        native_ops.fast_hash(t["x"].bfloat16(), t["mask"], t["signs"], 7, 4)
    with pytest.raises(ValueError, match=r"input 'signs' \(input 2\) must be float32; got float64"):
        native_ops.fast_hash(t["x"], t["mask"], t["signs"].double(), 7, 4)
    lt = _lsh_inputs()
    with pytest.raises(ValueError, match=r"LSHCumulation: input 'key_codes' \(input 1\) must be int32; got int64"):
        native_ops.lsh_cumulation(lt["query_codes"], lt["key_codes"].long(), lt["query_mask"], lt["key_mask"],
                                  lt["value"], 4)
    meta = torch.empty(2, 2, 9, 16, device="meta")
    with pytest.raises(ValueError, match=r"input 'mask' is on cpu but 'x' is on meta"):
        native_ops.fast_hash(meta, t["mask"], t["signs"], 7, 4)
    with pytest.raises(ValueError, match="run on CPU and CUDA tensors, not on meta"):
        native_ops.fast_hash(meta, t["mask"].to("meta"), t["signs"].to("meta"), 7, 4)
    with pytest.raises(ValueError, match="unknown kernels 'cuda'"):
        native_ops.check_kernels("cuda")


def test_cuda_tensors_need_a_cuda_build_or_device():
    """Without a GPU: a CUDA-tensor call cannot be made here, but a CPU-only library says so clearly."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: tests/plugins/test_native_ops_cuda.py covers the CUDA path")
    if native_ops.has_cuda():
        pytest.skip("this libyoso_kernels.so has the CUDA kernels (nothing to report without a device)")
    info = native_ops.build_info()
    assert info["cuda"] is False and info["abi_version"] == native_ops.ABI_VERSION


# ---------------------------------------------------------------------------------------------
# Autograd, torch.library contract, threads
# ---------------------------------------------------------------------------------------------


def test_autograd_matches_reference():
    x, mask, signs = _case(11, 2, 3, 21, 32, 16, 6, "right-padded")
    codes = torch.ops.yoso.fast_hash_native(x.requires_grad_(), mask, signs, 16, 6)
    assert codes.dtype == torch.int32 and not codes.requires_grad  # codes carry no gradient
    v1 = torch.randn(2, 3, 21, 8, requires_grad=True)
    v2 = v1.detach().clone().requires_grad_()
    w = torch.randn(2, 3, 21, 8)
    kc = codes.roll(1, dims=2)
    (torch.ops.yoso.lsh_cumulation_native(codes, kc, mask, mask, v1, 6) * w).sum().backward()
    (torch.ops.yoso.lsh_cumulation(codes, kc, mask, mask, v2, 6) * w).sum().backward()
    assert torch.allclose(v1.grad, v2.grad, atol=1e-6, rtol=1e-5)
    assert v1.grad[(mask == 0)[:, None, :, None].expand_as(v1.grad)].abs().max() == 0, "masked keys get no gradient"


def test_opcheck():
    x, mask, signs = _case(12, 1, 2, 9, 16, 6, 4, "random")
    torch.library.opcheck(torch.ops.yoso.fast_hash_native.default, (x, mask, signs, 6, 4))
    codes = native_ops.fast_hash(x, mask, signs, 6, 4)
    v = torch.randn(1, 2, 9, 5, requires_grad=True)
    torch.library.opcheck(torch.ops.yoso.lsh_cumulation_native.default, (codes, codes, mask, mask, v, 4))


def test_results_do_not_depend_on_threads_and_concurrent_calls_agree():
    x, mask, signs = _case(13, 2, 12, 700, 64, 64, 9, "right-padded")
    v = torch.randn(2, 12, 700, 64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        c1 = native_ops.fast_hash(x, mask, signs, 64, 9)
        o1 = native_ops.lsh_cumulation(c1, c1, mask, mask, v, 9)
        torch.set_num_threads(max(2, before))
        c2 = native_ops.fast_hash(x, mask, signs, 64, 9)
        o2 = native_ops.lsh_cumulation(c2, c2, mask, mask, v, 9)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(c1, c2) and torch.equal(o1, o2)
    results, errors = [None] * 4, []

    def work(i):
        try:
            c = native_ops.fast_hash(x, mask, signs, 64, 9)
            results[i] = (c, native_ops.lsh_cumulation(c, c, mask, mask, v, 9))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for c, o in results:
        assert torch.equal(c, c1) and torch.equal(o, o1)


def test_library_exports_only_the_c_abi_and_is_hardened():
    """libyoso_kernels.so: exactly the seven functions of yoso_kernels.h, full RELRO, no RPATH, no ORT/torch link."""
    import shutil
    import subprocess

    from yoso_deploy._native import kernels_library_path

    lib = str(kernels_library_path())
    nm, readelf = shutil.which("nm"), shutil.which("readelf")
    assert nm and readelf, "binutils (nm, readelf) are required"
    defined = {ln.split()[-1] for ln in subprocess.run([nm, "-D", "--defined-only", lib], capture_output=True,
                                                       text=True, check=True).stdout.splitlines() if ln.strip()}
    assert defined == {"yoso_fast_hash", "yoso_fast_hash_workspace_size", "yoso_kernels_abi_version",
                       "yoso_kernels_build_info", "yoso_kernels_has_cuda", "yoso_lsh_cumulation",
                       "yoso_lsh_cumulation_workspace_size"}, sorted(defined)
    dyn = subprocess.run([readelf, "-dW", lib], capture_output=True, text=True, check=True).stdout
    assert "BIND_NOW" in dyn or " NOW" in dyn, "not linked with -z now"
    assert "(RPATH)" not in dyn and "(RUNPATH)" not in dyn
    assert not any(n in dyn for n in ("onnxruntime", "libtorch", "libc10", "libcudart.so")), dyn
    undefined = subprocess.run([nm, "-D", "--undefined-only", lib], capture_output=True, text=True, check=True).stdout
    assert "__stack_chk_fail" in undefined
