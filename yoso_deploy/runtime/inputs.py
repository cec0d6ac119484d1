"""Model inputs from what a person types: a JSON object of token ids, or texts through the export's tokenizer.

``yoso-deploy run --input`` and ``run --raw`` / ``--backend trt`` use these; the runtime model classes check
the result before ONNX Runtime (or TensorRT) sees it (:func:`yoso_deploy.runtime.models.prepare_inputs`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError
from .models import as_input_array


def feeds_from_json(manifest: dict, source: str, option: str = "--input") -> dict:
    """``source``: a JSON file or inline JSON object, input name -> nested lists. A missing batch axis is
    added; everything else is checked by the runtime."""
    text = source
    if not source.lstrip().startswith(("{", "[")):  # a file path (inline JSON can be longer than a file name may be)
        path = Path(os.path.expanduser(source))
        try:
            if path.is_file():
                text = path.read_text()
        except OSError:
            pass
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{option} is neither a JSON file nor valid JSON ({e.msg} at char {e.pos})",
                         fix='give a file or an object such as {"input_ids": [[0, 5, 2]]}') from e
    except RecursionError:
        raise UsageError(f"{option} is nested too deeply", fix="give an object of input name -> 1 or 2 levels of "
                         "lists") from None
    names = [t["name"] for t in manifest["inputs"]]
    if not isinstance(data, dict):
        raise UsageError(f"{option} must be a JSON object of input name -> nested lists, got a JSON "
                         f"{type(data).__name__}", fix='e.g. {"input_ids": [[0, 5, 2]]}')
    if "input_ids" not in data:
        raise UsageError(f"{option} lacks 'input_ids' (needs: {', '.join(names)}; attention_mask defaults to ones)")
    rank = len(manifest["inputs"][0]["dims"])
    feeds = {}
    for name, value in data.items():
        arr = as_input_array(f"{option} {name!r}", value)
        feeds[name] = arr[None] if arr.ndim == rank - 1 else arr
    return feeds


def encode_texts(tokenizer, manifest: dict, texts, pair: str | None = None) -> dict:
    """Token ids of ``texts`` (and ``pair``) as the export's inputs (multiple-choice: the prompt, then each
    choice, as one row of ``[1, choices, S]``)."""
    names = [t["name"] for t in manifest["inputs"]]
    msl = int(manifest["max_sequence_length"])
    texts = list(texts)
    if manifest["task"] == "multiple-choice":
        if len(texts) < 2:
            raise UsageError("a multiple-choice export needs a prompt and at least one choice",
                             fix="give --text PROMPT --text CHOICE [--text CHOICE ...]")
        enc = tokenizer([texts[0]] * (len(texts) - 1), texts[1:], max_length=msl)
        return {k: v[None] for k, v in enc.model_inputs(names).items()}
    pairs = [pair] * len(texts) if pair else None
    return tokenizer(texts, pairs, max_length=msl).model_inputs(names)
