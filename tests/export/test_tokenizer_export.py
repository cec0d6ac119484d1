"""The export's tokenizer from whatever a checkpoint ships: WordPiece ``vocab.txt``, byte-level BPE ``vocab.json`` +
``merges.txt`` (uw-madison/yoso-4096's layout: pad id 1, one token type), SentencePiece ``spiece.model`` (ALBERT)
and ``sentencepiece.bpe.model`` (XLM-R), each with slow files only and with a ``tokenizer.json``: the export's
``tokenizer.json``, read by the torch-free runtime, gives the source tokenizer's ids for texts, pairs and masks,
offsets that map back into the text, and the model's own length limit. The same checks against transformers 4's
slow tokenizers run in Optimum's environment (tests/export/test_optimum.py)."""

import json
import shutil

import pytest
import transformers
from support.tokenizer_kinds import (
    KINDS,
    SAMPLE_PAIRS,
    SAMPLE_TEXTS,
    SLOW_ONLY_KINDS,
    kind_exports,
    make_checkpoint,
    make_tokenizer,
    spm_bpe_reference_ids,
)

from yoso_deploy.checkpoint import find_tokenizer
from yoso_deploy.errors import NotFoundError, UsageError
from yoso_deploy.runtime import pipeline
from yoso_deploy.runtime.tokenizer import Tokenizer
from yoso_deploy.workflow import export

MASKED = "Fill the <mask> and [MASK] now."


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return kind_exports(tmp_path_factory.mktemp("kinds"))


def _ours(export_dir, a, b=None):
    enc = Tokenizer.from_dir(export_dir)([a], [b] if b is not None else None)
    return enc["input_ids"][0].tolist(), enc["token_type_ids"][0].tolist()


CASES = [(k, f) for k in KINDS for f in (False, True)] + [(k, False) for k in SLOW_ONLY_KINDS]


@pytest.mark.parametrize("kind,fast", CASES, ids=[f"{k}-{'tokenizer.json' if f else 'slow-files'}" for k, f in CASES])
def test_ids_equal_the_source_tokenizer(exports, kind, fast):
    ckpt, exp = exports[kind, fast]
    manifest = json.loads((exp / "yoso_export.json").read_text())["tokenizer"]
    assert manifest["converted"] is (not fast)
    if kind == "spm_bpe":
        # transformers 5 converts a BPE SentencePiece model unlike SentencePiece (and transformers 4) do: the
        # reference is the sentencepiece library itself (fairseq ids).
        for text in SAMPLE_TEXTS + [q for q, _ in SAMPLE_PAIRS]:
            assert _ours(exp, text)[0] == spm_bpe_reference_ids(ckpt, text), text
        return
    ref = transformers.AutoTokenizer.from_pretrained(str(ckpt))
    for text in SAMPLE_TEXTS + [MASKED]:
        assert _ours(exp, text)[0] == ref(text)["input_ids"], text
    for q, c in SAMPLE_PAIRS:
        want = ref(q, c, return_token_type_ids=True)
        ids, types = _ours(exp, q, c)
        assert ids == want["input_ids"]
        assert types == want["token_type_ids"]


