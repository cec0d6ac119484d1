#!/usr/bin/env bash
# Compile the GPU code for CI on any machine with a CUDA toolkit -- no GPU and no TensorRT needed:
#   * the CUDA kernels (plugins/cuda) for every YOSO_CUDA_ARCHITECTURES (default 80;86;89;90),
#   * libyoso_ort.so with the CUDA execution provider ops,
#   * the TensorRT plugins: against TENSORRT_ROOT if set (real libraries), else against TensorRT's
#     public headers fetched for COMPILE CHECKS ONLY (scripts/dev/fetch_trt_headers.sh); the libraries
#     are then linked without libnvinfer into <build>/plugins/trt-compile-only/,
#   * the native tests (tests/cpp, tests/gpu),
# all with warnings as errors (host: -Werror, nvcc: -Werror=all-warnings); then checks the exported
# and undefined symbols of the libraries and runs the tests that need no GPU (ctest; the GPU test
# reports "skipped" without a device).
#
# Usage: scripts/dev/build_gpu_code.sh [BUILD_DIR]     (default: build/gpu-code)
#   YOSO_JOBS                parallel jobs (default 2)
#   YOSO_CUDA_ARCHITECTURES  override the architectures
#   TENSORRT_ROOT            a real TensorRT install (links libnvinfer; installs the plugins)
#   CMAKE_CUDA_COMPILER / CUDACXX  nvcc to use (default: PATH, /usr/local/cuda, /usr/local/cuda-*)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build/gpu-code}"
jobs="${YOSO_JOBS:-2}"
t0=$(date +%s)

args=(-DCMAKE_BUILD_TYPE=Release -DYOSO_WARNINGS_AS_ERRORS=ON -DYOSO_BUILD_CUDA=ON -DYOSO_BUILD_TRT=ON
      -DYOSO_BUILD_TESTS=ON)
[ -n "${YOSO_CUDA_ARCHITECTURES:-}" ] && args+=("-DYOSO_CUDA_ARCHITECTURES=$YOSO_CUDA_ARCHITECTURES")
[ -n "${TENSORRT_ROOT:-}" ] && args+=("-DTENSORRT_ROOT=$TENSORRT_ROOT")
[ -n "${CMAKE_CUDA_COMPILER:-}" ] && args+=("-DCMAKE_CUDA_COMPILER=$CMAKE_CUDA_COMPILER")

echo "== configure ($build)"
cmake -S "$root" -B "$build" "${args[@]}"
echo "== build (-j$jobs)"
cmake --build "$build" -j "$jobs"
t1=$(date +%s)

fail() { echo "build_gpu_code: FAILED: $*" >&2; exit 1; }

# Dynamic symbols a library defines / needs, minus the C/C++ runtime's.
exported() { nm -D --defined-only "$1" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort; }
undefined() {
  nm -D --undefined-only "$1" | awk '{print $NF}' | grep -v -E '@|^_ITM_|^__gmon_start__$|^__cxa_finalize$' | sort || true
}
expect_exports() {
  local lib=$1; shift
  local want got
  want=$(printf '%s\n' "$@" | sed '/^$/d' | sort)
  got=$(exported "$lib")
  [ "$got" = "$want" ] || fail "$(basename "$lib") exports [$(echo $got)], expected [$(echo $want)]"
}
expect_undefined() {
  local lib=$1; shift
  local want got
  want=$(printf '%s\n' "$@" | sed '/^$/d' | sort)
  got=$(undefined "$lib")
  [ "$got" = "$want" ] || fail "$(basename "$lib") leaves [$(echo $got)] undefined, expected [$(echo $want)]"
}

echo "== symbol checks"
p="$build/plugins"
expect_exports "$p/libyoso_ort.so" RegisterCustomOps
expect_undefined "$p/libyoso_ort.so"
expect_exports "$p/libyoso_kernels.so" yoso_fast_hash yoso_fast_hash_workspace_size yoso_kernels_abi_version \
  yoso_kernels_build_info yoso_kernels_has_cuda yoso_lsh_cumulation yoso_lsh_cumulation_workspace_size
expect_undefined "$p/libyoso_kernels.so"
grep -q '"cuda": true' "$p/yoso_ort_build.json" || fail "yoso_ort_build.json does not say \"cuda\": true"
if [ -f "$p/libyoso_trt.so" ]; then
  trt_static="$p/libyoso_trt.so"; trt_dyn="$p/libyoso_trt_dyn.so"
  expect_undefined "$trt_static"   # libnvinfer linked
else
  trt_static="$p/trt-compile-only/libyoso_trt_COMPILE_ONLY.so"; trt_dyn="$p/trt-compile-only/libyoso_trt_dyn_COMPILE_ONLY.so"
  # compile-only: exactly the two libnvinfer functions REGISTER_TENSORRT_PLUGIN / the log sink use
  expect_undefined "$trt_static" getLogger getPluginRegistry
fi
expect_exports "$trt_static"
expect_exports "$trt_dyn" getCreators setLoggerFinder
expect_undefined "$trt_dyn"
for lib in "$p/libyoso_ort.so" "$p/libyoso_kernels.so" "$trt_static" "$trt_dyn"; do
  if ldd "$lib" | grep -q -E 'libcudart|libnvinfer_plugin'; then fail "$(basename "$lib") depends on $(ldd "$lib" | grep -E 'libcudart|libnvinfer_plugin')"; fi
done
if command -v cuobjdump >/dev/null 2>&1; then
  archs=$(cuobjdump --list-elf "$p/libyoso_ort.so" | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')
  echo "   SASS in libyoso_ort.so: $archs"
fi

echo "== tests without a GPU (ctest)"
ctest --test-dir "$build" --output-on-failure
t2=$(date +%s)
echo "build_gpu_code: OK (configure+build $((t1 - t0))s, checks+tests $((t2 - t1))s, total $((t2 - t0))s)"
