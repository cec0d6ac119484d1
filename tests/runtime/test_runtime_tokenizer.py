"""The runtime's tokenizer (``tokenizers`` only) encodes exactly as transformers' AutoTokenizer, and its
failures are one clear message (a question too long for the window, a stride leaving no room), never a
Rust panic."""

import threading

import numpy as np
import pytest
from transformers import AutoTokenizer

from yoso_deploy.runtime.tokenizer import Tokenizer, TokenizerError

from support.checkpoints import REPO

MODEL = REPO / "model"
CONTEXT = ("Ada moved to Oslo in 1999 and bought a red lamp. Bruno moved to Lima in 2004 and bought a blue map. "
           "Chen moved to Accra in 2011 and bought a green clock. Zanzibar xylophones are quixotic.")


@pytest.fixture(scope="module")
def tokenizers():
    return Tokenizer.from_dir(MODEL), AutoTokenizer.from_pretrained(str(MODEL))


def _same(ours, theirs, rows):
    assert len(ours) == rows == len(theirs["input_ids"])
    assert np.array_equal(ours["input_ids"], np.asarray(theirs["input_ids"]))
    assert np.array_equal(ours["attention_mask"], np.asarray(theirs["attention_mask"]))
    for r in range(rows):
        assert [tuple(o) for o in ours["offset_mapping"][r]] == [tuple(o) for o in theirs["offset_mapping"][r]]
        assert ours.sequence_ids(r) == theirs.sequence_ids(r)
        assert ours.word_ids(r) == theirs.word_ids(r)


def test_single_pair_and_batch_match_transformers(tokenizers):
    ours, hf = tokenizers
    _same(ours("Ada moved to Oslo."), hf(["Ada moved to Oslo."], return_offsets_mapping=True), 1)
    _same(ours("Where did Ada move?", CONTEXT), hf(["Where did Ada move?"], [CONTEXT], return_offsets_mapping=True), 1)
    texts = ["short", "a longer text with xylophones", CONTEXT]
    _same(ours(texts), hf(texts, padding="longest", return_offsets_mapping=True), 3)
    enc = ours(texts)
    st = hf(texts, padding="longest", return_special_tokens_mask=True)["special_tokens_mask"]
    assert [enc.special_tokens_mask(r) for r in range(3)] == st


@pytest.mark.parametrize("max_length,stride", [(24, 4), (32, 8), (64, 0)])
def test_overflowing_windows_match_transformers(tokenizers, max_length, stride):
    ours, hf = tokenizers
    q = "Where did Chen move?"
    a = ours(q, CONTEXT, truncation="only_second", max_length=max_length, stride=stride, return_overflowing=True)
    b = hf(q, CONTEXT, truncation="only_second", max_length=max_length, stride=stride, return_overflowing_tokens=True,
           return_offsets_mapping=True, padding="longest")
    assert len(a) > 1
    _same(a, b, len(b["input_ids"]))
    assert a["overflow_to_sample_mapping"] == list(b["overflow_to_sample_mapping"])


def test_special_tokens_and_decoding(tokenizers):
    ours, hf = tokenizers
    assert ours.mask_token == hf.mask_token and ours.mask_token_id == hf.mask_token_id
    assert ours.pad_token_id == hf.pad_token_id and ours.cls_token_id == hf.cls_token_id
    ids = hf("Zanzibar xylophones, quixotic!")["input_ids"]
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids, skip_special_tokens=False) == hf.decode(ids)
    toks = hf.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids) == toks
    assert ours.convert_tokens_to_string(toks[1:-1]) == hf.convert_tokens_to_string(toks[1:-1])
    wrapped = Tokenizer.from_transformers(hf)
    assert np.array_equal(wrapped(CONTEXT)["input_ids"], ours(CONTEXT)["input_ids"])


def test_errors_are_clear(tokenizers, tmp_path):
    ours, _ = tokenizers
    long_q = " ".join(["where"] * 40)
    with pytest.raises(TokenizerError, match="the question is 4[0-9] tokens, which leaves no room for the context.*--max-seq-len"):
        ours(long_q, CONTEXT, truncation="only_second", max_length=32, stride=4, return_overflowing=True)
    with pytest.raises(TokenizerError, match="doc_stride 25 must be smaller than the 2[0-9] context tokens"):
        ours("Where did Chen move?", CONTEXT, truncation="only_second", max_length=32, stride=25, return_overflowing=True)
    # A stride that would not fit is fine when nothing needs cutting (one window).
    assert len(ours("q", "short context", truncation="only_second", max_length=32, stride=28, return_overflowing=True)) == 1
    with pytest.raises(TokenizerError, match="is [0-9]+ tokens long, more than the 16 the model takes"):
        ours(CONTEXT, max_length=16)
    with pytest.raises(TokenizerError, match="one pair per text"):
        ours(["a", "b"], ["c"])
    with pytest.raises(TokenizerError, match="must be strings"):
        ours([1, 2])
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer \(no tokenizer.json\); re-export with --tokenizer DIR"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{garbage")
    with pytest.raises(TokenizerError, match="not a valid tokenizer file"):
        Tokenizer.from_dir(tmp_path)


def test_shared_between_threads(tokenizers):
    ours, _ = tokenizers
    want_windows = ours("Where?", CONTEXT, truncation="only_second", max_length=24, stride=4, return_overflowing=True)
    want_plain = ours(CONTEXT)
    errors = []

    def work(k):
        try:
            for _ in range(30):
                if k % 2:
                    got = ours("Where?", CONTEXT, truncation="only_second", max_length=24, stride=4,
                               return_overflowing=True)
                    assert np.array_equal(got["input_ids"], want_windows["input_ids"])
                else:
                    assert np.array_equal(ours(CONTEXT)["input_ids"], want_plain["input_ids"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_token_counts_while_other_threads_encode_pairs(tokenizers):
    """token_count (used to check the room for QA windows) runs while other threads hold the Rust tokenizer in
    only_second truncation: it must not see that state ("Truncation error: Second sequence not provided", found
    under concurrent serving load)."""
    ours, _ = tokenizers
    want = len(ours._tk.encode(CONTEXT, add_special_tokens=False).ids)
    errors = []

    def work(k):
        try:
            for _ in range(150):
                if k % 2:
                    ours("Where?", CONTEXT, truncation="only_second", max_length=24, stride=4, return_overflowing=True)
                else:
                    assert ours.token_count(CONTEXT) == want
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
