"""Inputs are checked before ONNX Runtime sees them: each bad input is one InputError naming the input and
the fix (and through the CLI one ``error:`` line); good inputs pass unchanged. Also: ``~`` in paths, the
in-memory model API (bytes / ModelProto with extra outputs) that validation uses."""

import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from yoso_deploy.cli.main import main
from yoso_deploy.runtime import InputError, YosoOrtModel, create_session
from yoso_deploy.runtime.models import prepare_inputs

IDS = [[0, 10, 11, 12, 2], [0, 13, 2, 1, 1]]
MASK = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]

# (inputs, substrings of the message); vocab 572, 512 positions (tests/conftest.py tiny checkpoints)
BAD = {
    "negative_id": ({"input_ids": [[0, -5, 2]]}, ["'input_ids' holds -5 at [0, 1]", "must be >= 0 and < 572"]),
    "id_past_vocab": ({"input_ids": [[0, 99999, 2]]}, ["holds 99999 at [0, 1]", "< 572, the vocabulary size"]),
    "float_ids": ({"input_ids": [[0.0, 5.7, 2.0]]}, ["'input_ids' must hold integers, got float64", "astype('int64')"]),
    "too_long": ({"input_ids": np.zeros((1, 513), dtype=np.int64)}, ["sequence length 513 exceeds the model's maximum 512",
                                                                      "split the input into windows"]),
    "mask_two": ({"input_ids": IDS, "attention_mask": [[1, 1, 2, 1, 1], [1, 1, 1, 0, 0]]},
                 ["'attention_mask' holds 2 at [0, 2]", "1 (token) or 0 (padding)"]),
    "mask_negative": ({"input_ids": IDS, "attention_mask": [[1, 1, -1, 1, 1], [1, 1, 1, 0, 0]]}, ["holds -1"]),
    "mask_float": ({"input_ids": IDS, "attention_mask": [[1.0] * 5, [1.0] * 5]}, ["'attention_mask' must hold integers"]),
    "shape_mismatch": ({"input_ids": IDS, "attention_mask": [[1, 1, 1]]},
                       ["'attention_mask' has shape [1, 3] but input_ids has [2, 5]", "same shape"]),
    "empty_batch": ({"input_ids": np.zeros((0, 4), dtype=np.int64)}, ["is empty", "batch is 0"]),
    "empty_sequence": ({"input_ids": np.zeros((2, 0), dtype=np.int64)}, ["is empty", "sequence is 0"]),
    "ragged": ({"input_ids": [[0, 5, 2], [0, 2]]}, ["input_ids is ragged", "pad every row to one length"]),
    "unknown": ({"input_ids": IDS, "pixel_values": IDS}, ["unknown input(s) pixel_values", "the model takes input_ids"]),
    "missing_ids": ({"attention_mask": MASK}, ["missing input 'input_ids'"]),
    "rank": ({"input_ids": [0, 5, 2]}, ["must have rank 2", "add a batch axis"]),
    "huge_int": ({"input_ids": [[0, 2 ** 70, 2]]}, ["not int64 numbers"]),
}


@pytest.fixture(scope="module")
def model(task_exports):
    return YosoOrtModel.from_pretrained(task_exports["qa"])


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_before_ort(model, case, monkeypatch):
    inputs, needles = BAD[case]
    calls = []
    monkeypatch.setattr(model, "session", _Spy(model.session, calls))
    with pytest.raises(InputError) as e:
        model.run(inputs)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
    assert "\n" not in str(e.value) and not calls  # one line; ORT never called


class _Spy:
    def __init__(self, session, calls):
        self._s, self._calls = session, calls

    def run(self, *a, **k):
        self._calls.append(a)
        return self._s.run(*a, **k)

    def __getattr__(self, name):
        return getattr(self._s, name)


def test_good_inputs_pass(model):
    out = model.run({"input_ids": IDS, "attention_mask": MASK})
    assert set(out) == {"start_logits", "end_logits"} and out["start_logits"].shape == (2, 5)
    # dtypes are normalised; bool masks are masks; missing masks are all ones
    same = model.run({"input_ids": np.asarray(IDS, dtype=np.int32), "attention_mask": np.asarray(MASK, dtype=bool)})
    assert np.array_equal(same["start_logits"], out["start_logits"])
    ones = model(input_ids=np.asarray(IDS[:1]))
    assert np.array_equal(ones.start_logits, model.run({"input_ids": IDS[:1], "attention_mask": [[1] * 5]})["start_logits"])
    assert prepare_inputs({"input_ids": IDS}, model.manifest, model.config)["attention_mask"].dtype == np.int64


