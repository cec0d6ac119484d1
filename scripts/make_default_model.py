#!/usr/bin/env python3
"""Create the embedded default checkpoint in ``model/``: a small, randomly initialised YOSO QA model
with a WordPiece tokenizer trained on a synthetic corpus generated here.

This is the placeholder default until a trained model replaces it (the export/run/validate
pipeline only needs a valid YOSO checkpoint). Deterministic: same output for the same seed.

    python scripts/make_default_model.py [--output model] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, YosoConfig, YosoForQuestionAnswering

NAMES = ["Ada", "Bruno", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jana", "Kofi", "Lena"]
CITIES = ["Oslo", "Lima", "Accra", "Hanoi", "Quito", "Riga", "Perth", "Cairo", "Dakar", "Porto"]
ITEMS = ["lamp", "violin", "bicycle", "kettle", "map", "compass", "camera", "clock", "radio", "telescope"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]


def synthetic_corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, city, item, color = rng.choice(NAMES), rng.choice(CITIES), rng.choice(ITEMS), rng.choice(COLORS)
        year = rng.randint(1900, 2030)
        out.append(f"{name} moved to {city} in {year} and bought a {color} {item}.")
        out.append(f"Where did {name} move? What did {name} buy in {city}?")
    return out


def build_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]  # ids 0..4: [PAD] = 1 = YOSO's pad_token_id
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, cls_token="[CLS]", pad_token="[PAD]", sep_token="[SEP]",
        unk_token="[UNK]", mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", type=Path, default=Path(__file__).resolve().parent.parent / "model")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    tokenizer = build_tokenizer(synthetic_corpus(4000, args.seed), vocab_size=1000)
    config = YosoConfig(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=256, max_position_embeddings=2048, type_vocab_size=1, num_hash=32,
        hash_code_len=8, use_expectation=False, conv_window=None, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, num_labels=2,
    )
    torch.manual_seed(args.seed)
    model = YosoForQuestionAnswering(config).eval()
    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output}: {n / 1e6:.2f}M parameters, vocab {len(tokenizer)}")


if __name__ == "__main__":
    main()