def test_byte_level_bpe_like_yoso_4096(exports):
    """RoBERTa's pair separator ``</s></s>``, pad id 1, no token_type_ids input, ``<mask>`` eating the space."""
    ckpt, exp = exports["bpe", False]
    tok = Tokenizer.from_dir(exp)
    enc = tok([SAMPLE_PAIRS[0][0]], [SAMPLE_PAIRS[0][1]])
    toks = enc.tokens(0)
    assert toks[0] == "<s>" and toks[-1] == "</s>" and "</s></s>" in "".join(toks)
    assert tok.pad_token_id == 1
    padded = tok(["a", SAMPLE_TEXTS[0]])
    assert padded["input_ids"][0, -1] == 1 and padded["attention_mask"][0, -1] == 0
    manifest = json.loads((exp / "yoso_export.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert tok.mask_token == "<mask>" and tok([MASKED])["input_ids"][0].tolist().count(tok.mask_token_id) == 1
    cfg = json.loads((exp / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and cfg["pad_token"] == "<pad>"
    assert cfg["model_input_names"] == ["input_ids", "attention_mask"]
    for name in ("vocab.json", "merges.txt"):  # the source files travel along, unchanged
        assert (exp / name).read_bytes() == (ckpt / name).read_bytes()


@pytest.mark.parametrize("kind", KINDS + SLOW_ONLY_KINDS)
def test_offsets_map_back_into_the_context(exports, kind):
    """Every context token's offsets lie inside the context (SentencePiece's lone ``▁`` may cut an empty piece),
    and together they cover each non-space character; the QA pipeline's answer is the context's text at its offsets."""
    _, exp = exports[kind, False]
    question, context = SAMPLE_PAIRS[1]
    enc = Tokenizer.from_dir(exp)([question], [context])
    covered = set()
    for (s, e), seq in zip(enc["offset_mapping"][0], enc.sequence_ids(0)):
        if seq == 1:
            assert 0 <= s <= e <= len(context), (s, e)
            covered.update(range(s, e))
    assert {i for i, ch in enumerate(context) if not ch.isspace()} <= covered
    ans = pipeline(exp)(question=question, context=context)
    assert context[ans["start"]:ans["end"]] == ans["answer"] and ans["answer"].strip()


def test_exported_tokenizer_loads_in_transformers(exports):
    """AutoTokenizer on the export (transformers 5 here; 4.57 in tests/export/test_optimum.py) tokenizes as the
    runtime does, since every rule lives in tokenizer.json."""
    for (kind, fast), (_, exp) in exports.items():
        tok = transformers.AutoTokenizer.from_pretrained(str(exp))
        for q, c in SAMPLE_PAIRS:
            assert tok(q, c)["input_ids"] == _ours(exp, q, c)[0], kind
        assert tok.model_max_length == 512


def test_length_limit_comes_from_the_model(tmp_path):
    """A checkpoint whose tokenizer_config says model_max_length 512 but whose model has 1024 positions: the
    export's limit is 1024, and a 700-token context runs in one window."""
    ckpt = make_checkpoint("bpe", tmp_path / "ckpt", task="qa", max_position_embeddings=1024)
    assert json.loads((ckpt / "tokenizer_config.json").read_text())["model_max_length"] == 512
    res = export(ckpt, tmp_path / "exp", task="qa", validate=False)
    assert any("model_max_length 512" in n and "1024" in n for n in res.notes), res.notes
    exp = res.output_dir
    assert json.loads((exp / "tokenizer_config.json").read_text())["model_max_length"] == 1024
    qa = pipeline(exp)
    assert qa.model.max_sequence_length == 1024
    context = " ".join(SAMPLE_TEXTS * 6)
    n = Tokenizer.from_dir(exp).token_count(context)
    assert 512 < n < 1000, n
    assert qa.max_seq_len == 1024 and len(qa.encode("Where?", context)["input_ids"]) == 1


def test_tokenizer_from_another_directory(tmp_path):
    """A checkpoint without tokenizer files exports with a note; text needs a tokenizer and says which files; export
    --tokenizer DIR takes one from elsewhere; a directory without one, or one too big for the embedding, is refused."""
    ckpt = make_checkpoint("wordpiece", tmp_path / "ckpt", task="sequence-classification")
    toks = tmp_path / "toks"
    toks.mkdir()
    for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.move(str(ckpt / f), toks / f)
    assert find_tokenizer(ckpt) is None and find_tokenizer(toks)[:2] == ("wordpiece", ("vocab.txt",))

    bare = export(ckpt, tmp_path / "bare", validate=False)
    assert any("no tokenizer" in n and "--tokenizer DIR" in n for n in bare.notes), bare.notes
    assert bare.manifest["tokenizer"] == {"kind": None}
    with pytest.raises(NotFoundError, match=r"no tokenizer .*--tokenizer DIR .*vocab.txt.*--input JSON"):
        pipeline(bare.output_dir)("some text")

    res = export(ckpt, tmp_path / "withtok", validate=False, tokenizer=toks)
    assert res.manifest["tokenizer"]["source"] == str(toks)
    assert pipeline(res.output_dir)("some text")[0]["label"]

    with pytest.raises(NotFoundError, match="is not a directory"):
        export(ckpt, tmp_path / "x", validate=False, tokenizer=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="holds no tokenizer"):
        export(ckpt, tmp_path / "x", validate=False, tokenizer=tmp_path / "empty")
    big = make_tokenizer("bpe", tmp_path / "bigtok")  # 800 ids; the model has 700
    with pytest.raises(UsageError, match=r"800 token ids but the model's embedding has 700"):
        export(ckpt, tmp_path / "x", validate=False, tokenizer=big)
    assert not (tmp_path / "x").exists()


def test_export_with_slow_files_but_no_tokenizer_json_says_to_reexport(exports, tmp_path):
    """An export made before conversion existed (slow files, no tokenizer.json) names the fix."""
    _, exp = exports["bpe", False]
    old = tmp_path / "old"
    shutil.copytree(exp, old)
    (old / "tokenizer.json").unlink()
    with pytest.raises(NotFoundError, match=r"slow tokenizer files \(vocab.json \+ merges.txt\).*re-export it"):
        Tokenizer.from_dir(old)


def test_find_tokenizer_kinds(tmp_path):
    for kind, files, cls in (("wordpiece", ["vocab.txt"], "BertTokenizer"),
                             ("bpe", ["vocab.json", "merges.txt"], "RobertaTokenizer"),
                             ("sentencepiece", ["spiece.model"], "AlbertTokenizer"),
                             ("sentencepiece", ["sentencepiece.bpe.model"], "XLMRobertaTokenizer"),
                             ("fast", ["tokenizer.json", "vocab.txt"], None)):
        d = tmp_path / "_".join(files)
        d.mkdir()
        for f in files:
            (d / f).write_text("")
        assert find_tokenizer(d) == (kind, tuple(f for f in files if f != "vocab.txt" or kind != "fast"), cls)
    d = tmp_path / "named"
    d.mkdir()
    (d / "vocab.txt").write_text("")
    (d / "tokenizer_config.json").write_text('{"tokenizer_class": "DistilBertTokenizerFast"}')
    assert find_tokenizer(d)[2] == "DistilBertTokenizer"
    (d / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(UsageError, match="not a valid JSON object"):
        find_tokenizer(d)
    assert find_tokenizer(tmp_path / "merges-only") is None


def test_reference_catches_an_unfaithful_bpe_sentencepiece_conversion(exports, tmp_path, monkeypatch):
    """The control of the check above: merges ranked the other way round (as a careless conversion might) give
    ids the sentencepiece reference refuses."""
    from yoso_deploy.export import tokenizer as conversion

    ckpt, _ = exports["spm_bpe", False]
    faithful = conversion._score_ranked_merges
    monkeypatch.setattr(conversion, "_score_ranked_merges", lambda vocab: faithful(vocab)[::-1])
    bad = export(ckpt, tmp_path / "bad", task="qa", validate=False).output_dir
    assert any(_ours(bad, t)[0] != spm_bpe_reference_ids(ckpt, t) for t in SAMPLE_TEXTS)
