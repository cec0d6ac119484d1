"""Realistic tokenizers made offline, saved as Hugging Face checkpoints ship them, and YOSO checkpoints around them.

Each kind is trained here with the library its family uses (``tokenizers`` for WordPiece and byte-level BPE,
``sentencepiece`` for the SentencePiece kinds) on text of this repository, then written as transformers reads it:

- ``wordpiece``: ``vocab.txt`` (BertTokenizer, lower case; ``[PAD]`` 0, two token types)
- ``bpe``: ``vocab.json`` + ``merges.txt`` (RobertaTokenizer, as uw-madison/yoso-4096 ships: ``<s> <pad> </s> <unk>
  <mask>``, pad id 1, one token type, ``model_max_length`` 512)
- ``spiece``: ``spiece.model`` (AlbertTokenizer, unigram: ``<pad> <unk> [CLS] [SEP] [MASK]``)
- ``xlmr``: ``sentencepiece.bpe.model`` (XLMRobertaTokenizer: a unigram model despite the name, as XLM-R's is;
  fairseq's id offset, ``</s></s>`` pairs)
- ``spm_bpe``: the same layout with a *BPE* SentencePiece model (slow files only: transformers 5 converts such a
  model unlike SentencePiece does, and its XLMRobertaTokenizer cannot load the faithful ``tokenizer.json``)

``fast=True`` also writes the ``tokenizer.json`` a fast tokenizer would have (converted by transformers), as
checkpoints saved by transformers do; ``fast=False`` leaves the slow files only.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import REPO

KINDS = ("wordpiece", "bpe", "spiece", "xlmr")  # each with slow files only and with tokenizer.json
SLOW_ONLY_KINDS = ("spm_bpe",)

# transformers' class and the files of each kind; type_vocab_size and the pad id the checkpoint's config gets.
CLASSES = {"wordpiece": "BertTokenizer", "bpe": "RobertaTokenizer", "spiece": "AlbertTokenizer",
           "xlmr": "XLMRobertaTokenizer", "spm_bpe": "XLMRobertaTokenizer"}
TYPE_VOCAB = {"wordpiece": 2, "bpe": 1, "spiece": 2, "xlmr": 1, "spm_bpe": 1}

SAMPLE_TEXTS = [
    "YOSO approximates self-attention with Bernoulli sampling; it was trained on 4,096 tokens.",
    "Where does the café in Zürich open?  It opens at 9:30 — naïve résumé façade.",
    "ONNX Runtime's custom ops: FastHash and LSHCumulation (both in com.yoso).",
]
SAMPLE_PAIRS = [("What does YOSO approximate?", SAMPLE_TEXTS[0]),
                ("When does it open?", SAMPLE_TEXTS[1])]


def corpus() -> list[str]:
    """Lines of this repository's docs: English prose with code, numbers and punctuation (deterministic)."""
    lines = []
    for path in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
        lines += [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if len(ln.strip()) > 20]
    return lines + SAMPLE_TEXTS


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _wordpiece(out: Path) -> dict:
    from tokenizers import BertWordPieceTokenizer

    tk = BertWordPieceTokenizer(lowercase=True)
    tk.train_from_iterator(corpus(), vocab_size=700, min_frequency=1,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tk.save_model(str(out))
    return {"do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]"}


def _bpe(out: Path) -> dict:
    from tokenizers import ByteLevelBPETokenizer

    tk = ByteLevelBPETokenizer()
    tk.train_from_iterator(corpus(), vocab_size=800, min_frequency=2,
                           special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tk.save_model(str(out))  # vocab.json + merges.txt
    return {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
            "pad_token": "<pad>", "mask_token": {"content": "<mask>", "lstrip": True, "rstrip": False,
                                                 "normalized": False, "single_word": False, "special": True},
            "add_prefix_space": False, "errors": "replace"}


def _train_spm(out: Path, prefix: str, model_type: str, **ids) -> None:
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_writer=buf, vocab_size=600,
                                   model_type=model_type, character_coverage=1.0, minloglevel=2,
                                   num_threads=1, **ids)
    (out / prefix).write_bytes(buf.getvalue())


def _spiece(out: Path) -> dict:
    # ALBERT's layout: <pad> 0, <unk> 1, [CLS] 2, [SEP] 3, then [MASK] as a user symbol.
    _train_spm(out, "spiece.model", "unigram", pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>",
               unk_piece="<unk>", bos_piece="[CLS]", eos_piece="[SEP]", control_symbols=["[MASK]"])
    return {"do_lower_case": True, "remove_space": True, "keep_accents": False, "bos_token": "[CLS]",
            "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]", "pad_token": "<pad>",
            "cls_token": "[CLS]", "mask_token": {"content": "[MASK]", "lstrip": True, "rstrip": False,
                                                 "normalized": False, "single_word": False, "special": True}}


def _xlmr(out: Path, model_type: str = "unigram") -> dict:
    # XLM-R's sentencepiece.bpe.model: <unk> 0, <s> 1, </s> 2 (fairseq shifts them; <pad> and <mask> are added).
    _train_spm(out, "sentencepiece.bpe.model", model_type, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    return {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
            "pad_token": "<pad>", "mask_token": {"content": "<mask>", "lstrip": True, "rstrip": False,
                                                 "normalized": False, "single_word": False, "special": True}}


def _spm_bpe(out: Path) -> dict:
    return _xlmr(out, "bpe")


MAKERS = {"wordpiece": _wordpiece, "bpe": _bpe, "spiece": _spiece, "xlmr": _xlmr, "spm_bpe": _spm_bpe}


def make_tokenizer(kind: str, out, fast: bool = False, model_max_length: int = 512) -> Path:
    """Write tokenizer files of ``kind`` into ``out`` (slow files, ``tokenizer_config.json``,
    ``special_tokens_map.json``; with ``fast`` also ``tokenizer.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    special = MAKERS[kind](out)
    config = {"tokenizer_class": CLASSES[kind], "model_max_length": model_max_length, **special}
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", {k: v for k, v in special.items() if k.endswith("_token")})
    if fast:
        if kind in SLOW_ONLY_KINDS:
            raise ValueError(f"{kind} is made with slow files only")
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(str(out))
        tok.backend_tokenizer.save(str(out / "tokenizer.json"))
    return out


def tokenizer_vocab_size(directory) -> int:
    """The vocabulary size transformers gives the tokenizer in ``directory`` (ids the embedding must cover)."""
    import transformers

    return len(transformers.AutoTokenizer.from_pretrained(str(directory)))


def make_checkpoint(kind: str, out, task: str = "qa", fast: bool = False, **config_overrides) -> Path:
    """A small YOSO checkpoint of ``task`` (random weights, seeded) whose tokenizer is ``kind``: vocabulary,
    pad id, type vocabulary as that family's checkpoints have them."""
    import torch
    import transformers

    from yoso_deploy import tasks

    from .checkpoints import small_config

    out = make_tokenizer(kind, out, fast=fast)
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    args = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, type_vocab_size=TYPE_VOCAB[kind], use_expectation=False,
                bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    if task == "token-classification":
        args.update(num_labels=5, id2label={i: f"L{i}" for i in range(5)}, label2id={f"L{i}": i for i in range(5)})
    args.update(config_overrides)
    cfg = small_config(**args)
    torch.manual_seed(0)
    cls = getattr(transformers, tasks.get(task).transformers_class)
    model = cls(cfg).eval()
    cfg.architectures = [cls.__name__]
    model.save_pretrained(str(out))
    return out


def kind_exports(root, kinds=KINDS + SLOW_ONLY_KINDS, fast_variants=(False, True), task: str = "qa",
                 **config) -> dict:
    """``{(kind, fast): (checkpoint, export)}``: a checkpoint of each tokenizer kind (slow files only, and with
    ``tokenizer.json`` too) and its export under ``root`` (no parity check)."""
    from yoso_deploy.workflow import export

    out = {}
    for kind in kinds:
        for fast in fast_variants:
            if fast and kind in SLOW_ONLY_KINDS:
                continue
            name = f"{kind}-{'fast' if fast else 'slow'}-{task}"
            ckpt = make_checkpoint(kind, Path(root) / f"ckpt-{name}", task=task, fast=fast, **config)
            out[kind, fast] = ckpt, export(ckpt, Path(root) / name, task=task, validate=False).output_dir
    return out


def spm_bpe_reference_ids(checkpoint, text: str) -> list[int]:
    """XLMRobertaTokenizer's ids for ``text`` from the sentencepiece library itself: ``<s>`` + pieces shifted by
    fairseq's offset (spm's ``<unk>`` 0 is 3, every other id + 1) + ``</s>``."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(Path(checkpoint) / "sentencepiece.bpe.model"))
    return [0] + [3 if i == 0 else i + 1 for i in sp.encode(text)] + [2]
