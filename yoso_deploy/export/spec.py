"""Input/output specifications of exported models and generated test inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: int64, int32, float32, float16
    dims: list  # ints or symbolic names ("batch", "sequence", "num_choices")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class IOSpec:
    task: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    debug_outputs: list[TensorSpec] = field(default_factory=list)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs + self.debug_outputs]


def io_spec(config, task: str, debug_codes: bool = False, attention: str = "lsh", dtype: str = "fp32") -> IOSpec:
    """The inputs and outputs an export of ``task`` has (HF names, int64 inputs as transformers uses).

    ``dtype`` ("fp32" or "fp16") is the type of the float outputs; inputs are always int64 ids/masks.
    """
    fdt = {"fp32": "float32", "fp16": "float16"}[dtype]
    seq = ["batch", "num_choices", "sequence"] if task == "multiple-choice" else ["batch", "sequence"]
    inputs = [TensorSpec("input_ids", "int64", seq), TensorSpec("attention_mask", "int64", seq)]
    if config.type_vocab_size > 1:
        inputs.append(TensorSpec("token_type_ids", "int64", seq))
    if task == "base":
        outputs = [TensorSpec("last_hidden_state", fdt, ["batch", "sequence", config.hidden_size])]
    elif task == "mlm":
        outputs = [TensorSpec("logits", fdt, ["batch", "sequence", config.vocab_size])]
    elif task == "sequence-classification":
        outputs = [TensorSpec("logits", fdt, ["batch", config.num_labels])]
    elif task == "multiple-choice":
        outputs = [TensorSpec("logits", fdt, ["batch", "num_choices"])]
    elif task == "token-classification":
        outputs = [TensorSpec("logits", fdt, ["batch", "sequence", config.num_labels])]
    elif task == "qa":
        outputs = [
            TensorSpec("start_logits", fdt, ["batch", "sequence"]),
            TensorSpec("end_logits", fdt, ["batch", "sequence"]),
        ]
    else:  # pragma: no cover - canonical_task guards this
        raise ValueError(task)
    debug = []
    if debug_codes and attention == "lsh":
        heads = config.num_attention_heads
        rows = ["batch_x_choices" if task == "multiple-choice" else "batch", heads, "sequence", config.num_hash]
        for layer in range(config.num_hidden_layers):
            debug.append(TensorSpec(f"query_codes.{layer}", "int32", rows))
            debug.append(TensorSpec(f"key_codes.{layer}", "int32", rows))
    return IOSpec(task, inputs, outputs, debug)


def make_inputs(
    spec: IOSpec,
    batch: int,
    seq_len: int,
    vocab_size: int,
    *,
    num_choices: int = 2,
    seed: int = 0,
    pad_token_id: int = 1,
    padding: bool = True,
) -> dict[str, np.ndarray]:
    """Random token inputs with realistic masks: row i (i > 0) is right-padded to a shorter length."""
    rng = np.random.default_rng(seed)
    shape = (batch, num_choices, seq_len) if spec.task == "multiple-choice" else (batch, seq_len)
    low = min(3, vocab_size - 1)
    ids = rng.integers(low, vocab_size, size=shape, dtype=np.int64)
    mask = np.ones(shape, dtype=np.int64)
    if padding and seq_len > 1:
        flat_ids, flat_mask = ids.reshape(-1, seq_len), mask.reshape(-1, seq_len)
        for i in range(1, flat_ids.shape[0]):
            length = int(rng.integers(1, seq_len + 1))
            flat_mask[i, length:] = 0
            flat_ids[i, length:] = pad_token_id
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in spec.input_names:
        out["token_type_ids"] = np.zeros(shape, dtype=np.int64)
    return out
