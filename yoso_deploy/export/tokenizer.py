"""The export's tokenizer: whatever the checkpoint ships, written as the ``tokenizer.json`` the runtime reads.

Checkpoints come with a fast tokenizer (``tokenizer.json``) or with slow files only: WordPiece ``vocab.txt``,
byte-level BPE ``vocab.json`` + ``merges.txt`` (uw-madison/yoso-4096's RobertaTokenizer), SentencePiece
``spiece.model`` / ``sentencepiece.bpe.model``. :func:`export_tokenizer` converts slow files with transformers'
slow-to-fast converters (torch and transformers are present at export anyway; the runtime only reads the result
with the ``tokenizers`` library), and writes a ``tokenizer_config.json`` that transformers 4.x and 5.x both load
(``PreTrainedTokenizerFast``: every rule lives in ``tokenizer.json``, so transformers, Optimum and our runtime
tokenize alike), with ``model_max_length`` from the model's position table, not the checkpoint's tokenizer config.

One fix over the converters as transformers 5 ships them: a *BPE* SentencePiece model gets merges ranked by piece
score, as SentencePiece applies them (transformers 5's own conversion ranks them by vocabulary order and splits
words differently from SentencePiece and from transformers 4; tested against transformers 4's slow tokenizer).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import TOKENIZER_FILES_HELP, find_tokenizer
from ..constants import TOKENIZER_FILE
from ..errors import UsageError

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Files copied unchanged next to tokenizer.json (the source's own, for reference and for slow tokenizers).
SOURCE_FILES = ("vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json")


class TokenizerConversionError(UsageError):
    """The checkpoint's tokenizer files cannot be converted to a fast tokenizer."""


@dataclass
class ExportedTokenizer:
    """What :func:`export_tokenizer` wrote (``manifest`` goes to the export manifest's ``tokenizer``)."""

    manifest: dict
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerConversionError(f"{path} is not valid JSON ({e})", fix="repair or remove it") from e
    return data if isinstance(data, dict) else {}


def _token_content(value):
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens(directory: Path) -> dict:
    """The special tokens the checkpoint declares (``special_tokens_map.json``, then ``tokenizer_config.json``);
    values as given (a string or an AddedToken dict)."""
    out: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        data = _read_json(directory / name)
        out.update({k: data[k] for k in SPECIAL_KEYS if data.get(k) is not None})
    return out


def _transformers_class(name: str):
    import transformers

    for candidate in (name + "Fast", name):
        cls = getattr(transformers, candidate, None)
        if cls is not None:
            return cls
    return None


# -- SentencePiece ------------------------------------------------------------------------------------------------
def _score_ranked_merges(vocab_scores: list[tuple[str, float]]) -> list[tuple[str, str]]:
    """BPE merges of a SentencePiece model: every split of each piece into two pieces of the vocabulary, ranked by
    the merged piece's score (highest first, as SentencePiece merges), ties by the parts' ids."""
    ids = {piece: i for i, (piece, _) in enumerate(vocab_scores)}
    ranked = []
    for piece, score in vocab_scores:
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in ids and piece[k:] in ids]
        splits.sort(key=lambda lr: (ids[lr[0]], ids[lr[1]]))
        ranked += [(score, left, right) for left, right in splits]
    ranked.sort(key=lambda m: -m[0])  # stable: equal scores keep the parts' order
    return [(left, right) for _, left, right in ranked]


class _SlowFacts:
    """What transformers' slow-to-fast converters read from a slow tokenizer, taken from the checkpoint's files
    (transformers 5 has no slow SentencePiece tokenizers to pass them)."""

    def __init__(self, vocab_file: Path, config: dict, ids: dict[str, int]):
        self.vocab_file = str(vocab_file)
        self.do_lower_case = bool(config.get("do_lower_case", False))
        self.keep_accents = bool(config.get("keep_accents", False))
        self.split_by_punct = bool(config.get("split_by_punct", False))
        if "add_prefix_space" in config:
            self.add_prefix_space = bool(config["add_prefix_space"])
        if "legacy" in config:
            self.legacy = config["legacy"]
        self._ids = ids

    def convert_tokens_to_ids(self, token):
        return self._ids.get(token)


