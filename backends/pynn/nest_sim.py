"""``--target pynn-nest``: a Plan as PyNN 0.13 populations and projections on pyNN.nest.

The network is described through PyNN (``Population``, ``Projection``, ``record``,
``run``); NEST is used directly only where PyNN cannot express a step-exact operation or is
the bottleneck. Each choice was measured on this machine (numbers in docs/SPINNAKER.md
section 1 and ``benchmarks/bench_pynn.py``):

* **Cell types.** ``sim.native_cell_type("iaf_psc_delta")`` / ``("eprop_iaf")`` with the exact
  parameters of :func:`backends.nest.neurons.population_spec` (the direct NEST backend's,
  so both builds are the same network): PyNN's standard ``IF_curr_delta`` has no variable map
  (initial ``v`` silently ignored, ``record('v')`` fails) and no subtractive reset. PyNN 0.13
  passes NEST's boolean defaults (``ignore_and_spike``) as ``numpy.bool_``, which NEST 3.10
  refuses, so :func:`native` drops them.
* **Projections.** :class:`ArrayConnector` creates one projection's synapses in a single
  ``nest.Connect(pre_ids, post_ids, "one_to_one", ...)`` with numpy arrays, under the
  projection's own ``synapse_label`` (so ``Projection.get`` still works). PyNN's
  ``FromListConnector`` calls ``nest.Connect`` once per postsynaptic neuron, after copying and
  translating a parameter space for it (~60 s for the Nature CNN in a first look). Weights go in NEST's units (mV jumps): PyNN's ``StaticSynapse`` scales
  weights by 1000 for native cell types (0.5 becomes 500), and scaling there and back is not
  exact in floating point. ``iaf_psc_delta`` and ``eprop_iaf`` take signed weights on one port,
  so there is one projection per (source, target) pair; the sign split of PyNN's standard
  cells (excitatory/inhibitory receptors) is only needed on SpiNNaker.
* **Devices.** The per-step clock that carries the input current and biases, the clamp and
  restore pulses that reset every layer between observations, and the input spike trains are
  NEST ``spike_generator``s created directly (``precise_times`` off). PyNN's
  ``SpikeSourceArray`` on NEST goes through a parrot neuron, fed one step earlier, and a
  generator cannot fire at its origin, so it cannot drive a cycle's first step.
* **Recording.** ``Population.record("spikes")``/``record("V_m")``; the recorders' events are
  read as numpy arrays (time in steps) and cleared after each observation. ``get_data``
  builds neo objects (0.8 s for all layers at T 64 in a first look).
* **Time.** ``sim.run`` simulates one extra min_delay on its first call; the warm-up cycle
  asks for one step less, so every observation's cycle starts on a multiple of its length.
  Later cycles call PyNN's ``simulator.state.run`` (``nest.Simulate`` plus PyNN's device
  bookkeeping): ``sim.run`` queries the kernel status about ten times per call, 2.5 ms per
  CartPole step, more than the simulation itself.

Delay compensation, the clamp/restore reset between observations and the readout are the
direct NEST backend's (``backends/nest``): see :mod:`backends.pynn.layout`.
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
import torch

from backends.base import Readout, check_batch, plan_for_env
from backends.nest import kernel
from backends.nest.backend import BUILD_BYTES_PER_SYNAPSE, BYTES_PER_NEURON, BYTES_PER_SYNAPSE, available_memory
from backends.nest.neurons import CLAMP_WEIGHT, PopSpec, population_spec
from backends.pynn.layout import NetLayout, layout
from backends.pynn.readout import Recorded, q_values
from exporters.canonical import Plan
from pipeline.encoding import encode
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
MEMORY_FRACTION = 0.85  # of MemAvailable


def native(sim: ModuleType, model: str) -> type:
    """PyNN's native cell type for ``model`` without the boolean defaults NEST 3.10 refuses."""
    if model not in _NATIVE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = sim.native_cell_type(model)
        keep = {k: v for k, v in base.default_parameters.items() if not isinstance(v, (bool, np.bool_))}
        _NATIVE[model] = type(model, (base,), {"default_parameters": keep})
    return _NATIVE[model]


