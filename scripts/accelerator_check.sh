#!/usr/bin/env bash
# The accelerator check (scripts/accelerator_check.py; issue 10 §5) on a GPU or TPU machine.
#
# On a normal GPU/TPU machine (the package installed with `pip install -e .` and a jax with its
# accelerator plugin), from the repository root:
#
#   bash scripts/accelerator_check.sh            # about 7.5 minutes; writes BENCHMARKS.md
#
# On this workplace's device machine (one H200, python3 3.12 with jax 0.11.2 + CUDA 13, optax,
# orbax-checkpoint, numpy, tqdm, matplotlib, absl-py, pyyaml, tabulate, protobuf; no network;
# missing of setup.py's install_requires: dm-haiku, ml-collections, tensorboardX and haiku's
# jmp), first here, once, in the repository root (needs the package index):
#
#   bash scripts/accelerator_check.sh --prepare-wheels     # -> .whl/ (git-ignored, ~0.6 MB)
#
# then the device tool's run with
#
#   command:   bash scripts/accelerator_check.sh
#   carry:     [".whl"]
#   timeout_s: 540
#
# (the check's budget is 450 s, --budget to change; PYTHONUNBUFFERED output). The results come
# back under $OUT: accelerator_check.md (the BENCHMARKS.md block), accelerator_check.json,
# accelerator_check.log (this output) and BENCHMARKS.md. Bring the block home with
#
#   python scripts/accelerator_check.py --merge <files_at>/accelerator_check.md
#
# Arguments other than --prepare-wheels go to accelerator_check.py (e.g. --reduced for the CPU
# mode, --sections resnet50,transformer_xl, --algebras r,m2r).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"

# The packages the device image lacks, at the versions of requirements-lock.txt. All four are
# pure-Python wheels; their own requirements (absl-py, numpy, tabulate, pyyaml, packaging,
# protobuf) are in the image.
DEVICE_MISSING=(dm-haiku jmp ml_collections tensorboardX)

if [[ "${1:-}" == "--prepare-wheels" ]]; then
  rm -rf .whl && mkdir -p .whl
  specs=()
  for name in "${DEVICE_MISSING[@]}"; do
    pin="$(grep -i -E "^${name//[-_]/[-_]}==" requirements-lock.txt | head -1)"
    [[ -n "$pin" ]] || { echo "no pin for $name in requirements-lock.txt" >&2; exit 1; }
    specs+=("$pin")
  done
  "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d .whl "${specs[@]}" || exit 1
  ls -l .whl
  exit 0
fi

if compgen -G ".whl/*.whl" >/dev/null; then
  site="${ACCELERATOR_CHECK_SITE:-/tmp/site}"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# A rerun on the same (warm) machine takes its compiled programs from this cache, so it gets
# further in the budget; its "compile s" columns then show cache loads.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/accelerator_check_jax_cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-1}"
export ACCELERATOR_CHECK_COMMAND="bash scripts/accelerator_check.sh${*:+ $*}"
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  "$python" scripts/accelerator_check.py "$@" 2>&1 | tee "$OUT/accelerator_check.log"
  exit "${PIPESTATUS[0]}"
fi
exec "$python" scripts/accelerator_check.py "$@"
