"""The HTTP endpoints of a served model (yoso_deploy.serving.server.InferenceServer), without Ray: metadata,
Open Inference Protocol inference equal to the runtime model, task endpoints equal to the pipelines, and every bad
request a 4xx with a one-line JSON error naming the field -- never a 500, and the server keeps answering."""

import asyncio
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yoso_deploy.runtime import pipeline
from yoso_deploy.runtime.records import run_record
from yoso_deploy.serving.server import InferenceServer

RECORDS = {
    "qa": {"question": "Where did Ada move?", "context": "Ada moved to Oslo in 1999. Otto moved to Lima.", "top_k": 2},
    "sequence-classification": {"text": ["a fine day", "a bad day"], "top_k": None},
    "token-classification": {"text": "Ada Lovelace lives in London", "aggregation_strategy": "simple"},
    "mlm": {"text": "Ada moved to [MASK].", "top_k": 3},
    "base": {"text": ["some text", "more text"], "pooling": "mean", "normalize": True},
    "multiple-choice": {"prompt": "Ada moved to", "choices": ["Oslo.", "Lima.", "Accra."]},
}


def call(server, method, path, body=b"", headers=None):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    status, hdrs, payload = asyncio.run(server.handle(method, path, headers or {}, body))
    return status, hdrs, payload


@pytest.fixture(scope="module")
def servers(task_exports):
    made = {t: InferenceServer(d, name=t.replace("-", "_"), max_batch_size=4, threads=1) for t, d in task_exports.items()}
    yield made
    for s in made.values():
        s.close()


def test_health_metadata_config(servers):
    s = servers["qa"]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/qa/ready", "/v2/models/qa/versions/1/ready", "/v2"):
        assert call(s, "GET", path)[0] == 200, path
    status, _, body = call(s, "GET", "/v2/models/qa")
    meta = json.loads(body)
    assert status == 200 and meta["name"] == "qa" and meta["versions"] == ["1"] and meta["task"] == "qa"
    assert meta["inputs"] == [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
                              {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]}]
    assert [o["name"] for o in meta["outputs"]] == ["start_logits", "end_logits"]
    status, _, body = call(s, "GET", "/v2/models/qa/config")
    cfg = json.loads(body)
    assert status == 200 and cfg["max_batch_size"] == 4 and cfg["input"][0]["dims"] == [-1]