def array_connector(sim: ModuleType, pre: np.ndarray, post: np.ndarray, weight: np.ndarray, delay: float) -> Any:
    """An :class:`ArrayConnector` that PyNN accepts (it must subclass pyNN.connectors.Connector)."""
    cls = type("ArrayConnector", (ArrayConnector, sim.Connector), {})
    return cls(pre, post, weight, delay)


class ArrayConnector:
    """Connect a PyNN projection from index arrays in one NEST call (see module docstring).

    ``pre``/``post`` are indices into the projection's populations; ``weight`` in NEST's units;
    ``delay`` in ms (one value for the whole projection).
    """

    def __init__(self, pre: np.ndarray, post: np.ndarray, weight: np.ndarray, delay: float):
        self.pre, self.post, self.weight, self.delay = pre, post, weight, float(delay)

    def connect(self, projection: Any) -> None:
        import nest

        first_pre = int(projection.pre.node_collection[0].global_id)
        first_post = int(projection.post.node_collection[0].global_id)
        pre = np.ascontiguousarray(self.pre + first_pre, dtype=np.int64)
        post = np.ascontiguousarray(self.post + first_post, dtype=np.int64)
        if pre.size:
            nest.Connect(pre, post, "one_to_one",
                         {"synapse_model": projection.nest_synapse_model,
                          "synapse_label": projection.nest_synapse_label,
                          "weight": np.ascontiguousarray(self.weight, dtype=np.float64),
                          "delay": np.full(pre.size, self.delay)})
            projection._sources.update(np.unique(pre).tolist())
        projection._simulator.state.stale_connection_cache = True
        projection._connections = None


def _contiguous(nodes: Any) -> int:
    """Global id of the first node; a population made by one Create call is one id range."""
    first, last = int(nodes[0].global_id), int(nodes[-1].global_id)
    if last - first + 1 != len(nodes):
        raise AssertionError("NEST returned non-contiguous node ids")
    return first


