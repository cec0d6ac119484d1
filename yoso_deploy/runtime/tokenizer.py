"""The export's tokenizer through the ``tokenizers`` library (no transformers, no torch).

An export directory carries ``tokenizer.json`` (the fast tokenizer) and ``tokenizer_config.json`` /
``special_tokens_map.json`` (which token is the mask, the padding, ...). :class:`Tokenizer` encodes
exactly as transformers' fast tokenizers do -- they call the same ``tokenizers`` functions
(truncation, stride, overflowing windows, batch-longest padding) -- so the ids, masks and offsets
equal ``AutoTokenizer``'s (tested).

The Rust tokenizer keeps truncation/padding settings as state, so every call sets them and encodes
under one lock: a :class:`Tokenizer` may be shared by threads. Tokenizer failures become
:class:`TokenizerError` with a message naming the fix (a too-long question, a stride that leaves no
room, ...), never a Rust panic.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from ..constants import TOKENIZER_FILE
from ..errors import NotFoundError, UsageError
from ..manifest import expand_path

SPECIAL_KEYS = ("cls_token", "sep_token", "pad_token", "mask_token", "unk_token", "bos_token", "eos_token")


class TokenizerError(UsageError):
    """The text cannot be tokenized as asked (the message names the fix)."""


def _token_str(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _missing_tokenizer_message(model_dir: Path) -> str:
    from ..checkpoint import TOKENIZER_FILES_HELP, find_tokenizer
    from ..constants import MANIFEST_FILE

    found = find_tokenizer(model_dir)
    is_export = (model_dir / MANIFEST_FILE).is_file()
    if found is not None and found[0] != "fast":
        return (f"{str(model_dir)!r} has slow tokenizer files ({' + '.join(found[1])}) but no tokenizer.json; "
                + ("re-export it (yoso-deploy export converts them)" if is_export else
                   "export it with yoso-deploy export, which converts them")
                + ", or pass token ids (--input JSON)")
    return (f"{str(model_dir)!r} has no tokenizer (no tokenizer.json); re-export with --tokenizer DIR (a directory "
            f"with {TOKENIZER_FILES_HELP}), or pass token ids (--input JSON)")


class Encoded:
    """Encodings of a batch: one row per window (long inputs may overflow into several windows).

    ``enc["input_ids"]``, ``enc["attention_mask"]``, ``enc["token_type_ids"]`` are ``int64`` arrays
    ``[rows, S]``; ``enc["offset_mapping"][row]`` the character offsets; ``enc.sequence_ids(row)``,
    ``enc.word_ids(row)``, ``enc.special_tokens_mask(row)`` as in transformers; ``enc.sample[row]``
    the index of the input the row came from (``overflow_to_sample_mapping``).
    """

    def __init__(self, encodings: list, sample: list[int]):
        self.encodings = encodings
        self.sample = sample
        self._arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    def __len__(self) -> int:
        return len(self.encodings)

    def __getitem__(self, key: str):
        if key == "offset_mapping":
            return [e.offsets for e in self.encodings]
        if key == "overflow_to_sample_mapping":
            return list(self.sample)
        return self._arrays[key]

    def sequence_ids(self, row: int) -> list:
        return self.encodings[row].sequence_ids

    def word_ids(self, row: int) -> list:
        return self.encodings[row].word_ids

    def special_tokens_mask(self, row: int) -> list:
        return self.encodings[row].special_tokens_mask

    def tokens(self, row: int) -> list[str]:
        return self.encodings[row].tokens

    def model_inputs(self, names) -> dict:
        """The arrays a model takes, by input name (``token_type_ids`` only if the model has it)."""
        return {n: self._arrays[n] for n in names if n in self._arrays}


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with the special tokens of the export's tokenizer config."""

    def __init__(self, backend, special_tokens: dict | None = None):
        self._tk = backend
        self._lock = threading.Lock()
        self._tk.no_truncation()
        self._tk.no_padding()
        self.special_tokens: dict[str, str] = {}
        for key, value in (special_tokens or {}).items():
            tok = _token_str(value)
            if tok is not None and backend.token_to_id(tok) is not None:
                self.special_tokens[key] = tok
        self.all_special_ids = sorted({backend.token_to_id(t) for t in self.special_tokens.values()})

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "Tokenizer":
        """The tokenizer of an export (or checkpoint) directory: ``tokenizer.json`` + its config files."""
        from tokenizers import Tokenizer as RustTokenizer

        model_dir = expand_path(model_dir)
        path = model_dir / TOKENIZER_FILE
        if not path.is_file():
            raise NotFoundError(_missing_tokenizer_message(model_dir))
        try:
            backend = RustTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for unparsable files
            raise TokenizerError(f"{str(path)!r} is not a valid tokenizer file ({str(e).splitlines()[0]}); "
                                 "re-export the model or copy a working tokenizer.json") from e
        special: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            f = model_dir / name
            if f.is_file():
                try:
                    data = json.loads(f.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise TokenizerError(f"{str(f)!r} is not valid JSON ({e}); re-export the model") from e
                special.update({k: data[k] for k in SPECIAL_KEYS if k in data and data[k] is not None})
        return cls(backend, special)

    @classmethod
    def from_transformers(cls, tokenizer) -> "Tokenizer":
        """Wrap a transformers fast tokenizer (its ``backend_tokenizer`` and special tokens)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise UsageError("a fast tokenizer (with backend_tokenizer / tokenizer.json) is needed for offsets")
        special = {k: getattr(tokenizer, k, None) for k in SPECIAL_KEYS}
        from tokenizers import Tokenizer as RustTokenizer

        return cls(RustTokenizer.from_str(backend.to_str()), {k: v for k, v in special.items() if v})

    # -- special tokens -------------------------------------------------------------------------
    def _special_id(self, key: str) -> int | None:
        tok = self.special_tokens.get(key)
        return None if tok is None else self._tk.token_to_id(tok)

    @property
    def mask_token(self) -> str | None:
        return self.special_tokens.get("mask_token")

    @property
    def mask_token_id(self) -> int | None:
        return self._special_id("mask_token")

    @property
    def pad_token_id(self) -> int:
        pid = self._special_id("pad_token")
        return 0 if pid is None else pid

    @property
    def cls_token_id(self) -> int | None:
        return self._special_id("cls_token")

    @property
    def unk_token_id(self) -> int | None:
        return self._special_id("unk_token")

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    @property
    def continuing_subword_prefix(self) -> str | None:
        return getattr(self._tk.model, "continuing_subword_prefix", None)

    def num_special_tokens(self, pair: bool) -> int:
        return self._tk.num_special_tokens_to_add(pair)

    def token_count(self, text: str) -> int:
        """Tokens of ``text`` without special tokens (under the lock: another thread's truncation settings must
        not apply)."""
        return len(self.token_ids(text))

    def token_ids(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens, truncation or padding (under the lock, like every encode)."""
        with self._lock:
            return list(self._tk.encode(text, add_special_tokens=False).ids)

    # -- encoding -------------------------------------------------------------------------------
    def __call__(self, text, text_pair=None, *, max_length: int | None = None, truncation: str | bool = False,
                 stride: int = 0, return_overflowing: bool = False, padding: bool = True) -> Encoded:
        """Encode one text (or pair) or a list of them.

        ``truncation``: ``False`` (inputs longer than ``max_length`` are an error), ``True`` /
        ``"longest_first"``, ``"only_first"`` or ``"only_second"``. With ``return_overflowing`` the
        truncated remainder becomes further windows of ``max_length`` tokens overlapping by ``stride``
        (transformers' ``return_overflowing_tokens``). ``padding``: pad every row to the longest.
        """
        texts = [text] if isinstance(text, str) else list(text)
        if text_pair is None:
            pairs = None
        else:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts):
                raise TokenizerError(f"got {len(texts)} texts but {len(pairs)} text pairs; give one pair per text")
        for t in texts + (pairs or []):
            if not isinstance(t, str):
                raise TokenizerError(f"texts must be strings, got {type(t).__name__}")
        if not texts:
            raise TokenizerError("no text to tokenize")
        strategy = {True: "longest_first", False: None}.get(truncation, truncation)
        if strategy not in (None, "longest_first", "only_first", "only_second"):
            raise TokenizerError(f"unknown truncation {truncation!r}; use longest_first, only_first or only_second")
        if strategy is not None:
            if max_length is None:
                raise TokenizerError("truncation needs max_length")
            self._check_room(texts, pairs, strategy, int(max_length), int(stride), return_overflowing)
        inputs = texts if pairs is None else list(zip(texts, pairs))
        with self._lock:
            try:
                if strategy is not None:
                    self._tk.enable_truncation(int(max_length), stride=int(stride) if return_overflowing else 0,
                                               strategy=strategy)
                else:
                    self._tk.no_truncation()
                if padding:
                    self._tk.enable_padding(pad_id=self.pad_token_id,
                                            pad_token=self.special_tokens.get("pad_token", "[PAD]"))
                else:
                    self._tk.no_padding()
                encodings = self._tk.encode_batch(inputs)
            except BaseException as e:  # noqa: BLE001 - tokenizers raises Exception and (Rust) PanicException
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                raise TokenizerError(self._explain(e, max_length, stride)) from None
            finally:
                self._tk.no_truncation()
                self._tk.no_padding()
        rows, sample = [], []
        for i, e in enumerate(encodings):
            rows.append(e)
            sample.append(i)
            if return_overflowing:
                for o in e.overflowing:
                    rows.append(o)
                    sample.append(i)
        if max_length is not None and strategy is None:
            longest = max(len(e.ids) for e in rows)
            if longest > max_length:
                raise TokenizerError(f"the input is {longest} tokens long, more than the {max_length} the model "
                                     "takes; shorten it or pass truncation=True (--truncation)")
        if return_overflowing and padding and len({len(e.ids) for e in rows}) > 1:
            rows = self._pad_rows(rows)
        return Encoded(rows, sample)

    def _pad_rows(self, rows):
        # Overflowing windows of different inputs can differ in length: pad all to the longest.
        target = max(len(e.ids) for e in rows)
        for e in rows:
            e.pad(target, pad_id=self.pad_token_id, pad_token=self.special_tokens.get("pad_token", "[PAD]"))
        return rows

    def _check_room(self, texts, pairs, strategy, max_length, stride, overflowing):
        specials = self.num_special_tokens(pairs is not None)
        if max_length <= specials:
            raise TokenizerError(f"max_length {max_length} leaves no room for text next to the {specials} special tokens; "
                                 "raise it")
        if not overflowing:
            return
        if strategy == "only_second" and pairs is not None:
            for t, p in zip(texts, pairs):
                q = self.token_count(t)
                if q + specials + self.token_count(p) <= max_length:
                    continue  # fits in one window: nothing is truncated
                room = max_length - specials - q
                if room <= 0:
                    raise TokenizerError(
                        f"the question is {q} tokens, which leaves no room for the context in a window "
                        f"of {max_length} tokens; shorten the question or raise max_seq_len (--max-seq-len)")
                if stride >= room:
                    raise TokenizerError(
                        f"doc_stride {stride} must be smaller than the {room} context tokens that fit in a window of "
                        f"{max_length} tokens next to this question; lower doc_stride (--doc-stride) or raise "
                        "max_seq_len (--max-seq-len)")
        elif pairs is None and stride >= max_length - specials and any(
                self.token_count(t) + specials > max_length for t in texts):
            raise TokenizerError(f"stride {stride} must be smaller than the {max_length - specials} text tokens of a "
                                 f"window of {max_length}; lower the stride")

    @staticmethod
    def _explain(e: BaseException, max_length, stride) -> str:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Truncation error" in msg or "stride" in msg:
            return (f"cannot fit the input into {max_length} tokens with stride {stride} ({msg}); shorten the first "
                    "text (e.g. the question), lower the stride or raise the maximum length")
        return f"the tokenizer failed: {msg}"

    # -- decoding -------------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, (int, np.integer)):
            return self._tk.id_to_token(int(ids))
        return [self._tk.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        dec = self._tk.decoder
        return dec.decode(list(tokens)) if dec is not None else " ".join(tokens)
