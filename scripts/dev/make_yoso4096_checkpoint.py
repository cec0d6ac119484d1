#!/usr/bin/env python
"""Write a randomly initialised checkpoint of the uw-madison/yoso-4096 configuration.

hidden 768, 12 heads, FFN 3072, 4096 positions, num_hash 64, hash_code_len 9, LSH attention
(use_expectation false) -- the size users deploy; fewer layers (default 2) to save time. This is the
checkpoint docs/validation.md's 4096-token validation uses (tests/support/checkpoints.py makes the same).

    python scripts/dev/make_yoso4096_checkpoint.py --output ckpt-4096 [--layers 2] [--task qa] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    import torch

    from yoso_deploy.modeling import TASK_CLASSES, canonical_task, yoso_4096_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, type=Path, help="checkpoint directory to write")
    ap.add_argument("--layers", type=int, default=2, help="encoder layers (yoso-4096 has 12)")
    ap.add_argument("--task", default="qa", help="head: qa, sequence-classification, ... (default qa)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model = TASK_CLASSES[canonical_task(args.task)](yoso_4096_config(num_hidden_layers=args.layers))
    model.save_pretrained(args.output)
    print(f"wrote {args.output} ({type(model).__name__}, {args.layers} layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")


if __name__ == "__main__":
    main()
