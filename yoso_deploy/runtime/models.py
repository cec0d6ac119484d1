"""Task models over an exported YOSO model: the one inference path every command uses.

    model = YosoOrtModel.from_pretrained("out/qa")           # the export's task class (here: QA)
    out = model(input_ids=ids, attention_mask=mask)          # out.start_logits, out.end_logits (numpy)
    outs = model.run({"input_ids": ids, "attention_mask": mask})   # {output name: array}, all outputs

``run`` takes a feed dict of numpy arrays and returns every output of the session by name -- including
extra graph outputs when the model was built in memory (:meth:`YosoOrtModel.from_model`, e.g. a copy of
``model.onnx`` with hidden states added as outputs). ``run`` and ``__call__`` validate inputs before
ONNX Runtime sees them (:meth:`YosoOrtModel.prepare_inputs`): integer dtypes, ``0 <= id < vocab_size``,
``token_type_ids < type_vocab_size``, masks of 0/1, ``1 <= S <= max_sequence_length``, ``B >= 1``,
equal shapes, no ragged lists; each violation is an :class:`InputError` naming the input and the fix.

Attention masks: 1 = token, 0 = padding; any other value is refused. (The exported graph itself
treats any non-zero value as 1, ``Cast(Not(Equal(mask, 0)))``, OPS.md section 3; the runtime refuses
other values because they are almost always a bug -- a float mask, or token types passed as a mask.)

``__call__``/``run`` may be used from many threads at once: ``InferenceSession.run`` is thread-safe and
every call builds its own IO binding on CUDA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import tasks
from ..constants import CONFIG_FILE
from ..errors import UsageError
from ..manifest import check_usable, expand_path, load_manifest, model_file, validate_manifest
from .session import CUDA, create_session


class InputError(UsageError):
    """A model input that ONNX Runtime must not see (wrong dtype, range, shape, ...)."""


@dataclass
class ModelOutput:
    """Outputs by name; also reachable as attributes (``out.start_logits``) and by index."""

    values: dict

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self.values.values())[key]
        return self.values[key]

    def __contains__(self, key):
        return key in self.values

    def keys(self):
        return self.values.keys()

    def items(self):
        return self.values.items()


def as_input_array(name: str, value) -> np.ndarray:
    """``value`` (array, nested lists, tensor) as a numpy array; ragged or non-numeric -> :class:`InputError`."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except ValueError as e:
            if "inhomogeneous" in str(e) or "sequence" in str(e):
                raise InputError(f"{name} is ragged (its rows have different lengths); pad every row to one length "
                                 "and mark the padding with attention_mask 0") from None
            raise InputError(f"{name} cannot be read as an array ({e}); pass a numpy array or nested lists") from None
    if arr.dtype == object:
        raise InputError(f"{name} is ragged or holds values that are not int64 numbers; pass equal-length rows "
                         "of integers")
    return arr


def prepare_inputs(inputs: dict, manifest: dict, config: dict | None = None) -> dict[str, np.ndarray]:
    """Validate model inputs against an export's manifest (and its checkpoint config, for the vocabulary)
    and return the feeds ONNX Runtime gets: contiguous arrays of the manifest's dtypes.

    A missing ``attention_mask`` means all ones, a missing ``token_type_ids`` all zeros. Every problem is
    an :class:`InputError` naming the input and the fix (module doc)."""
    specs = {t["name"]: t for t in manifest["inputs"]}
    config = config or {}
    unknown = [k for k in inputs if k not in specs]
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(sorted(unknown))}; the model takes {', '.join(specs)}")
    if inputs.get("input_ids") is None:
        raise InputError(f"missing input 'input_ids'; the model takes {', '.join(specs)}")
    arrays = {k: as_input_array(k, v) for k, v in inputs.items() if v is not None}
    ids = arrays["input_ids"]
    dims = specs["input_ids"]["dims"]
    if ids.ndim != len(dims):
        raise InputError(f"input 'input_ids' must have rank {len(dims)} {dims}, got shape {list(ids.shape)}"
                         + ("; add a batch axis (e.g. ids[None])" if ids.ndim == len(dims) - 1 else ""))
    feeds = {}
    for name, spec in specs.items():
        arr = arrays.get(name)
        if arr is None:
            if name == "attention_mask":
                arr = np.ones(ids.shape, dtype=np.int64)
            elif name == "token_type_ids":
                arr = np.zeros(ids.shape, dtype=np.int64)
            else:
                raise InputError(f"missing input {name!r}; the model takes {', '.join(specs)}")
        feeds[name] = _check_input(name, arr, ids.shape, spec, int(manifest["max_sequence_length"]), config)
    return feeds


