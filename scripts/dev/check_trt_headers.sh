#!/usr/bin/env bash
# Compile-check the TensorRT plugin sources (plugins/trt and their host-logic test) against a TensorRT
# header tree, in C++17 (what the build uses) and C++20, with -Wall -Wextra -Wpedantic -Werror (so
# anything deprecated or removed in those headers fails). Syntax only: no libnvinfer, no CUDA runtime.
#
#   scripts/dev/check_trt_headers.sh TENSORRT_INCLUDE_DIR [CUDA_INCLUDE_DIR]
#
# e.g. the TensorRT 11 public headers of a TensorRT release (include/), or of the TensorRT OSS
# repository's include/ at a release commit; the 10.x headers the build uses come from
# scripts/dev/fetch_trt_headers.sh. Prints one line per (standard, file) and exits 1 if any fails.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
trt="${1:?usage: scripts/dev/check_trt_headers.sh TENSORRT_INCLUDE_DIR [CUDA_INCLUDE_DIR]}"
cuda="${2:-/usr/local/cuda/include}"
[ -f "$trt/NvInfer.h" ] || { echo "check_trt_headers: no NvInfer.h in $trt" >&2; exit 2; }
[ -f "$cuda/cuda_runtime_api.h" ] || { echo "check_trt_headers: no cuda_runtime_api.h in $cuda (pass CUDA_INCLUDE_DIR)" >&2; exit 2; }
cxx="${CXX:-g++}"
version=$(awk '/#define (TRT|NV_TENSORRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? [0-9]/ {print $3}' "$trt/NvInferVersion.h" | head -3 | paste -sd.)
echo "TensorRT headers $version at $trt; $($cxx --version | head -1)"
rc=0
for std in c++17 c++20; do
  for f in plugins/trt/yoso_trt_plugin.cc plugins/trt/yoso_trt_register_static.cc \
           plugins/trt/yoso_trt_register_dynamic.cc tests/cpp/trt_host_test.cc; do
    if out=$("$cxx" -std=$std -fsyntax-only -Wall -Wextra -Wpedantic -Werror -ffp-contract=off \
              -I"$root/plugins/common" -I"$root/plugins/cuda" -I"$root/plugins/trt" -I"$root/tests/cpp" \
              -isystem "$trt" -isystem "$cuda" "$root/$f" 2>&1); then
      echo "  ok    $std $f"
    else
      echo "  FAIL  $std $f"
      echo "$out" | grep -E "error|warning" | head -20 | sed 's/^/        /'
      rc=1
    fi
  done
done
exit $rc
