"""Small YOSO checkpoints and inputs for the tests (torch and transformers are imported when a helper runs)."""

from __future__ import annotations

import shutil

from . import REPO

TOKENIZER_VOCAB = 572  # the embedded model's WordPiece tokenizer (model/tokenizer.json)
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
CLS_LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def small_config(**kw):
    """A tiny YOSO config (2 layers, 2 heads of 32) that runs in milliseconds on a CPU."""
    from transformers import YosoConfig

    args = dict(
        vocab_size=97,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=96,
        max_position_embeddings=512,
        num_hash=16,
        hash_code_len=5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
        pad_token_id=1,
    )
    args.update(kw)
    return YosoConfig(**args)


def random_inputs(batch: int, seq: int, vocab: int = 97, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    return ids, torch.ones_like(ids)


def yoso4096_config(**kw):
    """The uw-madison/yoso-4096 configuration with 2 layers instead of 12 (to save time), no dropout:
    the size users deploy (random weights)."""
    from yoso_deploy.modeling import yoso_4096_config

    args = dict(num_hidden_layers=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    args.update(kw)
    return yoso_4096_config(**args)


def yoso4096_qa_export(base):
    """A 2-layer yoso-4096-sized QA checkpoint (random weights) under ``base/ckpt`` and its LSH export under
    ``base/export`` (no post-export check)."""
    import torch
    from transformers import YosoForQuestionAnswering

    from yoso_deploy.workflow import export

    torch.manual_seed(4096)
    YosoForQuestionAnswering(yoso4096_config()).save_pretrained(base / "ckpt")
    export(base / "ckpt", base / "export", task="qa", validate=False)
    return base / "export"


def random_checkpoint(path, task: str, seed: int = 11, **config):
    """A randomly initialised ``small_config`` checkpoint of ``task`` saved at ``path``."""
    import torch

    from yoso_deploy.modeling import TASK_CLASSES

    torch.manual_seed(seed)
    TASK_CLASSES[task](small_config(**config)).save_pretrained(path)
    return path


def tiny_checkpoint(path, task: str, seed: int = 0, **config):
    """A random tiny checkpoint of ``task`` with the embedded model's tokenizer files (so pipelines and
    transformers' AutoTokenizer work). Classification heads get named labels; their weights are scaled
    up so predictions differ from token to token (and ties are unlikely)."""
    import torch

    from yoso_deploy.modeling import TASK_CLASSES

    labels = NER_LABELS if task == "token-classification" else CLS_LABELS
    args = dict(vocab_size=TOKENIZER_VOCAB, num_labels=len(labels), id2label=labels,
                label2id={v: k for k, v in labels.items()})
    args.update(config)
    cfg = small_config(**args)
    torch.manual_seed(seed)
    model = TASK_CLASSES[task](cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("classifier", "qa_outputs")) and p.dim() == 2:
                p.mul_(20.0)
    model.save_pretrained(str(path))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(REPO / "model" / f, path / f)
    return path


def task_exports(root) -> dict:
    """Every task: a tiny checkpoint and its export under ``root`` (no parity check)."""
    from yoso_deploy import tasks
    from yoso_deploy.workflow import export

    out = {}
    for i, task in enumerate(tasks.TASKS):
        ckpt = tiny_checkpoint(root / f"ckpt-{task}", task, seed=i)
        out[task] = export(ckpt, root / task, task=task, validate=False).output_dir
    return out
