"""What every delayed-spike simulator target shares (NEST, PyNN-NEST, SpiNNaker, its fixed-point model),
and the activity check every target gets.

No simulator is imported here.

* :mod:`backends.common.layout` — a Plan as populations with depths (delay compensation,
  observation windows), per-population drives as sparse matrices, and the host-side head.
* :mod:`backends.common.sparse` — synaptic ops as sparse matrices, their composition, and
  synapse counts from shapes alone (the memory check runs before anything is built).
* :mod:`backends.common.readout` — what a simulator recorded per observation, turned into Q
  and actions by the Plan's one readout tail (:mod:`exporters.plan.readout`).
* :mod:`backends.common.activity` — the silent/saturated-layer warning ``run-backend`` gives on
  every target, from spike counts alone.
* :mod:`backends.common.memory` — available memory and the byte costs of a NEST network.
"""