class PyNNNestBackend:
    """Build once from a NIR graph or Plan on pyNN.nest; ``run`` observations (backends.base.Backend)."""

    name = "pynn-nest"

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
        self.net: NetLayout = layout(self.plan, "pyNN.nest")
        h_ms = self.sem.dt * 1000.0
        self.specs: dict[str, PopSpec] = {n: population_spec(p.op, h_ms) for n, p in self.net.pops.items()}
        self.depth = self.net.depth
        # the last window must end one step before the cycle does when a multimeter records it
        # (its data reaches Python one step late); layer 1 is clamped at step L (after its window)
        self.cycle = max(self.T + self.depth + (1 if self.net.traced else 0), self.T + 2)
        self._check_memory()
        self._valid = False
        t0 = time.perf_counter()
        self._build()
        self.build_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ build

    def _check_memory(self) -> None:
        """Refuse, before building, a network that would not fit: the direct NEST backend's
        measured costs per synapse and neuron, plus PyNN's per-neuron ID objects."""
        synapses, largest = self.net.count_synapses()
        neurons = sum(p.size for p in self.net.pops.values())
        need = (synapses + 6 * neurons) * BYTES_PER_SYNAPSE + neurons * (BYTES_PER_NEURON + PYNN_BYTES_PER_NEURON) \
            + largest * BUILD_BYTES_PER_SYNAPSE + 384 * 2**20
        have = available_memory()
        if need > MEMORY_FRACTION * have:
            raise UserError(f"the network does not fit in memory on pyNN.nest: about {need / 2.0**30:.1f} GiB "
                            f"({synapses:,} synapses, {neurons:,} neurons), {have / 2.0**30:.1f} GiB available")

    def _retire(self) -> None:
        self._valid = False

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
                sim.setup(timestep=h_ms, min_delay=h_ms, max_delay=h_ms * max(self.depth, 2),
                          spike_precision="on_grid", threads=self.threads, verbosity="error")
            except Exception as exc:  # NEST's kernel errors have no importable common type
                raise UserError(f"NEST cannot use dt = {self.sem.dt:g} s as its resolution: {exc}") from None
            self.h = float(nest.resolution)
            if abs(self.h - h_ms) > 1e-9 * h_ms:
                raise UserError(f"dt = {self.sem.dt:g} s is not on NEST's time grid; NEST would run at {self.h:g} ms")
            if self.h != h_ms:
                self.specs = {n: population_spec(p.op, self.h) for n, p in self.net.pops.items()}
            self.pops: dict[str, Any] = {}
            self.first: dict[str, int] = {}
            for name in self.net.pops:
                self._population(name)
            self._generators()
            self._projections()
            self._recorders()
        self.n_synapses = int(nest.num_connections)
        # warm-up cycle without input: its clamp/restore pulses put every population at rest
        # right before its window in the first real cycle. PyNN adds one step to its first run.
        self._run_cycle(np.zeros(self.obs_shape), None, first=True)

    def _population(self, name: str) -> None:
        spec = self.specs[name]
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
        self.pops[name] = pop
        self.first[name] = _contiguous(pop.node_collection)

    def _generators(self) -> None:
        nest, h, L = self._nest, self.h, self.cycle
        every = {"spike_times": [h * j for j in range(1, L + 1)], "precise_times": False}
        self.clock_in = nest.Create("spike_generator", params=every)
        self.clock_bias = nest.Create("spike_generator", params=every)
        self.clamp = nest.Create("spike_generator", params={"spike_times": [h * (L - 1)], "precise_times": False})
        self.restore = nest.Create("spike_generator", params={"spike_times": [h * L], "precise_times": False})
        self.init = nest.Create("spike_generator", params={"spike_times": [h], "precise_times": False})
        gens = self.clock_in + self.clock_bias + self.clamp + self.restore + self.init
        self.input_gens = None
        if self.sem.encoding != "current":
            self.input_gens = nest.Create("spike_generator", int(np.prod(self.obs_shape)),
                                          params={"precise_times": False})
            gens = gens + self.input_gens
        self.generators = gens

    def _device_connect(self, pre: np.ndarray, post: np.ndarray, weight: np.ndarray, delay_steps: int) -> None:
        if pre.size == 0:
            return
        self._nest.Connect(np.ascontiguousarray(pre, dtype=np.int64), np.ascontiguousarray(post, dtype=np.int64),
                           "one_to_one", syn_spec={"weight": np.ascontiguousarray(weight, dtype=np.float64),
                                                   "delay": np.full(pre.size, self.h * delay_steps)})

    def _projections(self) -> None:
        plan, net = self.plan, self.net
        self.projections: dict[tuple[str, str], Any] = {}
        self.host_matrix: dict[str, Any] = {}
        self.host_const: dict[str, np.ndarray] = {}
        n_in = int(np.prod(self.obs_shape))
        for name, drive in net.drives().items():
            p, spec = net.pops[name], self.specs[name]
            n, scale = spec.size, spec.scale
            ids = self.first[name] + np.arange(n)
            const = np.zeros(n) if drive.const is None else drive.const * scale
            for src, mat in drive.terms.items():
                coo = mat.tocoo()
                w = coo.data * scale[coo.row]
                if src == plan.input:
                    if self.input_gens is None:  # constant current: W x + b per observation, on the host
                        import scipy.sparse as sp

                        self.host_matrix[name] = sp.csr_matrix((w, (coo.row, coo.col)), shape=(n, n_in))
                    else:
                        self._device_connect(self.input_gens[0].global_id + coo.col, ids[coo.row], w, p.depth)
                    continue
                delay = self.h * (p.depth - net.pops[src].depth)
                self.projections[(src, name)] = self.sim.Projection(
                    self.pops[src], self.pops[name], array_connector(self.sim, coo.col, coo.row, w, delay),
                    self.sim.StaticSynapse(), label=f"{src}->{name}")
            if name in self.host_matrix:
                self.host_const[name] = const
                self._device_connect(np.full(n, self.clock_in.global_id), ids, const, 1)
            else:
                nz = np.nonzero(const)[0]
                self._device_connect(np.full(nz.size, self.clock_bias.global_id), ids[nz], const[nz], 1)
            self._device_connect(np.full(n, self.clamp.global_id), ids, np.full(n, CLAMP_WEIGHT), p.depth)
            self._device_connect(np.full(n, self.restore.global_id), ids, spec.restore, p.depth)
            if spec.init is not None:
                nz = np.nonzero(spec.init)[0]
                self._device_connect(np.full(nz.size, self.init.global_id), ids[nz], spec.init[nz], p.depth)
            if spec.autapse is not None:
                nz = np.nonzero(spec.autapse)[0]
                self._device_connect(ids[nz], ids[nz], spec.autapse[nz], 1)
        self.in_conns = None
        if self.host_matrix:
            conns = self._nest.GetConnections(source=self.clock_in)
            self.in_conns = conns
            self._in_targets = np.asarray(conns.get("target"), dtype=np.int64).reshape(-1)

    def _recorders(self) -> None:
        net = self.net
        self.spike_devices: dict[str, Any] = {}
        self.v_devices: dict[str, Any] = {}
        for p in net.spiking:
            pop = self.pops[p.op.name]
            pop.record("spikes")
            dev = pop.recorder._spike_detector.device
            dev.set(time_in_steps=True)
            self.spike_devices[p.op.name] = dev
        for name in net.traced:
            pop = self.pops[name]
            pop.record("V_m", sampling_interval=self.h)
            dev = pop.recorder._multimeter.device
            dev.set(time_in_steps=True)
            self.v_devices[name] = dev

    # ------------------------------------------------------------------ one observation

    def _set_input(self, obs: np.ndarray, s_in: np.ndarray | None, origin: int) -> None:
        kernel.set_nodes(self.generators, [{"origin": origin * self.h}])
        if self.in_conns is not None:
            x = obs.reshape(-1).astype(np.float64)
            w = np.zeros(int(self._in_targets.max()) + 1)
            for name, mat in self.host_matrix.items():
                first = self.first[name]
                w[first:first + mat.shape[0]] = mat @ x + self.host_const[name]
            kernel.set_weights(self.in_conns, w[self._in_targets].tolist())
        if self.input_gens is not None:
            flat = np.zeros((self.T, int(np.prod(self.obs_shape)))) if s_in is None else s_in.reshape(self.T, -1)
            steps = np.arange(1, self.T + 1) * self.h
            params = []
            for i in range(flat.shape[1]):
                col = flat[:, i]
                nz = np.nonzero(col)[0]
                params.append({"spike_times": steps[nz].tolist(), "spike_weights": col[nz].tolist()})
            kernel.set_nodes(self.input_gens, params)

    def _read(self, origin: int) -> Recorded:
        T, net = self.T, self.net
        rec = Recorded(counts={})
        for name, dev in self.spike_devices.items():
            p = net.pops[name]
            ev = kernel.events(dev)
            kernel.clear_events(dev)
            senders = np.asarray(ev["senders"], dtype=np.int64) - self.first[name]
            t_loc = np.asarray(ev["times"], dtype=np.int64) - origin - p.window_start
            ok = (t_loc >= 0) & (t_loc < T)
            senders, t_loc = senders[ok], t_loc[ok]
            rec.counts[name] = np.bincount(senders, minlength=p.size).astype(np.int64)
            if name in net.leaf_pops or name in net.traced:
                train = np.zeros((T, p.size))
                train[t_loc, senders] = 1.0
                rec.trains[name] = train
        for name, dev in self.v_devices.items():
            p = net.pops[name]
            ev = kernel.events(dev)
            kernel.clear_events(dev)
            snd = np.asarray(ev["senders"], dtype=np.int64) - self.first[name]
            tl = np.asarray(ev["times"], dtype=np.int64) - origin - p.window_start
            ok = (tl >= 0) & (tl < T)
            trace = np.full((T, p.size), np.nan)
            trace[tl[ok], snd[ok]] = np.asarray(ev["V_m"], dtype=np.float64)[ok]
            if np.isnan(trace).any():
                raise AssertionError(f"the multimeter missed steps of {name!r}")
            rec.traces[name] = trace
            v = trace[-1].copy()
            corr = self.specs[name].v_correction
            if corr is not None:  # eprop_iaf records V after its own reset: the plan's V(T)
                v = v + corr * rec.trains[name][-1]
            rec.final_v[name] = v
        return rec

    def _run_cycle(self, obs: np.ndarray, s_in: np.ndarray | None, timings: dict[str, float] | None = None,
                   first: bool = False) -> Recorded:
        origin = 0 if first else self._origin
        t0 = time.perf_counter()
        self._set_input(obs, s_in, origin)
        t1 = time.perf_counter()
        if first:  # PyNN's run: connects recorders, and simulates one min_delay more on its first call
            self.sim.run((self.cycle - 1) * self.h)
            self._origin = int(round(self._nest.biological_time / self.h))
            if self._origin != self.cycle:
                raise AssertionError(f"the first cycle ended at step {self._origin}, not {self.cycle}")
        else:  # PyNN's state.run: nest.Simulate without run_until's ~10 kernel-status queries (2.5 ms)
            self.sim.simulator.state.run(self.cycle * self.h)
            self._origin += self.cycle
        t2 = time.perf_counter()
        rec = self._read(origin)
        t3 = time.perf_counter()
        if timings is not None:
            timings["set_input"] += t1 - t0
            timings["simulate"] += t2 - t1
            timings["read_out"] += t3 - t2
        return rec

    # ------------------------------------------------------------------ public interface

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """backends.base.Backend.run: ``obs`` ``[N, *obs_shape]`` -> Readout; one cycle per observation."""
        if not self._valid:
            raise UserError("this pyNN.nest network was closed or replaced by a newer NEST or PyNN build (NEST "
                            "holds one network per process); build it again")
        if input_spikes is not None and self.sem.encoding == "current":
            raise UserError("input spikes were given, but the graph's input encoding is 'current'")
        obs = check_batch(obs, self.obs_shape, self.plan.input, self.T, input_spikes)
        if not np.all(np.isfinite(obs)):
            raise UserError("observations contain NaN or infinite values")
        n = obs.shape[0]
        x = torch.as_tensor(obs).to(torch.float64)
        s_in = None
        if input_spikes is not None:
            s_in = torch.as_tensor(np.asarray(input_spikes)).to(torch.float64)
        elif self.sem.encoding != "current":
            s_in = encode(x, self.T, self.sem.encoding, torch.Generator().manual_seed(self.sem.encoding_seed))
        timings = {"set_input": 0.0, "simulate": 0.0, "read_out": 0.0}
        x_np = x.numpy()
        s_np = None if s_in is None else s_in.numpy()
        recs = [self._run_cycle(x_np[i], None if s_np is None else s_np[:, i], timings) for i in range(n)]
        t0 = time.perf_counter()
        spikes = {p.op.name: (np.stack([r.counts[p.op.name] for r in recs]) if recs
                              else np.zeros((0, p.size), np.int64)).reshape(n, *p.op.out_shape)
                  for p in self.net.spiking}
        if n:
            q, action = q_values(self.net, recs, x, s_in)
        else:
            q, action = np.zeros((0, self.n_out)), np.zeros((0,), np.int64)
        timings["read_out"] += time.perf_counter() - t0
        return Readout(q=q, action=action, spikes=spikes, timings=timings)

    def close(self) -> None:
        """Reset the NEST kernel (if this build still owns it) and remove PyNN's temporary folders."""
        if self._valid:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.sim.end()
            kernel.release(self)
        self._valid = False
