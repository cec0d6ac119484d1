"""Input/output specifications of exported models, and generated test inputs (numpy only).

The specs come from the task registry (:mod:`yoso_deploy.tasks`); an export's manifest stores them
(``inputs``, ``outputs``, ``debug_outputs``) and :func:`yoso_deploy.manifest.manifest_spec` reads
them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import tasks
from .errors import UsageError


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
    t = tasks.get(task)
    fdt = {"fp32": "float32", "fp16": "float16"}[dtype]
    seq = list(t.input_dims)
    inputs = [TensorSpec(n, "int64", list(seq)) for n in t.input_names(config)]
    outputs = [TensorSpec(o.name, fdt, t.output_dims(o, config)) for o in t.outputs]
    debug = []
    if debug_codes and attention == "lsh":
        heads = int(tasks.config_value(config, "num_attention_heads"))
        rows = ["batch_x_choices" if t.name == "multiple-choice" else "batch", heads, "sequence",
                int(tasks.config_value(config, "num_hash"))]
        for layer in range(int(tasks.config_value(config, "num_hidden_layers"))):
            debug.append(TensorSpec(f"query_codes.{layer}", "int32", list(rows)))
            debug.append(TensorSpec(f"key_codes.{layer}", "int32", list(rows)))
    return IOSpec(t.name, inputs, outputs, debug)


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


# The post-export and post-quantization checks: two short shapes, plus a padded batch of 2 at min(512, max positions).
SHORT_CHECK_SHAPES = ((2, 16), (3, 77))


def default_check_shapes(max_positions: int) -> tuple[tuple[int, int], ...]:
    """The shapes of the post-export (and post-quantization) check: 2x16, 3x77 and 2 x min(512, max positions)."""
    return SHORT_CHECK_SHAPES + ((2, min(512, int(max_positions))),)


def parse_shapes(text: str, option: str = "--check-shapes") -> tuple[tuple[int, int], ...]:
    """``"2x16,2x512"`` -> ((2, 16), (2, 512)); a :class:`~yoso_deploy.errors.UsageError` naming ``option`` otherwise."""
    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        b, sep, s = part.partition("x")
        if not sep or not b.strip().isdigit() or not s.strip().isdigit() or int(b) < 1 or int(s) < 1:
            raise UsageError(f"{option}: bad shape {part!r}", fix="write BATCHxSEQ with positive integers, e.g. 2x16,2x512")
        out.append((int(b), int(s)))
    if not out:
        raise UsageError(f"{option}: no shapes given", fix="write BATCHxSEQ[,BATCHxSEQ...], e.g. 2x16,2x512")
    return tuple(out)
