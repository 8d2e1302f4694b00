"""``--target pynn-nest``: a Plan as PyNN 0.13 populations and projections on pyNN.nest.

The network is the direct NEST backend's (:class:`backends.nest.devices.NestNetwork`: layout,
delay compensation, clamp/restore reset, devices, readout), described through PyNN
(``Population``, ``Projection``, ``record``, ``run``); NEST is used directly only where PyNN
cannot express a step-exact operation or is the bottleneck (the measurements behind each
choice: docs/SPINNAKER.md section 1 and ``benchmarks/bench_pynn.py``):

* **Cell types.** ``sim.native_cell_type("iaf_psc_delta")`` / ``("eprop_iaf")`` with the exact
  parameters of :func:`backends.nest.neurons.population_spec`: PyNN's standard
  ``IF_curr_delta`` has no variable map (initial ``v`` silently ignored, ``record('v')``
  fails) and no subtractive reset. PyNN 0.13 passes NEST's boolean defaults
  (``ignore_and_spike``) as ``numpy.bool_``, which NEST 3.10 refuses, so :func:`native` drops them.
* **Projections.** :class:`ArrayConnector` creates one projection's synapses in a single
  ``nest.Connect(pre_ids, post_ids, "one_to_one", ...)`` with numpy arrays, under the
  projection's own ``synapse_label`` (so ``Projection.get`` still works); PyNN's
  ``FromListConnector`` calls ``nest.Connect`` once per postsynaptic neuron. Weights go in
  NEST's units (mV jumps): PyNN's ``StaticSynapse`` scales weights by 1000 for native cell
  types (0.5 becomes 500), and scaling there and back is not exact in floating point.
  ``iaf_psc_delta`` and ``eprop_iaf`` take signed weights on one port, so there is one
  projection per (source, target) pair; the sign split of PyNN's standard cells
  (excitatory/inhibitory receptors) is only needed on SpiNNaker.
* **Devices.** The clock, bias, clamp/restore and input generators are NEST
  ``spike_generator``s created directly: PyNN's ``SpikeSourceArray`` on NEST goes through a
  parrot neuron, fed one step earlier, and a generator cannot fire at its origin, so it
  cannot drive a cycle's first step.
* **Recording.** ``Population.record("spikes")``/``record("V_m")``; the recorders' events are
  read as numpy arrays (time in steps) and cleared after each observation (``get_data``
  builds neo objects).
* **Time.** ``sim.run`` simulates one extra min_delay on its first call; the warm-up cycle
  asks for one step less, so every observation's cycle starts on a multiple of its length.
  Later cycles call PyNN's ``simulator.state.run`` (``nest.Simulate`` plus PyNN's device
  bookkeeping): ``sim.run`` also queries the kernel status about ten times per call.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from types import ModuleType
from typing import Any

import nir
import numpy as np

from backends.common.memory import (BUILD_BYTES_PER_SYNAPSE, BYTES_PER_NEURON, BYTES_PER_SYNAPSE, available_memory,
                                    fits)
from backends.nest import kernel
from backends.nest.devices import Events, NestNetwork
from exporters.plan.ir import Plan
from pipeline.errors import UserError


def import_pynn_nest() -> ModuleType:
    """``import pyNN.nest`` without its banner, build attempt warnings and deprecation noise."""
    os.environ.setdefault("PYNEST_QUIET", "1")
    kernel.import_nest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pyNN.nest as sim
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise UserError(f"--target pynn-nest needs PyNN 0.13 and NEST (pip install -c constraints.txt "
                        f"'dsqn-deploy[pynn]'): {exc}") from None
    return sim


_NATIVE: dict[str, type] = {}
PYNN_BYTES_PER_NEURON = 1024  # PyNN's ID object and one-node NodeCollection per neuron
DEVICE_SYNAPSES_PER_NEURON = 6


def native(sim: ModuleType, model: str) -> type:
    """PyNN's native cell type for ``model`` without the boolean defaults NEST 3.10 refuses."""
    if model not in _NATIVE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = sim.native_cell_type(model)
        # list parameters (gif_psc_exp's q_stc, tau_sfa, ...) are set in NEST directly, as one list per neuron
        keep = {k: v for k, v in base.default_parameters.items()
                if not isinstance(v, (bool, np.bool_, list, tuple, np.ndarray))}
        _NATIVE[model] = type(model, (base,), {"default_parameters": keep})
    return _NATIVE[model]