def _first(arr: np.ndarray, value) -> list[int]:
    return [int(i) for i in np.argwhere(arr == value)[0]]


def _check_input(name: str, arr: np.ndarray, shape: tuple, spec: dict, max_len: int, config: dict) -> np.ndarray:
    if arr.dtype == np.bool_ and name == "attention_mask":
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"input {name!r} must hold integers, got {arr.dtype}; "
                         f"{'token ids' if name == 'input_ids' else 'its values'} are whole numbers "
                         "(cast with .astype('int64'))")
    if arr.shape != shape:
        raise InputError(f"input {name!r} has shape {list(arr.shape)} but input_ids has {list(shape)}; "
                         "give every input the same shape")
    if any(d == 0 for d in shape):
        axes = ["batch", "num_choices", "sequence"] if len(shape) == 3 else ["batch", "sequence"]
        empty = [a for a, d in zip(axes, shape) if d == 0]
        raise InputError(f"input {name!r} is empty (shape {list(shape)}: {', '.join(empty)} is 0); "
                         "pass at least one sequence of at least one token")
    if shape[-1] > max_len:
        raise InputError(f"sequence length {shape[-1]} exceeds the model's maximum {max_len}; "
                         "split the input into windows (the pipelines do this) or truncate it")
    lo, hi = arr.min(), arr.max()
    if name == "input_ids":
        vocab = int(config.get("vocab_size") or 0) or None
        if lo < 0 or (vocab is not None and hi >= vocab):
            bad = lo if lo < 0 else hi
            limit = f"< {vocab}, the vocabulary size" if vocab is not None else "valid"
            raise InputError(f"input 'input_ids' holds {int(bad)} at {_first(arr, bad)}; token ids must be >= 0 "
                             f"and {limit} (tokenize with the export's tokenizer)")
    elif name == "attention_mask":
        if lo < 0 or hi > 1:
            bad = lo if lo < 0 else hi
            raise InputError(f"input 'attention_mask' holds {int(bad)} at {_first(arr, bad)}; a mask is 1 (token) "
                             "or 0 (padding), nothing else")
    elif name == "token_type_ids":
        types = int(config.get("type_vocab_size") or 0) or None
        if lo < 0 or (types is not None and hi >= types):
            bad = lo if lo < 0 else hi
            raise InputError(f"input 'token_type_ids' holds {int(bad)} at {_first(arr, bad)}; token types must be "
                             f">= 0 and < {types}, the config's type_vocab_size")
    return np.ascontiguousarray(arr, dtype=spec["dtype"])


