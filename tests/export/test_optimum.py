"""Exports in Hugging Face's own stack: in a venv of Optimum's (optimum-onnx 0.1.0, which pins transformers 4.57;
built once under build/venvs), ``AutoTokenizer`` and ``AutoConfig`` load every export, the export's tokenizer gives
the ids of transformers 4's *slow* tokenizer on the source checkpoint for every tokenizer kind (WordPiece,
byte-level BPE, SentencePiece unigram and BPE), and ``transformers.pipeline`` over Optimum's ``ORTModelFor<Task>``
with yoso-deploy's session options answers as our own torch-free pipelines do (question answering, text and token
classification). A checkpoint laid out like uw-madison/yoso-4096 (slow RoBERTa files only, pad id 1, one token type,
4096 positions, hidden 768) is among them and also answers a long context torch-free."""

import json
import subprocess

import numpy as np
import pytest
from support import REPO
from support.tokenizer_kinds import KINDS, SAMPLE_PAIRS, SAMPLE_TEXTS, SLOW_ONLY_KINDS, kind_exports
from support.venvs import OPTIMUM_REQUIREMENTS, blocked_env, cached_venv, source_env

from yoso_deploy.runtime import pipeline

pytestmark = pytest.mark.slow  # a venv of its own (about 40 s to build, cached), a 768-wide export

QA = [("When does it open?", SAMPLE_TEXTS[1]), ("What does YOSO approximate?", SAMPLE_TEXTS[0])]
TOKEN_TEXTS = ["Ada Lovelace moved to Zürich in 1999.", SAMPLE_TEXTS[2]]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from support.checkpoints import yoso4096_config  # noqa: F401 - the configuration the layout case copies

    from yoso_deploy.modeling import yoso_4096_config

    root = tmp_path_factory.mktemp("optimum")
    out = {}
    for (kind, _), (ckpt, exp) in kind_exports(root, fast_variants=(False,)).items():
        out[f"qa-{kind}"] = {"task": "qa", "checkpoint": str(ckpt), "export": str(exp)}
    for kind, task in (("wordpiece", "sequence-classification"), ("spiece", "token-classification")):
        (ckpt, exp), = kind_exports(root, kinds=(kind,), fast_variants=(False,), task=task).values()
        out[f"{task}-{kind}"] = {"task": task, "checkpoint": str(ckpt), "export": str(exp)}
    # uw-madison/yoso-4096's layout: RobertaTokenizer slow files only, model_max_length 512 in the tokenizer config,
    # pad id 1, one token type, 4096 positions; the 768-wide, 12-head configuration with 2 layers.
    big = yoso_4096_config()
    layout = {k: getattr(big, k) for k in ("hidden_size", "num_attention_heads", "intermediate_size",
                                           "max_position_embeddings", "num_hash", "hash_code_len")}
    (ckpt, exp), = kind_exports(root / "yoso4096", kinds=("bpe",), fast_variants=(False,), **layout).values()
    out["qa-yoso4096-layout"] = {"task": "qa", "checkpoint": str(ckpt), "export": str(exp)}
    return out


