"""Task models over an exported YOSO directory, with Hugging Face-like outputs.

    model = YosoOrtForQuestionAnswering.from_pretrained("out/qa", provider="cpu")
    out = model(input_ids=ids, attention_mask=mask)      # out.start_logits, out.end_logits

``__call__`` is safe to use from many threads at once: ``InferenceSession.run`` is thread-safe
and every call builds its own IO binding on CUDA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .session import CUDA, create_session


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

    def keys(self):
        return self.values.keys()


class YosoOrtModel:
    """Any exported YOSO model (base: ``last_hidden_state``). Subclasses pin the task."""

    task: str | None = None

    def __init__(self, session, manifest: dict, model_dir: Path):
        if self.task is not None and manifest["task"] != self.task:
            raise ValueError(
                f"{str(model_dir)!r} is a {manifest['task']!r} export; {type(self).__name__} needs task "
                f"{self.task!r} (re-export with --task {self.task}, or use the matching class)"
            )
        self.session = session
        self.manifest = manifest
        self.model_dir = model_dir
        self.input_specs = {t["name"]: t for t in manifest["inputs"]}
        self.output_names = [o.name for o in session.get_outputs()]
        self.uses_cuda = CUDA in session.get_providers()
        self.device_id = 0

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, provider: str | list = "cpu", device_id: int = 0,
                        gpu_mem_limit: int | None = None, intra_op_threads: int | None = None,
                        inter_op_threads: int | None = None, optimized_cache_dir: str | Path | None = None,
                        allow_failed_export: bool = False):
        from ..export import load_manifest
        from ..export.exporter import check_usable

        model_dir = Path(model_dir)
        manifest = load_manifest(model_dir)
        check_usable(manifest, model_dir, allow_failed_export)
        sess = create_session(model_dir / manifest.get("model_file", "model.onnx"), providers=provider,
                              intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                              device_id=device_id, gpu_mem_limit=gpu_mem_limit,
                              optimized_cache_dir=optimized_cache_dir)
        model = cls(sess, manifest, model_dir)
        model.device_id = int(device_id)
        return model

    @property
    def max_sequence_length(self) -> int:
        return int(self.manifest["max_sequence_length"])

    @property
    def config(self) -> dict:
        return json.loads((self.model_dir / "config.json").read_text())

    def _feeds(self, inputs: dict) -> dict:
        feeds = {}
        for name, spec in self.input_specs.items():
            if name not in inputs or inputs[name] is None:
                if name == "attention_mask" and "input_ids" in inputs:
                    feeds[name] = np.ones_like(np.asarray(inputs["input_ids"]), dtype=np.int64)
                    continue
                if name == "token_type_ids" and "input_ids" in inputs:
                    feeds[name] = np.zeros_like(np.asarray(inputs["input_ids"]), dtype=np.int64)
                    continue
                raise ValueError(f"missing input {name!r}; the model takes {', '.join(self.input_specs)}")
            arr = np.asarray(inputs[name])
            if arr.ndim != len(spec["dims"]):
                raise ValueError(f"input {name!r} must have rank {len(spec['dims'])} {spec['dims']}, got shape {arr.shape}")
            feeds[name] = np.ascontiguousarray(arr, dtype=spec["dtype"])
        unknown = set(inputs) - set(self.input_specs)
        if unknown:
            raise ValueError(f"unknown input(s) {', '.join(sorted(unknown))}; the model takes {', '.join(self.input_specs)}")
        shapes = {a.shape for a in feeds.values()}
        if len(shapes) != 1:
            raise ValueError(f"inputs must all have the same shape, got {sorted(shapes)}")
        seq = next(iter(shapes))[-1]
        if seq > self.max_sequence_length:
            raise ValueError(f"sequence length {seq} exceeds the model's maximum {self.max_sequence_length}; "
                             "split the input into windows (the QA pipeline does this)")
        return feeds

    def run(self, feeds: dict) -> dict:
        if not self.uses_cuda:
            return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        # CUDA: inputs copied to the device once, outputs allocated on the device by ORT.
        binding = self.session.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> ModelOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids, **kwargs}
        inputs = {k: v for k, v in inputs.items() if v is not None}
        return ModelOutput(self.run(self._feeds(inputs)))


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


class YosoOrtBaseModel(YosoOrtModel):
    task = "base"


TASK_MODELS = {
    "base": YosoOrtBaseModel,
    "mlm": YosoOrtForMaskedLM,
    "sequence-classification": YosoOrtForSequenceClassification,
    "multiple-choice": YosoOrtForMultipleChoice,
    "token-classification": YosoOrtForTokenClassification,
    "qa": YosoOrtForQuestionAnswering,
}
