"""The ORT runtime: task models, providers, threads, optimised-model cache, QA pipeline, concurrency."""

import threading

import numpy as np
import pytest
from click.testing import CliRunner

from yoso_deploy.cli.main import main
from yoso_deploy.workflow import export
from yoso_deploy.runtime import ProviderUnavailableError, create_session
from yoso_deploy.runtime.models import TASK_MODELS, YosoOrtForQuestionAnswering, YosoOrtForSequenceClassification
from yoso_deploy.runtime.limits import Limits
from yoso_deploy.runtime.qa import QuestionAnsweringPipeline, stitch_windows


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runtime") / "qa"
    export(None, out, task="qa", validate=False)  # the embedded default model (has a tokenizer)
    return out


CONTEXT = ("Ada moved to Oslo in 1999 and bought a red lamp. Bruno moved to Lima in 2004 and bought a blue map. "
           "Chen moved to Accra in 2011 and bought a green clock. Dana moved to Hanoi in 1987 and bought a kettle.")


def test_task_model_outputs_and_errors(qa_dir):
    model = YosoOrtForQuestionAnswering.from_pretrained(qa_dir, intra_op_threads=2)
    ids = np.array([[0, 10, 11, 12, 2], [0, 13, 2, 1, 1]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out = model(input_ids=ids, attention_mask=mask)
    assert out.start_logits.shape == (2, 5) and out.end_logits.shape == (2, 5)
    assert np.array_equal(out["start_logits"], out[0])
    # attention_mask defaults to all ones
    assert np.allclose(model(input_ids=ids[:1]).start_logits, out.start_logits[:1], atol=1e-6)
    with pytest.raises(ValueError, match="is a 'qa' export"):
        YosoOrtForSequenceClassification.from_pretrained(qa_dir)
    with pytest.raises(ValueError, match="exceeds the model's maximum"):
        model(input_ids=np.zeros((1, model.max_sequence_length + 1), dtype=np.int64))
    with pytest.raises(ValueError, match="unknown input"):
        model(input_ids=ids, attention_mask=mask, pixel_values=ids)
    with pytest.raises(ValueError, match="rank 2"):
        model(input_ids=ids[0], attention_mask=mask[0])
    assert set(TASK_MODELS) == {"base", "mlm", "sequence-classification", "multiple-choice", "token-classification", "qa"}


def test_missing_provider_is_an_error(qa_dir):
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider is not available"):
        YosoOrtForQuestionAnswering.from_pretrained(qa_dir, provider="cuda")
    with pytest.raises(ProviderUnavailableError, match="not available"):
        create_session(qa_dir / "model.onnx", providers=["TensorrtExecutionProvider"])
    r = CliRunner().invoke(main, ["qa", "--model", str(qa_dir), "--question", "q", "--context", "c", "--provider", "cuda"])
    assert r.exit_code == 2 and "onnxruntime-gpu" in r.output


def test_optimized_model_cache(qa_dir, tmp_path):
    import onnx

    s1 = create_session(qa_dir / "model.onnx", optimized_cache_dir=tmp_path)
    cached = list(tmp_path.glob("*.opt.onnx"))
    assert len(cached) == 1 and cached[0].stat().st_size > 0
    # The cached file is ORT's optimised graph, not a copy of the export.
    assert cached[0].read_bytes() != (qa_dir / "model.onnx").read_bytes()
    # Mark the cached file (a metadata entry the export does not have): a session that reads the cache
    # shows the mark, one that re-optimises the export does not.
    marked = onnx.load(str(cached[0]))
    onnx.helper.set_model_props(marked, {**{p.key: p.value for p in marked.metadata_props}, "cache_probe": "read"})
    onnx.save(marked, str(cached[0]))
    s2 = create_session(qa_dir / "model.onnx", optimized_cache_dir=tmp_path)
    assert s2.get_modelmeta().custom_metadata_map.get("cache_probe") == "read", "the cached optimised model was not loaded"
    assert "cache_probe" not in s1.get_modelmeta().custom_metadata_map
    feeds = {"input_ids": np.array([[0, 9, 8, 7, 2]]), "attention_mask": np.ones((1, 5), dtype=np.int64)}
    a = s1.run(None, feeds)
    b = s2.run(None, feeds)
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(a, b))
    assert len(list(tmp_path.glob("*.opt.onnx"))) == 1
    # A different model gets its own cache entry (the key is the model's hash), not the marked file.
    other = tmp_path / "other" / "model.onnx"
    other.parent.mkdir()
    m = onnx.load(str(qa_dir / "model.onnx"))
    onnx.helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props}, "variant": "2"})
    onnx.save(m, str(other))
    s3 = create_session(other, optimized_cache_dir=tmp_path)
    assert "cache_probe" not in s3.get_modelmeta().custom_metadata_map
    assert len(list(tmp_path.glob("*.opt.onnx"))) == 2


