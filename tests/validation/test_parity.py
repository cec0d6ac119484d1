"""yoso_deploy.validation.parity: the tie bound, the code judgement, layer probes and the per-channel rule.

The judgement is tested on real ONNX Runtime values of a small export, modified the way a near-tie,
a wrong bit and a wrong kernel would modify them; the end-to-end cases (a yoso-4096-sized export at
S = 4096, corrupted exports) are in tests/validation/test_validate.py.
"""

import json

import numpy as np
import onnx
import pytest
import torch
from support.checkpoints import small_config
from transformers import YosoForQuestionAnswering

from yoso_deploy.validation import parity
from yoso_deploy.iospec import io_spec, make_inputs
from yoso_deploy.workflow import export
from yoso_deploy.modeling import load_model, ops
from yoso_deploy.runtime import create_session


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    base = tmp_path_factory.mktemp("parity")
    torch.manual_seed(5)
    YosoForQuestionAnswering(small_config()).save_pretrained(base / "ckpt")
    res = export(base / "ckpt", base / "out", task="qa", validate=False)
    model = load_model(base / "ckpt", task="qa")
    spec = io_spec(model.config, "qa")
    proto, probes = parity.instrumented_model(res.onnx_path)
    sess = create_session(proto.SerializeToString())
    feeds = make_inputs(spec, 2, 40, model.config.vocab_size, seed=3)
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, feeds)))
    return model, spec, probes, feeds, values, res.onnx_path


def judge(small, values):
    model, spec, probes, feeds, _, _ = small
    return parity.judge_backend(model, spec, probes, "ort-cpu", feeds, values)


def codes_check(comparisons, name):
    return next(c for c in comparisons if c.kind == "codes" and c.name == name)


def test_unmodified_backend_passes(small):
    comps = judge(small, small[4])
    assert all(c.ok for c in comps), parity.ParityReport(comps).table()
    layers = small[0].config.num_hidden_layers
    assert sum(c.kind == "codes" for c in comps) == 2 * layers
    assert sum(c.kind == "tensor" for c in comps) == 4 * layers  # query, key, value, attention per layer
    assert sum(c.kind == "hidden" for c in comps) == layers + 1


def _bit_values(x, model, layer=0):
    att = model.yoso.encoder.layer[layer].attention.self
    t = ops.fast_hash_projections(torch.from_numpy(x), att.signs)
    return t, att


def _move_across_zero(small, pick):
    """Backend values whose layer-0 query FastHash input is moved so that one t crosses zero.

    ``pick(|t|)`` chooses the element (a flat index into the used entries of unmasked rows). The
    move is along the row of T = H S3 H S2 H S1 that produces that t, so the other t of its part are
    unchanged; the backend's codes are what a correct kernel gives for the moved input.
    """
    model, spec, probes, feeds, values, _ = small
    p = probes.layers[0]
    x = values[p.query_input].copy()
    t, att = _bit_values(x, model)  # [B,H,P,S,D]
    used = att.hash_code_len * ops.codes_per_part(att.hash_dim, att.hash_code_len)
    mask = torch.from_numpy(feeds["attention_mask"] != 0)[:, None, None, :, None]
    cand = torch.where(mask, t.abs(), torch.full_like(t, float("nan")))[..., :used]
    # only entries whose code index f = part * per_part + j is < m
    per_part = ops.codes_per_part(att.hash_dim, att.hash_code_len)
    f = torch.arange(t.shape[2])[:, None, None] * per_part + torch.arange(used)[None, None, :] // att.hash_code_len
    cand = torch.where((f < att.num_hash)[None, None, :, :, :].expand_as(cand), cand, torch.nan)
    b, h, part, s, i = np.unravel_index(pick(cand), cand.shape)
    big_d = att.hash_dim
    eye = torch.eye(big_d).reshape(1, 1, big_d, big_d)
    rows = ops.fast_hash_projections(eye, att.signs[h:h + 1])[0, 0, part]  # [D(basis j), D(entry)]: T[:, j]
    t_i = float(t[b, h, part, s, i])
    target = -np.sign(t_i) * 1e-3 * abs(t_i) if abs(t_i) > 0 else 1e-12
    delta = (target - t_i) * rows[:, i].numpy() / big_d**3  # T_i^T / ||T_i||^2
    x[b, h, s] += delta.astype(np.float32)
    moved = dict(values)
    moved[p.query_input] = x
    moved[p.query_codes] = ops.fast_hash(torch.from_numpy(x), torch.from_numpy(feeds["attention_mask"]),
                                         att.signs, att.num_hash, att.hash_code_len).numpy()
    return moved, (b, h, s)


