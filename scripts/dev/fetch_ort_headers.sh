#!/usr/bin/env bash
# Fetch the ONNX Runtime C/C++ API headers (Debian trixie's libonnxruntime-dev 1.21) into a cache
# directory and print that directory (it holds include/onnxruntime/...).
#
# Used by the CMake build only when neither ONNXRUNTIME_ROOT nor system headers are available.
# It reads the Debian mirror this machine's apt already uses (no host name lives in this repo),
# keeps apt state in a private directory (the system's apt configuration is not modified), and
# verifies the pinned package's SHA-256 before unpacking.
#
# Usage: scripts/dev/fetch_ort_headers.sh [CACHE_DIR]   (default: ${XDG_CACHE_HOME:-~/.cache}/yoso-deploy)
set -euo pipefail

PKG=libonnxruntime-dev
VERSION=1.21.0+dfsg-1
SHA256=14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08
ARCH=amd64

cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/yoso-deploy}
dest="$cache/onnxruntime-headers-$VERSION"
if [ -f "$dest/include/onnxruntime/onnxruntime_c_api.h" ]; then
  echo "$dest"
  exit 0
fi

die() { echo "fetch_ort_headers: $*" >&2; exit 1; }
command -v apt-get >/dev/null || die "apt-get not found; install ONNX Runtime headers and set ONNXRUNTIME_ROOT"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found; install ONNX Runtime headers and set ONNXRUNTIME_ROOT"
[ "$(dpkg --print-architecture 2>/dev/null || echo none)" = "$ARCH" ] || die "only $ARCH is supported; set ONNXRUNTIME_ROOT"

# The Debian archive URI this machine already uses (deb822 or one-line sources).
uri=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f")
  [ -n "$uri" ] && break
done
if [ -z "$uri" ]; then
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f")
    [ -n "$uri" ] && break
  done
fi
[ -n "$uri" ] || die "no Debian archive found in /etc/apt sources; install ONNX Runtime headers and set ONNXRUNTIME_ROOT"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || die "missing $keyring (package debian-archive-keyring)"
echo "deb [signed-by=$keyring] $uri trixie main" > "$work/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Architecture=$ARCH"
      -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
apt-get "${opts[@]}" -qq update >&2 || die "apt-get update for suite trixie failed"
(cd "$work" && apt-get "${opts[@]}" -qq download "$PKG=$VERSION" >&2) || die "could not download $PKG=$VERSION"
deb=$(ls "$work"/"$PKG"_*.deb)
echo "$SHA256  $deb" | sha256sum -c --quiet - >&2 || die "checksum mismatch for $deb (expected $SHA256)"
dpkg-deb -x "$deb" "$work/x"
mkdir -p "$cache"
tmpdest=$(mktemp -d "$cache/.tmp.XXXXXX")
mkdir -p "$tmpdest/include"
cp -r "$work/x/usr/include/onnxruntime" "$tmpdest/include/"
cp "$work/x/usr/share/doc/$PKG/copyright" "$tmpdest/COPYRIGHT" 2>/dev/null || true
echo "$PKG $VERSION sha256=$SHA256" > "$tmpdest/SOURCE"
rm -rf "$dest"
mv "$tmpdest" "$dest"
echo "$dest"
