"""Validation of a yoso-4096-sized export (2 layers, random weights): passes at S = 4096, and each of four
small corruptions fails, naming the layer it is in.

At this size ONNX Runtime's and PyTorch's GEMMs round differently enough that some FastHash bits flip
(near-ties); a plain comparison of codes or logits fails here although both are correct. The tie-aware
judgement must pass it, and still catch corruptions far smaller than what moves the final logits.
"""

import json
import shutil
import time

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from yoso_deploy.validation import validate
from yoso_deploy.cli.main import main
from yoso_deploy.manifest import load_manifest, source_model_dir


pytestmark = pytest.mark.slow  # a yoso-4096-sized export at 4096 tokens

def test_validate_passes_at_4096_tokens(yoso4096_export, tmp_path):
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["validate", "--model", str(yoso4096_export), "--batch", "1", "--seq-len", "4096",
                                  "--report", str(tmp_path)])
    wall = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    print(f"\nvalidate --batch 1 --seq-len 4096 on a yoso-4096-sized export: {wall:.1f} s\n{r.output}")
    data = json.loads((tmp_path / "validation.json").read_text())
    (case,) = data["cases"]
    assert case["case"] == "1x4096" and case["passed"]
    codes = case["codes"]
    assert len(codes) == 4 and all(c["codes"]["compared"] == 12 * 4096 * 64 for c in codes)
    # Near-ties are expected at this size (that is why plain parity failed); they are counted exactly.
    for c in codes:
        st = c["codes"]
        assert st["identical"] + st["near_ties"] == st["compared"] and st["non_ties"] == 0
        assert st["kernel_mismatches"] == 0 and st["drift_violations"] == 0
    assert "ort-cpu 1x4096: ok -- codes " in r.output and " near-ties" in r.output  # quiet: one line per case
    table = (tmp_path / "validation.md").read_text()  # the details
    assert "identical / compared" in table and "3,145,728" in table


def _corrupted(src, dst, edit):
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.onnx":
            shutil.copy2(f, dst / f.name)
    model = onnx.load(str(src / "model.onnx"))
    edit(model)
    onnx.save(model, str(dst / "model.onnx"))
    return dst


def _set(model, name, fn):
    init = next(i for i in model.graph.initializer if i.name == name)
    arr = numpy_helper.to_array(init).copy()
    fn(arr)
    init.CopyFrom(numpy_helper.from_array(arr, name))


def negate_half_a_sign_diagonal(model):  # layer 1, head 0, first diagonal, part 0, half of D
    signs = "yoso.encoder.layer.1.attention.self.signs"

    def f(a):
        a[0, 0, 0, : a.shape[-1] // 2] *= -1

    _set(model, signs, f)


def scale_one_layernorm_weight(model):  # layer 0's attention LayerNorm, channel 5, x 1.001
    _set(model, "yoso.encoder.layer.0.attention.output.LayerNorm.weight",
         lambda a: a.__setitem__(5, a[5] * np.float32(1.001)))


def nudge_one_value_weight(model):  # layer 1's value projection, one weight + 1e-3
    _set(model, "yoso.encoder.layer.1.attention.self.value.weight.T",
         lambda a: a.__setitem__((3, 7), a[3, 7] + np.float32(1e-3)))


def swap_query_and_key(model):  # layer 1 projects queries with the key weights and keys with the query weights
    q = next(n for n in model.graph.node if "yoso.encoder.layer.1.attention.self.query.weight.T" in n.input)
    k = next(n for n in model.graph.node if "yoso.encoder.layer.1.attention.self.key.weight.T" in n.input)
    q.input[1], k.input[1] = k.input[1], q.input[1]


@pytest.mark.parametrize("edit, layer, first", [
    (negate_half_a_sign_diagonal, 1, "layer 1 query"),
    (scale_one_layernorm_weight, 0, "hidden_states.1 (layer 0)"),
    (nudge_one_value_weight, 1, "layer 1 value"),
    (swap_query_and_key, 1, "layer 1 query (FastHash input)"),
])
def test_corrupted_export_fails_naming_the_layer(yoso4096_export, tmp_path, edit, layer, first):
    bad = _corrupted(yoso4096_export, tmp_path / "bad", edit)
    ckpt = source_model_dir(load_manifest(yoso4096_export), yoso4096_export)
    res = validate.compare(bad, backends=["torch", "ort-cpu"], batches=[2], seq_lens=[128], reference=ckpt)
    assert not res.passed
    f = res.first_failure()
    assert (f.layer, f.name) == (layer, first), res.table()
    # Nothing before the corrupted layer fails.
    assert all(c.ok for c in res.results if c.layer is not None and c.layer < layer)
    r = CliRunner().invoke(main, ["validate", "--model", str(bad), "--backends", "torch,ort-cpu", "--batch", "1",
                                  "--seq-len", "64", "--reference", str(ckpt)])
    assert r.exit_code == 1 and f"validation FAILED for ort-cpu:{first} (input 1x64)" in r.output, r.output
