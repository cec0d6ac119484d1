"""The native PyTorch ops on CUDA tensors (our CUDA kernels through libyoso_kernels.so), on a GPU.

Skipped with the reason when there is no CUDA device or the library was built without CUDA (the
default pip build): scripts/device_check.sh builds a CUDA libyoso_kernels.so and runs this file with
YOSO_KERNELS_LIBRARY pointing at it.

* FastHash codes bit-identical to the PyTorch reference (on the CPU and on the GPU) and to the
  native CPU kernels on the contract's edge shapes: S = 1, 13, 4099; D = 16..1024; tau up to 16
  (FastHash up to 30); masks with padding; empty B / S; float32 and float16 x;
* LSHCumulation within 2e-6 x the sum of |values| (+1e-7) of the reference in float32; in float16
  additionally one float16 ulp of the result (sums are float32, rounded once);
* invalid values raise the CPU's ValueError message (the device records the first bad element);
  tau > 16 is refused with the CUDA limit's message;
* torch's current stream is used (a side stream works, ordered with the default one), CUDA-graph
  capture + replay reproduces eager results, autograd of LSHCumulation matches the CPU reference;
* a small model with kernels="native" on CUDA against kernels="torch" on the CPU (tie-aware codes).
"""

from __future__ import annotations

import copy

import pytest
import torch

from yoso_deploy.modeling import native_ops, ops


def _skip_reason():
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        if not native_ops.has_cuda():
            return ("libyoso_kernels.so was built without the CUDA kernels: build with -DYOSO_BUILD_CUDA=ON and set "
                    "YOSO_KERNELS_LIBRARY (scripts/device_check.sh does both)")
    except Exception as e:  # noqa: BLE001 - the library itself is tested in test_native_ops.py
        return f"libyoso_kernels.so cannot be loaded: {e}"
    return None


pytestmark = [pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())), pytest.mark.gpu, pytest.mark.native]
CUDA = "cuda"


def _case(seed, b, h, s, d, m, tau, mask="right-padded"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, s, d, generator=g)
    x[..., ::7] *= 1e-6  # wide dynamic range: a wrong butterfly order changes bits
    mk = torch.ones(b, s, dtype=torch.int32)
    if mask == "right-padded":
        for i in range(b):
            mk[i, max(1, s - 1 - 5 * i):] = 0
    elif mask == "random":
        mk = torch.randint(0, 2, (b, s), generator=g, dtype=torch.int32)
    return x, mk, ops.draw_signs(h, m, tau, d, generator=g)


EDGE = [(s, d, tau) for s in (1, 13, 4099) for d in (16, 64, 256, 1024) for tau in (1, 9, 16)]


