#!/usr/bin/env bash
# The main job: set up, export the embedded default model for question answering (the export
# checks ONNX Runtime against PyTorch), validate it with polygraphy, and answer a question with it
# through ONNX Runtime.
#   scripts/main.sh [OUTPUT_DIR]      (default: out/qa)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
venv="${YOSO_VENV:-$root/.venv}"
out="${1:-$root/out/qa}"
set -x
"$venv/bin/yoso-deploy" export --task qa --output "$out"
"$venv/bin/yoso-deploy" validate --model "$out" --batch 1,4 --seq-len 16,128,512
"$venv/bin/yoso-deploy" qa --model "$out" --question "Where did Clara move?" \
  --context "Clara moved to Oslo in 1999 and bought a red lamp. Otto moved to Lima in 2004."