class YosoOrtModel:
    """An exported YOSO model in ONNX Runtime. ``from_pretrained`` on this class returns the export's
    task class; the subclasses pin a task."""

    task: str | None = None

    def __init__(self, session, manifest: dict, model_dir: str | Path | None = None, config: dict | None = None,
                 device_id: int = 0):
        manifest = validate_manifest(dict(manifest))
        self._check_task(manifest, model_dir)
        self.session = session
        self.manifest = manifest
        self.model_dir = expand_path(model_dir) if model_dir is not None else None
        self._config = config
        self.input_specs = {t["name"]: t for t in manifest["inputs"]}
        self.output_names = [o.name for o in session.get_outputs()]
        self.uses_cuda = CUDA in session.get_providers()
        self.device_id = int(device_id)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def _check_task(cls, manifest: dict, model_dir=None) -> None:
        if cls.task is not None and manifest["task"] != cls.task:
            where = repr(str(model_dir)) if model_dir is not None else "the model"
            raise UsageError(
                f"{where} is a {manifest['task']!r} export; {cls.__name__} needs task "
                f"{cls.task!r} (re-export with --task {cls.task}, or use the matching class)"
            )

    @classmethod
    def _for_task(cls, task: str):
        if cls.task is None and cls is YosoOrtModel:
            return TASK_MODELS[task]
        return cls

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, provider: str | list = "cpu", device_id: int = 0,
                        gpu_mem_limit: int | None = None, intra_op_threads: int | None = None,
                        inter_op_threads: int | None = None, optimized_cache_dir: str | Path | None = None,
                        allow_failed_export: bool = False):
        """Load an export directory (``~`` expanded). An export whose parity check failed is refused
        unless ``allow_failed_export`` (:func:`yoso_deploy.manifest.check_usable`)."""
        model_dir = expand_path(model_dir)
        manifest = load_manifest(model_dir)
        check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
        klass = cls._for_task(manifest["task"])
        klass._check_task(manifest, model_dir)  # before paying for a session
        sess = create_session(model_file(manifest, model_dir), providers=provider,
                              intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                              device_id=device_id, gpu_mem_limit=gpu_mem_limit,
                              optimized_cache_dir=optimized_cache_dir)
        return klass(sess, manifest, model_dir, device_id=device_id)

    @classmethod
    def from_model(cls, model, manifest: dict, model_dir: str | Path | None = None, config: dict | None = None,
                   provider: str | list = "cpu", device_id: int = 0, gpu_mem_limit: int | None = None,
                   intra_op_threads: int | None = None, inter_op_threads: int | None = None,
                   allow_failed_export: bool = True):
        """A model from ``model`` in memory (``bytes`` or an ``onnx.ModelProto``, possibly with extra graph
        outputs) or a path, described by ``manifest``. ``config`` (the checkpoint's config.json as a dict)
        or ``model_dir`` (to read it from) enables the vocabulary checks and labels.

        ``allow_failed_export`` defaults to True here: this is how validation re-runs a suspect export."""
        manifest = validate_manifest(dict(manifest))
        check_usable(manifest, allow_failed=allow_failed_export, model_dir=model_dir)
        klass = cls._for_task(manifest["task"])
        sess = create_session(model, providers=provider, intra_op_threads=intra_op_threads,
                              inter_op_threads=inter_op_threads, device_id=device_id, gpu_mem_limit=gpu_mem_limit)
        return klass(sess, manifest, model_dir, config=config, device_id=device_id)

    @classmethod
    def from_session(cls, session, manifest: dict, model_dir: str | Path | None = None, config: dict | None = None):
        """Wrap an existing ``InferenceSession`` (with ``libyoso_ort.so`` registered)."""
        manifest = validate_manifest(dict(manifest))
        return cls._for_task(manifest["task"])(session, manifest, model_dir, config=config)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def max_sequence_length(self) -> int:
        return int(self.manifest["max_sequence_length"])

    @property
    def config(self) -> dict:
        """The checkpoint's ``config.json`` (empty if the model was built without one)."""
        if self._config is None:
            path = self.model_dir / CONFIG_FILE if self.model_dir is not None else None
            self._config = json.loads(path.read_text()) if path is not None and path.is_file() else {}
        return self._config

    @property
    def vocab_size(self) -> int | None:
        v = self.config.get("vocab_size")
        return int(v) if v else None

    @property
    def id2label(self) -> dict[int, str]:
        raw = self.config.get("id2label") or {}
        labels = {int(k): str(v) for k, v in raw.items()}
        n = self.config.get("num_labels") or len(labels)
        return {i: labels.get(i, f"LABEL_{i}") for i in range(int(n))} if n else labels

    @property
    def input_names(self) -> list[str]:
        return list(self.input_specs)

    # -- inputs ---------------------------------------------------------------------------------
    def prepare_inputs(self, inputs: dict) -> dict[str, np.ndarray]:
        """Validate ``inputs`` and return the feeds ORT gets (:func:`prepare_inputs`)."""
        return prepare_inputs(inputs, self.manifest, self.config)

    # -- running --------------------------------------------------------------------------------
    def run(self, feeds: dict, output_names: list[str] | None = None, validate: bool = True) -> dict[str, np.ndarray]:
        """Run the session on a feed dict (numpy); returns ``{output name: array}`` for ``output_names``
        (default: every output of the session, extra graph outputs included). ``validate=False`` skips
        :meth:`prepare_inputs` (the feeds must then be exactly what ORT takes)."""
        if validate:
            feeds = self.prepare_inputs(feeds)
        names = list(output_names) if output_names is not None else self.output_names
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise UsageError(f"unknown output(s) {', '.join(unknown)}; the session has {', '.join(self.output_names)}")
        if not self.uses_cuda:
            return dict(zip(names, self.session.run(names, feeds)))
        # CUDA: inputs copied to the device once, outputs allocated on the device by ORT.
        binding = self.session.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        for name in names:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> ModelOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids, **kwargs}
        return ModelOutput(self.run({k: v for k, v in inputs.items() if v is not None}))


class YosoOrtModelForFeatureExtraction(YosoOrtModel):
    task = "base"


class YosoOrtForMaskedLM(YosoOrtModel):
    task = "mlm"


class YosoOrtForSequenceClassification(YosoOrtModel):
    task = "sequence-classification"


class YosoOrtForMultipleChoice(YosoOrtModel):
    task = "multiple-choice"


class YosoOrtForTokenClassification(YosoOrtModel):
    task = "token-classification"


class YosoOrtForQuestionAnswering(YosoOrtModel):
    task = "qa"


YosoOrtBaseModel = YosoOrtModelForFeatureExtraction  # the earlier name

TASK_MODELS = {name: globals()[t.runtime_class] for name, t in tasks.TASKS.items()}
