"""One Plan on one NEST kernel: the devices, the cycle and ``run`` that NEST and PyNN-NEST share.

:class:`NestNetwork` is the common part of :class:`backends.nest.NestBackend` (NEST's own API)
and :class:`backends.pynn.nest_sim.PyNNNestBackend` (PyNN populations and projections): both
build the same network, so the layout (:mod:`backends.common.layout`), the population
parameters (:func:`backends.nest.neurons.population_spec`), the devices, the per-observation
input, the reading of the recorders and the readout are written once here. A shell creates
the populations, the projections between them and the recorders, and says how to simulate
one cycle and where the recorders' events are.

The cycle (steps relative to its start, L steps per observation): a population at depth
``k`` (k neurons on the longest path from the input; every connection has delay = depth
difference, at least one step) is clamped to V_min at step k-1, restored to exactly its rest
at step k, and integrates steps k+1 .. k+T, its aligned window, which receives exactly the
window spikes of the populations feeding it. The clamp and restore pulses come from two spike
generators that fire at the end of the previous cycle, through connections whose delay is
the depth, so the layers are reset one after the other just before their windows; whatever a
layer does after its window lands on the next layer's clamp/restore steps or later and is
absorbed there. ``L = T + depth``, one more when a multimeter records (its data reaches
Python one step late), and at least ``T + 2`` (layer 1 is clamped at step L, after its
window). No state is written through the API between observations: only the new input and
the generators' time origin. Where a membrane floor holds the reset (Sinabs' min_v_mem as V_min,
:func:`backends.nest.neurons.with_floor`), nothing but the restore pulse may arrive on the restore
step, so the clocks then fire on the window's T steps only (``windowed``). A multi-spike
population is copies of each neuron whose spikes meet in a ``parrot_neuron`` relay
(:func:`backends.nest.neurons.multi_spike_spec`); where the last copy fires, :meth:`NestNetwork.run`
builds the network again with twice the copies and reruns the observation.

Devices (NEST ``spike_generator``s, ``precise_times`` off):

* ``clock_in``: fires every step; its synapse onto an input-fed neuron carries that
  observation's constant current ``W x + b`` (``current`` encoding; one weight write per
  input-fed neuron and observation).
* ``clock_bias``: fires every step; carries the biases of the other populations.
* ``clamp`` / ``restore``: the reset pulses above; ``init``: a start away from rest, a pulse
  ``d (v_init - v_leak)`` at the window's first step.
* ``clamp_early``: the clamp once more at step k-2, for a population with a refractory step
  (snnTorch's delayed zero reset, :func:`backends.nest.neurons.refractory_step`): a spike at k-2
  makes k-1 refractory, which would discard the clamp. It needs ``L >= T + 3``.
* ``inputs`` (``poisson``/``regular``): one generator per input element with that
  observation's spike times and signed weights, wired through the first synaptic layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import nir
import numpy as np
import scipy.sparse as sp
import torch

from backends.base import Readout, check_batch, plan_for_env
from backends.common.layout import Drive, NetLayout, layout, loops_into_itself
from backends.common.readout import Recorded, add_spikes, readout_arrays, spike_counts
from backends.nest import kernel
from backends.nest.neurons import (CLAMP_WEIGHT, MIN_COPIES, PopSpec, adds_exactly, grid_exponent, population_spec,
                                   same_step_current)
from exporters.plan.ir import Plan
from pipeline.encoding import encode_seeded
from pipeline.errors import UserError

#: the resets NEST lays out (exporters.plan.ir.NeuronStep): zero_next with one refractory step
RESETS = ("hard", "soft", "soft_next", "zero_next", "soft_recheck")
Events = Mapping[str, Any]  # a recorder's events: senders, times (in steps), V_m
Project = Callable[[str, str, np.ndarray, np.ndarray, np.ndarray, int], None]


def relay_name(name: str) -> str:
    """The relay population of multi-spike population ``name``."""
    return f"{name}#relay"


def relay_spec(name: str, size: int) -> PopSpec:
    """A ``parrot_neuron`` per neuron: it sends the spikes of one step as one event with their number
    as multiplicity, by which each target multiplies the weight (measured, docs/NEST.md section 6)."""
    ones = np.ones(size)
    return PopSpec(name, "parrot_neuron", size, {}, ones, ones, True, np.zeros(size), None, None, None)


@dataclass
class Generators:
    """The spike generators of one network (see the module docstring)."""

    clock_in: Any
    clock_bias: Any
    clamp: Any
    clamp_early: Any  # one step before ``clamp``, for populations whose refractory step could swallow it
    restore: Any
    init: Any
    inputs: Any | None  # one per input element for spike encodings, else None
    all: Any  # every generator: their time origin moves to each cycle's start

    @classmethod
    def create(cls, nest: Any, h: float, cycle: int, n_inputs: int | None, window: int | None = None) -> Generators:
        """``window``: the clocks fire on the window's T steps only (a fresh network per observation)."""
        every = {"spike_times": [h * j for j in range(1, (window or cycle) + 1)], "precise_times": False}
        clock_in = nest.Create("spike_generator", params=every)
        clock_bias = nest.Create("spike_generator", params=every)
        clamp = nest.Create("spike_generator", params={"spike_times": [h * (cycle - 1)], "precise_times": False})
        clamp_early = nest.Create("spike_generator", params={"spike_times": [h * (cycle - 2)], "precise_times": False})
        restore = nest.Create("spike_generator", params={"spike_times": [h * cycle], "precise_times": False})
        init = nest.Create("spike_generator", params={"spike_times": [h], "precise_times": False})
        gens = clock_in + clock_bias + clamp + clamp_early + restore + init
        inputs = None
        if n_inputs is not None:
            inputs = nest.Create("spike_generator", n_inputs, params={"precise_times": False})
            gens = gens + inputs
        return cls(clock_in, clock_bias, clamp, clamp_early, restore, init, inputs, gens)


