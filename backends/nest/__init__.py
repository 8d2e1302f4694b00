"""NEST 3.10 backend: a NIR graph (via its canonical Plan) as a NEST network, in-process.

``NestBackend(graph_or_plan, *, threads=1, time_steps=None, dt=None, readout=None,
convention=None)`` builds the network once; ``run(obs)`` presents each observation for T
steps and returns a :class:`backends.base.Readout` equal to the reference executor's in
float64 (same spike counts per layer; Q to rounding, bit-identical in practice). Anything
NEST cannot express exactly is refused with a UserError naming the node. The evidence for
the choices below (single-neuron traces, costs, memory) is in docs/NEST.md.

* :mod:`backends.nest.neurons` — docs/DESIGN.md's neuron step as ``iaf_psc_delta`` (hard reset,
  non-spiking readouts, Threshold nodes) or ``eprop_iaf`` (soft reset), with the decay
  ``exp(-h / tau_m)`` calibrated to ``1 - 1/tau`` and input weights ``gain / tau``.
* :mod:`backends.nest.devices` — what NEST and PyNN on NEST share: the cycle of
  ``L = T + depth`` steps per observation (delays = depth differences, so population k
  integrates steps k+1 .. k+T), the clamp/restore pulses that reset each layer just before
  its window, the clock that carries the input current and biases, the input spike
  generators, the reading of the recorders and ``run``.
* :mod:`backends.nest.backend` — :class:`NestBackend`, the shell on NEST's own API.
* :mod:`backends.nest.kernel` — one network per process: building a second NestBackend (or a
  PyNN-NEST build) retires the first, and running it is then a UserError.

The reset between observations: a pulse of -2**1020 pushes the membrane onto V_min =
-2**1000 (both models clamp there), then a pulse of ``d 2**1000`` brings it back to exactly 0
relative to E_L: in double arithmetic ``(small + d 2**1000) + d (-2**1000) == 0`` for any value
a network can reach, and whatever arrives in those two steps (late spikes of the previous
observation, biases) is absorbed the same way. No spike is emitted on the way (a threshold
above the rest is required). A start away from rest (v_init != v_leak) is a third pulse
``d (v_init - v_leak)`` at the window's first step.

Input: ``current`` — the observation's constant current into every input-fed population,
``W x + b`` on the host (float64, sparse), is the weight of a clock generator's synapse that
fires every step. ``poisson``/``regular`` — one spike generator per input element with that
observation's spike times and signed weights (from ``pipeline.encoding.encode`` with the
graph's seed over the run's batch, or the trains the caller passes), connected through the
first synaptic layer like any other layer. Readouts mirror the reference: the ops after the
last population (the head) run on the host through the Plan's readout tail on the spike
trains of the window (rate readouts push the mean through the head as the reference does),
LI readouts are NEST populations whose V_m a multimeter records every step, and the final
membrane (tie-break, robust rate) is the recorded V_m at the last window step (plus
``v_correction * S(T)`` for eprop variants).

Layers are expanded into explicit synapses with vectorised numpy index arithmetic
(:mod:`backends.common.sparse`) and array ``nest.Connect(pre, post, "one_to_one")``; a network
whose estimated memory exceeds 85 % of MemAvailable is refused before anything is built
(:mod:`backends.common.memory`).
"""

from backends.nest.backend import NestBackend

__all__ = ["NestBackend"]
