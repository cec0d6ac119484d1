"""A Hugging Face YOSO checkpoint directory as it comes, checked without torch: the input of every export.

    path = check_checkpoint_dir("path/to/checkpoint")     # a directory with a YOSO config.json and weights
    task = checkpoint_task(path, "qa", require_head=True)  # the task, refused if the checkpoint lacks its head

The checks here read ``config.json`` only (fast, before torch is imported, so that a mistyped path or task is
answered at once); :func:`yoso_deploy.modeling.load_model` runs them too and then checks the loaded weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import tasks
from .constants import CONFIG_FILE, MANIFEST_FILE
from .errors import NotFoundError, UsageError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


class TaskHeadError(UsageError):
    """The checkpoint has no weights for the requested task's head (or names no task at all)."""


def default_checkpoint_dir() -> Path:
    """The embedded default checkpoint (``model/`` of the source tree, or its installed copy)."""
    here = Path(__file__).resolve().parent
    for p in (here / "default_model", here.parent / "model"):
        if (p / CONFIG_FILE).is_file():
            return p
    raise NotFoundError("the embedded default model is missing from this installation",
                        fix="pass --model DIR (a Hugging Face YOSO checkpoint directory)")


def check_checkpoint_dir(path: str | Path) -> Path:
    """Raise a clear error unless ``path`` is a directory holding a YOSO config and weights."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"model directory {str(p)!r} does not exist; pass a Hugging Face YOSO checkpoint directory")
    if not p.is_dir():
        raise UsageError(f"{str(p)!r} is not a directory; pass the checkpoint *directory* (with config.json)")
    cfg = p / CONFIG_FILE
    if not cfg.is_file():
        hint = (" (it is an export: pass the checkpoint it was made from)" if (p / MANIFEST_FILE).is_file()
                else "")
        raise NotFoundError(f"{str(p)!r} has no config.json; it is not a Hugging Face checkpoint directory{hint}")
    model_type = read_config(p).get("model_type")
    if model_type != "yoso":
        raise UsageError(f"{cfg} has model_type={model_type!r}; yoso-deploy handles only 'yoso' models")
    if not any((p / f).is_file() for f in WEIGHT_FILES):
        raise NotFoundError(f"{str(p)!r} has no weights (model.safetensors or pytorch_model.bin)")
    return p


def read_config(path: str | Path) -> dict:
    """``config.json`` of a checkpoint directory as a dict (a clear error if it is not JSON)."""
    cfg = Path(path) / CONFIG_FILE
    try:
        data = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{cfg} is not valid JSON ({e}); re-save the checkpoint with save_pretrained") from e
    if not isinstance(data, dict):
        raise UsageError(f"{cfg} is not a JSON object; re-save the checkpoint with save_pretrained")
    return data


def checkpoint_task(path: str | Path, task: str | None = None, require_head: bool = False) -> str:
    """The task to load a checkpoint as: ``task`` (canonical), else its ``architectures``, else ``base``.

    With ``require_head``, a checkpoint that names no YOSO architecture needs an explicit ``task``, and a task
    other than ``base`` whose head class differs from the saved one is refused (:class:`TaskHeadError`): its
    weights are not in the checkpoint. The loaded weights are checked again by the reference model's loader."""
    config = read_config(path)
    archs = config.get("architectures") or []
    arch_task = tasks.task_for_architectures(archs)
    shown = ", ".join(archs) or "none"
    if task is None:
        if arch_task is None and require_head:
            raise TaskHeadError(f"{str(path)!r} names no YOSO architecture in config.json (architectures: {shown}); "
                                f"pass --task ({', '.join(tasks.TASKS)})")
        return arch_task or "base"
    task = tasks.canonical_task(task)
    if require_head and task != "base" and arch_task is not None and arch_task != task:
        t = tasks.get(task)
        raise TaskHeadError(
            f"--task {task} needs a {t.transformers_class} head, but {str(path)!r} is a {shown} checkpoint (task "
            f"{arch_task}) without its weights ({t.head}.*); export with --task {arch_task}"
            f"{' or --task base' if arch_task != 'base' else ''}")
    return task


# The tokenizer files a checkpoint may ship, by kind: the first kind whose files are all present is used.
# (kind, files, the transformers class that reads them when tokenizer_config.json names none)
TOKENIZER_KINDS = (
    ("fast", ("tokenizer.json",), None),
    ("wordpiece", ("vocab.txt",), "BertTokenizer"),
    ("bpe", ("vocab.json", "merges.txt"), "RobertaTokenizer"),
    ("sentencepiece", ("spiece.model",), "AlbertTokenizer"),
    ("sentencepiece", ("sentencepiece.bpe.model",), "XLMRobertaTokenizer"),
)
TOKENIZER_FILES_HELP = "tokenizer.json, vocab.txt, vocab.json + merges.txt, spiece.model or sentencepiece.bpe.model"


def find_tokenizer(path: str | Path) -> tuple[str, tuple[str, ...], str | None] | None:
    """``(kind, files, transformers class)`` of the tokenizer in directory ``path``, or None when it has none.

    The class is the one ``tokenizer_config.json`` names (without a ``Fast`` suffix), else the usual class of the
    files (``vocab.json`` + ``merges.txt``: RobertaTokenizer, ...)."""
    p = Path(path)
    for kind, files, default_class in TOKENIZER_KINDS:
        if all((p / f).is_file() for f in files):
            cls = default_class
            cfg = p / "tokenizer_config.json"
            if cfg.is_file():
                try:
                    named = json.loads(cfg.read_text()).get("tokenizer_class")
                except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
                    raise UsageError(f"{cfg} is not a valid JSON object ({e})",
                                     fix="repair it or remove it (the tokenizer files alone are enough)") from e
                if isinstance(named, str) and named:
                    cls = named[:-4] if named.endswith("Fast") else named
            return kind, files, cls
    return None
