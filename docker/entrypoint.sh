#!/usr/bin/env bash
# Container entrypoint (all dsqn-deploy images): write sPyNNaker's ~/.spynnaker.cfg from the
# SPINNAKER_* / SPALLOC_* environment variables (backends/pynn/spinnaker_config.py documents
# them), then run `run-backend` with the container's arguments.
#   docker run -e SPINNAKER_MACHINE=192.168.240.1 IMAGE model.nir --target pynn-spinnaker --env CartPole-v1
# A first argument that is a command on PATH (and not a file) runs that command instead, e.g.
#   docker run IMAGE inspect-nir model.nir      docker run -it IMAGE bash
set -euo pipefail
PY=${DSQN_PYTHON:-python}
# Only a SpiNNaker run needs the cfg: a bad SpiNNaker variable stops that run, and is only a note
# for every other command (inspect-nir, the NEST and Lava targets, a shell).
if ! "$PY" -m backends.pynn.spinnaker_config --write "${HOME}/.spynnaker.cfg"; then
  case " $* " in
    *spinnaker*) exit 2 ;;
  esac
  echo "note: no SpiNNaker cfg written (see above); only --target pynn-spinnaker needs one" >&2
fi
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ] && [ ! -e "$1" ] && command -v "$1" >/dev/null 2>&1; then
  exec "$@"
fi
exec run-backend "$@"
