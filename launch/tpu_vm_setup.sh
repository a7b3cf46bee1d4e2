#!/usr/bin/env bash
# Copy this repository to every worker of the TPU VM and install it with JAX for TPU.
#   ./launch/tpu_vm_setup.sh            # code + Python >= 3.11 + venv + jax[tpu] + the package
#   EXTRAS=tfds ./launch/tpu_vm_setup.sh  # also TensorFlow Datasets (to build / read TFDS data)
#   PYTHON_SOURCE=deadsnakes ./launch/tpu_vm_setup.sh  # Python from the deadsnakes PPA (apt)
# Rerun after changing the code: it copies the working tree again (a tarball, no .git) and
# reinstalls into the existing ~/venv.
# Ubuntu 22.04 (the TPU VM images) ships Python 3.10, on which pip would resolve an older jax
# stack that nothing here has run; so the venv is made from Python ${PYTHON_VERSION} (>= 3.11),
# and jax[tpu]==${JAX_VERSION}, the version setup.cfg's floor names, is installed first.
set -euo pipefail
source "$(dirname "$0")/common.sh"

: "${EXTRAS:=}"
archive="$(mktemp -d)/mdm_asr_jax.tar.gz"
# Ship the project's own files: in a git checkout the tracked ones and the untracked ones git does
# not ignore (never a virtual environment, a workdir or caches); elsewhere everything but those.
if git -C "${REPO_ROOT}" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "${REPO_ROOT}" ls-files -z --cached --others --exclude-standard \
    | tar -C "${REPO_ROOT}" --null -T - -czf "${archive}"
else
  tar -C "${REPO_ROOT}" --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.pytest_cache --exclude=.ruff_cache --exclude=venv --exclude='.venv*' \
    --exclude='workdir*' -czf "${archive}" .
fi

gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:~/mdm_asr_jax.tar.gz" \
  --project="${PROJECT}" --zone="${ZONE}" --worker=all

spec="."
if [[ -n "${EXTRAS}" ]]; then
  spec=".[${EXTRAS}]"
fi
case "${PYTHON_SOURCE}" in
  uv)
    # uv: a standalone CPython build, installed per user; the venv gets pip from ensurepip.
    make_venv="command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
  export PATH=\"\$HOME/.local/bin:\$PATH\"
  uv python install ${PYTHON_VERSION}
  [ -x ~/venv/bin/python ] || uv venv --seed --python ${PYTHON_VERSION} ~/venv"
    ;;
  deadsnakes)
    # The PPA's python3.X-venv is what makes 'python3.X -m venv' work (Ubuntu splits it out).
    make_venv="sudo apt-get update -q
  sudo apt-get install -y -q software-properties-common
  sudo add-apt-repository -y ppa:deadsnakes/ppa
  sudo apt-get update -q
  sudo apt-get install -y -q python${PYTHON_VERSION} python${PYTHON_VERSION}-venv
  [ -x ~/venv/bin/python ] || python${PYTHON_VERSION} -m venv ~/venv"
    ;;
  *)
    echo "PYTHON_SOURCE=${PYTHON_SOURCE}: use uv or deadsnakes" >&2
    exit 2
    ;;
esac

tpu_ssh_all "set -e
  mkdir -p ~/${REMOTE_DIR} && tar -C ~/${REMOTE_DIR} -xzf ~/mdm_asr_jax.tar.gz
  ${make_venv}
  ~/venv/bin/python -c 'import sys; assert sys.version_info >= (3, 11), sys.version'
  ~/venv/bin/python -m pip install -q --upgrade pip
  ~/venv/bin/python -m pip install -q 'jax[tpu]==${JAX_VERSION}' \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  cd ~/${REMOTE_DIR} && ~/venv/bin/python -m pip install -q -e '${spec}' 'jax[tpu]==${JAX_VERSION}'
  ~/venv/bin/python -c 'import jax; print(jax.__version__, jax.process_index(), jax.local_device_count(), jax.device_count())'"