@pytest.mark.parametrize("s,d,tau", EDGE)
def test_fast_hash_edge_shapes_bit_identical(s, d, tau):
    m = min(64, d // tau + 1)
    b, h = (1, 2) if s == 4099 else (2, 3)
    x, mask, signs = _case(s + d + tau, b, h, s, d, m, tau, "right-padded" if s > 1 else "ones")
    want = ops.fast_hash(x, mask, signs, m, tau)
    assert torch.equal(native_ops.fast_hash(x, mask, signs, m, tau), want)  # native CPU
    got = native_ops.fast_hash(x.to(CUDA), mask.to(CUDA), signs.to(CUDA), m, tau)
    assert got.is_cuda and torch.equal(got.cpu(), want)
    assert torch.equal(ops.fast_hash(x.to(CUDA), mask.to(CUDA), signs.to(CUDA), m, tau).cpu(), want)  # reference on GPU
    xh = x.half()
    got_h = native_ops.fast_hash(xh.to(CUDA), mask.to(CUDA), signs.to(CUDA), m, tau)
    assert torch.equal(got_h.cpu(), ops.fast_hash(xh, mask, signs, m, tau))


def test_fast_hash_long_codes_and_special_values():
    x, mask, signs = _case(3, 2, 2, 9, 64, 5, 30, "random")
    x[0, 0, 0, :3] = torch.tensor([float("nan"), float("-inf"), -0.0])
    got = native_ops.fast_hash(x.to(CUDA), mask.to(CUDA), signs.to(CUDA), 5, 30)
    assert torch.equal(got.cpu(), ops.fast_hash(x, mask, signs, 5, 30))


@pytest.mark.parametrize("b,s", [(0, 5), (2, 0), (0, 0)])
def test_empty_batch_or_sequence(b, s):
    x, mask, signs = _case(4, b, 2, s, 16, 6, 4, "ones")
    codes = native_ops.fast_hash(x.to(CUDA), mask.to(CUDA), signs.to(CUDA), 6, 4)
    assert codes.shape == (b, 2, s, 6)
    out = native_ops.lsh_cumulation(codes, codes, mask.to(CUDA), mask.to(CUDA), torch.randn(b, 2, s, 8, device=CUDA), 4)
    assert out.shape == (b, 2, s, 8)


def _lsh_inputs(seed, b, h, sq, sk, m, dv, tau):
    g = torch.Generator().manual_seed(seed)
    pool = torch.randint(0, 1 << tau, (7,), generator=g, dtype=torch.int32)
    qc = pool[torch.randint(0, 7, (b, h, sq, m), generator=g)]
    kc = pool[torch.randint(0, 7, (b, h, sk, m), generator=g)]
    qm = torch.ones(b, sq, dtype=torch.int32)
    km = torch.ones(b, sk, dtype=torch.int32)
    if sq > 2:
        qm[-1, sq // 2:] = 0
    if sk > 2:
        km[0, sk // 3:] = 0
    v = torch.randn(b, h, sk, dv, generator=g)
    return qc, kc, qm, km, v


@pytest.mark.parametrize("s", [1, 13, 4099])
@pytest.mark.parametrize("tau", [1, 9, 16])
@pytest.mark.parametrize("dv", [1, 64, 100])
def test_lsh_cumulation_edge_shapes(s, tau, dv):
    b = 1 if s == 4099 else 2
    qc, kc, qm, km, v = _lsh_inputs(s * 31 + tau + dv, b, 2, s, s, 8, dv, tau)
    want = ops.lsh_cumulation(qc, kc, qm, km, v, tau)
    bound = 2e-6 * ops.lsh_cumulation(qc, kc, qm, km, v.abs(), tau) + 1e-7
    dev = [t.to(CUDA) for t in (qc, kc, qm, km, v)]
    got = native_ops.lsh_cumulation(*dev, tau).cpu()
    assert ((got - want).abs() <= bound).all(), float((got - want).abs().max())
    vh = v.half()
    want_h = ops.lsh_cumulation(qc, kc, qm, km, vh.float(), tau)
    got_h = native_ops.lsh_cumulation(*dev[:4], vh.to(CUDA), tau).cpu()
    assert got_h.dtype == torch.float16
    bound_h = bound + want_h.abs() / 1024 + 6e-8
    assert ((got_h.float() - want_h).abs() <= bound_h).all(), float((got_h.float() - want_h).abs().max())


def test_errors_match_the_cpu_messages():
    x, mask, signs = _case(5, 2, 2, 9, 16, 7, 4, "ones")
    mask[1, 4] = 3
    with pytest.raises(ValueError) as cpu:
        native_ops.fast_hash(x, mask, signs, 7, 4)
    with pytest.raises(ValueError) as gpu:
        native_ops.fast_hash(x.to(CUDA), mask.to(CUDA), signs.to(CUDA), 7, 4)
    assert str(gpu.value) == str(cpu.value)
    qc, kc, qm, km, v = _lsh_inputs(6, 2, 2, 6, 7, 3, 4, 4)
    kc[1, 0, 3, 2] = 1 << 20  # an unchecked index would be an illegal address
    with pytest.raises(ValueError) as cpu:
        native_ops.lsh_cumulation(qc, kc, qm, km, v, 4)
    with pytest.raises(ValueError) as gpu:
        native_ops.lsh_cumulation(*(t.to(CUDA) for t in (qc, kc, qm, km, v)), 4)
    assert str(gpu.value) == str(cpu.value)
    qc, kc, qm, km, v = _lsh_inputs(7, 1, 1, 4, 4, 2, 4, 17)
    with pytest.raises(ValueError, match=r"LSHCumulation \(CUDA\): hash_code_len=17 is above the CUDA backend's limit of 16"):
        native_ops.lsh_cumulation(*(t.to(CUDA) for t in (qc, kc, qm, km, v)), 17)
    with pytest.raises(ValueError, match="input 'mask' is on cpu but 'x' is on cuda"):
        native_ops.fast_hash(x.to(CUDA), mask, signs, 7, 4)


def test_side_stream_and_cuda_graph_replay():
    x, mask, signs = _case(8, 2, 12, 300, 64, 64, 9)
    v = torch.randn(2, 12, 300, 64)
    xd, md, sd, vd = (t.to(CUDA) for t in (x, mask, signs, v))
    want_codes = ops.fast_hash(x, mask, signs, 64, 9)
    eager_codes = native_ops.fast_hash(xd, md, sd, 64, 9)
    eager = native_ops.lsh_cumulation(eager_codes, eager_codes, md, md, vd, 9)
    # The CUDA scatter adds with atomics: the summation order, hence the last bits, vary between runs.
    close = lambda a, b: torch.allclose(a, b, atol=1e-5, rtol=1e-5)  # noqa: E731

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        c = native_ops.fast_hash(xd, md, sd, 64, 9)
        o = native_ops.lsh_cumulation(c, c, md, md, vd, 9)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(c.cpu(), want_codes) and close(o, eager)

    static_x = xd.clone()
    graph = torch.cuda.CUDAGraph()
    warm = torch.cuda.Stream()
    warm.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warm):  # warm-up on a side stream, as torch's docs ask before capture
        for _ in range(2):
            cq = torch.ops.yoso.fast_hash_native(static_x, md, sd, 64, 9)
            torch.ops.yoso.lsh_cumulation_native(cq, cq, md, md, vd, 9)
    torch.cuda.current_stream().wait_stream(warm)
    with torch.cuda.graph(graph):
        gc = torch.ops.yoso.fast_hash_native(static_x, md, sd, 64, 9)
        go = torch.ops.yoso.lsh_cumulation_native(gc, gc, md, md, vd, 9)
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(gc.cpu(), want_codes) and close(go, eager)
    static_x.copy_(xd.flip(2))  # new inputs, same graph
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(gc.cpu(), ops.fast_hash(x.flip(2), mask, signs, 64, 9))


def test_autograd_on_cuda_matches_cpu_reference():
    x, mask, signs = _case(9, 2, 3, 40, 32, 16, 6)
    codes = ops.fast_hash(x, mask, signs, 16, 6)
    w = torch.randn(2, 3, 40, 8)
    v_cpu = torch.randn(2, 3, 40, 8, requires_grad=True)
    v_gpu = v_cpu.detach().to(CUDA).requires_grad_()
    (ops.lsh_cumulation(codes, codes.roll(3, 2), mask, mask, v_cpu, 6) * w).sum().backward()
    cd, md = codes.to(CUDA), mask.to(CUDA)
    (torch.ops.yoso.lsh_cumulation_native(cd, cd.roll(3, 2), md, md, v_gpu, 6) * w.to(CUDA)).sum().backward()
    assert torch.allclose(v_gpu.grad.cpu(), v_cpu.grad, atol=1e-5, rtol=1e-5)


def test_small_model_on_cuda_matches_cpu_reference():
    from support.checkpoints import small_config
    from transformers import YosoModel

    from yoso_deploy.validation import parity
    from yoso_deploy.export import io_spec
    from yoso_deploy.modeling import convert_model

    torch.manual_seed(0)
    hf = YosoModel(small_config(conv_window=3)).eval()
    ref = convert_model(copy.deepcopy(hf), kernels="torch")
    nat = convert_model(copy.deepcopy(hf), kernels="native").to(CUDA)
    ids = torch.randint(3, 97, (2, 64), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 50:] = 0
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    report = parity.check_torch_backend(ref, nat, io_spec(ref.config, "base"), [feeds], backend="cuda-native")
    assert report.passed, report.table()