def test_infer_json_and_binary_equal_the_runtime_model(servers):
    s = servers["token-classification"]
    ids = np.random.default_rng(0).integers(3, 500, (2, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    want = s.model.run({"input_ids": ids, "attention_mask": mask})["logits"]
    body = {"id": "q", "inputs": [{"name": "input_ids", "shape": [2, 9], "datatype": "INT64", "data": ids.ravel().tolist()},
                                  {"name": "attention_mask", "shape": [2, 9], "datatype": "INT64", "data": mask.tolist()}]}
    status, hdrs, payload = call(s, "POST", "/v2/models/token_classification/infer", body)
    assert status == 200 and hdrs["content-type"] == "application/json"
    out = json.loads(payload)
    assert out["id"] == "q" and out["outputs"][0]["shape"] == [2, 9, 5]
    np.testing.assert_array_equal(np.array(out["outputs"][0]["data"], dtype=np.float32).reshape(2, 9, 5), want)
    # binary output requested for all (what tritonclient sends without named outputs)
    body["parameters"] = {"binary_data_output": True}
    status, hdrs, payload = call(s, "POST", "/v2/models/token_classification/versions/1/infer", body)
    n = int(hdrs["inference-header-content-length"])
    head = json.loads(payload[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == want.nbytes
    np.testing.assert_array_equal(np.frombuffer(payload[n:], dtype=np.float32).reshape(2, 9, 5), want)


@pytest.mark.parametrize("task", sorted(RECORDS))
def test_task_endpoint_equals_the_pipeline(servers, task_exports, task):
    s = servers[task]
    status, _, payload = call(s, "POST", f"/v1/{s.name}/{task}", RECORDS[task])
    assert status == 200, payload
    got = json.loads(payload)
    assert got["task"] == task
    want = json.loads(json.dumps(run_record(pipeline(task_exports[task], intra_op_threads=1), task, RECORDS[task])))
    _close(got["result"], want)


def _close(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    else:
        assert a == b


def test_endpoint_aliases(servers):
    assert call(servers["base"], "POST", "/v1/base/embeddings", {"text": "x"})[0] == 200
    assert call(servers["sequence-classification"], "POST", "/v1/sequence_classification/classification",
                {"text": "x"})[0] == 200
    assert call(servers["mlm"], "POST", "/v1/mlm/fill-mask", {"text": "a [MASK] b"})[0] == 200


def _ids(shape, hi=50, dtype="INT64"):
    n = int(np.prod(shape))
    return {"name": "input_ids", "shape": list(shape), "datatype": dtype, "data": [5 + i % hi for i in range(n)]}


BAD = [  # (task, method, path, body, status, words in the error)
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [_ids([1, 4]), {**_ids([1, 4]), "name": "segment_ids"}]}, 400,
     ["segment_ids", "the model takes"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [_ids([1, 4]), {**_ids([1, 3]), "name": "attention_mask"}]}, 400,
     ["attention_mask", "shape"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [{**_ids([1, 4]), "datatype": "FP32"}]}, 400,
     ["input_ids", "integers"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [{**_ids([1, 4]), "data": [5, 6, 7, 10**6]}]}, 400,
     ["input_ids", "vocabulary"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [{**_ids([1, 3]), "data": [-1, 5, 6]}]}, 400, ["input_ids", ">= 0"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [_ids([1, 600])]}, 400, ["sequence length 600", "maximum 512"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [_ids([5, 4])]}, 400, ["5 rows", "max batch size 4"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [_ids([4])]}, 400, ["rank 2", "batch axis"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [_ids([1, 0])]}, 400, ["empty"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [_ids([1, 4]), {**_ids([1, 4]), "name": "attention_mask",
                                                                      "data": [1, 2, 1, 0]}]}, 400,
     ["attention_mask", "1 (token) or 0"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [_ids([1, 4])], "outputs": [{"name": "logits"}]}, 400,
     ["unknown output 'logits'", "start_logits"]),
    ("qa", "POST", "/v2/models/qa/infer", {"inputs": [{**_ids([1, 4]), "name": "attention_mask"}]}, 400,
     ["input_ids"]),
    ("qa", "POST", "/v2/models/qa/infer", b"{oops", 400, ["malformed JSON"]),
    ("qa", "POST", "/v2/models/bert/infer", {"inputs": [_ids([1, 4])]}, 404, ["unknown model 'bert'", "'qa'"]),
    ("qa", "POST", "/v2/models/qa/versions/2/infer", {"inputs": [_ids([1, 4])]}, 404, ["version '2'"]),
    ("qa", "GET", "/v2/models/qa/infer", b"", 405, ["use POST"]),
    ("qa", "POST", "/v2/health/ready", b"", 405, ["use GET"]),
    ("qa", "GET", "/v3/anything", b"", 404, ["no endpoint"]),
    ("qa", "GET", "/v2/models/qa/stats", b"", 404, ["no endpoint"]),
    ("qa", "POST", "/v2/models/qa/infer", b"x" * (33 * 2**20), 413, ["bytes"]),
    ("qa", "POST", "/v1/qa/fill-mask", {"text": "x"}, 404, ["is a qa model", "/v1/qa/qa"]),
    ("qa", "POST", "/v1/qa/nonsense", {"text": "x"}, 404, ["is a qa model"]),
    ("qa", "POST", "/v1/qa/qa", {"question": "Where?"}, 400, ["missing field 'context'"]),
    ("qa", "POST", "/v1/qa/qa", {"question": "Where?", "context": "Here.", "topk": 2}, 400, ["unknown field 'topk'"]),
    ("qa", "POST", "/v1/qa/qa", {"question": "Where?", "context": "Here.", "top_k": 0}, 400, ["'top_k'", ">= 1"]),
    ("qa", "POST", "/v1/qa/qa", {"question": "   ", "context": "Here."}, 400, ["question is empty"]),
    ("qa", "POST", "/v1/qa/qa", [1, 2], 400, ["JSON object"]),
    ("qa", "POST", "/v1/qa/qa", b"", 400, ["empty"]),
    ("qa", "POST", "/v1/qa/qa", b"{bad", 400, ["malformed JSON"]),
    ("mlm", "POST", "/v1/mlm/mlm", {"text": "no mask here"}, 400, ["no mask token"]),
    ("mlm", "POST", "/v1/mlm/mlm", {"text": "a [MASK]", "targets": 5}, 400, ["targets"]),
    ("sequence-classification", "POST", "/v1/sequence_classification/sequence-classification",
     {"text": "word " * 700}, 400, ["tokens long", "truncation"]),
    ("sequence-classification", "POST", "/v1/sequence_classification/sequence-classification",
     {"text": "x", "function_to_apply": "tanh"}, 400, ["function_to_apply"]),
    ("token-classification", "POST", "/v1/token_classification/token-classification",
     {"text": "x", "aggregation_strategy": "mean"}, 400, ["aggregation_strategy"]),
    ("base", "POST", "/v1/base/base", {"text": []}, 400, ["'text'"]),
    ("base", "POST", "/v1/base/base", {"text": "x", "pooling": "max"}, 400, ["'pooling'"]),
    ("multiple-choice", "POST", "/v1/multiple_choice/multiple-choice", {"prompt": "x", "choices": ["only"]}, 400,
     ["'choices'", "at least 2"]),
]


@pytest.mark.parametrize("task,method,path,body,status,words", BAD, ids=[f"{i}-{b[2].split('/')[-1]}" for i, b in enumerate(BAD)])
def test_bad_requests_are_4xx_with_one_line_errors(servers, task, method, path, body, status, words):
    s = servers[task]
    got, hdrs, payload = call(s, method, path, body)
    assert got == status, payload[:300]
    err = json.loads(payload)["error"]
    assert "\n" not in err
    for w in words:
        assert w in err, err
    assert call(s, "POST", f"/v1/{s.name}/{task}", RECORDS[task])[0] == 200  # still serving
    assert s.counters["server_errors"] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                     ["inputs", "name", "shape", "datatype", "data", "parameters", "outputs", "question", "context",
                      "binary_data_size", "id", "top_k"]), c, max_size=5), max_leaves=20).map(json.dumps)),
    st.sampled_from(["/v2/models/qa/infer", "/v1/qa/qa"]))
