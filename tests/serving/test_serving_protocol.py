"""Open Inference Protocol codec (yoso_deploy.serving.protocol) and dynamic batching (serving.batching), no Ray:
JSON and binary tensors as tritonclient sends and reads them, every malformed request a ProtocolError naming the
field, and batched runs (padded to the batch's longest) equal to running each request alone."""

import json

import numpy as np
import pytest

from yoso_deploy.serving.batching import BatchStats, WorkItem, plan_runs, run_batched, sequence_axes, pad_values
from yoso_deploy.serving.protocol import ProtocolError, encode_infer_response, parse_infer_request


def _body(inputs, **extra):
    return json.dumps({"inputs": inputs, **extra}).encode()


def test_json_request_flat_and_nested():
    req = parse_infer_request(_body([{"name": "input_ids", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6]},
                                     {"name": "attention_mask", "shape": [2, 3], "datatype": "INT32",
                                      "data": [[1, 1, 1], [1, 1, 0]]}], id="r1"))
    assert req.id == "r1" and req.outputs is None and not req.all_binary
    np.testing.assert_array_equal(req.inputs["input_ids"], [[1, 2, 3], [4, 5, 6]])
    assert req.inputs["input_ids"].dtype == np.int64 and req.inputs["attention_mask"].dtype == np.int32
    np.testing.assert_array_equal(req.inputs["attention_mask"], [[1, 1, 1], [1, 1, 0]])


def test_tritonclient_binary_request_and_response_roundtrip():
    """Bodies built by tritonclient.http itself (binary inputs), and our binary response read by its InferResult."""
    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient not installed: pip install 'yoso-deploy[triton]'")
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    mask = np.ones((3, 4), dtype=np.int64)
    inputs = [httpclient.InferInput("input_ids", [3, 4], "INT64"), httpclient.InferInput("attention_mask", [3, 4], "INT64")]
    inputs[0].set_data_from_numpy(ids, binary_data=True)
    inputs[1].set_data_from_numpy(mask, binary_data=False)
    outputs = [httpclient.InferRequestedOutput("start_logits", binary_data=True),
               httpclient.InferRequestedOutput("end_logits", binary_data=False)]
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs, request_id="7")
    headers = {"Inference-Header-Content-Length": str(json_size)} if json_size is not None else {}
    req = parse_infer_request(body, headers)
    np.testing.assert_array_equal(req.inputs["input_ids"], ids)
    np.testing.assert_array_equal(req.inputs["attention_mask"], mask)
    assert req.outputs == ["start_logits", "end_logits"] and req.binary_outputs == {"start_logits"} and req.id == "7"

    start = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    end = -start
    payload, hdrs = encode_infer_response("qa", {"start_logits": start, "end_logits": end}, {"start_logits"}, "7")
    result = httpclient.InferenceServerClient.parse_response_body(
        payload, header_length=int(hdrs["inference-header-content-length"]))
    np.testing.assert_array_equal(result.as_numpy("start_logits"), start)
    np.testing.assert_allclose(result.as_numpy("end_logits"), end, rtol=0, atol=0)
    assert result.get_response()["id"] == "7"


def test_json_response_is_exact():
    a = np.array([[0.1, -2.5e-8, 3.0]], dtype=np.float32)
    payload, hdrs = encode_infer_response("m", {"x": a})
    assert hdrs["content-type"] == "application/json"
    out = json.loads(payload)["outputs"][0]
    assert out["shape"] == [1, 3] and out["datatype"] == "FP32"
    np.testing.assert_array_equal(np.array(out["data"], dtype=np.float32).reshape(1, 3), a)