def test_concurrent_calls_match_sequential(qa_dir):
    model = YosoOrtForQuestionAnswering.from_pretrained(qa_dir)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(16):
        b, s = int(rng.integers(1, 4)), int(rng.integers(1, 120))
        ids = rng.integers(5, 300, size=(b, s))
        mask = np.ones_like(ids)
        mask[0, s // 2 + 1:] = 0
        batches.append((ids, mask))
    sequential = [model(input_ids=i, attention_mask=m).start_logits for i, m in batches]
    results = [[None] * len(batches) for _ in range(8)]
    errors = []

    def worker(t):
        try:
            for k in range(len(batches)):
                j = (k + t) % len(batches)
                results[t][j] = model(input_ids=batches[j][0], attention_mask=batches[j][1]).start_logits
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for t in range(8):
        for j, want in enumerate(sequential):
            assert np.array_equal(results[t][j], want)


def test_qa_windowing_matches_single_window(qa_dir):
    single = QuestionAnsweringPipeline.from_pretrained(qa_dir, max_seq_len=512)
    windowed = QuestionAnsweringPipeline.from_pretrained(qa_dir, max_seq_len=32, doc_stride=8, batch_size=3)
    assert len(single.encode("Where did Chen move?", CONTEXT)["input_ids"]) == 1
    assert len(windowed.encode("Where did Chen move?", CONTEXT)["input_ids"]) > 2
    a = single.answer("Where did Chen move?", CONTEXT, max_answer_len=5)[0]
    b = windowed.answer("Where did Chen move?", CONTEXT, max_answer_len=5)[0]
    assert CONTEXT[a.start:a.end] == a.answer and CONTEXT[b.start:b.end] == b.answer
    # Both see the whole question; the span the full window picks must also be found by the windows.
    top = windowed.answer("Where did Chen move?", CONTEXT, top_k=50, max_answer_len=5)
    assert (a.start, a.end) in {(x.start, x.end) for x in top}


class _TokenLogits:
    """A stand-in QA model: each token's logits are a fixed function of its id, plus (when ``drift`` is
    set) of its position in the window, i.e. of how the window cut the context."""

    max_sequence_length = 512

    def __init__(self, drift: float = 0.0):
        rng = np.random.default_rng(0)
        self.table = rng.normal(0, 3, size=(2, 100_000))
        self.drift = drift

    def __call__(self, input_ids, attention_mask):
        from types import SimpleNamespace

        pos = np.arange(input_ids.shape[1])[None, :]
        s = self.table[0][input_ids] + self.drift * np.sin(pos)
        e = self.table[1][input_ids] + self.drift * np.cos(pos)
        return SimpleNamespace(start_logits=s.astype(np.float32), end_logits=e.astype(np.float32))


def _pipes(qa_dir, drift=0.0):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qa_dir))
    model = _TokenLogits(drift)
    every = Limits(max_top_k=1000)  # these tests enumerate every span
    return (QuestionAnsweringPipeline(model, tok, max_seq_len=512, limits=every),
            QuestionAnsweringPipeline(model, tok, max_seq_len=32, doc_stride=8, batch_size=3, limits=every))


def test_stitched_windows_cover_the_context_once_from_the_best_window(qa_dir):
    single, windowed = _pipes(qa_dir)
    one = single.encode("Where did Chen move?", CONTEXT)
    enc = windowed.encode("Where did Chen move?", CONTEXT)
    assert len(enc["input_ids"]) >= 3
    owner, position, offsets = stitch_windows(enc)
    want = [tuple(o) for s, o in zip(one.sequence_ids(0), one["offset_mapping"][0]) if s == 1]
    assert [tuple(o) for o in offsets] == want  # every context token once, in document order
    for k, (w, i) in enumerate(zip(owner, position)):
        assert tuple(enc["offset_mapping"][w][i]) == want[k] and enc.sequence_ids(w)[i] == 1
        # no other window holding this token gives it more context on both sides
        def context_in(v):
            pos = [j for j, s in enumerate(enc.sequence_ids(v)) if s == 1]
            offs = [tuple(enc["offset_mapping"][v][j]) for j in pos]
            if want[k] not in offs:
                return -1.0
            q = offs.index(want[k])
            return min(q, len(pos) - 1 - q) + 0.01 * len(pos)
        assert context_in(w) == max(context_in(v) for v in range(len(enc["input_ids"])))


