#!/usr/bin/env bash
# Sets up the environment from scratch (if needed) and runs the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# test: pytest and the image pipelines; cluster: Ray, for the Ray backend's tests.
bash scripts/setup_env.sh test,cluster
. .venv/bin/activate
# The linter first (pyproject.toml [tool.ruff]): the tree stays clean under it.
ruff check --quiet .
python -m pytest -q -n 2 --dist loadfile "$@"
