"""The PyTorch reference: transformers' ``Yoso*`` model classes with a correct, deterministic self-attention.

Owns the reference model (:mod:`.model`: loading checkpoints, every task's head), its self-attention
(:mod:`.attention`: LSH or exact YOSO-E, padding masked, signs drawn once from a seed), the two ops in pure
PyTorch (:mod:`.ops`, the reference every backend is judged against) and on the native kernels
(:mod:`.native_ops`). May import: the shared modules, torch and transformers (the ``[export]`` extra).
"""

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as _e:  # the reference model is part of the [export] extra
    from ..errors import missing_extra

    _err = missing_extra(_e, "the PyTorch reference model")
    if _err is None:
        raise
    raise _err from _e

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
