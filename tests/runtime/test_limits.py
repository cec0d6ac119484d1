"""Bounded work per call: every pipeline refuses, before any model run, a call over one of its limits with a
LimitError naming the field, the limit and the flag; under the limit it runs. The QA span search keeps at most
SPAN_BLOCK scores and finds exactly the spans a full search finds. The token budget admits and refuses."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yoso_deploy.errors import UsageError
from yoso_deploy.runtime import pipeline
from yoso_deploy.runtime import qa as qa_module
from yoso_deploy.runtime.limits import LimitError, Limits, OverloadedError, TokenBudget

SMALL = Limits(max_texts=2, max_text_chars=60, max_tokens=20, max_question_tokens=5, max_top_k=3, max_answer_len=4)


@pytest.fixture(scope="module")
def pipes(task_exports):
    return {t: pipeline(d, limits=SMALL) for t, d in task_exports.items()}


CASES = [
    ("qa", lambda p: p(question="Where?", context="Ada moved to Oslo.", top_k=4), "top_k is 4", "--max-top-k"),
    ("qa", lambda p: p(question="Where?", context="Ada moved to Oslo.", max_answer_len=5), "max_answer_len is 5 tokens",
     "--max-answer-len"),
    ("qa", lambda p: p(question="Where did Ada Lovelace and Otto move?", context="Ada moved.", max_answer_len=4),
     "the question is", "--max-question-tokens"),
    ("qa", lambda p: p(question="Where?", context="x " * 40, max_answer_len=4), "the context is 80 characters",
     "--max-text-chars"),
    ("qa", lambda p: p(question="Where?", context="a " * 25, max_answer_len=4), "the context is 25 tokens, over the "
     "limit of 20", "--max-tokens"),
    ("sequence-classification", lambda p: p(["a", "b", "c"]), "the number of texts is 3", "--max-texts"),
    ("sequence-classification", lambda p: p("a", top_k=4), "top_k is 4", "--max-top-k"),
    ("sequence-classification", lambda p: p("a", text_pair="b" * 61), "the text pair is 61 characters", "--max-text-chars"),
    ("token-classification", lambda p: p("Ada " * 16), "the text is 64 characters", "--max-text-chars"),
    ("token-classification", lambda p: p(["Ada Lovelace moved to Oslo and then to Lima",
                                          "Otto moved to Lima and Clara to Accra today"]), "tokens, over the limit",
     "--max-tokens"),
    ("mlm", lambda p: p("Ada moved to [MASK].", top_k=5), "top_k is 5", "--max-top-k"),
    ("mlm", lambda p: p("Ada moved to [MASK].", targets=["oslo", "lima", "accra"], top_k=3), "the number of targets is 3",
     "--max-texts"),
    ("base", lambda p: p(["a", "b", "c"]), "the number of texts is 3", "--max-texts"),
    ("multiple-choice", lambda p: p("Ada moved to", ["Oslo.", "Lima.", "Accra."]), "the number of choices is 3",
     "--max-texts"),
]


@pytest.mark.parametrize("task,call,what,flag", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_over_a_limit_is_refused_naming_it(pipes, task, call, what, flag, monkeypatch):
    p = pipes[task]
    runs = []
    monkeypatch.setattr(p.model, "run", lambda *a, **k: runs.append(1))
    with pytest.raises(LimitError) as e:
        call(p)
    msg = str(e.value)
    assert what in msg and flag in msg and "over the limit" in msg and "\n" not in msg, msg
    assert isinstance(e.value, UsageError) and e.value.status == 422
    assert runs == []  # refused before any model run


def test_under_the_limits_every_pipeline_runs(pipes):
    assert pipes["qa"](question="Where?", context="Ada moved to Oslo.", top_k=3, max_answer_len=4)
    assert pipes["sequence-classification"](["a fine day", "bad"], top_k=3)
    assert pipes["token-classification"]("Ada lives in London") is not None
    assert pipes["mlm"]("Ada moved to [MASK].", top_k=3)
    assert len(pipes["base"](["a", "b"])) == 2
    assert pipes["multiple-choice"]("Ada moved to", ["Oslo.", "Lima."])


def test_limits_are_checked_themselves():
    with pytest.raises(UsageError, match="--max-tokens must be a positive integer"):
        Limits(max_tokens=0)


def _brute(p_start, p_end, span, keep):
    n = len(p_start)
    cand = [(p_start[i] * p_end[i + t], i, t) for i in range(n) for t in range(span) if i + t < n]
    cand = [c for c in cand if c[0] > 0]
    return sorted(cand, key=lambda c: -c[0])[:keep]


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.integers(1, 9), st.integers(0, 2**31 - 1), st.integers(1, 64))
def test_best_spans_equals_the_full_search_whatever_the_block(n, span, keep, seed, block):
    rng = np.random.default_rng(seed)
    p_start, p_end = rng.random(n), rng.random(n)
    old = qa_module.SPAN_BLOCK
    qa_module.SPAN_BLOCK = block  # blocks of a few starts: the blockwise search must not lose a best span
    try:
        got = qa_module.best_spans(p_start, p_end, min(span, n), keep)
    finally:
        qa_module.SPAN_BLOCK = old
    want = _brute(p_start, p_end, min(span, n), keep)
    assert [(round(s, 12), i, t) for s, i, t in got] == [(round(s, 12), i, t) for s, i, t in want]


def test_the_token_budget_admits_refuses_and_gives_back():
    b = TokenBudget(100, retry_after=2)
    with b.reserve(60):
        with pytest.raises(OverloadedError) as e:
            with b.reserve(50):
                pass
        assert e.value.retry_after == 2 and "60 of 100 tokens in flight" in str(e.value)
        with b.reserve(40):
            assert b.in_flight == 100
    assert b.in_flight == 0 and (b.admitted, b.refused) == (2, 1)
    with pytest.raises(LimitError, match="more than the server's whole budget of 100.*--max-inflight-tokens"):
        with b.reserve(101):
            pass
