"""Running exported YOSO models with ONNX Runtime: sessions, task models, tokenizer, pipelines.

Owns :mod:`.session` (sessions with ``libyoso_ort.so`` registered), :mod:`.models` (the task models: the one
inference path, inputs checked before ONNX Runtime sees them), :mod:`.tokenizer`, :mod:`.base` /
:mod:`.pipelines` / :mod:`.qa` (every task's pipeline), :mod:`.records` (JSON records to pipeline calls) and
:mod:`.inputs` (inputs from JSON or texts). May import: the shared modules, onnxruntime, numpy, tokenizers --
never torch, transformers, onnx, onnxscript or polygraphy: it is what the bare ``pip install yoso-deploy``
runs. Names other than the session helpers load lazily.

    from yoso_deploy.runtime import pipeline, YosoOrtModel
    qa = pipeline("out/qa")                      # the export's task picks the pipeline
    qa(question="Where did Ada move?", context="Ada moved to Oslo.")
    model = YosoOrtModel.from_pretrained("out/qa")
    model.run({"input_ids": ids})                # {output name: numpy array}
"""

from __future__ import annotations

import importlib

from .session import (
    CPU,
    CUDA,
    LibraryLoadError,
    ModelLoadError,
    ProviderUnavailableError,
    RuntimeVersionError,
    UnsupportedPrecisionError,
    check_runtime_version,
    create_session,
    resolve_providers,
    session_options,
)

_LAZY = {
    "InputError": ".models",
    "ModelOutput": ".models",
    "TASK_MODELS": ".models",
    "YosoOrtModel": ".models",
    "YosoOrtModelForFeatureExtraction": ".models",
    "YosoOrtForMaskedLM": ".models",
    "YosoOrtForMultipleChoice": ".models",
    "YosoOrtForQuestionAnswering": ".models",
    "YosoOrtForSequenceClassification": ".models",
    "YosoOrtForTokenClassification": ".models",
    "Limits": ".limits",
    "LimitError": ".limits",
    "OverloadedError": ".limits",
    "TokenBudget": ".limits",
    "Tokenizer": ".tokenizer",
    "TokenizerError": ".tokenizer",
    "Answer": ".qa",
    "QuestionAnsweringPipeline": ".qa",
    "FeatureExtractionPipeline": ".pipelines",
    "run_texts": ".pipelines",
    "FillMaskPipeline": ".pipelines",
    "MultipleChoicePipeline": ".pipelines",
    "Pipeline": ".pipelines",
    "TextClassificationPipeline": ".pipelines",
    "TokenClassificationPipeline": ".pipelines",
    "pipeline": ".pipelines",
}

__all__ = [
    "CPU", "CUDA", "LibraryLoadError", "ModelLoadError", "ProviderUnavailableError", "RuntimeVersionError",
    "UnsupportedPrecisionError", "check_runtime_version", "create_session", "resolve_providers", "session_options",
    *sorted(_LAZY),
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