T = {"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}
BAD = [  # (body, headers, words the one-line error must contain)
    (b"", {}, ["empty"]),
    (b"{not json", {}, ["malformed JSON"]),
    (b"[1, 2]", {}, ["JSON object"]),
    (b"{\"a\": \"\x80\"}", {}, ["UTF-8"]),
    (_body([]), {}, ['"inputs"']),
    (json.dumps({"inputs": "x"}).encode(), {}, ['"inputs"']),
    (_body(["x"]), {}, ["inputs[0]"]),
    (_body([{**T, "name": ""}]), {}, ["inputs[0].name"]),
    (_body([T, T]), {}, ["given twice"]),
    (_body([{**T, "shape": "1x3"}]), {}, ["shape"]),
    (_body([{**T, "shape": [1, -3]}]), {}, ["negative"]),
    (_body([{**T, "datatype": "INT65"}]), {}, ["datatype"]),
    (_body([{**T, "datatype": "BYTES"}]), {}, ["string inputs"]),
    (_body([{**T, "data": [1, 2]}]), {}, ["2 values", "needs 3"]),
    (_body([{**T, "data": [1, 2, 3.5]}]), {}, ["floating-point numbers", "send integers"]),
    (_body([{**T, "data": ["a", "b", "c"]}]), {}, ["numbers"]),
    (_body([{**T, "data": [[1, 2], [3]]}]), {}, ["ragged"]),
    (_body([{**T, "data": [1, 2, 2**70]}]), {}, ["range", "INT64"]),
    (_body([{k: v for k, v in T.items() if k != "data"}]), {}, ['no "data"']),
    (_body([{**T, "parameters": {"binary_data_size": 24}}]), {"Inference-Header-Content-Length": "0"},
     ["Inference-Header-Content-Length is 0"]),
    (_body([{**T, "parameters": {"binary_data_size": 23}}]), {}, ["binary_data_size 23"]),
    (_body([{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "parameters": {"binary_data_size": 24}}]), {},
     ["bytes of binary data"]),
    (_body([T]) + b"xx", {"Inference-Header-Content-Length": str(len(_body([T])))}, ["no input claims"]),
    (_body([T]), {"Inference-Header-Content-Length": "ten"}, ["must be an integer"]),
    (_body([T], outputs="x"), {}, ['"outputs"']),
    (_body([T], outputs=[{"name": "a", "parameters": {"classification": 3}}]), {}, ["classification"]),
    (_body([T], parameters=[1]), {}, ['"parameters"']),
    (_body([T], id=5), {}, ['"id"']),
]


@pytest.mark.parametrize("body,headers,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_malformed_requests_are_one_line_protocol_errors(body, headers, words):
    with pytest.raises(ProtocolError) as e:
        parse_infer_request(body, headers)
    msg = str(e.value)
    assert "\n" not in msg and 400 <= e.value.status < 500
    for w in words:
        assert w in msg, msg


def test_huge_shape_is_refused_before_allocation():
    with pytest.raises(ProtocolError) as e:
        parse_infer_request(_body([{**T, "shape": [10**6, 10**6]}]), max_elements=10**6)
    assert e.value.status == 413


def test_binary_input_of_other_byte_order_is_little_endian():
    ids = np.array([[1, 258, 65536]], dtype="<i8")
    head = json.dumps({"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64",
                                   "parameters": {"binary_data_size": 24}}]}).encode()
    req = parse_infer_request(head + ids.tobytes(), {"inference-header-content-length": str(len(head))})
    np.testing.assert_array_equal(req.inputs["input_ids"], ids)


# -- dynamic batching -----------------------------------------------------------------------------------------
def _item(rows, length, outputs=("logits",), choices=None, seed=0):
    g = np.random.default_rng(seed)
    shape = (rows, choices, length) if choices else (rows, length)
    return WorkItem({"input_ids": g.integers(3, 90, shape), "attention_mask": np.ones(shape, dtype=np.int64)},
                    list(outputs))


def test_plan_runs_groups_compatible_items_and_bounds_rows():
    items = [_item(3, 5), _item(2, 9), _item(1, 4, choices=2), _item(4, 7), _item(1, 3), _item(1, 6, choices=2)]
    runs = plan_runs(items, max_rows=5)
    assert sorted(i for r in runs for i in r) == list(range(6))
    for r in runs:
        assert sum(items[i].rows for i in r) <= 5 and len({items[i].key() for i in r}) == 1
    assert [0, 1] in runs and [3, 4] in runs and [2, 5] in runs


def test_run_batched_equals_running_alone(task_exports):
    """A batch of requests of different lengths and rows gives each request exactly what it gets alone
    (trimmed to its own length), for a sequence-axis output and a per-row output."""
    from yoso_deploy.runtime import YosoOrtModel

    for task, output in (("token-classification", "logits"), ("sequence-classification", "logits")):
        model = YosoOrtModel.from_pretrained(task_exports[task], intra_op_threads=1)
        items = []
        for k, (rows, length) in enumerate([(1, 7), (2, 30), (1, 1), (3, 12)]):
            ids = np.random.default_rng(k).integers(3, 500, (rows, length))
            mask = np.ones_like(ids)
            if rows > 1:
                mask[1, length // 2:] = 0  # a request with its own padding
            items.append(WorkItem(model.prepare_inputs({"input_ids": ids, "attention_mask": mask}), [output]))
        stats = BatchStats()
        got = run_batched(lambda f, n: model.run(f, output_names=n, validate=False), items, 8, pad_values(model),
                          sequence_axes(model.manifest), stats)
        assert stats.runs == 1 and stats.items == 4 and stats.padded_tokens > 0
        for it, res in zip(items, got):
            alone = model.run(it.feeds, output_names=[output], validate=False)[output]
            assert res[output].shape == alone.shape
            np.testing.assert_allclose(res[output], alone, rtol=1e-5, atol=1e-5)
        if task == "token-classification":
            assert got[0][output].shape[1] == 7 and got[2][output].shape[1] == 1


def test_run_batched_isolates_a_failing_run():
    calls = []

    def run(feeds, names):
        calls.append(feeds["input_ids"].shape)
        if feeds["input_ids"].ndim == 3:
            raise RuntimeError("boom")
        return {"logits": feeds["input_ids"].astype(np.float32)}

    items = [_item(1, 4), _item(1, 3, choices=2), _item(2, 6)]
    got = run_batched(run, items, 8, {"input_ids": 1}, {"logits": [1]})
    assert isinstance(got[1], RuntimeError)
    np.testing.assert_array_equal(got[0]["logits"], items[0].feeds["input_ids"])
    np.testing.assert_array_equal(got[2]["logits"], items[2].feeds["input_ids"])
    assert (3, 6) in calls  # items 0 and 2 padded to 6 and run together
