"""The reference model: parity with transformers, masking, determinism, convergence, checkpoints."""

import copy

import pytest
import torch
from support.checkpoints import random_inputs, small_config
from transformers import YosoForMaskedLM, YosoForQuestionAnswering

from yoso_deploy.modeling import (
    TASK_CLASSES,
    YosoReferenceSelfAttention,
    build_model,
    canonical_task,
    convert_model,
    load_model,
    ops,
)


def first_output(out):
    return out[0] if isinstance(out, tuple) else next(iter(out.values()))


def run(model, ids, mask, task):
    with torch.no_grad():
        if task == "multiple-choice":
            return first_output(model(input_ids=ids[:, None].expand(-1, 2, -1).contiguous(),
                                      attention_mask=mask[:, None].expand(-1, 2, -1).contiguous()))
        return first_output(model(input_ids=ids, attention_mask=mask))


@pytest.mark.parametrize("task", list(TASK_CLASSES))
@pytest.mark.parametrize("conv_window", [None, 3])
def test_expectation_matches_transformers(task, conv_window):
    cfg = small_config(conv_window=conv_window)
    torch.manual_seed(1)
    hf = TASK_CLASSES[task](cfg).eval()
    ref = convert_model(copy.deepcopy(hf), attention="expectation")
    assert all(isinstance(l.attention.self, YosoReferenceSelfAttention) for l in (ref if task == "base" else ref.yoso).encoder.layer)
    ids, mask = random_inputs(3, 37)
    want, got = run(hf, ids, mask, task), run(ref, ids, mask, task)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("attention", ["lsh", "expectation"])
@pytest.mark.parametrize("conv_window", [None, 3])
def test_padding_and_batch_invariance(attention, conv_window):
    cfg = small_config(conv_window=conv_window)
    torch.manual_seed(2)
    model = build_model(cfg, task="qa", attention=attention)
    ids, mask = random_inputs(3, 21, seed=3)
    alone = run(model, ids, mask, "qa")
    # Append 16 padding tokens (pad id 1, mask 0): the real tokens' logits must not move.
    pad_ids = torch.cat([ids, torch.full((3, 16), 1)], dim=1)
    pad_mask = torch.cat([mask, torch.zeros(3, 16, dtype=mask.dtype)], dim=1)
    padded = run(model, pad_ids, pad_mask, "qa")[:, :21]
    assert (padded - alone).abs().max().item() <= 1e-6
    # Batch invariance: a sequence's output does not depend on its neighbours (with mixed padding).
    short_ids, short_mask = pad_ids.clone(), pad_mask.clone()
    short_mask[1, 10:] = 0
    short_ids[1, 10:] = 1
    together = run(model, short_ids, short_mask, "qa")
    for i in range(3):
        single = run(model, short_ids[i : i + 1], short_mask[i : i + 1], "qa")
        assert (together[i : i + 1] - single).abs().max().item() <= 1e-6
    single = run(model, ids[1:2, :10], mask[1:2, :10], "qa")
    assert (together[1:2, :10] - single).abs().max().item() <= 1e-6


def test_transformers_ignores_the_mask_but_we_do_not():
    """Documents the bug this project fixes: transformers' YOSO output moves when padding is added."""
    cfg = small_config()
    torch.manual_seed(4)
    hf = YosoForQuestionAnswering(cfg).eval()
    ref = convert_model(copy.deepcopy(hf), attention="expectation")
    ids, mask = random_inputs(1, 24, seed=5)
    pad_ids = torch.cat([ids, torch.full((1, 16), 1)], dim=1)
    pad_mask = torch.cat([mask, torch.zeros(1, 16, dtype=mask.dtype)], dim=1)
    hf_shift = (run(hf, pad_ids, pad_mask, "qa")[:, :24] - run(hf, ids, mask, "qa")).abs().max().item()
    ref_shift = (run(ref, pad_ids, pad_mask, "qa")[:, :24] - run(ref, ids, mask, "qa")).abs().max().item()
    assert hf_shift > 1e-4
    assert ref_shift <= 1e-6


