"""The reference model with ``kernels="native"`` (our AVX2 kernels through libyoso_kernels.so) against
``kernels="torch"`` (the pure-PyTorch reference ops), on CPU.

Same weights, same signs, same inputs. The first LSH layer sees identical inputs, so its codes must be
bit-identical; later layers see inputs that differ by fp32 rounding (LSHCumulation's summation order
differs), so their codes are compared tie-aware (yoso_deploy.kernel_parity.compare_codes: every
differing bit must have a pre-sign value within 1e-4 of its row's RMS), and the outputs must agree to
fp32 rounding where no code differs.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
from conftest import random_inputs, small_config
from transformers import YosoConfig, YosoForQuestionAnswering, YosoModel

from yoso_deploy.kernel_parity import capture_lsh_layers, compare_codes, compare_tensors
from yoso_deploy.modeling import build_model, convert_model, load_model


def _pair(hf, **kw):
    return (convert_model(copy.deepcopy(hf), kernels="torch", **kw),
            convert_model(copy.deepcopy(hf), kernels="native", **kw))


def _run(model, ids, mask):
    with torch.inference_mode(), capture_lsh_layers(model) as layers:
        out = model(input_ids=ids, attention_mask=mask)
    return out, layers


def _compare_layers(ref_layers, got_layers):
    results = []
    for i, (r, g) in enumerate(zip(ref_layers, got_layers)):
        for which in ("q", "k"):
            results.append(compare_codes(f"layer {i} {which}_codes", r[f"{which}_codes"], g[f"{which}_codes"],
                                         signs=r["signs"], ref_x=r[which], got_x=g[which],
                                         num_hash=r["num_hash"], hash_code_len=r["hash_code_len"]))
    return results


def _right_padded(ids):
    mask = torch.ones_like(ids)
    for b in range(ids.shape[0]):
        mask[b, ids.shape[1] - 3 * b:] = 0
    return mask


@pytest.mark.parametrize("conv_window", [None, 3])
def test_small_model_native_matches_torch(conv_window):
    cfg = small_config(conv_window=conv_window, num_hidden_layers=3)
    torch.manual_seed(0)
    ref, nat = _pair(YosoModel(cfg).eval())
    assert {a.self.kernels for a in (lay.attention for lay in nat.encoder.layer)} == {"native"}
    ids, _ = random_inputs(3, 40)
    mask = _right_padded(ids)
    (r_out, r_layers), (n_out, n_layers) = _run(ref, ids, mask), _run(nat, ids, mask)
    codes = _compare_layers(r_layers, n_layers)
    assert codes[0].differing_codes == 0 and codes[1].differing_codes == 0, [c.summary() for c in codes[:2]]
    assert all(c.ok for c in codes), [c.summary() for c in codes]
    out = compare_tensors("last_hidden_state", r_out.last_hidden_state, n_out.last_hidden_state, atol=1e-5)
    if all(c.differing_codes == 0 for c in codes):
        assert out.ok, out.summary()


def test_load_model_native_qa_default_checkpoint():
    from yoso_deploy.export import default_model_dir

    ref = load_model(default_model_dir(), task="qa")
    nat = load_model(default_model_dir(), task="qa", kernels="native")
    assert nat.yoso_kernels == "native" and ref.yoso_kernels == "torch"
    ids, _ = random_inputs(2, 96, vocab=500, seed=3)
    mask = _right_padded(ids)
    (r_out, r_layers), (n_out, n_layers) = _run(ref, ids, mask), _run(nat, ids, mask)
    codes = _compare_layers(r_layers, n_layers)
    assert codes[0].differing_codes == 0 and codes[1].differing_codes == 0
    assert all(c.ok for c in codes), [c.summary() for c in codes]
    if all(c.differing_codes == 0 for c in codes):
        for name in ("start_logits", "end_logits"):
            cmp = compare_tensors(name, getattr(r_out, name), getattr(n_out, name), atol=1e-4)
            assert cmp.ok, cmp.summary()


def test_invalid_kernels_name_is_refused():
    with pytest.raises(ValueError, match="unknown kernels 'avx'; choose one of torch, native"):
        build_model(small_config(), kernels="avx")


def test_training_step_native_matches_torch():
    """Training mode: signs are redrawn per forward (same seed -> same signs), gradients flow to the
    value projection through LSHCumulation's autograd formula on the native kernels."""
    cfg = small_config()
    torch.manual_seed(1)
    ref, nat = _pair(YosoForQuestionAnswering(cfg))
    ids, mask = random_inputs(2, 24, seed=5)
    grads = []
    for model in (ref, nat):
        model.train()
        torch.manual_seed(123)
        out = model(input_ids=ids, attention_mask=mask, start_positions=torch.tensor([3, 5]),
                    end_positions=torch.tensor([4, 9]))
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("value" in n for n in grads[0])
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n


def test_export_of_a_native_model_uses_the_reference_ops():
    """torch.export sees the ops the exporter translates to com.yoso, whatever `kernels` says."""
    torch.manual_seed(0)
    nat = build_model(small_config(), kernels="native")
    ids, mask = random_inputs(2, 12)
    ep = torch.export.export(nat, (), {"input_ids": ids, "attention_mask": mask})
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function" and "yoso" in str(n.target)}
    assert targets == {"yoso.fast_hash.default", "yoso.lsh_cumulation.default"}, targets


def test_yoso_4096_layer_at_4096_tokens():
    """One layer of the uw-madison/yoso-4096 configuration (hidden 768, 12 heads, m=64, tau=9) at S = 4096."""
    cfg = YosoConfig(vocab_size=1000, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=4096 + 2, num_hash=64, hash_code_len=9,
                     conv_window=None, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ref, nat = _pair(YosoModel(cfg).eval())
    ids = torch.randint(3, 1000, (1, 4096), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 4000:] = 0
    t0 = time.perf_counter()
    r_out, r_layers = _run(ref, ids, mask)
    t1 = time.perf_counter()
    n_out, n_layers = _run(nat, ids, mask)
    t2 = time.perf_counter()
    print(f"yoso-4096 layer, S 4096: torch ops {1000 * (t1 - t0):.0f} ms, native {1000 * (t2 - t1):.0f} ms (first call)")
    codes = _compare_layers(r_layers, n_layers)
    assert all(c.differing_codes == 0 for c in codes), [c.summary() for c in codes]
    out = compare_tensors("last_hidden_state", r_out.last_hidden_state, n_out.last_hidden_state, atol=1e-5)
    assert out.ok, out.summary()