def array_connector(sim: ModuleType, pre: np.ndarray, post: np.ndarray, weight: np.ndarray, delay: float,
                    receptor: int = 0) -> Any:
    """An :class:`ArrayConnector` that PyNN accepts (it must subclass pyNN.connectors.Connector)."""
    cls = type("ArrayConnector", (ArrayConnector, sim.Connector), {})
    return cls(pre, post, weight, delay, receptor)


class ArrayConnector:
    """Connect a PyNN projection from index arrays in one NEST call (see module docstring).

    ``pre``/``post`` are indices into the projection's populations; ``weight`` in NEST's units;
    ``delay`` in ms (one value for the whole projection); ``receptor``: NEST's receptor_type (0:
    its default; a CubaLIF's iaf_psc_exp_multisynapse takes spikes on receptor 1 only).
    """

    def __init__(self, pre: np.ndarray, post: np.ndarray, weight: np.ndarray, delay: float, receptor: int = 0):
        self.pre, self.post, self.weight, self.delay = pre, post, weight, float(delay)
        self.receptor = int(receptor)

    def connect(self, projection: Any) -> None:
        import nest

        first_pre = int(projection.pre.node_collection[0].global_id)
        first_post = int(projection.post.node_collection[0].global_id)
        pre = np.ascontiguousarray(self.pre + first_pre, dtype=np.int64)
        post = np.ascontiguousarray(self.post + first_post, dtype=np.int64)
        if pre.size:
            spec = {"synapse_model": projection.nest_synapse_model,
                    "synapse_label": projection.nest_synapse_label,
                    "weight": np.ascontiguousarray(self.weight, dtype=np.float64),
                    "delay": np.full(pre.size, self.delay)}
            if self.receptor:
                spec["receptor_type"] = self.receptor
            nest.Connect(pre, post, "one_to_one", spec)
            projection._sources.update(np.unique(pre).tolist())
        projection._simulator.state.stale_connection_cache = True
        projection._connections = None


def _contiguous(nodes: Any) -> int:
    """Global id of the first node; a population made by one Create call is one id range."""
    first, last = int(nodes[0].global_id), int(nodes[-1].global_id)
    if last - first + 1 != len(nodes):
        raise AssertionError("NEST returned non-contiguous node ids")
    return first


