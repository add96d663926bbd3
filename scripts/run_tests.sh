#!/usr/bin/env bash
# Sets up the environment from scratch (if needed) and runs the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh test
. .venv/bin/activate
python -m pytest -q "$@"
