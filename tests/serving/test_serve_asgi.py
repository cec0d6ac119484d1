"""`yoso-deploy serve` with the default asgi engine (uvicorn, no Ray), as users run it: a subprocess on 127.0.0.1
that answers the Open Inference Protocol and the task endpoints as the in-process pipelines do, imports neither
torch nor transformers nor Ray, serves with several worker processes, and on SIGTERM lets the request in flight
finish before it exits 0; and the application's own body checks, in process."""

import json
import signal
import threading
import time

import numpy as np
import pytest

from support.servers import asgi_server, request

QUESTION, CONTEXT = "Where did Ada move?", "Ada Lovelace moved to Oslo in 1999. Otto moved to Lima."


def test_answers_as_the_pipeline_does(task_exports):
    from yoso_deploy.runtime import YosoOrtModel, pipeline

    with asgi_server(task_exports["qa"], "--threads", "1", name="qa") as (proc, port):
        status, _, body = request(port, "POST", "/v1/qa/qa", {"question": QUESTION, "context": CONTEXT, "top_k": 2})
        want = [a.to_json() for a in pipeline(task_exports["qa"]).answer(QUESTION, CONTEXT, top_k=2)]
        assert status == 200 and json.loads(body)["result"] == json.loads(json.dumps(want))
        ids = np.random.default_rng(0).integers(3, 500, (2, 11))
        req = {"inputs": [{"name": "input_ids", "shape": [2, 11], "datatype": "INT64", "data": ids.ravel().tolist()}]}
        status, _, body = request(port, "POST", "/v2/models/qa/infer", req)
        outs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in json.loads(body)["outputs"]}
        ref = YosoOrtModel.from_pretrained(task_exports["qa"]).run({"input_ids": ids})
        assert status == 200 and np.allclose(outs["start_logits"], ref["start_logits"], atol=1e-5)
        status, headers, body = request(port, "HEAD", "/v2/models/qa")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        stats = json.loads(request(port, "GET", "/v1/qa/stats")[2])
        assert stats["heavy_modules"] == [] and stats["admission"]["capacity"] == 65536


def test_tritonclient_http_unchanged(task_exports):
    tc = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (the [triton] extra)")
    with asgi_server(task_exports["mlm"], "--threads", "1", name="mlm") as (proc, port):
        client = tc.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_ready() and client.is_model_ready("mlm")
        ids = np.array([[0, 5, 7, 9, 2]], dtype=np.int64)
        inp = tc.InferInput("input_ids", list(ids.shape), "INT64")
        inp.set_data_from_numpy(ids, binary_data=True)
        res = client.infer("mlm", [inp], outputs=[tc.InferRequestedOutput("logits", binary_data=True)])
        from yoso_deploy.runtime import YosoOrtModel

        want = YosoOrtModel.from_pretrained(task_exports["mlm"]).run({"input_ids": ids})["logits"]
        assert np.allclose(res.as_numpy("logits"), want, atol=1e-5)


def test_workers_are_processes_each_with_its_model(task_exports):
    with asgi_server(task_exports["sequence-classification"], "--workers", "2", "--threads", "1", name="cls",
                     timeout=180) as (proc, port):
        pids = set()
        for _ in range(40):
            status, _, body = request(port, "POST", "/v1/cls/text-classification", {"text": "a fine day"})
            assert status == 200
            pids.add(json.loads(request(port, "GET", "/v1/cls/stats")[2])["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2 and proc.pid not in pids, pids


def test_sigterm_drains_the_request_in_flight(task_exports):
    """A long request (a 2,000-token context in many short windows) started before SIGTERM still gets its answer."""
    long_context = " ".join(["Ada Lovelace moved to Oslo in 1999 and Otto moved to Lima in 2004."] * 150)
    with asgi_server(task_exports["qa"], "--threads", "1", "--run-tokens", "64", name="qa") as (proc, port):
        got = {}

        def ask():
            got["r"] = request(port, "POST", "/v1/qa/qa", {"question": QUESTION, "context": long_context}, timeout=60)

        t = threading.Thread(target=ask)
        t.start()
        time.sleep(0.3)  # the request is in flight
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        t.join(60)
        status, _, body = got["r"]
        assert status == 200 and json.loads(body)["result"][0]["answer"], body
        assert proc.wait(60) == 0
        print(f"\ndrained one long request and stopped in {time.perf_counter() - t0:.2f}s")


def test_body_reading_refuses_what_uvicorn_would_let_through():
    """The application's own body checks (for ASGI hosts other than uvicorn, which already answers 400 to a
    malformed Content-Length): a malformed or too large declared length, a chunked body past the limit, a client
    that disconnects mid-body, a body slower than --body-timeout; and a body within the limit is returned whole."""
    import asyncio

    from yoso_deploy.serving.asgi import YosoASGI, _Refused
    from yoso_deploy.serving.config import ServeConfig

    app = YosoASGI(ServeConfig(model_dir="unused", max_request_bytes=10, body_timeout_s=0.2), server=object())

    def receiver(*messages):
        it = iter(messages)
        return lambda: asyncio.sleep(0, next(it))

    def read(headers, *messages):
        return asyncio.run(app._read_body(headers, receiver(*messages)))

    def refused(headers, *messages):
        with pytest.raises(_Refused) as e:
            read(headers, *messages)
        return e.value.status, str(e.value)

    chunk = lambda b, more: {"type": "http.request", "body": b, "more_body": more}  # noqa: E731
    assert read({"content-length": "10"}, chunk(b"01234", True), chunk(b"56789", False)) == b"0123456789"
    assert refused({"content-length": "abc"})[0] == 400
    status, msg = refused({"content-length": "11"})
    assert status == 413 and "--max-request-bytes" in msg
    status, msg = refused({}, chunk(b"012345", True), chunk(b"67890", True))
    assert status == 413 and "passed 10 bytes" in msg
    assert refused({}, chunk(b"01", True), {"type": "http.disconnect"})[0] == 400
    slow = lambda: asyncio.sleep(5, chunk(b"", False))  # noqa: E731
    with pytest.raises(_Refused) as e:
        asyncio.run(app._read_body({}, slow))
    assert e.value.status == 408 and "--body-timeout" in str(e.value)