def _convert_sentencepiece(directory: Path, model_file: str, class_name: str, config: dict):
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import SLOW_TO_FAST_CONVERTERS, import_protobuf

    base = SLOW_TO_FAST_CONVERTERS.get(class_name) or SLOW_TO_FAST_CONVERTERS.get(class_name + "Fast")
    if base is None:
        base = SLOW_TO_FAST_CONVERTERS["AlbertTokenizer" if model_file == "spiece.model" else "XLMRobertaTokenizer"]

    class Faithful(base):
        def tokenizer(self, proto):
            if proto.trainer_spec.model_type != 2:  # unigram (and others): transformers' conversion
                return super().tokenizer(proto)
            vocab_scores = self.vocab(proto)
            return Tokenizer(BPE({p: i for i, (p, _) in enumerate(vocab_scores)}, _score_ranked_merges(vocab_scores),
                                 unk_token=proto.trainer_spec.unk_piece, fuse_unk=True,
                                 byte_fallback=getattr(self, "handle_byte_fallback", False), dropout=None))

    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString((directory / model_file).read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise TokenizerConversionError(f"{directory / model_file} is not a SentencePiece model ({e})",
                                       fix="replace it with the checkpoint's original file") from e
    vocab = Faithful.vocab(Faithful.__new__(Faithful), proto)
    ids = {piece: i for i, (piece, _) in enumerate(vocab)}
    return Faithful(_SlowFacts(directory / model_file, config, ids)).converted()


def _add_special_tokens(backend, special: dict) -> None:
    """Declare the special tokens in the backend (as transformers does on load: ``<mask>`` with ``lstrip``, ...),
    so that ``tokenizer.json`` alone tokenizes them as the source tokenizer does."""
    from tokenizers import AddedToken

    added = {t.content: t for t in backend.get_added_tokens_decoder().values()}
    for value in special.values():
        content = _token_content(value)
        if content is None or backend.token_to_id(content) is None:
            continue
        # The config's flags win over the converter's (RoBERTa's and ALBERT's mask strips the space before it).
        opts = value if isinstance(value, dict) else {}
        if not opts and content in added:
            continue
        backend.add_special_tokens([AddedToken(content, lstrip=bool(opts.get("lstrip", False)),
                                               rstrip=bool(opts.get("rstrip", False)),
                                               single_word=bool(opts.get("single_word", False)),
                                               normalized=bool(opts.get("normalized", False)), special=True)])


def fast_backend(directory: Path, kind: str, files: tuple[str, ...], class_name: str | None, special: dict,
                 config: dict):
    """A ``tokenizers.Tokenizer`` equal to what the checkpoint's tokenizer files mean (``special``: its special
    tokens, ``config``: its ``tokenizer_config.json``)."""
    from tokenizers import Tokenizer

    if kind == "fast":
        try:
            return Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        except Exception as e:  # tokenizers raises a bare Exception
            raise TokenizerConversionError(f"{directory / TOKENIZER_FILE} is not a valid tokenizer file "
                                           f"({str(e).splitlines()[0]})", fix="repair or remove it") from e
    if kind == "sentencepiece":
        backend = _convert_sentencepiece(directory, files[0], class_name or "", config)
    else:
        cls = _transformers_class(class_name) if class_name else None
        if cls is None:
            cls = _transformers_class("BertTokenizer" if kind == "wordpiece" else "RobertaTokenizer")
        try:
            tok = cls.from_pretrained(str(directory))
        except Exception as e:  # transformers raises many kinds for unreadable vocabularies
            raise TokenizerConversionError(
                f"transformers cannot read the {kind} tokenizer in {directory} as {cls.__name__} "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                fix="fix tokenizer_config.json's tokenizer_class or pass --tokenizer DIR") from e
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            raise TokenizerConversionError(f"transformers has no fast version of {cls.__name__}",
                                           fix="pass --tokenizer DIR with a tokenizer.json")
        backend = Tokenizer.from_str(backend.to_str())
    _add_special_tokens(backend, special)
    return backend


def export_tokenizer(source: Path, out: Path, *, max_length: int, input_names: list[str], vocab_size: int,
                     tokenizer_dir: Path | None = None) -> ExportedTokenizer:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` into ``out`` from the
    tokenizer of ``tokenizer_dir`` (default: the checkpoint ``source``). A checkpoint without a tokenizer
    exports with a note (text commands then say which files to add); ``tokenizer_dir`` without one is an error."""
    directory = Path(tokenizer_dir) if tokenizer_dir is not None else Path(source)
    found = find_tokenizer(directory)
    if found is None:
        if tokenizer_dir is not None:
            raise TokenizerConversionError(f"--tokenizer {str(directory)!r} holds no tokenizer",
                                           fix=f"pass a directory with {TOKENIZER_FILES_HELP}")
        return ExportedTokenizer(
            {"kind": None},
            [f"the checkpoint has no tokenizer ({TOKENIZER_FILES_HELP}): the export takes token ids only; "
             "re-export with --tokenizer DIR to run text"])
    kind, files, class_name = found
    special = _special_tokens(directory)
    source_config = _read_json(directory / "tokenizer_config.json")
    backend = fast_backend(directory, kind, files, class_name, special, source_config)
    size = backend.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        where = f"--tokenizer {str(directory)!r}" if tokenizer_dir is not None else "the checkpoint's tokenizer"
        raise TokenizerConversionError(f"{where} has {size} token ids but the model's embedding has {vocab_size} "
                                       "(config.json vocab_size)", fix="use the tokenizer the model was trained with")
    backend.save(str(out / TOKENIZER_FILE))
    strings = {k: _token_content(v) for k, v in special.items()
               if _token_content(v) is not None and backend.token_to_id(_token_content(v)) is not None}
    config = {
        # Loaded by transformers 4.x and 5.x alike (5.x: an alias of TokenizersBackend); the rules: tokenizer.json.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(max_length),
        "padding_side": "right",
        "truncation_side": "right",
        "model_input_names": [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in input_names],
        "clean_up_tokenization_spaces": bool(source_config.get("clean_up_tokenization_spaces", False)),
        **strings,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(strings, indent=2, ensure_ascii=False) + "\n")
    for name in SOURCE_FILES:
        if (directory / name).is_file():
            shutil.copy2(directory / name, out / name)
    converted = kind != "fast"
    manifest = {"kind": kind, "source_files": list(files), "source_class": class_name, "converted": converted,
                "source": str(directory) if tokenizer_dir is not None else "checkpoint",
                "vocab_size": size,
                "special_tokens": strings}
    notes = []
    if converted:
        notes.append(f"tokenizer: converted the checkpoint's slow {class_name or kind} ({' + '.join(files)}) to "
                     f"{TOKENIZER_FILE}")
    src_max = source_config.get("model_max_length")
    if isinstance(src_max, int) and src_max < max_length:
        notes.append(f"tokenizer: model_max_length {src_max} of the checkpoint's tokenizer_config.json is "
                     f"replaced by the model's {max_length} positions")
    return ExportedTokenizer(manifest, notes)
