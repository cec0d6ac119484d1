#!/usr/bin/env bash
# The test command: set up the venv from scratch if needed (scripts/setup.sh), then run the suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k export -x
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
venv="${YOSO_VENV:-$root/.venv}"
cd "$root"
exec "$venv/bin/python" -m pytest "$@"
