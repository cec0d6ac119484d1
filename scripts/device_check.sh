#!/usr/bin/env bash
# The one device check of the CUDA kernels on a real GPU (issue 17): fits in <= 8 minutes wall on the
# project's GPU machine (one H200, sm_90, 16 cores, nvcc 13, torch+CUDA) and writes
# $OUT/device_check.json, device_check.md and device_check.log (OUT unset: build/device-check-out).
#
#   scripts/device_check.sh [--steps a,b,...] [--budget-s 450] [--jobs N] [--out DIR]
#
# Steps (scripts/dev/device_check.py has the details): environment, ort_headers, build (CUDA for sm_90
# only, -j<cores>), gpu_parity (tests/gpu), cuda_graph, speed (yoso-4096 shapes, GB/s, roofline),
# torch_ops (tests/plugins/test_native_ops_cuda.py), torch_model (yoso-4096 model on CUDA with kernels="native"
# vs the CPU reference, tie-aware), memcheck / initcheck / racecheck (compute-sanitizer, small shapes).
# Every step has a timeout inside a global budget (YOSO_DEVICE_BUDGET_S, default 450 s) and the
# results are rewritten after each step, so a hang costs one step, not the run. Without a GPU every
# step that can run here runs (headers, the sm_90 build, the binaries report "no device"), every other
# one is skipped with its reason, and the exit status is 0 unless a step that ran failed.
#
# On the development machine, run it once first: that fetches the ONNX Runtime headers the build needs
# into .device/ (git-ignored, ~0.6 MB). Then, on the GPU machine (the device tool's `run`):
#   command: scripts/device_check.sh        carry: [".device"]        timeout_s: 540
# The GPU machine's python3 (with torch) runs it; the repository's sources are imported from the tree
# (PYTHONPATH), the CUDA build of libyoso_kernels.so through YOSO_KERNELS_LIBRARY.
#   YOSO_PYTHON       interpreter (default: $YOSO_VENV/bin/python, else .venv/bin/python, if it has torch; else python3)
#   YOSO_CUDA_ARCHITECTURES  (default 90)   YOSO_JOBS (default: all cores)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${YOSO_PYTHON:-}"
if [ -z "$py" ]; then
  venv_py="${YOSO_VENV:-$root/.venv}/bin/python"
  if [ -x "$venv_py" ] && "$venv_py" -c 'import torch' >/dev/null 2>&1; then
    py="$venv_py"
  else
    py=python3
  fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout --kill-after=10 "${YOSO_DEVICE_WALL_S:-480}" "$py" "$root/scripts/dev/device_check.py" "$@"