class PyNNNestBackend(NestNetwork):
    """Build once from a NIR graph or Plan on pyNN.nest; ``run`` observations (backends.base.Backend)."""

    name = "pynn-nest"
    target = "pyNN.nest"
    closed_message = ("this pyNN.nest network was closed or replaced by a newer NEST or PyNN build (NEST "
                      "holds one network per process); build it again")

    def __init__(self, graph: nir.NIRGraph | Plan, *, threads: int = 1, time_steps: int | None = None,
                 dt: float | None = None, readout: str | None = None, convention: str | None = None,
                 obs_shape: tuple[int, ...] | None = None, n_actions: int | None = None):
        super().__init__(graph, threads=threads, time_steps=time_steps, dt=dt, readout=readout,
                         convention=convention, obs_shape=obs_shape, n_actions=n_actions)
        self._check_memory()
        t0 = time.perf_counter()
        self._build()
        self.build_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ build

    def _check_size(self) -> None:
        self._check_memory()

    def _check_memory(self) -> None:
        """Refuse, before building, a network that would not fit: the direct NEST backend's
        costs per synapse and neuron, plus PyNN's per-neuron ID objects."""
        count = self.net.synapse_counts(self.copies)
        synapses = count.between + count.from_input
        neurons = sum(s.size for s in self.specs.values())  # soft_recheck helpers included
        need = (synapses + DEVICE_SYNAPSES_PER_NEURON * neurons) * BYTES_PER_SYNAPSE \
            + neurons * (BYTES_PER_NEURON + PYNN_BYTES_PER_NEURON) + count.largest * BUILD_BYTES_PER_SYNAPSE \
            + 384 * 2**20
        have = available_memory()
        if not fits(need, have):
            raise UserError(f"the network does not fit in memory on pyNN.nest: about {need / 2.0**30:.1f} GiB "
                            f"({synapses:,} synapses, {neurons:,} neurons), {have / 2.0**30:.1f} GiB available")

    def _build(self) -> None:
        sim = import_pynn_nest()
        self.sim = sim
        nest = kernel.claim(self)  # one network per process: retires a NestBackend or older PyNN build
        self._nest = nest
        self._valid = True
        h_ms = self.sem.dt * 1000.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                sim.setup(timestep=h_ms, min_delay=h_ms, max_delay=h_ms * max(self.depth + 1, 3),
                          spike_precision="on_grid", threads=self.threads, verbosity="error")
            except Exception as exc:  # NEST's kernel errors have no importable common type
                raise UserError(f"NEST cannot use dt = {self.sem.dt:g} s as its resolution: {exc}") from None
            h = float(nest.resolution)
            if abs(h - h_ms) > 1e-9 * h_ms:
                raise UserError(f"dt = {self.sem.dt:g} s is not on NEST's time grid; NEST would run at {h:g} ms")
            self._use_resolution(h)
            self.pops: dict[str, Any] = {name: self._population(name) for name in self.specs}  # helpers included
            self.projections: dict[tuple[str, str], Any] = {}
            self._connect(self._project)
            self._recorders()
        self.n_synapses = int(nest.num_connections)
        self._warm_up()  # PyNN adds one step to its first run (see _simulate)

    def _population(self, name: str) -> Any:
        spec = self.specs[name]
        if spec.model == "parrot_neuron":  # a multi-spike population's relay (devices.relay_spec): no parameters
            pop = self.sim.Population(spec.size, native(self.sim, spec.model)(), label=name)
            self.first[name] = _contiguous(pop.node_collection)
            return pop
        params = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) else float(v))
                  for k, v in spec.params.items() if k != "V_m"}
        e_l = params["E_L"]
        cls = native(self.sim, spec.model)
        if not isinstance(e_l, np.ndarray):  # start at rest through the type's default (one initialize)
            cls = type(spec.model, (cls,), {"default_initial_values": dict(cls.default_initial_values, V_m=e_l)})
        celltype = cls(**params)
        # PyNN logs a warning per eprop_iaf learning variable it cannot initialise (we need none)
        pynn_log = logging.getLogger("PyNN")
        level = pynn_log.level
        pynn_log.setLevel(logging.ERROR)
        try:
            pop = self.sim.Population(spec.size, celltype, label=name)
            if isinstance(e_l, np.ndarray):
                pop.initialize(V_m=e_l)
        finally:
            pynn_log.setLevel(level)
        self.first[name] = _contiguous(pop.node_collection)
        if spec.tau_syn is not None:  # a list parameter (one receptor), per neuron, set in NEST directly
            kernel.set_nodes(pop.node_collection, [{"tau_syn": [float(t)]} for t in spec.tau_syn])
        if spec.lists is not None:  # gif_psc_exp's spike-triggered current, set in NEST directly
            cols = {k: v.tolist() for k, v in spec.lists.items()}
            kernel.set_nodes(pop.node_collection, [{k: [c[i]] for k, c in cols.items()} for i in range(spec.size)])
        return pop

    def _project(self, src: str, dst: str, pre: np.ndarray, post: np.ndarray, weight: np.ndarray,
                 delay_steps: int) -> None:
        self.projections[(src, dst)] = self.sim.Projection(
            self.pops[src], self.pops[dst],
            array_connector(self.sim, pre, post, weight, self.h * delay_steps, self.specs[dst].receptor),
            self.sim.StaticSynapse(), label=f"{src}->{dst}")

    def _recorders(self) -> None:
        self.spike_devices: dict[str, Any] = {}
        self.v_devices: dict[str, Any] = {}
        for p in self.net.spiking:
            pop = self.pops[p.op.name]
            pop.record("spikes")
            dev = pop.recorder._spike_detector.device
            dev.set(time_in_steps=True)
            self.spike_devices[p.op.name] = dev
        for name in self.net.traced:
            pop = self.pops[name]
            pop.record("V_m", sampling_interval=self.h)
            dev = pop.recorder._multimeter.device
            dev.set(time_in_steps=True)
            self.v_devices[name] = dev

    # ------------------------------------------------------------------ one cycle

    def _simulate(self, first: bool) -> None:
        if first:  # PyNN's run: connects recorders, and simulates one min_delay more on its first call
            self.sim.run((self.cycle - 1) * self.h)
            end = int(round(self._nest.biological_time / self.h))
            if end != self.cycle:
                raise AssertionError(f"the first cycle ended at step {end}, not {self.cycle}")
        else:  # PyNN's state.run: nest.Simulate without run_until's kernel-status queries
            self.sim.simulator.state.run(self.cycle * self.h)

    def _spike_events(self) -> dict[str, Events]:
        return {name: _take(dev) for name, dev in self.spike_devices.items()}

    def _v_events(self) -> dict[str, Events]:
        return {name: _take(dev) for name, dev in self.v_devices.items()}

    def close(self) -> None:
        """Reset the NEST kernel (if this build still owns it) and remove PyNN's temporary folders."""
        if self._valid:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.sim.end()
            kernel.release(self)
        self._valid = False


def _take(device: Any) -> Events:
    """A recorder's events, then cleared."""
    ev = kernel.events(device)
    kernel.clear_events(device)
    return ev
