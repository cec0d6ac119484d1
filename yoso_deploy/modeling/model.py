"""Loading and building the reference YOSO models.

The reference model *is* the transformers model class of the task (so weights, heads, embeddings,
``save_pretrained`` and the state-dict layout are exactly transformers'), with every layer's
self-attention swapped for :class:`YosoReferenceSelfAttention`. The swap reuses the loaded
``query``/``key``/``value``/``conv`` modules, so no weight is copied or re-initialised.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import YosoConfig, YosoModel

from .. import tasks
from ..checkpoint import TaskHeadError, check_checkpoint_dir  # noqa: F401 - re-exported
from ..errors import UsageError
from ..tasks import canonical_task
from . import native_ops, ops
from .attention import ATTENTION_MODES, YosoReferenceSelfAttention

# The transformers class of every task, resolved from the task registry's class names.
TASK_CLASSES = {name: getattr(transformers, t.transformers_class) for name, t in tasks.TASKS.items()}
TASK_ALIASES = dict(tasks.ALIASES)

def yoso_4096_config(**overrides) -> YosoConfig:
    """The published uw-madison/yoso-4096 configuration: hidden 768, 12 layers of 12 heads, FFN 3072,
    4096 positions, ``num_hash`` 64, ``hash_code_len`` 9, LSH attention. ``overrides`` change any field
    (e.g. ``num_hidden_layers=2``). For random checkpoints of the size users deploy (no hub here)."""
    args = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                max_position_embeddings=4096, num_hash=64, hash_code_len=9, use_expectation=False,
                conv_window=None)
    args.update(overrides)
    return YosoConfig(**args)


def task_for_architecture(config: YosoConfig) -> str | None:
    """Guess the task from ``config.architectures`` (e.g. ``YosoForQuestionAnswering`` -> ``qa``)."""
    return tasks.task_for_architectures(getattr(config, "architectures", None))


def _attention_layers(model):
    base = model if isinstance(model, YosoModel) else model.yoso
    return [layer.attention for layer in base.encoder.layer]


def layer_signs(config: YosoConfig, seed: int) -> list[torch.Tensor]:
    """The signs of every layer for a seed: one CPU generator seeded with ``seed``, layers drawn in order."""
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    hash_dim = ops.hash_dim_for(head_dim, config.hash_code_len)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return [
        ops.draw_signs(heads, int(config.num_hash), int(config.hash_code_len), hash_dim, generator=gen)
        for _ in range(config.num_hidden_layers)
    ]


def convert_model(model, attention: str = "lsh", seed: int = 0, kernels: str = "torch"):
    """Swap the self-attention of a transformers YOSO model for the reference one, in place.

    ``kernels`` picks the LSH ops: ``"torch"`` (the pure-PyTorch reference, default) or ``"native"``
    (our AVX2 / CUDA kernels, :mod:`yoso_deploy.modeling.native_ops`). Returns the model, in eval
    mode, with ``model.yoso_attention``, ``model.yoso_kernels`` and ``model.yoso_seed`` set.
    """
    if attention not in ATTENTION_MODES:
        raise UsageError(f"unknown attention mode {attention!r}; choose one of {', '.join(ATTENTION_MODES)}")
    native_ops.check_kernels(kernels)
    config = model.config
    signs = layer_signs(config, seed)
    for index, (att, s) in enumerate(zip(_attention_layers(model), signs)):
        old = att.self
        device = old.query.weight.device
        att.self = YosoReferenceSelfAttention(
            config,
            attention=attention,
            kernels=kernels,
            signs=s.to(device),
            query=old.query,
            key=old.key,
            value=old.value,
            conv=getattr(old, "conv", None),
        )
        att.self.layer_index = index
    model.yoso_attention = attention
    model.yoso_kernels = kernels
    model.yoso_seed = int(seed)
    return model.eval()


def build_model(config: YosoConfig, task: str = "base", attention: str = "lsh", seed: int = 0, kernels: str = "torch"):
    """A randomly initialised reference model for ``config`` (weights from torch's global RNG)."""
    cls = TASK_CLASSES[canonical_task(task)]
    return convert_model(cls(config), attention=attention, seed=seed, kernels=kernels)


def load_model(
    path: str | Path,
    task: str | None = None,
    attention: str = "lsh",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    require_head: bool = False,
    kernels: str = "torch",
    **config_overrides,
):
    """Load a Hugging Face YOSO checkpoint directory as a reference model.

    ``task`` defaults to the checkpoint's architecture (``base`` if it names none). Heads absent
    from the checkpoint are randomly initialised by transformers (it warns, as usual) -- unless
    ``require_head``: then a task whose head weights the checkpoint lacks, or a missing ``task`` for
    a checkpoint that names no architecture, raises :class:`TaskHeadError` (``base`` is always allowed).
    ``config_overrides`` (e.g. ``num_hash=128``) change the YOSO hyper-parameters for this load.
    ``kernels="native"`` runs LSH attention on our native kernels (CPU: AVX2, CUDA: our CUDA kernels)
    instead of the pure-PyTorch reference ops (``"torch"``, the default); see ``native_ops``.
    """
    p = check_checkpoint_dir(path)
    config = YosoConfig.from_pretrained(str(p), **config_overrides)
    arch_task = task_for_architecture(config)
    archs = ", ".join(getattr(config, "architectures", None) or []) or "none"
    if task is None:
        if arch_task is None and require_head:
            raise TaskHeadError(
                f"{str(p)!r} names no YOSO architecture in config.json (architectures: {archs}); pass --task "
                f"({', '.join(TASK_CLASSES)})"
            )
        task = arch_task or "base"
    task = canonical_task(task)
    cls = TASK_CLASSES[task]
    try:
        model, info = cls.from_pretrained(str(p), config=config, dtype=dtype, output_loading_info=True)
    except Exception as e:  # safetensors / torch.load / state-dict errors: name the file and the fix
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"cannot load the weights in {str(p)!r} ({type(e).__name__}: {detail}); the weight file is corrupt or "
            "does not match config.json: re-save the checkpoint with save_pretrained"
        ) from e
    missing = sorted(info.get("missing_keys") or [])
    if require_head and missing and task != "base":
        has = f"a {archs} checkpoint (task {arch_task})" if arch_task else f"a checkpoint with architectures {archs}"
        raise TaskHeadError(
            f"--task {task} needs a {cls.__name__} head, but {str(p)!r} is {has} without its weights "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); export with "
            f"--task {arch_task or 'base'}{' or --task base' if arch_task and arch_task != 'base' else ''}"
        )
    model = convert_model(model, attention=attention, seed=seed, kernels=kernels)
    model.yoso_task = task
    return model
