"""NEST 3.10 backend: a NIR graph (via its canonical Plan) as a NEST network, in-process.

``NestBackend(graph_or_plan, *, threads=1, time_steps=None, dt=None, readout=None,
convention=None)`` builds the network once; ``run(obs)`` presents each observation for T
steps and returns a :class:`backends.base.Readout` equal to the reference executor's in
float64 (same spike counts per layer; Q to rounding, bit-identical in practice). Anything
NEST cannot express exactly is refused with a UserError naming the node.

Neuron models (checked on NEST 3.10.0 with single neurons fed known inputs, and by
tests/test_nest.py against the reference)
------------------------------------------------------------------------------------
* ``iaf_psc_delta`` for hard reset, for non-spiking LI/I readouts (threshold 2**1000) and for
  bare Threshold nodes (no memory: decay 0). Its update is
  ``y = P30 (y0 + I_e) + P33 y + (weights of the spikes arriving)``, then ``y >= V_th`` ->
  spike, ``y = V_reset`` (t_ref = 0, y relative to E_L). I_e is never used: with
  ``P33 = 1`` (IF) NEST's ``P30 = (1 - P33) tau_m / C_m`` is exactly 0, so every constant
  current (biases, the observation's current) arrives as spike weights instead, which enter
  undecayed and unscaled. With E_L = V_leak, weights ``w gain / tau`` and
  ``P33 = exp(-h / tau_m) = 1 - 1/tau`` this is DESIGN.md's
  ``U = V + (gain I - (V - V_r)) / tau``. tau_m is calibrated per distinct tau so that
  libm's ``exp`` (the one NEST calls) returns exactly ``1 - 1/tau``: exact for 395 of the
  396 taus 1.25..100 (step 0.25) at h = 0.1 ms and 1 ms (tau 1.25: one ulp off); no leak
  uses tau_m = 1e300 (P33 == 1.0 exactly). Measured trace, tau 2, V_th 1, inputs
  .3 .6 .9 .2 0 1.5: V = .3 .75 [1.275 -> spike, 0] .2 .1 [1.55 -> spike, 0].
* ``eprop_iaf`` for soft reset: in the 3.10.0 release ``v = P_i i_in + z_in + P_v v``, then
  ``v >= V_th`` -> spike and ``v -= V_th`` **in the same step** (the model documentation
  says "in the next time step" and older sources subtract ``V_th z[t-1]`` before the test;
  the installed release does not). Measured, tau 2, same inputs:
  V = .3 .75 [1.275 -> spike, .275] .3375 .16875 [1.584375 -> spike, .584375], i.e.
  DESIGN.md's ``V = U - V_th S`` with ``U = d V + in`` — no autapse needed. A reset amount
  other than V_th, a strict ``>`` (threshold moved to ``nextafter``) and snnTorch's delayed
  subtraction (``soft_next``) add a one-step autapse of weight ``d (V_th - v_sub)`` resp.
  ``d V_th - v_sub`` (snnTorch's fixture reproduces its framework's counts exactly).
  z_in enters with factor 1 (no ``regular_spike_arrival`` switch in 3.10); c_reg = 0,
  t_ref = 0; the surrogate gradient and learning signal are computed but never read. Its
  e-prop history did not grow with static synapses: RSS stayed at 180.9 MB over 10 x 1000
  steps of 2,000 neurons (bench_nest.py records RSS across its 2,000-step IF-DSQN run too).
* Refused: CubaLIF/CubaLI (NEST integrates synaptic currents exponentially, DESIGN.md uses
  forward Euler), Sinabs multi-spike neurons, ReLU (DQN), a non-spiking node feeding
  another neuron (NEST passes spikes only), thresholds at or below the resting potential.
  NESTML was not used: it does not build against the PyPI wheel.

Delays, windows and the reset between observations
---------------------------------------------------
Every NEST connection has a delay of at least one step, so a population at depth k (k
neurons on the longest path from the input) sees its inputs k steps late. Connections get
delay = depth difference (skip connections included), population k integrates its window
steps k+1 .. k+T of each cycle, and a cycle lasts L = T + depth (+1 when a multimeter
records, whose data reaches Python one step late; at least T + 2). Spike counts are taken
inside each population's window from the spike recorder (time in steps, numpy bincount).

No neuron state is written through the API between observations (``NodeCollection.set``
costs 12-16 us per neuron here; the issue's naive version, ~8 us/neuron, was 1.5x the bare
Simulate). Instead two spike generators fire at the end of each cycle, reaching
population k (delay k) at steps k-1 and k of the next cycle: a pulse of -2**1020 that
pushes the membrane onto V_min = -2**1000 (both models clamp there), then a pulse of
``d 2**1000`` that brings it back to exactly 0 relative to E_L: in double arithmetic
``(small + d 2**1000) + d (-2**1000) == 0`` for any value a network can reach, and whatever
arrives in those two steps (late spikes of the previous observation, biases) is absorbed
the same way. No spike is emitted on the way (a threshold above the rest is required).
A layer's activity after its window reaches the next layer after that layer's window and
no later than its restore step, so no in-flight spike or leftover membrane reaches the next observation
(tests/test_nest.py runs A, B, A, B, B, A and compares with fresh networks bit for bit; with
the pulses disabled that test fails). A start away from rest (v_init != v_leak) is a third
pulse ``d (v_init - v_leak)`` at the window's first step.

Input: ``current`` — the observation's constant current into every input-fed population,
``W x + b`` on the host (float64, sparse), is the weight of a clock generator's synapse that
fires every step (one weight write per input-fed neuron and observation, ~1 us each through
``nestkernel_api``; 12,800 for the Nature CNN). ``poisson``/``regular`` — one spike
generator per input element with that observation's spike times and signed weights (from
``pipeline.encoding.encode`` with the graph's seed over the run's batch, or the trains the
caller passes), connected through the first synaptic layer like any other layer.
Readouts mirror the reference: the ops after the last population (the head) run on the host
with the reference's own functions on the spike trains of the window (rate readouts push the
mean through the head as the reference does), LI readouts are NEST populations whose V_m a
multimeter records every step, and the final membrane (tie-break, robust rate) is the
recorded V_m at the last window step (plus ``v_correction * S(T)`` for eprop variants).

Layers are expanded into explicit synapses with vectorised numpy index arithmetic
(:mod:`backends.nest.connectivity`) and array ``nest.Connect(pre, post, "one_to_one")``;
a network whose estimated memory exceeds 85 % of MemAvailable is refused before anything is
built. The estimate counts synapses from the shapes (x 72 B), neurons (x 2 KiB), build
buffers, and 32 KiB per neuron connected to the spike recorder: NEST 3.10 keeps a
connector with a first block of 1024 entries for every neuron's device connections
(measured 31.4 KB per recorded neuron, ~670 MB of the Nature CNN's ~1.1 GB). NEST holds one network per
process: building a second NestBackend retires the first (running it is then a UserError).
``benchmarks/bench_nest.py`` measures agreement, speed, build time and memory.
"""

from backends.nest.backend import NestBackend

__all__ = ["NestBackend"]
