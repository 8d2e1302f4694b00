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
# --- the frameworks that wrote the NIR paper's graphs (benchmarks/frameworks.py) ------------
# snnTorch, Norse and Sinabs in their own folder, without their dependencies (they run on this
# environment's torch, nir and nirtorch): installed normally, Sinabs would pin nir<=1.0.4 and
# Norse a torchvision that does not load against the CPU torch. Only benchmarks/nir_paper.py and
# its test put the folder on PYTHONPATH; the project itself never imports them.
FRAMEWORKS="snntorch==1.0.0 norse==1.1.0 sinabs==3.1.3 pbr==7.1.3"
case ",${EXTRAS}," in
  *,all,*|*,frameworks,*)
    if [ "$(cat "$VENV/frameworks/.installed" 2>/dev/null)" != "$FRAMEWORKS" ]; then
      rm -rf "$VENV/frameworks"
      "$VENV/bin/pip" install --quiet --no-deps --target "$VENV/frameworks" $FRAMEWORKS
      echo "$FRAMEWORKS" > "$VENV/frameworks/.installed"
    fi ;;
esac
echo "environment ready: $VENV ($("$VENV/bin/python" --version))"