def test_near_tie_is_accepted_and_counted(small):
    moved, _ = _move_across_zero(small, lambda a: int(np.nanargmin(a.numpy())))
    comps = judge(small, moved)
    c = codes_check(comps, "layer 0 query")
    assert c.ok, c.error
    assert c.codes.near_ties >= 1 and c.codes.non_ties == 0 and c.codes.kernel_mismatches == 0
    assert 0 < c.codes.max_tie_ratio <= 1
    assert c.codes.identical == c.codes.compared - c.codes.near_ties


def test_flip_of_a_large_t_is_not_a_tie(small):
    moved, (b, h, s) = _move_across_zero(small, lambda a: int(np.nanargmax(a.numpy())))
    c = codes_check(judge(small, moved), "layer 0 query")
    assert not c.ok and isinstance(c.error, parity.CodeMismatch)
    assert c.codes.non_ties >= 1 and c.codes.drift_violations >= 1
    assert "not a near-tie" in str(c.error) and f"row {b}, head {h}, token {s}" in str(c.error)


def test_the_reference_attends_with_the_backend_codes(small):
    """Codes are injected: with every layer-0 query code of the backend set to 0, the reference's
    LSHCumulation output follows those codes (so it no longer matches the backend's real output)."""
    model, spec, probes, feeds, values, _ = small
    zeroed = dict(values)
    zeroed[probes.layers[0].query_codes] = np.zeros_like(values[probes.layers[0].query_codes])
    comps = judge(small, zeroed)
    assert not codes_check(comps, "layer 0 query").ok  # judged ...
    att = next(c for c in comps if c.name == "layer 0 attention (LSHCumulation output)")
    assert not att.ok, "the reference did not attend with the injected codes"  # ... and injected
    value = next(c for c in comps if c.name == "layer 0 value")
    assert value.ok  # upstream of the codes nothing changed


def test_wrong_kernel_output_is_named(small):
    model, spec, probes, feeds, values, _ = small
    bad = dict(values)
    codes = values[probes.layers[1].key_codes].copy()
    codes[1, 0, 3, 2] ^= 1 << 4  # one bit of one code of layer 1, whatever its t
    bad[probes.layers[1].key_codes] = codes
    comps = judge(small, bad)
    c = codes_check(comps, "layer 1 key")
    assert not c.ok and c.codes.kernel_mismatches == 1
    assert "row 1, head 0, token 3, hash function 2" in str(c.error)
    assert codes_check(comps, "layer 0 query").ok
    assert parity.ParityReport(comps).first_failure().layer == 1


def test_tie_bound_holds_for_two_float32_projections():
    """|t_A - t_B| <= beta for projections computed in two orders (and from a perturbed input)."""
    torch.manual_seed(0)
    k, heads, d, m, tau = 384, 6, 64, 64, 9
    w = torch.randn(heads * d, k) * 0.04
    bias = torch.randn(heads * d) * 0.1
    hid = torch.randn(1, 200, k)
    signs = ops.draw_signs(heads, m, tau, d, generator=torch.Generator().manual_seed(1))

    def split(x):
        return x.reshape(1, -1, heads, d).transpose(1, 2).contiguous()

    x_a = split(hid @ w.T + bias)  # float32 GEMM (blocked, FMA)
    x_b = split((hid.double() @ w.double().T + bias.double()).float())  # correctly rounded
    mag = split(hid.abs() @ w.abs().T + bias.abs())
    t_a, t_b = ops.fast_hash_projections(x_a, signs), ops.fast_hash_projections(x_b, signs)
    beta = parity.tie_bound(x_a, mag, None, d, k)[:, :, None, :, None]
    assert bool(((t_a - t_b).abs() <= beta).all())
    assert float(((t_a - t_b).abs() / beta).max()) > 0  # the two really differ

    # A perturbed layer input (as the previous layers' rounding leaves it) needs the input-error term.
    hid2 = hid * (1 + 1e-2 * torch.randn_like(hid))
    x_c = split(hid2 @ w.T + bias)
    t_c = ops.fast_hash_projections(x_c, signs)
    err = split((hid2 - hid).abs() @ w.abs().T)
    with_err = parity.tie_bound(x_a, mag, err, d, k)[:, :, None, :, None]
    assert bool(((t_a - t_c).abs() <= with_err).all())
    assert not bool(((t_a - t_c).abs() <= beta).all())  # without it the bound would not hold


