"""transformers integration: exported YOSO models inside ``transformers.pipeline`` (the ``[export]`` extra).

As Optimum's ``ORTModelFor*`` classes, :class:`OrtYosoForSequenceClassification` and its siblings look
like transformers models to a pipeline -- ``config``, ``device``, ``forward(**tokenizer_output)``
returning transformers' output classes with torch tensors -- while ONNX Runtime runs the export
through the runtime model classes (:mod:`yoso_deploy.runtime.models`, the project's one inference path)::

    import transformers
    from yoso_deploy.hf import OrtYosoForTokenClassification

    model = OrtYosoForTokenClassification.from_pretrained("out/ner")          # provider="cpu" | "cuda"
    tok = transformers.AutoTokenizer.from_pretrained("out/ner")
    ner = transformers.pipeline("token-classification", model=model, tokenizer=tok)
    ner("Ada Lovelace lives in London", aggregation_strategy="simple")

Works for ``text-classification``, ``token-classification``, ``fill-mask`` and ``feature-extraction``.
``question-answering``: transformers 5.3 removed that pipeline ("Use the text-generation pipeline with a
chat model instead"); with such a transformers, use :class:`yoso_deploy.runtime.qa.QuestionAnsweringPipeline`
(``yoso-deploy qa``); :class:`OrtYosoForQuestionAnswering` still returns ``start_logits``/``end_logits``
as transformers' ``YosoForQuestionAnswering`` does, for code written against it (and for older
transformers' pipeline). Multiple choice has no transformers pipeline.

What transformers needs from a model object, and what these classes give it: ``config`` (the export's
``config.json`` as a ``YosoConfig``: ``id2label``, ``problem_type``, ...), ``device`` (the ORT device;
``.to()`` does not move an ORT model -- choose ``provider`` when loading), ``dtype``, ``can_generate()``
(False), ``forward``/``__call__`` taking the tokenizer's torch tensors and returning transformers'
``*ModelOutput`` with torch tensors, ``base_model_prefix``, ``main_input_name``. Each class is registered with its transformers auto class
(``AutoModelForTokenClassification``, ...) under a key of our own, as Optimum registers its models, so
pipelines accept it without logging "The model ... is not supported" (and no transformers config is
remapped).
"""

from __future__ import annotations

from pathlib import Path

from . import tasks
from .constants import CONFIG_FILE
from .errors import require

torch = require("torch", "the transformers integration (yoso_deploy.hf)")
transformers = require("transformers", "the transformers integration (yoso_deploy.hf)")

from transformers import modeling_outputs as _mo  # noqa: E402

from .errors import UsageError
from .manifest import expand_path  # noqa: E402
from .runtime.models import TASK_MODELS, YosoOrtModel  # noqa: E402

_OUTPUT_CLASSES = {
    "base": _mo.BaseModelOutput,
    "mlm": _mo.MaskedLMOutput,
    "sequence-classification": _mo.SequenceClassifierOutput,
    "multiple-choice": _mo.MultipleChoiceModelOutput,
    "token-classification": _mo.TokenClassifierOutput,
    "qa": _mo.QuestionAnsweringModelOutput,
}


