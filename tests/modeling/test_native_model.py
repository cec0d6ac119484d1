"""The reference model with ``kernels="native"`` (our AVX2 kernels through libyoso_kernels.so) against
``kernels="torch"`` (the pure-PyTorch reference ops), on CPU.

Same weights, same signs, same inputs. The native model is judged against the reference exactly as an
export is (yoso_deploy.validation.parity, plugins/OPS.md section 5): the first LSH layer sees identical inputs, so
its codes must be bit-identical; later layers see inputs that differ by fp32 rounding (LSHCumulation's
summation order differs), so their codes are judged tie-aware, and with the native run's codes injected
into the reference every layer tensor, hidden state and output must agree within fp32 tolerances.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
from support.checkpoints import random_inputs, small_config, yoso4096_config
from transformers import YosoForQuestionAnswering, YosoModel

from yoso_deploy.validation import parity
from yoso_deploy.export import io_spec
from yoso_deploy.modeling import build_model, convert_model, load_model


def _pair(hf, **kw):
    return (convert_model(copy.deepcopy(hf), kernels="torch", **kw),
            convert_model(copy.deepcopy(hf), kernels="native", **kw))


def _judge(ref, nat, ids, mask, task="base"):
    """The parity report of ``nat`` against ``ref`` on one input; asserts it passed."""
    spec = io_spec(ref.config, task)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    if "token_type_ids" in spec.input_names:
        feeds["token_type_ids"] = torch.zeros_like(ids).numpy()
    report = parity.check_torch_backend(ref, nat, spec, [feeds])
    assert report.passed, report.table()
    return report


def _first_layer_codes_identical(report):
    first = [c for c in report.comparisons if c.kind == "codes" and c.layer == 0]
    assert len(first) == 2 and all(c.codes.identical == c.codes.compared for c in first), report.table()


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
    _first_layer_codes_identical(_judge(ref, nat, ids, _right_padded(ids)))


def test_load_model_native_qa_default_checkpoint():
    from yoso_deploy.export import default_model_dir

    ref = load_model(default_model_dir(), task="qa")
    nat = load_model(default_model_dir(), task="qa", kernels="native")
    assert nat.yoso_kernels == "native" and ref.yoso_kernels == "torch"
    ids, _ = random_inputs(2, 96, vocab=500, seed=3)
    _first_layer_codes_identical(_judge(ref, nat, ids, _right_padded(ids), task="qa"))


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


@pytest.mark.slow  # a yoso-4096 layer at 4096 tokens
def test_yoso_4096_layer_at_4096_tokens():
    """One layer of the uw-madison/yoso-4096 configuration (hidden 768, 12 heads, m=64, tau=9) at S = 4096."""
    cfg = yoso4096_config(num_hidden_layers=1, vocab_size=1000)
    torch.manual_seed(0)
    ref, nat = _pair(YosoModel(cfg).eval())
    ids = torch.randint(3, 1000, (1, 4096), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 4000:] = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        ref(input_ids=ids, attention_mask=mask)
    t1 = time.perf_counter()
    with torch.inference_mode():
        nat(input_ids=ids, attention_mask=mask)
    t2 = time.perf_counter()
    print(f"yoso-4096 layer, S 4096: torch ops {1000 * (t1 - t0):.0f} ms, native {1000 * (t2 - t1):.0f} ms (first call)")
    report = _judge(ref, nat, ids, mask)
    (q, k) = [c for c in report.comparisons if c.kind == "codes"]
    assert q.codes.identical == q.codes.compared and k.codes.identical == k.codes.compared  # one layer: same inputs
