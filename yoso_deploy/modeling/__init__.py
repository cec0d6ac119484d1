"""Reference PyTorch YOSO: transformers' model classes with a correct, deterministic self-attention."""

from . import native_ops, ops
from .attention import ATTENTION_MODES, YosoReferenceSelfAttention
from .model import (
    TASK_ALIASES,
    TASK_CLASSES,
    build_model,
    canonical_task,
    check_checkpoint_dir,
    convert_model,
    layer_signs,
    load_model,
)

__all__ = [
    "ATTENTION_MODES",
    "TASK_ALIASES",
    "TASK_CLASSES",
    "YosoReferenceSelfAttention",
    "build_model",
    "canonical_task",
    "check_checkpoint_dir",
    "convert_model",
    "layer_signs",
    "load_model",
    "native_ops",
    "ops",
]
