#!/usr/bin/env bash
# Creates .venv (if missing) and installs algebranets with the tested versions.
# Usage: source scripts/setup_env.sh [extras]   (e.g. "test", "test,cluster", "cluster")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
# shellcheck disable=SC1091
. "$root/.venv/bin/activate"
python -m pip install -q --upgrade pip
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
python -m pip install -q -c "$root/requirements-lock.txt" -e "$spec"
