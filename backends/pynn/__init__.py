"""PyNN 0.13 backends: ``--target pynn-nest`` (pyNN.nest) and ``--target pynn-spinnaker`` (sPyNNaker).

The simulator-independent network (populations, depths for delay compensation, drives as
sparse matrices, the host-side readout head) is :mod:`backends.common`, shared with ``--target nest``.

* :mod:`backends.pynn.nest_sim` — :class:`PyNNNestBackend`, exact (docs/DESIGN.md) on pyNN.nest: a
  shell over :class:`backends.nest.devices.NestNetwork`, like the direct NEST backend.
* :mod:`backends.pynn.spinnaker` — :class:`PyNNSpiNNakerBackend`: the same network on a SpiNNaker
  machine through sPyNNaker, run in a worker process (virtual board: mapping only).
* :mod:`backends.pynn.fixedpoint` — sPyNNaker's neuron update in s16.15 fixed point (numpy), to
  measure the deviation from the reference where no board is available (docs/SPINNAKER.md).

Simulators are imported lazily: importing this package imports neither NEST nor sPyNNaker.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The backend classes, imported on first use (PEP 562): NEST loads only for pyNN.nest."""
    if name == "PyNNNestBackend":
        from backends.pynn.nest_sim import PyNNNestBackend

        return PyNNNestBackend
    if name == "PyNNSpiNNakerBackend":
        from backends.pynn.spinnaker import PyNNSpiNNakerBackend

        return PyNNSpiNNakerBackend
    raise AttributeError(f"module 'backends.pynn' has no attribute {name!r}")


__all__ = ["PyNNNestBackend", "PyNNSpiNNakerBackend"]