def connect_arrays(nest: Any, pre: np.ndarray, post: np.ndarray, weight: np.ndarray, delay_ms: float,
                   receptor: int = 0) -> None:
    """``post[i] <- pre[i]`` with ``weight[i]`` (NEST units) in one ``one_to_one`` Connect."""
    if pre.size == 0:
        return
    spec = {"weight": np.ascontiguousarray(weight, dtype=np.float64), "delay": np.full(pre.size, delay_ms)}
    if receptor:
        spec["receptor_type"] = receptor
    nest.Connect(np.ascontiguousarray(pre, dtype=np.int64), np.ascontiguousarray(post, dtype=np.int64),
                 "one_to_one", syn_spec=spec)


def window_events(ev: Events, first: int, size: int, start: int, T: int,
                  key: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(neuron index, window step, value of ``key``) of the events of neurons ``first ..
    first + size - 1`` inside their window ``start .. start + T - 1`` (steps since the
    recorders' origin)."""
    senders = np.asarray(ev["senders"], dtype=np.int64)
    t = np.asarray(ev["times"], dtype=np.int64) - start
    ok = (senders >= first) & (senders < first + size) & (t >= 0) & (t < T)
    value = None if key is None else np.asarray(ev[key], dtype=np.float64)[ok]
    return senders[ok] - first, t[ok], value


class NestNetwork:
    """A Plan laid out for NEST with its devices; subclasses are the NEST and PyNN-NEST shells.

    A shell sets ``name``, ``target`` (how error lines name the simulator) and
    ``closed_message``, and implements :meth:`_build` (populations into ``self.first``,
    :meth:`_connect`, recorders, then :meth:`_warm_up`), :meth:`_simulate`,
    :meth:`_spike_events`, :meth:`_v_events` and ``close``.
    """

    name = ""
    target = "NEST"
    closed_message = ""

    def __init__(self, graph: nir.NIRGraph | Plan, *, threads: int = 1, time_steps: int | None = None,
                 dt: float | None = None, readout: str | None = None, convention: str | None = None,
                 obs_shape: tuple[int, ...] | None = None, n_actions: int | None = None):
        if int(threads) < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.plan, self.obs_shape, self.n_out = plan_for_env(
            graph, time_steps=time_steps, dt=dt, readout=readout, convention=convention, obs_shape=obs_shape,
            n_actions=n_actions)
        self.sem = self.plan.semantics
        self.T = self.sem.time_steps
        same = frozenset(op.name for op in self.plan.ops if same_step_current(op, loops_into_itself(self.plan, op.name)))
        # a multi-spike neuron is several copies whose spikes meet in a relay (neurons.multi_spike_spec)
        relayed = frozenset(op.name for op in self.plan.ops
                            if op.neuron is not None and op.neuron.spiking and op.neuron.multi_spike)
        self.net: NetLayout = layout(self.plan, self.target, loops=True, resets=RESETS, same_step=same,
                                     relayed=relayed)
        self.h = self.sem.dt * 1000.0  # ms; the kernel's own value once built
        # multi-spike populations: copies per neuron, doubled where an observation needed more (run)
        self.copies: dict[str, int] = {n: MIN_COPIES for n, p in self.net.pops.items()
                                       if p.op.neuron is not None and p.op.neuron.multi_spike}
        self.specs: dict[str, PopSpec] = self._specs(self.h)
        self.net.check_loops(self.target)
        for name in self.net.traced:
            step = self.net.pops[name].op.neuron
            if step is not None and step.spiking and step.reset == "soft_recheck":
                raise UserError(f"node {name!r} ({self.net.pops[name].op.nir_type}): readout {self.sem.readout!r} "
                                f"reads its membrane, which {self.target} holds in two populations (snnTorch's "
                                "reset_delay=False subtraction; a readout of its spikes only, e.g. rate, runs); "
                                "the reference and Lava (lava, lava-fixed) run it")
            if step is not None and step.spiking and step.multi_spike:
                raise UserError(f"node {name!r} ({self.net.pops[name].op.nir_type}): readout {self.sem.readout!r} "
                                f"reads its membrane, which {self.target} holds in several copies of each neuron "
                                "(multi-spike; a readout of its spikes only, e.g. rate, runs); the reference and "
                                "Lava (lava) run it")
            if step is not None and step.spiking and step.reset == "zero_next":
                raise UserError(f"node {name!r} ({self.net.pops[name].op.nir_type}): readout {self.sem.readout!r} "
                                f"reads its membrane, which {self.target} holds at V_reset from a spike on where "
                                "snnTorch's delayed zero reset keeps the charge one step more (a readout of its "
                                "spikes only, e.g. rate, runs); the reference and Lava (lava, lava-fixed) run it")
        self.depth = self.net.depth
        # gif_psc_exp's currents cannot be reset in place (neurons.gif_spec): a fresh network per observation,
        # driven on each population's window only, needs no reset pulses at all
        self.fresh = any(s.fresh for s in self.specs.values())
        # a membrane floor holds the reset (neurons.with_floor): the clocks drive each population on its window only
        self.windowed = self.fresh or any(s.windowed for s in self.specs.values())
        self._used = False  # fresh: the network has run an observation and must be built again
        # an early clamp lands two steps before a window: after the previous window only if L >= T + 3
        early = any(s.early_clamp for s in self.specs.values())
        self.cycle = max(self.T + self.depth + (1 if self.net.traced else 0), self.T + (3 if early else 2))
        self.first: dict[str, int] = {}  # NEST global id of each population's neuron 0
        self._overflow: set[str] = set()  # multi-spike populations whose last copy fired this observation
        self._exact: dict[str, tuple[float, list[np.ndarray]]] = {}  # multi-spike: _check_exact's bound and values
        self._input_w: dict[str, sp.csr_matrix] = {}  # multi-spike populations fed by the input: its scaled weights
        self._valid = False
        self._origin = 0  # absolute step at which the next cycle starts

    def _specs(self, h: float) -> dict[str, PopSpec]:
        """Every NEST population: the plan's, then the helpers of soft_recheck (neurons.Recheck)."""
        specs = {n: population_spec(p.op, h, p.same_step, self.copies.get(n, MIN_COPIES))
                 for n, p in self.net.pops.items()}
        specs.update({s.recheck.spec.name: s.recheck.spec for s in list(specs.values()) if s.recheck is not None})
        specs.update({relay_name(n): relay_spec(relay_name(n), self.net.pops[n].size) for n in self.copies})
        return specs

    def _use_resolution(self, h: float) -> None:
        """The kernel's resolution (ms); the decays are calibrated for it."""
        if h != self.h:
            self.specs = self._specs(h)
        self.h = h

    # ------------------------------------------------------------------ shell hooks

    def _build(self) -> None:
        raise NotImplementedError

    def _simulate(self, first: bool) -> None:
        """Simulate one cycle (``first``: the warm-up cycle right after building)."""
        raise NotImplementedError

    def _spike_events(self) -> dict[str, Events]:
        """Events of each spiking population's spike recorder since the last call (then cleared)."""
        raise NotImplementedError

    def _v_events(self) -> dict[str, Events]:
        """Events of each traced population's V_m multimeter since the last call (then cleared)."""
        raise NotImplementedError

    def _retire(self) -> None:
        self._valid = False

    # ------------------------------------------------------------------ build

    def _connect(self, project: Project) -> None:
        """Every population's drive: ``project(src, dst, pre, post, weight, delay_steps)`` for
        the synapses between populations, devices for the input, biases and resets."""
        nest = self._nest
        self.gens = Generators.create(nest, self.h, self.cycle,
                                      None if self.sem.encoding == "current" else int(np.prod(self.obs_shape)),
                                      self.T if self.windowed else None)
        self.host_matrix: dict[str, sp.csr_matrix] = {}  # input-fed population -> scaled input matrix
        self.host_const: dict[str, np.ndarray] = {}
        for name, drive in self.net.iter_drives():
            self._connect_drive(name, drive, project)
        self.in_conns = None  # the input synapses whose weights change with every observation
        if self.host_matrix:
            self.in_conns = nest.GetConnections(source=self.gens.clock_in)
            self._in_targets = np.asarray(self.in_conns.get("target"), dtype=np.int64).reshape(-1)

    def _connect_drive(self, name: str, drive: Drive, project: Project) -> None:
        """Population ``name``'s drive; a soft_recheck population's helper gets the same, and the
        connections between the two (:class:`backends.nest.neurons.Recheck`)."""
        self._wire(name, name, drive, project)
        rc = self.specs[name].recheck
        if rc is None:
            return
        helper = rc.spec.name
        self._wire(name, helper, drive, project)
        n, p = rc.spec.size, self.net.pops[name]
        ids = {"a": self.first[name] + np.arange(n), "b": self.first[helper] + np.arange(n),
               "clock": np.full(n, self.gens.clock_bias.global_id), "init": np.full(n, self.gens.init.global_id)}
        window = {"clock": p.input_depth, "init": p.depth}  # the generators' own alignment (fresh: windowed clock)
        for src, dst, jump, steps in rc.jumps:
            steps = steps or window[src]
            nz = np.nonzero(jump)[0]
            pre, post = ids[src][nz], ids[dst][nz]
            if rc.via_current is None:  # a delta synapse: the jump itself
                connect_arrays(self._nest, pre, post, jump[nz], self.h * steps)
                continue
            p21, p11 = (x[nz] for x in rc.via_current)  # a pulse pair: the current's tail cancels
            connect_arrays(self._nest, pre, post, jump[nz] / p21, self.h * steps)
            connect_arrays(self._nest, pre, post, -p11 * jump[nz] / p21, self.h * (steps + 1))

    def _wire(self, name: str, target: str, drive: Drive, project: Project) -> None:
        """``drive`` (population ``name``'s) into the NEST population ``target`` with its own spec."""
        nest, h, gens, plan = self._nest, self.h, self.gens, self.plan
        p, spec = self.net.pops[name], self.specs[target]
        n, scale, rc = spec.size, spec.scale, spec.receptor
        ids = self.first[target] + np.arange(n)
        const = np.zeros(n) if drive.const is None else np.tile(drive.const, spec.copies) * scale
        if spec.leak_bias is not None:
            const = const + spec.leak_bias
        d_in = p.input_depth  # a CubaLIF's inputs arrive one step before its window (layout.PopLayout.lag)
        if (spec.copies > 1 or spec.windowed) and spec.grid and target == name:  # multi-spike, membrane floor
            self._check_exact(name, drive, const)
        for src, mat in drive.terms.items():
            row, col, data = self._replicated(target, mat)
            w = data * scale[row]
            if src != plan.input:
                project(self._sender(src), target, col, row, w, d_in - self.net.pops[src].depth)
            elif gens.inputs is None:  # constant current: W x + b per observation, on the host
                self.host_matrix[target] = sp.csr_matrix((w, (row, col)), shape=(n, int(np.prod(self.obs_shape))))
            else:
                connect_arrays(nest, gens.inputs[0].global_id + col, ids[row], w, h * d_in, rc)
            del row, col, data, w
        for src, mat in drive.late.items():  # a loop's closing edge: one step more than a forward one
            row, col, data = self._replicated(target, mat)
            project(self._sender(src), target, col, row, data * scale[row], self.net.loop_delay(src, name, self.target))
        clock_delay = h * d_in if self.windowed else h  # windowed: the window's steps only, else every step
        if target in self.host_matrix:
            self.host_const[target] = const
            connect_arrays(nest, np.full(n, gens.clock_in.global_id), ids, const, clock_delay, rc)
        else:
            nz = np.nonzero(const)[0]
            connect_arrays(nest, np.full(nz.size, gens.clock_bias.global_id), ids[nz], const[nz], clock_delay, rc)
        if spec.init is not None:
            nz = np.nonzero(spec.init)[0]
            connect_arrays(nest, np.full(nz.size, gens.init.global_id), ids[nz], spec.init[nz], h * p.depth, rc)
        if spec.autapse is not None:
            nz = np.nonzero(spec.autapse)[0]
            connect_arrays(nest, ids[nz], ids[nz], spec.autapse[nz], h)
        if spec.cross is not None:  # multi-spike: every copy's spike reaches every copy of its neuron
            own, other = spec.cross
            k, n0 = spec.copies, p.size
            src_c, dst_c = (a.reshape(-1) for a in np.meshgrid(np.arange(k), np.arange(k), indexing="ij"))
            neuron = np.tile(np.arange(n0), k * k)
            pre, post = np.repeat(src_c, n0) * n0 + neuron, np.repeat(dst_c, n0) * n0 + neuron
            w = np.where(pre == post, own[post], other[neuron])
            connect_arrays(nest, ids[pre], ids[post], w, h)
            # the copies' spikes of a step meet in the relay, which sends them on as one event whose
            # multiplicity (the count) multiplies the weight at every target (parrot_neuron)
            relay = self.first[relay_name(target)] + np.tile(np.arange(n0), k)
            connect_arrays(nest, ids, relay, np.ones(n), h)
        if self.fresh:  # nothing reaches a population outside its window: no reset pulses
            return
        clamp = np.full(n, CLAMP_WEIGHT) if spec.clamp is None else spec.clamp
        connect_arrays(nest, np.full(n, gens.clamp.global_id), ids, clamp, h * d_in, rc)
        if spec.early_clamp:  # a spike on the step before the clamp makes that step refractory: clamp it too
            connect_arrays(nest, np.full(n, gens.clamp_early.global_id), ids, clamp, h * d_in, rc)
        connect_arrays(nest, np.full(n, gens.restore.global_id), ids, spec.restore, h * d_in, rc)

    def _check_exact(self, name: str, drive: Drive, const: np.ndarray) -> None:
        """Refuse a multi-spike population whose copies could round where the graph does not.

        Its copies reach the graph's membrane through other sums than the graph's (their own
        thresholds, then the others' jumps), which agree only where no sum rounds: every value added
        (weights, biases, thresholds, floor) on one binary grid, and every sum within 2**53 of its
        steps. Bounded from the weights' absolute sums (a source's spikes at most its copies a step),
        over T steps where no floor holds V up; the input's share is checked per observation.
        """
        p, spec = self.net.pops[name], self.specs[name]
        n0, scale = p.size, spec.scale[:p.size]
        arrays: list[np.ndarray] = [const, *spec.grid]
        total = np.abs(const[:n0])
        for src, mat in (*drive.terms.items(), *drive.late.items()):
            w = sp.csr_matrix(mat).multiply(scale[:, None]).tocsr()
            if src == self.plan.input:
                self._input_w[name] = w
                continue
            arrays.append(w.data)
            total = total + self.specs[src].copies * np.asarray(abs(w).sum(axis=1)).reshape(-1)
        step = float(total.max(initial=0.0)) + spec.copies * spec.reach  # one step's arrivals and jumps
        # with a floor V stays within reach of rest; without, it can sink by a step's input every step
        bound = step + spec.reach if spec.windowed else (self.T + 1) * step
        self._exact[name] = (bound, arrays)
        if not adds_exactly(bound, *arrays):
            raise UserError(f"node {name!r} ({p.op.nir_type}): its weights, biases and threshold do not lie on one "
                            f"binary grid fine enough for {self.target}'s {self._what(name)} to add without rounding "
                            "where the graph does (float32 values of similar size do; docs/NEST.md sections 1 and 6); "
                            "the reference and Lava (lava) run it")

    def _what(self, name: str) -> str:
        return "copies of a multi-spike neuron" if self.specs[name].copies > 1 else "membrane floor (V_min)"

    def _check_input_exact(self, name: str, current: np.ndarray | None, spikes: np.ndarray | None) -> None:
        """:meth:`_check_exact` with this observation's input (a current per neuron, or input spike values)."""
        bound, arrays = self._exact[name]
        steps = 1 if self.specs[name].windowed else self.T + 1
        if current is not None:
            extra, grid = float(np.max(np.abs(current), initial=0.0)), [current]
        else:
            w = self._input_w[name]
            top = float(np.max(np.abs(spikes), initial=0.0))
            g_w, g_s = grid_exponent(w.data), grid_exponent(spikes)
            extra = top * float(np.asarray(abs(w).sum(axis=1)).max(initial=0.0))
            grid = [] if g_w is None or g_s is None else [np.array([2.0 ** (g_w + g_s)])]
        if not adds_exactly(bound + steps * extra, *arrays, *grid):
            raise UserError(f"node {name!r}: this observation's input does not lie on a binary grid fine enough for "
                            f"{self.target}'s {self._what(name)} to add without rounding where the graph does "
                            "(docs/NEST.md sections 1 and 6; e.g. binary inputs run); the reference and Lava (lava) "
                            "run it")

    def _replicated(self, target: str, mat: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, value) of ``mat`` (target neuron x source neuron): onto each copy of a
        multi-spike target (a multi-spike source sends through its relay, one node per neuron)."""
        coo = mat.tocoo()
        k = self.specs[target].copies
        if k == 1:
            return coo.row, coo.col, coo.data
        rows = (np.arange(k)[:, None] * mat.shape[0] + coo.row[None, :]).reshape(-1)
        return rows, np.tile(coo.col, k), np.tile(coo.data, k)

    def _sender(self, src: str) -> str:
        """The NEST population whose spikes carry population ``src``'s: its relay where it has one."""
        return relay_name(src) if src in self.copies else src

    def _warm_up(self) -> None:
        """Cycle 0, without input: its clamp/restore pulses put every population at rest right
        before its window in the first real cycle (a fresh network is at rest already)."""
        if not self.fresh:
            self._cycle(np.zeros(self.obs_shape, np.float64), None, first=True)

    # ------------------------------------------------------------------ one observation

    def _set_input(self, obs: np.ndarray, s_in: np.ndarray | None, origin: int) -> None:
        kernel.set_nodes(self.gens.all, [{"origin": origin * self.h}])
        if self.in_conns is not None:
            x = obs.reshape(-1).astype(np.float64)
            w = np.zeros(int(self._in_targets.max()) + 1)
            for name, mat in self.host_matrix.items():
                first = self.first[name]
                w[first:first + mat.shape[0]] = mat @ x + self.host_const[name]
                if name in self._exact:
                    self._check_input_exact(name, w[first:first + self.net.pops[name].size], None)
            kernel.set_weights(self.in_conns, w[self._in_targets].tolist())
        if self.gens.inputs is not None:
            flat = np.zeros((self.T, int(np.prod(self.obs_shape)))) if s_in is None else s_in.reshape(self.T, -1)
            for name in self._input_w:
                self._check_input_exact(name, None, flat)
            steps = np.arange(1, self.T + 1) * self.h
            params = []
            for i in range(flat.shape[1]):
                col = flat[:, i]
                nz = np.nonzero(col)[0]
                params.append({"spike_times": steps[nz].tolist(), "spike_weights": col[nz].tolist()})
            kernel.set_nodes(self.gens.inputs, params)

    def _read(self, origin: int) -> Recorded:
        """Window counts, trains (where the readout needs them), traces and final membranes."""
        T, net = self.T, self.net
        rec = Recorded(counts={})
        trains = set(net.train_pops)
        for name, ev in self._spike_events().items():
            p = net.pops[name]
            k = self.specs[name].copies
            start = p.window_start if k == 1 else p.input_depth + 1  # the copies run a step before their relay
            ids, t, _ = window_events(ev, self.first[name], p.size * k, origin + start, T)
            if k == 1:
                add_spikes(rec, name, ids, t, p.size, T, name in trains)
                continue
            if np.any(ids >= (k - 1) * p.size):  # the last copy fired: the count may be more than k
                self._overflow.add(name)
            ids = ids % p.size  # a multi-spike neuron's count: its copies' spikes of the step
            rec.counts[name] = np.bincount(ids, minlength=p.size).astype(np.int64)
            if name in trains:
                spikes = np.zeros((T, p.size))
                np.add.at(spikes, (t, ids), 1.0)
                rec.trains[name] = spikes
        for name, ev in self._v_events().items():
            p = net.pops[name]
            ids, t, v = window_events(ev, self.first[name], p.size, origin + p.window_start, T, "V_m")
            trace = np.full((T, p.size), np.nan)
            trace[t, ids] = v
            if np.isnan(trace).any():
                raise AssertionError(f"the multimeter missed steps of {name!r}")
            offset = self.specs[name].v_offset
            if offset is not None:  # gif_psc_exp holds V relative to v_leak
                trace = trace + offset
            rec.traces[name] = trace
            final = trace[-1].copy()
            corr = self.specs[name].v_correction
            if corr is not None:  # eprop_iaf records V after its own reset: the plan's V(T)
                final = final + corr * rec.trains[name][-1]
            rec.final_v[name] = final
        return rec

    def _cycle(self, obs: np.ndarray, s_in: np.ndarray | None, timings: dict[str, float] | None = None,
               first: bool = False) -> Recorded:
        """One observation: input, one cycle of simulation, the windows read (timed apart)."""
        origin = self._origin
        t0 = time.perf_counter()
        self._set_input(obs, s_in, origin)
        t1 = time.perf_counter()
        self._simulate(first)
        t2 = time.perf_counter()
        rec = self._read(origin)
        t3 = time.perf_counter()
        self._origin = origin + self.cycle
        if timings is not None:
            timings["set_input"] += t1 - t0
            timings["simulate"] += t2 - t1
            timings["read_out"] += t3 - t2
        return rec

    def _observe(self, obs: np.ndarray, s_in: np.ndarray | None, timings: dict[str, float]) -> Recorded:
        """One observation's cycle; a fresh network is built again for every observation after its first
        (the rebuild counted as simulation time)."""
        if not self.fresh:
            return self._cycle(obs, s_in, timings)
        if self._used:
            t0 = time.perf_counter()
            self._build()
            timings["simulate"] += time.perf_counter() - t0
        self._used = True
        self._origin = 0
        return self._cycle(obs, s_in, timings, first=True)

    def _observe_whole(self, obs: np.ndarray, s_in: np.ndarray | None, timings: dict[str, float]) -> Recorded:
        """:meth:`_observe`; where a multi-spike population's last copy fired (its count may have been
        cut off), the network is built again with twice its copies and the observation run again
        (every observation starts from rest, so nothing else changes); the rebuild counts as simulation."""
        while True:
            self._overflow: set[str] = set()
            rec = self._observe(obs, s_in, timings)
            if not self._overflow:
                return rec
            t0 = time.perf_counter()
            for name in self._overflow:
                self.copies[name] *= 2
            self.specs = self._specs(self.h)
            self._check_size()
            self._origin = 0
            self._build()
            self._used = False  # a fresh network: the one just built is unused
            timings["simulate"] += time.perf_counter() - t0

    def _check_size(self) -> None:
        """A shell's check that the network (now with more copies) still fits; none by default."""

    # ------------------------------------------------------------------ public interface

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """backends.base.Backend.run: ``obs`` ``[N, *obs_shape]`` -> Readout; one cycle per observation."""
        if not self._valid:
            raise UserError(self.closed_message)
        if input_spikes is not None and self.sem.encoding == "current":
            raise UserError("input spikes were given, but the graph's input encoding is 'current'")
        obs = check_batch(obs, self.obs_shape, self.plan.input, self.T, input_spikes)
        if not np.all(np.isfinite(obs)):
            raise UserError("observations contain NaN or infinite values")
        x = torch.as_tensor(obs).to(torch.float64)
        s_in = None
        if input_spikes is not None:
            s_in = torch.as_tensor(np.asarray(input_spikes)).to(torch.float64)
        elif self.sem.encoding != "current":  # the whole batch with the graph's seed, like the reference
            s_in = encode_seeded(x, self.T, self.sem.encoding, self.sem.encoding_seed)
        timings = {"set_input": 0.0, "simulate": 0.0, "read_out": 0.0}
        x_np = x.numpy()
        s_np = None if s_in is None else s_in.numpy()
        recs = [self._observe_whole(x_np[i], None if s_np is None else s_np[:, i], timings)
                for i in range(obs.shape[0])]
        t0 = time.perf_counter()
        spikes = spike_counts(self.net, recs)
        q, action = readout_arrays(self.net, recs, x, s_in, self.n_out)
        timings["read_out"] += time.perf_counter() - t0
        return Readout(q=q, action=action, spikes=spikes, timings=timings)