def test_per_channel_rule_sees_one_scaled_channel():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 50, 64)).astype(np.float32)
    scaled = ref.copy()
    scaled[..., 5] *= np.float32(1.001)  # a LayerNorm weight x 1.001
    elementwise = parity.compare_tensor("b", "c", "output", "x", ref, scaled, 1e-4, 1e-3)
    assert elementwise.ok  # |delta| = 1e-3 |r| <= atol + rtol |r|: no elementwise bound sees it
    per_channel = parity.compare_tensor("b", "c", "hidden", "x", ref, scaled, 1e-4, 1e-3, hidden_rtol=1e-4)
    assert not per_channel.ok and "channel 5" in str(per_channel.error)
    noisy = ref * (1 + np.float32(1e-7) * rng.standard_normal(ref.shape).astype(np.float32))
    assert parity.compare_tensor("b", "c", "hidden", "x", ref, noisy, 1e-4, 1e-3, hidden_rtol=1e-4).ok
    shape = parity.compare_tensor("b", "c", "output", "x", ref, ref[:1], 1e-4, 1e-3)
    assert isinstance(shape.error, parity.ShapeMismatch)
    inf = ref.copy()
    inf[0, 0, 0] = np.inf
    assert isinstance(parity.compare_tensor("b", "c", "output", "x", ref, inf, 1.0, 1.0).error, parity.ToleranceExceeded)


def test_probes_of_an_export(small):
    model, spec, probes, feeds, values, onnx_path = small
    layers = model.config.num_hidden_layers
    assert [p.layer for p in probes.layers] == list(range(layers))
    assert len(probes.hidden_states) == layers + 1
    for p in probes.layers:  # query and key of a layer are different FastHash nodes
        assert p.query_codes != p.key_codes and p.query_input != p.key_input
    # The hidden-state probes are the layer outputs: they equal the reference's hidden states.
    _, hidden = parity.reference_forward(model, spec, feeds)
    assert np.abs(values[probes.hidden_states[-1]] - hidden[-1]).max() < 1e-4
    # Without torch.onnx's scope metadata the layer outputs cannot be located: said, not guessed.
    m = onnx.load(str(onnx_path))
    assert any(p.key == "yoso.probes" for p in m.metadata_props)  # the exporter's record ...
    recorded = parity.find_probes(m)
    keep = [p for p in m.metadata_props if p.key != "yoso.probes"]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    assert parity.find_probes(m) == recorded  # ... says what the graph's structure says
    for n in m.graph.node:
        del n.metadata_props[:]
    stripped = parity.find_probes(m)
    assert len(stripped.layers) == layers and not stripped.hidden_states and "scope" in stripped.hidden_note
    # An LSHCumulation not fed by FastHash is refused.
    lsh = next(n for n in m.graph.node if n.op_type == "LSHCumulation")
    lsh.input[0] = m.graph.input[0].name
    with pytest.raises(parity.ProbeError, match="not produced by a com.yoso FastHash"):
        parity.find_probes(m)


def test_report_json_has_one_entry_per_case(small):
    model, spec, probes, feeds, values, _ = small
    comps = judge(small, values)
    rep = parity.ParityReport(comps)
    data = rep.to_json()
    assert data["passed"] is True and len(data["cases"]) == 1
    case = data["cases"][0]
    assert case["backend"] == "ort-cpu" and case["case"] == "2x40"
    assert len(case["codes"]) == 4 and all(c["codes"]["compared"] > 0 for c in case["codes"])
    assert "layer 0 query" in rep.table() and "identical / compared" in rep.table()


def test_inline_export_is_judged_through_the_recorded_probes(tmp_path):
    """--portable inline leaves no com.yoso node; the exporter's probe record still finds every value."""
    torch.manual_seed(6)
    YosoForQuestionAnswering(small_config()).save_pretrained(tmp_path / "ckpt")
    res = export(tmp_path / "ckpt", tmp_path / "out", task="qa", portable="inline", check_shapes=((2, 24),))
    assert res.ok and not [n for n in onnx.load(str(res.onnx_path)).graph.node if n.domain == "com.yoso"]
    assert sum(c.kind == "codes" for c in res.parity.comparisons) == 2 * small_config().num_hidden_layers
    m = onnx.load(str(res.onnx_path))
    rec = next(p for p in m.metadata_props if p.key == "yoso.probes")
    data = json.loads(rec.value)
    data["layers"][0]["query_codes"] = "no_such_value"
    rec.value = json.dumps(data)
    with pytest.raises(parity.ProbeError, match="names values the graph does not have"):
        parity.find_probes(m)
