"""Thread safety of libyoso_ort.so inside ONNX Runtime (issue 8).

A small QA model (random ``YosoForQuestionAnswering``: 1 layer, hidden 128, 2 heads of 64 with the
yoso-4096 hashing, m = 64, tau = 9; saved to a tmp dir and exported with
``yoso_deploy.export.export(..., validate=False)``) is run on 24 fixed random-length, right-padded
batches (batch 1-3, sequence 33-64):

* 8 threads share one ``InferenceSession`` (400 runs each);
* 4 sessions run in parallel, one thread each (400 runs each).

Sessions use ``intra_op_num_threads = 2``, and the shapes are chosen so that every custom-op call is
split into several tasks of ORT's intra-op pool (FastHash: 32 token rows per task; LSHCumulation: one
(b, h) slice per task at these lengths) while other runs are in flight. The library's kernel report
(``YOSO_KERNEL_REPORT``, tests/kernel_report.py) proves it: the sequential reference run asserts that
every op call handed out more than one task. (With shapes of one task per call, as this file had
before, a parallel_for that crashes on a second task passed.) Every output must be bit-identical
(same bytes) to the output of a sequential run of the same input.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from support import kernel_report
from yoso_deploy.runtime import create_session

RUNS = 400
SMALL = dict(vocab_size=60, hidden_size=128, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=128, num_hash=64, hash_code_len=9, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0, pad_token_id=1)
SEQ = (33, 65)  # sequence lengths drawn from [33, 64]: >= 2 tasks per op call (see the module doc)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import torch
    from transformers import YosoConfig, YosoForQuestionAnswering

    from yoso_deploy.workflow import export

    root = tmp_path_factory.mktemp("concurrency")
    torch.manual_seed(0)
    YosoForQuestionAnswering(YosoConfig(**SMALL)).save_pretrained(str(root / "ckpt"))
    result = export(root / "ckpt", root / "qa", task="qa", validate=False)
    ops_used = {n.op_type for n in __import__("onnx").load(str(result.onnx_path)).graph.node}
    assert {"FastHash", "LSHCumulation"} <= ops_used, ops_used
    return result.onnx_path


@pytest.fixture(scope="module")
def cases(model_path, tmp_path_factory):
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(24):
        b, s = int(rng.integers(1, 4)), int(rng.integers(*SEQ))
        ids = rng.integers(3, SMALL["vocab_size"], size=(b, s)).astype(np.int64)
        mask = np.ones((b, s), np.int64)
        for i in range(1, b):
            mask[i, rng.integers(1, s + 1):] = 0
        feeds.append({"input_ids": ids, "attention_mask": mask})
    report = kernel_report.Report(tmp_path_factory.mktemp("concurrency-report") / "kernels.txt")
    with kernel_report.reporting(report.path):
        sess = create_session(model_path, intra_op_threads=2)
    expected = [[o.tobytes() for o in sess.run(None, f)] for f in feeds]
    calls = report.new()
    # Each run: FastHash for queries and keys, then LSHCumulation; each call split into several tasks.
    assert sorted(c["op"] for c in calls) == sorted(["FastHash"] * 48 + ["LSHCumulation"] * 24), calls[:6]
    single = [c for c in calls if c["tasks"] < 2]
    assert not single, f"{len(single)} of {len(calls)} op calls ran as one task, e.g. {single[:3]}"
    print(f"sequential reference: {len(calls)} op calls, tasks per call "
          f"{min(c['tasks'] for c in calls)}-{max(c['tasks'] for c in calls)}")
    again = [[o.tobytes() for o in sess.run(None, f)] for f in feeds]
    assert expected == again, "sequential runs are not even deterministic"
    return feeds, expected


def _hammer(sessions_for_thread, feeds, expected, runs, seed):
    """Runs `runs` random cases per thread; returns (mismatches, errors) lists."""
    n_threads = len(sessions_for_thread)
    barrier = threading.Barrier(n_threads)
    mismatches, errors = [], []
    lock = threading.Lock()

    def work(t):
        rng = np.random.default_rng(seed + t)
        sess = sessions_for_thread[t]
        try:
            barrier.wait()
            for i in range(runs):
                k = int(rng.integers(len(feeds)))
                got = [o.tobytes() for o in sess.run(None, feeds[k])]
                if got != expected[k]:
                    with lock:
                        mismatches.append((t, i, k))
        except Exception as e:  # noqa: BLE001 - reported by the test
            with lock:
                errors.append((t, repr(e)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a worker thread hung"
    return mismatches, errors, time.perf_counter() - t0


def test_eight_threads_share_one_session(model_path, cases):
    feeds, expected = cases
    sess = create_session(model_path, intra_op_threads=2)
    mismatches, errors, seconds = _hammer([sess] * 8, feeds, expected, RUNS, seed=100)
    print(f"8 threads x {RUNS} runs on one session: {seconds:.1f}s, {len(mismatches)} mismatches, {len(errors)} errors")
    assert not errors, errors[:3]
    assert not mismatches, f"{len(mismatches)} of {8 * RUNS} outputs differ from the sequential run, e.g. {mismatches[:5]}"


def test_four_sessions_in_parallel(model_path, cases):
    feeds, expected = cases
    sessions = [create_session(model_path, intra_op_threads=2) for _ in range(4)]
    mismatches, errors, seconds = _hammer(sessions, feeds, expected, RUNS, seed=200)
    print(f"4 sessions x {RUNS} runs in parallel: {seconds:.1f}s, {len(mismatches)} mismatches, {len(errors)} errors")
    assert not errors, errors[:3]
    assert not mismatches, f"{len(mismatches)} of {4 * RUNS} outputs differ from the sequential run, e.g. {mismatches[:5]}"