class OrtYosoPreTrainedModel:
    """Base of the transformers-facing ORT models (one subclass per task, named ``Ort`` + the
    transformers class: ``OrtYosoForMaskedLM``, ...)."""

    task: str | None = None
    base_model_prefix = "yoso"
    main_input_name = "input_ids"
    input_modalities = "text"
    output_modalities = "text"
    hf_device_map = None

    def __init__(self, model: YosoOrtModel, config=None):
        if self.task is not None and model.manifest["task"] != self.task:
            raise UsageError(f"{type(self).__name__} needs a {self.task!r} export, got {model.manifest['task']!r}")
        self.ort_model = model
        if config is None:
            if model.model_dir is not None and (model.model_dir / CONFIG_FILE).is_file():
                config = transformers.AutoConfig.from_pretrained(str(model.model_dir))
            else:
                config = transformers.YosoConfig(**model.config)
        self.config = config
        self.name_or_path = str(model.model_dir) if model.model_dir is not None else ""
        self.device = torch.device("cuda", model.device_id) if model.uses_cuda else torch.device("cpu")
        self.dtype = torch.float16 if model.manifest.get("dtype") == "fp16" else torch.float32
        self.training = False

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, **kwargs):
        """Load an export (``provider``, ``intra_op_threads``, ``optimized_cache_dir``, ... as
        :meth:`YosoOrtModel.from_pretrained`)."""
        model_dir = expand_path(model_dir)
        klass = TASK_MODELS[cls.task] if cls.task is not None else YosoOrtModel
        model = klass.from_pretrained(model_dir, **kwargs)
        target = cls if cls.task is not None else HF_MODELS[model.manifest["task"]]
        return target(model)

    # -- what a transformers pipeline calls -------------------------------------------------------
    def can_generate(self) -> bool:
        return False

    def to(self, *args, **kwargs):
        """No-op: ONNX Runtime places the model by its execution provider, chosen at load."""
        return self

    def eval(self):
        return self

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        kwargs.pop("return_dict", None)
        kwargs.pop("use_cache", None)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids, **kwargs}
        feeds = {k: _to_numpy(v) for k, v in feeds.items() if v is not None}
        if "token_type_ids" in feeds and "token_type_ids" not in self.ort_model.input_names:
            if feeds["token_type_ids"].any():
                raise UsageError("the export takes no token_type_ids (type_vocab_size 1) but non-zero ones were given")
            feeds.pop("token_type_ids")
        outs = self.ort_model.run(feeds)
        wanted = {t["name"] for t in self.ort_model.manifest["outputs"]}
        tensors = {k: torch.from_numpy(v) for k, v in outs.items() if k in wanted}
        return _OUTPUT_CLASSES[self.ort_model.manifest["task"]](**tensors)

    __call__ = forward

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name_or_path!r}, providers={self.ort_model.session.get_providers()})"


def _to_numpy(v):
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return v


class _RegistrationKey:
    """Key under which the ORT classes are registered with transformers' auto classes (as Optimum does);
    a class of our own, so no transformers config (YosoConfig included) is remapped."""


HF_MODELS: dict[str, type] = {}
for _name, _task in tasks.TASKS.items():
    _cls = type(f"Ort{_task.transformers_class}", (OrtYosoPreTrainedModel,),
                {"task": _name, "__module__": __name__,
                 "__doc__": f"``{_task.transformers_class}`` (``{_task.auto_class}``) backed by ONNX Runtime."})
    HF_MODELS[_name] = _cls
    globals()[_cls.__name__] = _cls
    getattr(transformers, _task.auto_class).register(_RegistrationKey, _cls, exist_ok=True)

OrtYosoModel = HF_MODELS["base"]
OrtYosoForMaskedLM = HF_MODELS["mlm"]
OrtYosoForSequenceClassification = HF_MODELS["sequence-classification"]
OrtYosoForMultipleChoice = HF_MODELS["multiple-choice"]
OrtYosoForTokenClassification = HF_MODELS["token-classification"]
OrtYosoForQuestionAnswering = HF_MODELS["qa"]


def pipeline(model_dir: str | Path, task: str | None = None, **kwargs):
    """``transformers.pipeline`` over an export: its tokenizer (``AutoTokenizer``) and ORT model.

    ``task``: a transformers pipeline task (default: the export's, e.g. ``text-classification``);
    keyword arguments go to :meth:`OrtYosoPreTrainedModel.from_pretrained` when they are session options,
    else to ``transformers.pipeline``."""
    from .runtime.pipelines import SESSION_KWARGS

    model_dir = expand_path(model_dir)
    session = {k: kwargs.pop(k) for k in list(kwargs) if k in SESSION_KWARGS}
    model = OrtYosoPreTrainedModel.from_pretrained(model_dir, **session)
    hf_task = task or tasks.get(model.ort_model.manifest["task"]).hf_pipeline_task
    if hf_task is None:
        raise UsageError(f"transformers has no pipeline for {model.ort_model.manifest['task']!r} exports; use "
                         "yoso_deploy.runtime.pipeline(model_dir)")
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    return transformers.pipeline(hf_task, model=model, tokenizer=tok, **kwargs)


__all__ = ["HF_MODELS", "OrtYosoForMaskedLM", "OrtYosoForMultipleChoice", "OrtYosoForQuestionAnswering",
           "OrtYosoForSequenceClassification", "OrtYosoForTokenClassification", "OrtYosoModel",
           "OrtYosoPreTrainedModel", "pipeline"]