def test_fuzzed_bodies_never_500(servers, body, path):
    s = servers["qa"]
    if isinstance(body, str):
        body = body.encode()
    status, _, payload = call(s, "POST", path, body)
    assert status in (200, 400, 404, 413), (status, payload[:200])
    if status != 200:
        assert "\n" not in json.loads(payload)["error"]


def test_a_fault_of_the_server_is_a_500_without_its_details(servers, monkeypatch, caplog):
    """An exception that is not the client's input (here: a pipeline bug) is a 500 with a generic message and a
    request id; the traceback goes to the server's log only -- and the server keeps answering."""
    s = servers["qa"]

    def broken(*_a, **_k):
        raise RuntimeError("secret internal detail: list index out of range")

    monkeypatch.setattr(s.pipeline, "answer", broken)
    with caplog.at_level("ERROR", logger="yoso_deploy.serving"):
        status, _, payload = call(s, "POST", "/v1/qa/qa", RECORDS["qa"])
    err = json.loads(payload)["error"]
    assert status == 500 and "request id" in err and "secret" not in err, err
    rid = err.split("request id ")[1].split(")")[0]
    assert any(rid in r.getMessage() and r.exc_info for r in caplog.records)  # the log has the traceback
    monkeypatch.undo()
    assert call(s, "POST", "/v1/qa/qa", RECORDS["qa"])[0] == 200
    s.counters["server_errors"] = 0


def test_the_token_budget_answers_503_with_retry_after(task_exports):
    """A request that does not fit the tokens in flight is refused at once with 503 + Retry-After; the budget is
    given back when a request ends."""
    import threading

    s = InferenceServer(task_exports["qa"], name="qa", threads=1, max_inflight_tokens=64)
    try:
        started, release = threading.Event(), threading.Event()
        real = s.run_items

        def held(items):  # the first request's run waits, holding its tokens
            started.set()
            release.wait(30)
            return real(items)

        s.run_items = held
        record = {"question": "Where did Ada move?", "context": "Ada moved to Oslo in 1999. " * 4}

        async def both():
            first = asyncio.ensure_future(s.handle("POST", "/v1/qa/qa", {}, json.dumps(record).encode()))
            while not started.is_set():
                await asyncio.sleep(0.01)
            second = await s.handle("POST", "/v1/qa/qa", {}, json.dumps(record).encode())
            release.set()
            return await first, second

        (st1, _, _), (st2, hdrs, payload) = asyncio.run(both())
        assert st1 == 200 and st2 == 503 and hdrs["retry-after"] == "1", payload
        assert "busy" in json.loads(payload)["error"] and s.admission.in_flight == 0
        s.run_items = real
        assert call(s, "POST", "/v1/qa/qa", record)[0] == 200  # given back
    finally:
        s.close()


def test_a_long_request_is_interleaved_with_short_ones(task_exports):
    """With --run-tokens, a long context runs as short model runs; a short request that arrives meanwhile is
    answered before the long one ends (the runs interleave), instead of waiting for all of it."""
    s = InferenceServer(task_exports["qa"], name="qa", threads=1, run_tokens=64)
    try:
        order = []
        real = s.run_items

        def logged(items):
            order.append((sum(it.rows for it in items), max(it.length for it in items)))
            return real(items)

        s.run_items = logged
        long_record = {"question": "Where did Ada move?",
                       "context": " ".join(["Ada moved to Oslo in 1999 and Otto moved to Lima."] * 300)}
        short_record = {"question": "Where did Ada move?", "context": "Ada moved to Oslo."}

        async def both():
            t_long = asyncio.ensure_future(s.handle("POST", "/v1/qa/qa", {}, json.dumps(long_record).encode()))
            while len(order) < 2:
                await asyncio.sleep(0.005)
            short = await s.handle("POST", "/v1/qa/qa", {}, json.dumps(short_record).encode())
            done_long = t_long.done()
            return await t_long, short, done_long

        (st_long, _, _), (st_short, _, _), long_was_done = asyncio.run(both())
        assert st_long == 200 and st_short == 200
        assert not long_was_done, "the short request waited for the whole long one"
        long_runs = [o for o in order if o[1] > 64]
        assert len(long_runs) > 4 and all(rows == 1 for rows, _ in long_runs), order  # one window per run
        short_at = next(i for i, o in enumerate(order) if o[1] <= 64)
        assert short_at < len(order) - 1, order  # the short request ran between two runs of the long one
    finally:
        s.close()
