#!/usr/bin/env bash
# The main job: set up, export the embedded default model for question answering, check ONNX Runtime
# against PyTorch (part of export), and answer a question with the exported model.
#   scripts/main.sh [OUTPUT_DIR]      (default: out/qa)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
venv="${YOSO_VENV:-$root/.venv}"
out="${1:-$root/out/qa}"
set -x
"$venv/bin/yoso-deploy" export --task qa --output "$out"
"$venv/bin/yoso-deploy" run --model "$out" \
  --text "Where did Ada move?" --text-pair "Ada moved to Oslo in 1999 and bought a red lamp."
