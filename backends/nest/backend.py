"""NestBackend: a Plan as a NEST 3.10 network through NEST's own API, one observation per cycle.

The layout, devices, cycle and readout are :class:`backends.nest.devices.NestNetwork`'s
(shared with PyNN on NEST); this shell creates the populations (``nest.Create``), connects
them with array ``nest.Connect`` calls, records every spiking population with one spike
recorder and the traced ones with one multimeter, and refuses, before building, a network
whose estimated memory exceeds :data:`~backends.common.memory.MEMORY_FRACTION` of what is
available.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import nir
import numpy as np

from backends.common.memory import (BUILD_BYTES_PER_SYNAPSE, BYTES_PER_NEURON, BYTES_PER_RECORDED_NEURON,
                                    BYTES_PER_SYNAPSE, available_memory, fits)
from backends.nest import kernel
from backends.nest.devices import Events, NestNetwork, connect_arrays
from exporters.plan.ir import Plan
from pipeline.errors import UserError

DEVICE_SYNAPSES_PER_NEURON = 5  # clamp, restore, clock, autapse/init, multimeter


@dataclass
class MemoryEstimate:
    synapses: int
    neurons: int
    recorded: int  # neurons connected to the spike recorder
    host_synapses: int  # input matrix kept on the host (current encoding)
    bytes: int
    available: int

    def describe(self) -> str:
        gb = 2.0 ** 30
        return (f"about {self.bytes / gb:.1f} GiB ({self.synapses:,} synapses x {BYTES_PER_SYNAPSE} B, "
                f"{self.neurons:,} neurons x {BYTES_PER_NEURON // 1024} KiB, {self.recorded:,} recorded neurons x "
                f"{BYTES_PER_RECORDED_NEURON // 1024} KiB, plus build buffers)")


class NestBackend(NestNetwork):
    """Build once from a NIR graph or Plan, then ``run`` observations (backends.base.Backend)."""

    name = "nest"
    target = "NEST"
    closed_message = ("this NEST network was closed or replaced by a newer NestBackend (NEST holds one "
                      "network per process); build it again")

    def __init__(self, graph: nir.NIRGraph | Plan, *, threads: int = 1, time_steps: int | None = None,
                 dt: float | None = None, readout: str | None = None, convention: str | None = None,
                 obs_shape: tuple[int, ...] | None = None, n_actions: int | None = None):
        super().__init__(graph, threads=threads, time_steps=time_steps, dt=dt, readout=readout,
                         convention=convention, obs_shape=obs_shape, n_actions=n_actions)
        self._check_size()
        t0 = time.perf_counter()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self.build_seconds = time.perf_counter() - t0

    def _check_size(self) -> None:
        """Refuse, before building, a network that would not fit (also when more copies are needed)."""
        self.memory = self.estimate_memory()
        if not fits(self.memory.bytes, self.memory.available):
            raise UserError(f"the network does not fit in memory: it needs {self.memory.describe()}, "
                            f"{self.memory.available / 2.0**30:.1f} GiB are available")

    def estimate_memory(self) -> MemoryEstimate:
        """Synapse and neuron counts from shapes alone (nothing is built), and the bytes they need."""
        count = self.net.synapse_counts(self.copies)
        host = count.from_input if self.sem.encoding == "current" else 0
        synapses = count.between + count.from_input - host
        neurons = sum(s.size for s in self.specs.values())  # soft_recheck helpers included (not the copy of their drive)
        recorded = sum(p.size for p in self.net.spiking)
        devices = DEVICE_SYNAPSES_PER_NEURON * neurons
        total = ((synapses + devices) * BYTES_PER_SYNAPSE + neurons * BYTES_PER_NEURON
                 + recorded * BYTES_PER_RECORDED_NEURON + host * 16 + count.largest * BUILD_BYTES_PER_SYNAPSE
                 + 256 * 2**20)
        return MemoryEstimate(synapses + devices, neurons, recorded, host, int(total), available_memory())

    # ------------------------------------------------------------------ build

    def _build(self) -> None:
        nest = kernel.claim(self)
        self._nest = nest
        self._valid = True
        h_ms = self.sem.dt * 1000.0
        try:
            nest.set(resolution=h_ms, local_num_threads=self.threads)
        except Exception as exc:  # NEST's own exception types live in its kernel module
            raise UserError(f"NEST cannot use dt = {self.sem.dt:g} s as its resolution: {exc}") from None
        h = float(nest.resolution)
        if abs(h - h_ms) > 1e-9 * h_ms:
            raise UserError(f"dt = {self.sem.dt:g} s is not on NEST's time grid (multiples of "
                            f"{1.0 / nest.get('tics_per_ms'):g} ms); NEST would run at {h:g} ms")
        self._use_resolution(h)
        nest.set(min_delay=h, max_delay=h * max(self.depth + 1, 3))  # + a pulse pair's second half
        nest.SetDefaults("static_synapse", {"delay": h})
        self.nodes: dict[str, Any] = {name: self._create(name) for name in self.specs}  # helpers included
        self._connect(self._project)
        self._recorders()
        self._warm_up()
        self.n_synapses = int(nest.num_connections)

    def _create(self, name: str) -> Any:
        spec = self.specs[name]
        scalars = {k: v for k, v in spec.params.items() if not isinstance(v, np.ndarray)}
        arrays = {k: v for k, v in spec.params.items() if isinstance(v, np.ndarray)}
        if not arrays:
            nodes = self._nest.Create(spec.model, spec.size, params=scalars)
        else:  # one dict per neuron, so NEST checks V_reset < V_th on the complete set
            nodes = self._nest.Create(spec.model, spec.size)
            cols = {k: v.tolist() for k, v in arrays.items()}
            kernel.set_nodes(nodes, [dict(scalars, **{k: c[i] for k, c in cols.items()})
                                     for i in range(spec.size)])
        if spec.tau_syn is not None:  # a list parameter (one receptor), per neuron
            kernel.set_nodes(nodes, [{"tau_syn": [float(t)]} for t in spec.tau_syn])
        if spec.lists is not None:  # gif_psc_exp's spike-triggered current: one element per neuron
            cols = {k: v.tolist() for k, v in spec.lists.items()}
            kernel.set_nodes(nodes, [{k: [c[i]] for k, c in cols.items()} for i in range(spec.size)])
        ids = np.asarray(nodes.tolist(), dtype=np.int64)
        if not np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)):
            raise AssertionError("NEST returned non-contiguous node ids")
        self.first[name] = int(ids[0])
        return nodes

    def _project(self, src: str, dst: str, pre: np.ndarray, post: np.ndarray, weight: np.ndarray,
                 delay_steps: int) -> None:
        connect_arrays(self._nest, self.first[src] + pre, self.first[dst] + post, weight, self.h * delay_steps,
                       self.specs[dst].receptor)

    def _recorders(self) -> None:
        nest = self._nest
        self.spike_rec = nest.Create("spike_recorder", params={"time_in_steps": True})
        for p in self.net.spiking:
            nest.Connect(self.nodes[p.op.name], self.spike_rec)
        self.multimeter = None
        if self.net.traced:
            self.multimeter = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": self.h,
                                                                 "time_in_steps": True})
            for name in self.net.traced:
                nest.Connect(self.multimeter, self.nodes[name])

    # ------------------------------------------------------------------ one cycle

    def _simulate(self, first: bool) -> None:
        self._nest.Simulate(self.cycle * self.h)

    def _spike_events(self) -> dict[str, Events]:
        ev = kernel.events(self.spike_rec)
        kernel.clear_events(self.spike_rec)
        return {p.op.name: ev for p in self.net.spiking}

    def _v_events(self) -> dict[str, Events]:
        if self.multimeter is None:
            return {}
        ev = kernel.events(self.multimeter)
        kernel.clear_events(self.multimeter)
        return {name: ev for name in self.net.traced}

    def close(self) -> None:
        """Reset the NEST kernel (if this backend still owns it)."""
        if self._valid:
            kernel.release(self)
        self._valid = False
