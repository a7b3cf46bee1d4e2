#!/usr/bin/env bash
# NeMo parity step: builds (or reuses) a separate virtual environment with PyTorch (CPU) and
# nemo-toolkit[asr], installs this checkout into it, and runs tests/nemo: a tiny random Canary
# model built in NeMo, saved as .nemo, converted, and compared with NeMo (features, encoder,
# decoder log-probs, greedy AR). Kept apart from the main environment: NeMo pins its own
# versions of many packages.
#
# Usage: .ci/run_nemo.sh [extra pytest args]
# Env:   NEMO_VENV   where the environment lives (default: ~/.cache/mdm_asr_jax/venv-nemo;
#                    reused when it already imports nemo, torch and mdm_asr_jax)
#        PYTHON      interpreter for creating it (default: python3)
#        TORCH_SPEC  torch requirement (default: torch==2.13.0). On machines whose default
#                    index serves CUDA wheels, set PIP_EXTRA_INDEX_URL to the PyTorch CPU index
#                    (https://download.pytorch.org/whl/cpu) to avoid a multi-GB download.
# Time:  first run a few minutes (installing NeMo); then ~1-2 min (most of it `import nemo`
#        and JAX compiles on 2 CPU cores).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NEMO_VENV="${NEMO_VENV:-$HOME/.cache/mdm_asr_jax/venv-nemo}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

ready() {
  [ -x "$NEMO_VENV/bin/python" ] &&
    "$NEMO_VENV/bin/python" -c "import torch, nemo.collections.asr, mdm_asr_jax, pytest" \
      >/dev/null 2>&1
}

if ! ready; then
  echo "[run_nemo] building $NEMO_VENV"
  mkdir -p "$(dirname "$NEMO_VENV")"
  "$PYTHON" -m venv "$NEMO_VENV"
  PIP="$NEMO_VENV/bin/python -m pip"
  $PIP install -q --upgrade pip
  $PIP install -q "$TORCH_SPEC"
  $PIP install -q "nemo-toolkit[asr]"
  $PIP install -q -e "$ROOT" pytest
  if "$NEMO_VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
    echo "[run_nemo] note: a CUDA build of torch was installed (see TORCH_SPEC above)" >&2
  fi
elif ! "$NEMO_VENV/bin/python" -c "import mdm_asr_jax, sys; sys.exit(0 if mdm_asr_jax.__file__.startswith('$ROOT/') else 1)"; then
  # The environment exists but imports another checkout: point it at this one.
  "$NEMO_VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
fi

cd "$ROOT"
start=$(date +%s)
"$NEMO_VENV/bin/python" -m pytest -q -p no:cacheprovider tests/nemo "$@"
echo "[run_nemo] tests/nemo took $(( $(date +%s) - start )) s"
