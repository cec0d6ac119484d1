#!/usr/bin/env bash
# Fetch the TensorRT 10.14 public C++ headers FOR COMPILE CHECKS ONLY into a cache directory and
# print that directory (it holds include/NvInfer.h ...).
#
# This is NOT a TensorRT installation: there is no libnvinfer, no runtime, no parser -- only the
# public API headers (Apache-2.0) that the PyPI wheel kernel-lens==2.0.1 happens to ship under
# kernel_lens/include/tensorrt/. The CMake build uses them, when no real TensorRT is found
# (TENSORRT_ROOT), to compile-check the TensorRT plugins (plugins/trt) and to build the host-logic
# unit tests; the plugin libraries it links then are labelled compile-only and are not installed.
#
# The wheel is fetched with this machine's pip configuration (no index URL lives in this repo) and
# its SHA-256 is verified before anything is unpacked.
#
# Usage: scripts/dev/fetch_trt_headers.sh [CACHE_DIR]   (default: ${XDG_CACHE_HOME:-~/.cache}/yoso-deploy)
#   PYTHON  interpreter with pip (default: the first of python3, python with a working pip)
set -euo pipefail

PKG=kernel-lens
VERSION=2.0.1
WHEEL=kernel_lens-2.0.1-py3-none-any.whl
SHA256=07cc714e8b5e7f34b672f7c7fad93febe7c747be5837ba276b1527370134ffe0
TRT_VERSION=10.14.1

cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/yoso-deploy}
dest="$cache/tensorrt-headers-$TRT_VERSION-compile-only-kernel-lens-$VERSION"
if [ -f "$dest/include/NvInfer.h" ] && [ -f "$dest/include/NvInferRuntime.h" ]; then
  echo "$dest"
  exit 0
fi

die() { echo "fetch_trt_headers: $*" >&2; exit 1; }

py=""
for cand in "${PYTHON:-}" python3 python; do
  [ -n "$cand" ] || continue
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -m pip --version >/dev/null 2>&1; then
    py="$cand"
    break
  fi
done
[ -n "$py" ] || die "no Python with pip found (set PYTHON); or point TENSORRT_ROOT at a TensorRT install"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$PKG==$VERSION" >&2 \
  || die "pip could not download $PKG==$VERSION"
whl="$work/$WHEEL"
[ -f "$whl" ] || die "pip did not produce $WHEEL"
echo "$SHA256  $whl" | sha256sum -c --quiet - >&2 || die "checksum mismatch for $WHEEL (expected $SHA256)"

"$py" - "$whl" "$work/x" <<'PYEOF' || die "cannot unpack $WHEEL"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    members = [n for n in z.namelist() if n.startswith("kernel_lens/include/tensorrt/") and n.endswith(".h")]
    if not members:
        sys.exit("no kernel_lens/include/tensorrt/*.h in the wheel")
    z.extractall(sys.argv[2], members)
PYEOF

src="$work/x/kernel_lens/include/tensorrt"
[ -f "$src/NvInfer.h" ] || die "$WHEEL has no NvInfer.h"
grep -q "#define TRT_MAJOR_ENTERPRISE 10" "$src/NvInferVersion.h" \
  && grep -q "#define TRT_MINOR_ENTERPRISE 14" "$src/NvInferVersion.h" \
  || die "unexpected TensorRT version in $WHEEL (want $TRT_VERSION)"

mkdir -p "$cache"
tmpdest=$(mktemp -d "$cache/.tmp.XXXXXX")
mkdir -p "$tmpdest/include"
cp "$src"/*.h "$tmpdest/include/"
cat > "$tmpdest/SOURCE" <<EOF
TensorRT $TRT_VERSION public API headers for COMPILE CHECKS ONLY (no libnvinfer, no runtime).
Taken from the PyPI wheel $PKG==$VERSION ($WHEEL, sha256=$SHA256), kernel_lens/include/tensorrt/.
The headers carry NVIDIA's Apache-2.0 license notice.
EOF
rm -rf "$dest"
mv "$tmpdest" "$dest"
echo "$dest"
