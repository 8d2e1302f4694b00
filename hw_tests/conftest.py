"""Hardware tests: they run only where a SpiNNaker machine is configured (see README.md).

The machine comes from the same variables ``--target pynn-spinnaker`` reads
(backends/pynn/spinnaker_config.py): SPINNAKER_MACHINE (+ SPINNAKER_BOARD_VERSION) or
SPALLOC_SERVER (+ SPALLOC_USER ...), or an existing ~/.spynnaker.cfg naming a machine.
A virtual board does not count: it maps but runs nothing.
"""

from __future__ import annotations

import os

import pytest

SKIP_REASON = ("no SpiNNaker machine configured: set SPINNAKER_MACHINE=<board IP> (and SPINNAKER_BOARD_VERSION) "
               "or SPALLOC_SERVER=<url> (and SPALLOC_USER) to run the hardware tests")


def configured_machine():
    """The configured real machine, or None (a virtual board, or nothing, or a broken setting)."""
    from backends.pynn.spinnaker_config import from_env, from_user_cfg
    from pipeline.errors import UserError

    if os.environ.get("SPINNAKER_VIRTUAL", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    try:
        cfg = from_env() or from_user_cfg()
    except UserError:
        return None
    return None if cfg is None or cfg.virtual else cfg


@pytest.fixture(scope="session")
def spinnaker_machine():
    cfg = configured_machine()
    if cfg is None:
        pytest.skip(SKIP_REASON)
    pytest.importorskip("spynnaker", reason="sPyNNaker is not installed (pip install -c constraints.txt "
                                            "'dsqn-deploy[spinnaker]')")
    return cfg
