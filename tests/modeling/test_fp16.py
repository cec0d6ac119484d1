"""float16 on the CPU: what runs is checked for correctness, what cannot run must be refused.

The contract (plugins/OPS.md) allows float16 ``x`` (FastHash: widened exactly to float32 first) and
float16 ``value`` (LSHCumulation: sums in float32, one rounding at the end). On this machine:

* the PyTorch reference ops implement that in float16 and are the oracle of the CUDA / TensorRT
  kernels (tests/gpu), so their float16 semantics are checked here, bit for bit;
* an fp16 export in expectation mode (standard ONNX ops only) runs on ONNX Runtime's CPU provider: its
  logits must match the float32 PyTorch reference to float16 accuracy, relative to the logits' scale;
* the CPU kernels of libyoso_ort.so are float32 only, so an fp16 LSH export must be refused with the
  runtime's one-line error (UnsupportedPrecisionError), and float16 com.yoso nodes are refused when the
  session is created (tests/plugins/test_op_validation_extra.py asserts that for each op input). Nothing else is
  an allowed outcome: if CPU float16 kernels are added, these refusals fail and must become
  correctness tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import YosoForQuestionAnswering

from support.checkpoints import small_config
from yoso_deploy.workflow import export
from yoso_deploy.modeling import load_model, ops
from yoso_deploy.runtime import UnsupportedPrecisionError, create_session


def _signs(h, m, tau, d, seed=0):
    return ops.draw_signs(h, m, tau, d, generator=torch.Generator().manual_seed(seed))


def test_reference_fast_hash_widens_float16_exactly():
    g = torch.Generator().manual_seed(1)
    b, h, s, d, m, tau = 2, 3, 57, 64, 64, 9
    x = (torch.randn(b, h, s, d, generator=g) * 3).half()
    mask = torch.ones(b, s, dtype=torch.int32)
    mask[1, 40:] = 0
    signs = _signs(h, m, tau, d)
    got = ops.fast_hash(x, mask, signs, m, tau)
    want = ops.fast_hash(x.float(), mask, signs, m, tau)  # float16 -> float32 is exact
    assert got.dtype == torch.int32
    assert torch.equal(got, want)


def test_reference_lsh_cumulation_float16_sums_in_float32_and_rounds_once():
    g = torch.Generator().manual_seed(2)
    b, h, sq, sk, m, dv, tau = 2, 2, 70, 90, 64, 64, 4  # tau 4: full buckets, long float16 sums
    qc = torch.randint(0, 1 << tau, (b, h, sq, m), generator=g, dtype=torch.int32)
    kc = torch.randint(0, 1 << tau, (b, h, sk, m), generator=g, dtype=torch.int32)
    qm = torch.ones(b, sq, dtype=torch.int32)
    km = torch.ones(b, sk, dtype=torch.int32)
    km[1, 60:] = 0
    v = (torch.randn(b, h, sk, dv, generator=g) * 100).half()
    got = ops.lsh_cumulation(qc, kc, qm, km, v, tau)
    want = ops.lsh_cumulation(qc, kc, qm, km, v.float(), tau).half()  # float32 sums, one rounding
    assert got.dtype == torch.float16
    assert torch.equal(got, want), (got.float() - want.float()).abs().max()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16")
    torch.manual_seed(3)
    YosoForQuestionAnswering(small_config()).eval().save_pretrained(root / "ckpt")
    return root


def test_fp16_expectation_export_matches_float32_reference_on_cpu(checkpoint):
    result = export(checkpoint / "ckpt", checkpoint / "exp16", task="qa", attention="expectation", dtype="fp16")
    assert result.manifest["dtype"] == "fp16"
    sess = create_session(result.onnx_path)
    ref = load_model(checkpoint / "ckpt", task="qa", attention="expectation").eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 97, size=(3, 64))
    mask = np.ones_like(ids)
    mask[1, 40:] = 0
    mask[2, 7:] = 0
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"input_ids": ids, "attention_mask": mask})))
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    for name in ("start_logits", "end_logits"):
        g, w = got[name], getattr(want, name).numpy()
        assert g.dtype == np.float16 and g.shape == w.shape
        # Padding included: a NaN at a masked token spreads to every token in the next layer.
        assert np.isfinite(g).all(), f"{name}: {np.isnan(g).sum(axis=1)} NaN per sequence"
        keep = mask.astype(bool)
        scale = float(np.abs(w[keep]).max())
        err = float(np.abs(g[keep].astype(np.float32) - w[keep]).max())
        print(f"fp16 export vs fp32 reference, {name}: max abs error {err:.2e} (logit scale {scale:.2f})")
        # Measured 1.4e-4 / 2.1e-4 on scales 0.47 / 0.31 (3e-4 / 7e-4 of the scale); float16's unit
        # roundoff is 4.9e-4: allow ~8 of them of the logits' scale.
        assert err <= 4e-3 * scale, (name, err, scale)


def test_fp16_lsh_export_is_refused_on_cpu(checkpoint):
    result = export(checkpoint / "ckpt", checkpoint / "lsh16", task="qa", attention="lsh", dtype="fp16")
    assert result.skipped_validation and "fp16" in result.skipped_validation
    with pytest.raises(UnsupportedPrecisionError, match="float16 export.*float32 only.*provider='cuda'"):
        create_session(result.onnx_path)
