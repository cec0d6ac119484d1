import pytest
import torch
from transformers import YosoConfig


def small_config(**kw) -> YosoConfig:
    """A tiny YOSO config (2 layers, 2 heads of 32) that runs in milliseconds on a CPU."""
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


@pytest.fixture
def config():
    return small_config()


def random_inputs(batch: int, seq: int, vocab: int = 97, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    return ids, torch.ones_like(ids)