@pytest.fixture(scope="module")
def probe(cases, tmp_path_factory):
    python = cached_venv("optimum", OPTIMUM_REQUIREMENTS)
    d = tmp_path_factory.mktemp("probe")
    job = {"cases": [{"name": k, **v} for k, v in cases.items()], "texts": SAMPLE_TEXTS + TOKEN_TEXTS,
           "pairs": SAMPLE_PAIRS, "qa": QA}
    (d / "job.json").write_text(json.dumps(job))
    r = subprocess.run([str(python), str(REPO / "tests" / "support" / "optimum_probe.py"), str(d / "job.json"),
                        str(d / "out.json")], env=source_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads((d / "out.json").read_text())
    assert out["transformers"].startswith("4."), out["transformers"]
    return out["cases"]


def _our_ids(export):
    from yoso_deploy.runtime.tokenizer import Tokenizer

    tk = Tokenizer.from_dir(export)
    out = [tk([t])["input_ids"][0].tolist() for t in SAMPLE_TEXTS + TOKEN_TEXTS]
    for q, c in SAMPLE_PAIRS:
        e = tk([q], [c])
        out.append({"input_ids": e["input_ids"][0].tolist(), "token_type_ids": e["token_type_ids"][0].tolist(),
                    "attention_mask": e["attention_mask"][0].tolist()})
    return out


UNIGRAM_KINDS = ("spiece", "xlmr")  # SentencePiece unigram models


def _ids_of(x):
    return x["input_ids"] if isinstance(x, dict) else x


@pytest.mark.parametrize("kind", KINDS + SLOW_ONLY_KINDS)
def test_ids_equal_transformers_4_slow_tokenizer(cases, probe, kind):
    """The export's ids equal transformers 4's slow tokenizer (token types too) and its own fast conversion.
    One exception, tie-aware as the parity check is: a unigram model's Viterbi split of equal total score (the same
    pieces in another order, e.g. "1999" as 1 9 99 or 1 99 9) is broken one way by SentencePiece and the other by
    the tokenizers library -- transformers' own fast tokenizers included."""
    case, got = cases[f"qa-{kind}"], probe[f"qa-{kind}"]
    ours = _our_ids(case["export"])
    assert got["slow_class"].endswith("Tokenizer") and not got["slow_class"].endswith("Fast")
    from yoso_deploy.runtime.tokenizer import Tokenizer

    tk = Tokenizer.from_dir(case["export"])._tk
    ties = 0
    for a, b, b_tokens, f in zip(ours, got["slow_ids"], got["slow_tokens"], got["fast_ids"]):
        assert _ids_of(a) == _ids_of(f)  # transformers 4's fast conversion of the source
        if isinstance(b, dict) and "token_type_ids" in b:
            assert a["token_type_ids"] == b["token_type_ids"]
        if _ids_of(a) != _ids_of(b):
            a_tokens = [tk.id_to_token(i) for i in _ids_of(a)]
            assert kind in UNIGRAM_KINDS and sorted(a_tokens) == sorted(b_tokens), (a_tokens, b_tokens)
            ties += 1
    print(f"\n{kind}: {len(ours)} encodings, {ties} differ from SentencePiece by an equal-score reordering")
    assert got["export_ids"] == [x if not isinstance(x, dict) else {k: x[k] for k in y}
                                 for x, y in zip(ours, got["export_ids"])]
    assert got["export_class"] == "PreTrainedTokenizerFast" and got["model_type"] == "yoso"


def _same_scores(a, b):
    return np.allclose([x["score"] for x in a], [x["score"] for x in b], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["qa-bpe", "qa-wordpiece", "qa-xlmr", "qa-yoso4096-layout"])
def test_optimum_question_answering(cases, probe, name):
    ours = pipeline(cases[name]["export"])
    for (q, c), theirs in zip(QA, probe[name]["answers"]):
        mine = ours(question=q, context=c, top_k=3, max_answer_len=30)
        assert [(a["answer"], a["start"], a["end"]) for a in mine] == \
               [(a["answer"], a["start"], a["end"]) for a in theirs]
        assert _same_scores(mine, theirs)


def test_optimum_text_classification(cases, probe):
    name = "sequence-classification-wordpiece"
    ours = pipeline(cases[name]["export"])
    for text, theirs in zip(SAMPLE_TEXTS + TOKEN_TEXTS, probe[name]["answers"]):
        mine = ours(text, top_k=None)
        assert [a["label"] for a in mine] == [a["label"] for a in theirs] and _same_scores(mine, theirs)


def test_optimum_token_classification(cases, probe):
    name = "token-classification-spiece"
    ours = pipeline(cases[name]["export"])
    for text, theirs in zip(SAMPLE_TEXTS + TOKEN_TEXTS, probe[name]["answers"]):
        mine = ours(text, aggregation_strategy="simple")
        assert [(a["entity_group"], a["word"], a["start"], a["end"]) for a in mine] == \
               [(a["entity_group"], a["word"], a["start"], a["end"]) for a in theirs]
        assert _same_scores(mine, theirs)


def test_yoso4096_layout_answers_a_long_context_torch_free(cases, tmp_path):
    """The yoso-4096-laid-out export answers a ~2,500-token context in one window (its 4096 positions, not the
    tokenizer config's 512) from a process where torch and transformers cannot be imported."""
    import sys

    exp = cases["qa-yoso4096-layout"]["export"]
    manifest = json.loads(open(f"{exp}/yoso_export.json").read())
    assert manifest["max_sequence_length"] == 4096 and [i["name"] for i in manifest["inputs"]] == \
        ["input_ids", "attention_mask"]
    assert manifest["tokenizer"]["kind"] == "bpe" and manifest["tokenizer"]["converted"] is True
    env = blocked_env(tmp_path / "shadow")
    context = " ".join(SAMPLE_TEXTS * 25)
    r = subprocess.run([sys.executable, "-m", "yoso_deploy.cli", "qa", "--model", exp, "--question",
                        "When does it open?", "--context", context, "--json"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)[0]
    assert got["answer"] and context[got["start"]:got["end"]] == got["answer"]
    qa = pipeline(exp)
    assert 2000 < qa.tokenizer.token_count(context) < 4000
    assert len(qa.encode("When does it open?", context)["input_ids"]) == 1
