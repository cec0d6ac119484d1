"""The task registry: the six YOSO heads, named once for modeling, export, runtime and the CLI.

Optimum's ``TasksManager`` is the model: one table maps a task name (or an alias such as
``question-answering`` or ``ner``) to everything the layers need to know about it:

* the ``transformers`` model class (a *name*, so this module imports neither torch nor transformers;
  :mod:`yoso_deploy.modeling` resolves it) and the ``transformers`` auto class / pipeline task;
* the model's inputs and outputs (names and dims; ``$field`` dims are read from the model config);
* the runtime model class and pipeline class of :mod:`yoso_deploy.runtime` (names, resolved lazily);
* the pipeline's default decoding parameters.

    >>> from yoso_deploy import tasks
    >>> tasks.get("question-answering").name
    'qa'
    >>> tasks.task_for_architectures(["YosoForTokenClassification"])
    'token-classification'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .errors import UsageError

SEQ_DIMS = ("batch", "sequence")
CHOICE_DIMS = ("batch", "num_choices", "sequence")


@dataclass(frozen=True)
class OutputDef:
    """One model output; a dim is an int, a symbolic axis name, or ``$field`` (taken from the config)."""

    name: str
    dims: tuple


@dataclass(frozen=True)
class Task:
    name: str  # canonical name (what manifests store)
    aliases: tuple[str, ...]
    transformers_class: str  # e.g. "YosoForQuestionAnswering"
    auto_class: str  # e.g. "AutoModelForQuestionAnswering"
    hf_pipeline_task: str | None  # transformers.pipeline task name; None where transformers has none
    runtime_class: str  # class in yoso_deploy.runtime.models
    pipeline: str  # class in yoso_deploy.runtime.pipelines
    outputs: tuple[OutputDef, ...]
    input_dims: tuple = SEQ_DIMS
    decoding: Mapping[str, Any] = field(default_factory=dict)  # the pipeline's defaults
    description: str = ""
    head: str = ""  # the head's module in the transformers class (its weights' prefix); "" for the encoder alone

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def input_names(self, config: Any) -> list[str]:
        """``input_ids``, ``attention_mask`` and, for configs with ``type_vocab_size > 1``, ``token_type_ids``."""
        names = ["input_ids", "attention_mask"]
        if int(config_value(config, "type_vocab_size", 1) or 1) > 1:
            names.append("token_type_ids")
        return names

    def output_dims(self, output: OutputDef, config: Any) -> list:
        """``output.dims`` with every ``$field`` replaced by that config value."""
        return [int(config_value(config, d[1:])) if isinstance(d, str) and d.startswith("$") else d
                for d in output.dims]


def config_value(config: Any, key: str, default: Any = None) -> Any:
    """``config.key`` for a transformers config or any object, ``config[key]`` for a dict."""
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def _ro(d: dict) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("base", ("feature-extraction", "default", "model"), "YosoModel", "AutoModel", "feature-extraction",
         "YosoOrtModelForFeatureExtraction", "FeatureExtractionPipeline",
         (OutputDef("last_hidden_state", ("batch", "sequence", "$hidden_size")),),
         decoding=_ro({"pooling": "mean", "normalize": False}),
         description="encoder hidden states (feature extraction / embeddings)"),
    Task("mlm", ("fill-mask", "masked-lm", "masked_lm"), "YosoForMaskedLM", "AutoModelForMaskedLM", "fill-mask",
         "YosoOrtForMaskedLM", "FillMaskPipeline",
         (OutputDef("logits", ("batch", "sequence", "$vocab_size")),),
         decoding=_ro({"top_k": 5}), description="masked language modelling (fill-mask)", head="cls"),
    Task("sequence-classification", ("text-classification", "sentiment-analysis", "sequence_classification"),
         "YosoForSequenceClassification", "AutoModelForSequenceClassification", "text-classification",
         "YosoOrtForSequenceClassification", "TextClassificationPipeline",
         (OutputDef("logits", ("batch", "$num_labels")),),
         decoding=_ro({"top_k": 1, "function_to_apply": None}), description="text classification", head="classifier"),
    Task("multiple-choice", ("multiple_choice",), "YosoForMultipleChoice", "AutoModelForMultipleChoice", None,
         "YosoOrtForMultipleChoice", "MultipleChoicePipeline",
         (OutputDef("logits", ("batch", "num_choices")),), input_dims=CHOICE_DIMS,
         decoding=_ro({}), description="multiple choice (a score per choice)", head="classifier"),
    Task("token-classification", ("ner", "token_classification"), "YosoForTokenClassification",
         "AutoModelForTokenClassification", "token-classification",
         "YosoOrtForTokenClassification", "TokenClassificationPipeline",
         (OutputDef("logits", ("batch", "sequence", "$num_labels")),),
         decoding=_ro({"aggregation_strategy": "none", "ignore_labels": ("O",), "stride": 128}),
         description="token classification (NER)", head="classifier"),
    Task("qa", ("question-answering", "question_answering", "extractive-qa"), "YosoForQuestionAnswering",
         "AutoModelForQuestionAnswering", "question-answering",
         "YosoOrtForQuestionAnswering", "QuestionAnsweringPipeline",
         (OutputDef("start_logits", ("batch", "sequence")), OutputDef("end_logits", ("batch", "sequence"))),
         decoding=_ro({"top_k": 1, "max_answer_len": 30, "doc_stride": 128, "handle_impossible_answer": False,
                       "align_to_words": True}),
         description="extractive question answering", head="qa_outputs"),
)}

ALIASES: dict[str, str] = {a: t.name for t in TASKS.values() for a in t.aliases}


class UnknownTaskError(UsageError):
    """A task name that is neither a task nor an alias."""


def canonical_task(task: str) -> str:
    """A task name or alias -> the canonical name; :class:`UnknownTaskError` lists the choices."""
    t = str(task).strip().lower()
    t = ALIASES.get(t, t)
    if t not in TASKS:
        choices = ", ".join(list(TASKS) + sorted(ALIASES))
        close = suggest(t)
        raise UnknownTaskError(f"unknown task {task!r}{f' (did you mean {close!r}?)' if close else ''}; "
                               f"choose one of: {choices}")
    return t


def suggest(task: str) -> str | None:
    """The task name or alias closest to a misspelled ``task`` (for "did you mean"), or None."""
    import difflib

    close = difflib.get_close_matches(str(task).strip().lower(), [*TASKS, *ALIASES], n=1, cutoff=0.6)
    return close[0] if close else None


def get(task: str) -> Task:
    """The :class:`Task` of a name or alias."""
    return TASKS[canonical_task(task)]


def task_for_architectures(architectures) -> str | None:
    """The task of the first ``config.architectures`` entry the registry knows (else ``None``)."""
    by_class = {t.transformers_class: t.name for t in TASKS.values()}
    for arch in architectures or []:
        if arch in by_class:
            return by_class[arch]
    return None


def task_for_transformers_class(name: str) -> str | None:
    return task_for_architectures([name])
