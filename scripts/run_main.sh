#!/usr/bin/env bash
# Sets up the environment from scratch (if needed) and runs the main job.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh
. .venv/bin/activate
python -m algebranets.quickstart "$@"