def test_masked_queries_output_zero():
    cfg = small_config()
    att = build_model(cfg, "base", "lsh").encoder.layer[0].attention.self
    h = torch.randn(2, 9, cfg.hidden_size)
    mask = torch.ones(2, 9)
    mask[0, 5:] = 0
    for mode in ("lsh", "expectation"):
        att.attention = mode
        with torch.no_grad():
            ctx = att(h, mask)[0]
        assert (ctx[0, 5:] == 0).all()
        assert (ctx[0, :5].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("attention", ["lsh", "expectation"])
def test_deterministic_run_after_run(attention):
    cfg = small_config(num_hash=8)
    torch.manual_seed(6)
    model = build_model(cfg, "mlm", attention)
    ids, mask = random_inputs(2, 50)
    a, b = run(model, ids, mask, "mlm"), run(model, ids, mask, "mlm")
    assert torch.equal(a, b)
    # A second model built from the same weights and seed draws the same hash functions.
    twin = convert_model(copy.deepcopy(model), attention=attention, seed=0)
    assert torch.equal(run(twin, ids, mask, "mlm"), a)


def test_signs_are_seeded_buffers_and_redrawn_only_in_training():
    cfg = small_config()
    m0 = build_model(cfg, "base", "lsh", seed=0)
    m1 = build_model(cfg, "base", "lsh", seed=1)
    s0 = [l.attention.self.signs for l in m0.encoder.layer]
    s1 = [l.attention.self.signs for l in m1.encoder.layer]
    assert not torch.equal(s0[0], s1[0])
    assert not torch.equal(s0[0], s0[1])  # layers get different hash functions
    assert set(s0[0].unique().tolist()) == {-1.0, 1.0}
    assert "signs" not in "".join(m0.state_dict())  # not persisted: derived from the seed
    m0.load_state_dict(m1.state_dict())
    assert torch.equal(m0.encoder.layer[0].attention.self.signs, s0[0])
    ids, mask = random_inputs(1, 40)
    m0.train()
    with torch.no_grad():
        a = m0(input_ids=ids, attention_mask=mask).last_hidden_state
        b = m0(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.equal(a, b)  # fresh hash functions per training step
    m0.eval()
    with torch.no_grad():
        c = m0(input_ids=ids, attention_mask=mask).last_hidden_state
        d = m0(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(c, d)


def test_lsh_converges_to_expectation():
    torch.manual_seed(7)
    b, h, s, d, tau = 1, 4, 96, 32, 6
    q, k, v = torch.randn(b, h, s, d), torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    k = 0.6 * q + 0.8 * k  # correlated queries and keys, as in a trained model
    mask = torch.ones(b, s, dtype=torch.int32)
    exact = ops.expectation_weights(q, k, mask, mask, tau) @ v

    def rel_err(m, seed):
        signs = ops.draw_signs(h, m, tau, d, generator=torch.Generator().manual_seed(seed))
        qc, kc = ops.fast_hash(q, mask, signs, m, tau), ops.fast_hash(k, mask, signs, m, tau)
        approx = ops.lsh_cumulation(qc, kc, mask, mask, v, tau)
        return ((approx - exact).norm() / exact.norm()).item()

    e32 = sum(rel_err(32, s) for s in range(3)) / 3
    e512 = sum(rel_err(512, s) for s in range(3)) / 3
    assert e512 <= 0.5 * e32, (e32, e512)


@pytest.mark.parametrize("hidden,heads", [(96, 2), (64, 2)])
def test_head_dim_padding(hidden, heads):
    cfg = small_config(hidden_size=hidden, num_attention_heads=heads)
    att = build_model(cfg, "base", "lsh").encoder.layer[0].attention.self
    assert att.head_dim == hidden // heads
    assert att.hash_dim == ops.next_power_of_two(hidden // heads)
    assert att.signs.shape[-1] == att.hash_dim


def test_checkpoint_round_trip(tmp_path):
    cfg = small_config(conv_window=3)
    torch.manual_seed(8)
    hf = YosoForMaskedLM(cfg)
    hf.save_pretrained(tmp_path)
    ref = load_model(tmp_path, attention="lsh")  # task from config.architectures
    assert isinstance(ref, YosoForMaskedLM)
    want = hf.state_dict()
    got = ref.state_dict()
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    assert (ref.config.num_hash, ref.config.hash_code_len, ref.config.conv_window) == (cfg.num_hash, cfg.hash_code_len, 3)
    ids, mask = random_inputs(2, 12)
    mask[1, 7:] = 0
    # The loaded model computes what the in-memory model converted with the same seed computes
    # (weights, signs and config all survived), and it is not the unconverted transformers model.
    got = run(ref, ids, mask, "mlm")
    want = run(convert_model(copy.deepcopy(hf), attention="lsh", seed=0), ids, mask, "mlm")
    assert got.shape == (2, 12, cfg.vocab_size) and torch.isfinite(got).all()
    assert torch.equal(got, want)
    assert not torch.equal(got, run(convert_model(copy.deepcopy(hf), attention="lsh", seed=1), ids, mask, "mlm"))
    # Expectation mode of the loaded model matches transformers' own YOSO-E on the original weights
    # (without padding, which transformers does not mask).
    exp = load_model(tmp_path, attention="expectation")
    full = torch.ones_like(mask)
    assert (run(exp, ids, full, "mlm") - run(hf.eval(), ids, full, "mlm")).abs().max().item() <= 1e-5
    # Loading a head the checkpoint lacks works (transformers initialises it) and the task is honoured.
    qa = load_model(tmp_path, task="question-answering", attention="expectation")
    assert isinstance(qa, YosoForQuestionAnswering)


def test_bad_checkpoint_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="only 'yoso'"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "yoso"}')
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        canonical_task("summarization")
    assert canonical_task("question-answering") == "qa"


def test_lsh_cumulation_gradient_is_the_dense_formula():
    """yoso::lsh_cumulation's registered gradient equals autograd through out = W @ value with
    W[q, k] = (1/m) #{f : query code f == key code f}, masked queries and keys dropped."""
    g = torch.Generator().manual_seed(3)
    b, h, sq, sk, m, tau, dv = 2, 3, 7, 5, 4, 2, 6
    qc = torch.randint(0, 2 ** tau, (b, h, sq, m), generator=g, dtype=torch.int32)
    kc = torch.randint(0, 2 ** tau, (b, h, sk, m), generator=g, dtype=torch.int32)
    qm = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.int32)
    km = torch.tensor([[1] * 5, [1] * 3 + [0] * 2], dtype=torch.int32)
    v = torch.randn(b, h, sk, dv, generator=g, requires_grad=True)
    w_out = torch.randn(b, h, sq, dv, generator=g)
    (torch.ops.yoso.lsh_cumulation(qc, kc, qm, km, v, tau) * w_out).sum().backward()
    got = v.grad.clone()
    v.grad = None
    w = (qc[:, :, :, None, :] == kc[:, :, None, :, :]).float().mean(-1)
    w = w * qm[:, None, :, None].float() * km[:, None, None, :].float()
    dense = w @ v
    assert torch.allclose(dense, torch.ops.yoso.lsh_cumulation(qc, kc, qm, km, v, tau), atol=1e-6)
    (dense * w_out).sum().backward()
    assert torch.allclose(got, v.grad, atol=1e-6)
