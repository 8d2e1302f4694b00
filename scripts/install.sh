#!/usr/bin/env bash
# Create (if needed) and fill the project's virtual environment. Used by the Makefile, CI and
# the Docker images, so every place installs the same way.
#   scripts/install.sh [VENV_DIR]      (default .venv; PYTHON picks the interpreter)
# torch is pinned to 2.13.0 through constraints.txt: pip takes the local CPU wheel where one is
# on disk, and no torch-dependent package can swap in a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-all}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip setuptools wheel
fi
"$VENV/bin/pip" install --quiet -c constraints.txt "torch==2.13.0"
"$VENV/bin/pip" install --quiet -c constraints.txt -e ".[${EXTRAS}]"
echo "environment ready: $VENV ($("$VENV/bin/python" --version))"