def test_windowed_scores_equal_one_window_when_logits_do_not_depend_on_the_cut(qa_dir):
    # Logits that depend on the token only: stitching must reproduce the single window exactly, spans
    # crossing window boundaries included (a per-window softmax gives every window a unit of mass).
    single, windowed = _pipes(qa_dir)
    a = single.answer("Where did Chen move?", CONTEXT, top_k=20, max_answer_len=6)
    b = windowed.answer("Where did Chen move?", CONTEXT, top_k=20, max_answer_len=6)
    assert [(x.start, x.end, x.answer) for x in a] == [(x.start, x.end, x.answer) for x in b]
    assert np.allclose([x.score for x in a], [x.score for x in b], rtol=1e-5, atol=0)
    assert len({x.window for x in b}) > 1


def test_windowed_scores_are_probabilities(qa_dir):
    # Logits that drift with the cut: the scores of all spans together still cannot exceed 1 (a token's
    # end logit from a window where it sits at the edge must not be paired with another normaliser).
    _, windowed = _pipes(qa_dir, drift=4.0)
    top = windowed.answer("Where did Chen move?", CONTEXT, top_k=400, max_answer_len=30)
    assert len(top) > 100
    assert all(0 < x.score <= 1 for x in top) and sum(x.score for x in top) <= 1 + 1e-9
    assert all(CONTEXT[x.start:x.end] == x.answer for x in top)
    assert [x.score for x in top] == sorted((x.score for x in top), reverse=True)


def test_qa_cli(qa_dir, tmp_path):
    f = tmp_path / "ctx.txt"
    f.write_text(CONTEXT)
    r = CliRunner().invoke(main, ["qa", "--model", str(qa_dir), "--question", "Where did Ada move?",
                                  "--context-file", str(f), "--top-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert '"answer"' in r.output and '"score"' in r.output
    r = CliRunner().invoke(main, ["qa", "--model", str(qa_dir), "--question", "q"])
    assert r.exit_code == 2 and "exactly one of --context" in r.output
    r = CliRunner().invoke(main, ["qa", "--model", str(qa_dir), "--question", " ", "--context", "x"])
    assert r.exit_code == 2 and "question is empty" in r.output


def test_impossible_answer_joins_the_softmax(qa_dir):
    single, windowed = _pipes(qa_dir)
    q = "Where did Chen move?"
    plain = single.answer(q, CONTEXT, top_k=5, max_answer_len=6)
    assert all(a.answer for a in plain)  # without the option there is never an empty answer
    for pipe in (single, windowed):
        with_null = pipe.answer(q, CONTEXT, top_k=400, max_answer_len=6, handle_impossible_answer=True)
        null = [a for a in with_null if a.answer == ""]
        assert len(null) == 1 and (null[0].start, null[0].end) == (0, 0)
        assert 0 < sum(a.score for a in with_null) <= 1 + 1e-9
    # a [CLS] logit far above every context token's makes the null answer the best one
    cls = single.tokenizer.cls_token_id
    for model in (single.model, windowed.model):
        model.table[:, cls] = 50.0
    best = windowed.answer(q, CONTEXT, handle_impossible_answer=True)[0]
    assert best.answer == "" and best.score > 0.99
    assert windowed.answer(q, CONTEXT)[0].answer != ""  # and it is only considered when asked for


def test_pipeline_call_returns_transformers_style_dicts(qa_dir):
    pipe = QuestionAnsweringPipeline.from_pretrained(qa_dir)
    one = pipe(question="Where did Ada move?", context=CONTEXT)
    assert set(one) == {"score", "start", "end", "answer"} and CONTEXT[one["start"]:one["end"]] == one["answer"]
    three = pipe(question="Where did Ada move?", context=CONTEXT, top_k=3)
    assert isinstance(three, list) and len(three) == 3 and three[0] == one
    with pytest.raises(TypeError, match="has no option pooling"):
        pipe(question="q", context="c", pooling="mean")


def test_default_doc_stride_fits_short_windows(qa_dir):
    assert QuestionAnsweringPipeline.from_pretrained(qa_dir).doc_stride == 128
    short = QuestionAnsweringPipeline.from_pretrained(qa_dir, max_seq_len=32)
    assert short.doc_stride == 8 and short.answer("Where did Ada move?", CONTEXT)[0].answer
    with pytest.raises(ValueError, match=r"doc_stride must be in \[0, 16\) for windows of 32 tokens, got 20"):
        QuestionAnsweringPipeline.from_pretrained(qa_dir, max_seq_len=32, doc_stride=20)
