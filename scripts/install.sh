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
# Lava: lava-nc 0.10.0 declares Requires-Python <3.11, so no resolver takes it on 3.11. The
# `lava` extra above already installed its dependencies (pinned in constraints.txt) through the
# normal resolver; here only lava-nc itself skips the Python check (--no-deps, so nothing else
# does). backends/lava/compat.py makes it import on 3.11; nothing installed is edited.
case ",${EXTRAS}," in
  *,all,*|*,lava,*)
    "$VENV/bin/pip" install --quiet -c constraints.txt --no-deps --ignore-requires-python "lava-nc==0.10.0" ;;
esac
# --- sPyNNaker (--target pynn-spinnaker) ----------------------------------------------------
# Optional and separate: it installs into the same environment (numpy<2, scipy, PyNN 0.13 as
# pinned; nothing already installed is replaced), is part of `all`, and can be left out with
# EXTRAS that name neither `all` nor `spinnaker`.
case ",${EXTRAS}," in
  *,all,*|*,spinnaker,*)
    "$VENV/bin/pip" install --quiet -c constraints.txt -e ".[spinnaker]" ;;
esac
echo "environment ready: $VENV ($("$VENV/bin/python" --version))"
