#!/usr/bin/env bash
# Installs ciagan_jax (scripts/install.sh) and runs the whole test suite.
# Tests that need the real data in ../shared/data skip with a reason when it
# is absent. Extra arguments go to pytest (e.g. scripts/test.sh -k fid).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Two workers, whole files each: module fixtures (trained runs, records) are built once.
exec .venv/bin/python -m pytest -q -ra --durations=15 -n 2 --dist loadfile "$@"