def test_cli_reports_bad_inputs_in_one_line(task_exports):
    d = str(task_exports["qa"])
    for payload, needle in [('{"input_ids": [[0, -5, 2]]}', "holds -5"), ('{"input_ids": [[0, 5.5, 2]]}', "must hold integers"),
                            ('{"input_ids": [[0, 99999, 2]]}', "< 572"), ('{"input_ids": [[0, 5, 2], [0]]}', "is ragged"),
                            ('{"input_ids": [[0, 5, 2]], "attention_mask": [[1, 3, 1]]}', "1 (token) or 0"),
                            ('[1, 2]', "must be a JSON object")]:
        r = CliRunner().invoke(main, ["run", "--model", d, "--input", payload])
        assert r.exit_code == 2, r.output
        errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0], r.output
    long_q = " ".join(["where"] * 30)
    r = CliRunner().invoke(main, ["qa", "--model", d, "--question", long_q, "--context", "Ada moved to Oslo. " * 20,
                                  "--max-seq-len", "32", "--doc-stride", "4"])
    assert r.exit_code == 2 and "leaves no room for the context" in r.output and "Traceback" not in r.output


def test_tilde_is_expanded(task_exports, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "exports").mkdir(parents=True)
    os.symlink(task_exports["qa"], home / "exports" / "qa")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    model = YosoOrtModel.from_pretrained("~/exports/qa", optimized_cache_dir="~/.cache/yoso-opt")
    assert list((home / ".cache" / "yoso-opt").glob("*.opt.onnx")) and not (tmp_path / "~").exists()
    assert model.run({"input_ids": IDS})["start_logits"].shape == (2, 5)
    r = CliRunner().invoke(main, ["qa", "--model=~/exports/qa", "--question", "q?", "--context", "Ada moved to Oslo."])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["run", "--model=~/exports/qa", "--raw", "--text", "q?", "--text-pair", "c",
                                  "--output-json=~/out.json"])
    assert r.exit_code == 0 and (home / "out.json").is_file() and not (tmp_path / "~").exists(), r.output


def test_in_memory_model_with_extra_outputs(task_exports):
    """What validate's ORT backend uses: a copy of model.onnx with an extra graph output, from bytes."""
    d = task_exports["qa"]
    proto = onnx.load(str(d / "model.onnx"))
    fh = next(n for n in proto.graph.node if n.op_type == "FastHash")
    proto.graph.output.append(onnx.helper.make_tensor_value_info(fh.output[0], onnx.TensorProto.INT32, None))
    manifest = json.loads((d / "yoso_export.json").read_text())
    for source in (proto, proto.SerializeToString()):
        m = YosoOrtModel.from_model(source, manifest, model_dir=d)
        out = m.run({"input_ids": IDS, "attention_mask": MASK})
        assert fh.output[0] in out and out[fh.output[0]].dtype == np.int32
        assert set(m.run({"input_ids": IDS}, output_names=["start_logits"])) == {"start_logits"}
    plain = YosoOrtModel.from_pretrained(d).run({"input_ids": IDS, "attention_mask": MASK})
    assert np.array_equal(out["start_logits"], plain["start_logits"])
    codes = out[fh.output[0]]
    assert codes.shape[:3] == (2, 2, 5) and (codes[1, :, 3:] == 0).all()  # padding hashes to 0 (OPS.md)
    # from_model checks inputs against the config too: bytes + manifest + config dict, no directory
    cfg = json.loads((d / "config.json").read_text())
    m = YosoOrtModel.from_model(proto.SerializeToString(), manifest, config=cfg)
    with pytest.raises(InputError, match="< 572"):
        m.run({"input_ids": [[0, 600]]})
    sess = create_session(proto)
    assert fh.output[0] in [o.name for o in sess.get_outputs()]
    with pytest.raises(ValueError, match="unknown output"):
        m.run({"input_ids": IDS}, output_names=["hidden"])
