"""Reference PyTorch YOSO: transformers' model classes with a correct, deterministic self-attention."""

from . import native_ops, ops
from .attention import ATTENTION_MODES, YosoReferenceSelfAttention
from .model import (
    TASK_ALIASES,
    TASK_CLASSES,
    TaskHeadError,
    build_model,
    canonical_task,
    check_checkpoint_dir,
    convert_model,
    layer_signs,
    load_model,
    task_for_architecture,
    yoso_4096_config,
)

__all__ = [
    "ATTENTION_MODES",
    "TASK_ALIASES",
    "TASK_CLASSES",
    "TaskHeadError",
    "YosoReferenceSelfAttention",
    "build_model",
    "canonical_task",
    "check_checkpoint_dir",
    "convert_model",
    "layer_signs",
    "load_model",
    "native_ops",
    "task_for_architecture",
    "yoso_4096_config",
    "ops",
]
