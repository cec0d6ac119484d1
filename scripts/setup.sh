#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install yoso-deploy into it from source,
# building libyoso_ort.so on the way. Source it or run it; every other script calls it first.
#
#   YOSO_VENV       venv directory            (default: .venv in the repository)
#   PYTHON          interpreter for the venv  (default: python3, >= 3.10)
#   YOSO_TORCH      torch requirement         (default: torch==2.13.0, the CPU build on this machine's disk;
#                                              elsewhere e.g. "torch --index-url https://download.pytorch.org/whl/cpu")
#   YOSO_EXTRAS     package extras            (default: all,test -- what the README's commands and the tests
#                                              need; "" installs the bare runtime: onnxruntime, numpy,
#                                              tokenizers, click)
#   ONNXRUNTIME_ROOT  ONNX Runtime install with include/ (else system headers, else Debian's, fetched)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${YOSO_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
extras="${YOSO_EXTRAS-all,test}"

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "setup: Python >= 3.10 required ($python is $("$python" -V 2>&1))" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
# pip's own output (and the index warnings some machines print) goes to a log, shown only when a step fails.
log="${YOSO_SETUP_LOG:-$(dirname "$venv")/.setup.log}"
: > "$log"
pip_quiet() {
  if ! "$venv/bin/python" -m pip --disable-pip-version-check "$@" >>"$log" 2>&1; then
    echo "setup: 'pip $*' failed; its output (from $log):" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}
pip_quiet install -q --upgrade pip
if [[ ",$extras," == *",all,"* || ",$extras," == *",export,"* ]] && ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  echo "setup: installing ${YOSO_TORCH:-torch==2.13.0}"
  # shellcheck disable=SC2086 # YOSO_TORCH may carry pip options
  pip_quiet install -q ${YOSO_TORCH:-torch==2.13.0}
fi
# Build the wheel once (compiles libyoso_ort.so; CMake's build tree in build/ is reused), then install it:
# the same wheel serves the bare-install check (tests/package/test_bare_install.py) without a second compile.
wheel_dir="$root/build/wheel"
echo "setup: building the yoso-deploy wheel (compiles libyoso_ort.so)"
rm -rf "$wheel_dir"
pip_quiet wheel -q --no-deps -w "$wheel_dir" "$root"
wheel="$(ls "$wheel_dir"/yoso_deploy-*.whl)"
echo "setup: installing yoso-deploy${extras:+[$extras]}"
pip_quiet install -q --force-reinstall --no-deps "$wheel"
pip_quiet install -q "$wheel${extras:+[$extras]}"
"$venv/bin/python" -c 'import yoso_deploy as y; print("setup: yoso-deploy", y.__version__, "with", y.ort_library_path())'
