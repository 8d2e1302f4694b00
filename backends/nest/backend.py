"""NestBackend: a Plan as a NEST 3.10 network, run one observation per simulation cycle.

See the package docstring for the model choice and the evidence; this module holds the
network layout (which op becomes what, pipeline depth, the cycle), the memory check, the
build, and the per-observation loop.

The cycle (steps relative to the cycle's start, L steps per observation): a population at
depth ``k`` (k neurons on the longest path from the input, delays of one step each) is
clamped to V_min at step k-1, restored to exactly its rest at step k, and integrates
steps k+1 .. k+T — its aligned window, which receives exactly the window spikes of the
populations feeding it (connection delay = depth difference). The clamp and restore pulses
come from two spike generators that fire at the end of the previous cycle, through
connections whose delay is the depth, so the layers are reset one after the other just
before their windows; everything a layer does after its window lands on the next layer's
clamp/restore steps or later and is absorbed there. No state is written through the API
between observations: only the new input and the generators' time origin.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import scipy.sparse as sp
import torch

from backends.base import Readout, check_batch, plan_for_env, spiking_populations
from backends.nest import kernel
from backends.nest.connectivity import (Form, add_forms, apply_op, estimate_add, estimate_apply)
from backends.nest.neurons import CLAMP_WEIGHT, PopSpec, population_spec
from backends.reference.ops import per_step, reduce_time
from exporters.canonical import SYNAPSES, Op, Plan
from pipeline.encoding import encode
from pipeline.errors import UserError
from pipeline.models import greedy_action

# Memory model, measured with NEST 3.10 on this machine (bench_nest.py reports the real peak):
# RSS per static_synapse 38-53 B after Connect plus ~19 B at the first Simulate, per neuron
# 0.7-1.9 KB, and 31.4 KB per neuron connected to a spike recorder (NEST keeps a connector
# with a first block of 1024 entries per neuron for its device connections); host arrays
# while building: COO indices + weights + CSR copies ~ 48 B per synapse of the largest layer.
BYTES_PER_SYNAPSE = 72
BYTES_PER_NEURON = 2048
BYTES_PER_RECORDED_NEURON = 32 * 1024
BUILD_BYTES_PER_SYNAPSE = 48
MEMORY_FRACTION = 0.85  # of MemAvailable


def available_memory() -> int:
    """Bytes the build may use: MemAvailable (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


@dataclass
class Population:
    op: Op
    spec: PopSpec
    depth: int
    sources: set[str]
    first: int = 0  # NEST global id of neuron 0
    nodes: Any = None

    @property
    def window_start(self) -> int:  # first step of the window, relative to the cycle start
        return self.depth + 1


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


@dataclass
class CycleResult:
    counts: np.ndarray  # all spiking populations, concatenated
    trains: dict[str, np.ndarray] = field(default_factory=dict)  # [T, n] of tail-leaf populations
    traces: dict[str, np.ndarray] = field(default_factory=dict)  # [T, n] recorded V_m


def _tensor_params(op: Op) -> dict[str, Any]:
    return {k: (torch.as_tensor(v, dtype=torch.float64) if isinstance(v, np.ndarray) else v)
            for k, v in op.params.items()}


class NestBackend:
    """Build once from a NIR graph or Plan, then ``run`` observations (backends.base.Backend)."""

    name = "nest"

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
        self._valid = False
        self._layout()
        self.memory = self.estimate_memory()
        if self.memory.bytes > MEMORY_FRACTION * self.memory.available:
            raise UserError(f"the network does not fit in memory: it needs {self.memory.describe()}, "
                            f"{self.memory.available / 2.0**30:.1f} GiB are available")
        t0 = time.perf_counter()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self.build_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ layout (no NEST)

    def _layout(self) -> None:
        plan = self.plan
        byname = {op.name: op for op in plan.ops}
        pop_ops = spiking_populations(plan, "NEST")
        # which ops feed a population (these become NEST connections)
        upstream: set[str] = set()
        stack = [i for op in pop_ops for i in op.inputs]
        while stack:
            name = stack.pop()
            if name in upstream:
                continue
            op = byname[name]
            if op.kind in SYNAPSES:
                upstream.add(name)
                stack.extend(op.inputs)
        self._upstream = [op.name for op in plan.ops if op.name in upstream]
        # sources and depth of every population, in plan (topological) order
        sources: dict[str, set[str]] = {plan.input: {plan.input}}
        depth: dict[str, int] = {plan.input: 0}
        self.pops: dict[str, Population] = {}
        h_ms = self.sem.dt * 1000.0
        for op in plan.ops:
            if op.kind == "input" or op.kind == "output":
                continue
            if op.kind in SYNAPSES:
                if op.name in upstream:
                    sources[op.name] = set().union(*(sources[i] for i in op.inputs))
                continue
            if op.kind not in ("neuron", "threshold"):
                continue
            src = set().union(*(sources[i] for i in op.inputs))
            for s in src:
                if s in self.pops and not self.pops[s].spec.spiking:
                    raise UserError(f"node {op.name!r}: its input comes from the membrane of the non-spiking node "
                                    f"{s!r}; NEST neurons pass on spikes only")
            spec = population_spec(op, h_ms)  # h only sets tau_m here; the kernel's h is checked in _build
            d = 1 + max(depth[s] for s in src)
            self.pops[op.name] = Population(op, spec, d, src)
            sources[op.name] = {op.name}
            depth[op.name] = d
        self.depth = max(p.depth for p in self.pops.values())
        self.spiking = [p for p in self.pops.values() if p.spec.spiking]
        # the readout: ops after the populations run on the host with the reference's own code
        self.src = plan.readout_source
        self.pushdown = (self.sem.reduce == "mean" and self.src.kind in ("affine", "linear")
                         and self.sem.membrane_divisor == 0.0)
        tail: list[str] = []
        leaves: set[str] = set()
        stack = [self.src.name]
        while stack:
            name = stack.pop()
            if name in self.pops or name == plan.input:
                leaves.add(name)
                continue
            if name not in tail:
                tail.append(name)
                stack.extend(byname[name].inputs)
        self.tail = [op for op in plan.ops if op.name in tail]
        self.leaf_pops = [n for n in self.pops if n in leaves]
        # rate readout of one spiking layer: the reference's mean over t of 0/1 spikes is
        # count / T exactly (an exact integer sum, one correctly rounded division), so the
        # per-step trains are not needed
        self.mean_from_counts = (self.pushdown and len(self.src.inputs) == 1 and self.src.inputs[0] in self.pops
                                 and self.pops[self.src.inputs[0]].spec.spiking)
        self.train_pops = [n for n in self.leaf_pops if self.pops[n].spec.spiking and not self.mean_from_counts]
        self.need_membrane = bool(self.sem.membrane_divisor) or self.sem.tiebreak == "membrane"
        if self.sem.tiebreak == "membrane" and self.src.name not in self.pops:
            raise UserError(f"readout {self.sem.readout} breaks ties by membrane, but {self.src.name!r} has none")
        self.traced = [n for n in self.leaf_pops if not self.pops[n].spec.spiking]
        if self.need_membrane and self.src.name in self.pops and self.src.name not in self.traced:
            self.traced.append(self.src.name)
        # cycle length: the last window must end one step before the cycle does when a multimeter
        # records it (its data reaches Python one step late), and layer 1 is clamped at step L of
        # the cycle, which must come after its window (k=1: steps 2..T+1)
        self.cycle = max(self.T + self.depth + (1 if self.traced else 0), self.T + 2)

    def estimate_memory(self) -> MemoryEstimate:
        """Synapse and neuron counts from shapes alone (nothing is built), and the bytes they need."""
        plan = self.plan
        sizes = {plan.input: int(np.prod(self.obs_shape))}
        sizes.update({n: p.spec.size for n, p in self.pops.items()})
        est: dict[str, dict[str, tuple[int, int]]] = {plan.input: {plan.input: (sizes[plan.input], 1)}}
        synapses = host = largest = 0
        for op in plan.ops:
            if op.name in self.pops:
                drive = estimate_add([est[i] for i in op.inputs])
                est[op.name] = {op.name: (sizes[op.name], 1)}
                for s, (nnz, _) in drive.items():
                    if s == plan.input and self.sem.encoding == "current":
                        host += nnz
                    else:
                        synapses += nnz
                    largest = max(largest, nnz)
            elif op.name in self._upstream:
                est[op.name] = estimate_apply(op, estimate_add([est[i] for i in op.inputs]), sizes)
                largest = max(largest, *(v[0] for v in est[op.name].values()))
        neurons = sum(p.spec.size for p in self.pops.values())
        recorded = sum(p.spec.size for p in self.spiking)
        devices = 5 * neurons  # clamp, restore, clock, autapse/init, multimeter
        total = ((synapses + devices) * BYTES_PER_SYNAPSE + neurons * BYTES_PER_NEURON
                 + recorded * BYTES_PER_RECORDED_NEURON + host * 16 + largest * BUILD_BYTES_PER_SYNAPSE + 256 * 2**20)
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
        self.h = float(nest.resolution)
        if abs(self.h - h_ms) > 1e-9 * h_ms:
            raise UserError(f"dt = {self.sem.dt:g} s is not on NEST's time grid (multiples of "
                            f"{1.0 / nest.get('tics_per_ms'):g} ms); NEST would run at {self.h:g} ms")
        nest.set(min_delay=self.h, max_delay=self.h * max(self.depth, 2))
        nest.SetDefaults("static_synapse", {"delay": self.h})
        for p in self.pops.values():
            if self.h != h_ms:
                p.spec = population_spec(p.op, self.h)
            self._create(p)
        self._generators()
        self._connect()
        self._recorders()
        self._origin = 0  # absolute step at which the next cycle starts
        # cycle 0 runs with no input: its only purpose is to send the clamp/restore pulses that
        # put every population at rest right before its window in the first real cycle
        self._cycle(np.zeros(self.obs_shape, np.float64), None)
        self.n_synapses = int(nest.num_connections)

    def _create(self, p: Population) -> None:
        nest = self._nest
        scalars = {k: v for k, v in p.spec.params.items() if not isinstance(v, np.ndarray)}
        arrays = {k: v for k, v in p.spec.params.items() if isinstance(v, np.ndarray)}
        if not arrays:
            p.nodes = nest.Create(p.spec.model, p.spec.size, params=scalars)
        else:  # one dict per neuron, so NEST checks V_reset < V_th on the complete set
            p.nodes = nest.Create(p.spec.model, p.spec.size)
            cols = {k: v.tolist() for k, v in arrays.items()}
            kernel.set_nodes(p.nodes, [dict(scalars, **{k: c[i] for k, c in cols.items()})
                                       for i in range(p.spec.size)])
        ids = np.asarray(p.nodes.tolist(), dtype=np.int64)
        if not np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)):
            raise AssertionError("NEST returned non-contiguous node ids")
        p.first = int(ids[0])

    def _generators(self) -> None:
        nest, h, L = self._nest, self.h, self.cycle
        self.clock_in = nest.Create("spike_generator", params={"spike_times": [h * j for j in range(1, L + 1)]})
        self.clock_bias = nest.Create("spike_generator", params={"spike_times": [h * j for j in range(1, L + 1)]})
        self.clamp = nest.Create("spike_generator", params={"spike_times": [h * (L - 1)]})
        self.restore = nest.Create("spike_generator", params={"spike_times": [h * L]})
        self.init = nest.Create("spike_generator", params={"spike_times": [h]})
        gens = self.clock_in + self.clock_bias + self.clamp + self.restore + self.init
        self.input_gens = None
        if self.sem.encoding != "current":
            self.input_gens = nest.Create("spike_generator", int(np.prod(self.obs_shape)))
            gens = gens + self.input_gens
        self.generators = gens

    def _connect_arrays(self, pre: np.ndarray, post: np.ndarray, weight: np.ndarray, delay_steps: int) -> None:
        if pre.size == 0:
            return
        self._nest.Connect(np.ascontiguousarray(pre, dtype=np.int64), np.ascontiguousarray(post, dtype=np.int64),
                           "one_to_one", syn_spec={"weight": np.ascontiguousarray(weight, dtype=np.float64),
                                                   "delay": np.full(pre.size, self.h * delay_steps)})

    def _connect(self) -> None:
        plan = self.plan
        forms: dict[str, Form] = {plan.input: Form({plan.input: None})}
        upstream = set(self._upstream)
        self.host_matrix: dict[str, sp.csr_matrix] = {}  # input-fed population -> scaled input matrix
        self.host_const: dict[str, np.ndarray] = {}
        n_in = int(np.prod(self.obs_shape))
        for op in plan.ops:
            if op.name in upstream:
                forms[op.name] = apply_op(op, add_forms([forms[i] for i in op.inputs], int(np.prod(op.in_shape))))
                continue
            if op.name not in self.pops:
                continue
            p = self.pops[op.name]
            n = p.spec.size
            drive = add_forms([forms[i] for i in op.inputs], n)
            forms[op.name] = Form({op.name: None})
            scale = p.spec.scale
            const = np.zeros(n) if drive.const is None else np.broadcast_to(drive.const, (n,)) * scale
            for src, m in drive.terms.items():
                mat = sp.identity(n, format="csr") if m is None else m
                coo = mat.tocoo()
                w = coo.data * scale[coo.row]
                if src == plan.input:
                    if self.input_gens is None:  # constant current, computed per observation on the host
                        self.host_matrix[op.name] = sp.csr_matrix((w, (coo.row, coo.col)), shape=(n, n_in))
                        continue
                    pre = self.input_gens[0].global_id + coo.col
                    self._connect_arrays(pre, p.first + coo.row, w, p.depth)
                else:
                    q = self.pops[src]
                    self._connect_arrays(q.first + coo.col, p.first + coo.row, w, p.depth - q.depth)
                del coo, w
            ids = p.first + np.arange(n)
            if op.name in self.host_matrix:
                self.host_const[op.name] = const
                self._connect_arrays(np.full(n, self.clock_in.global_id), ids, const, 1)
            else:
                nz = np.nonzero(const)[0]
                self._connect_arrays(np.full(nz.size, self.clock_bias.global_id), ids[nz], const[nz], 1)
            spec = p.spec
            self._connect_arrays(np.full(n, self.clamp.global_id), ids, np.full(n, CLAMP_WEIGHT), p.depth)
            self._connect_arrays(np.full(n, self.restore.global_id), ids, spec.restore, p.depth)
            if spec.init is not None:
                nz = np.nonzero(spec.init)[0]
                self._connect_arrays(np.full(nz.size, self.init.global_id), ids[nz], spec.init[nz], p.depth)
            if spec.autapse is not None:
                nz = np.nonzero(spec.autapse)[0]
                self._connect_arrays(ids[nz], ids[nz], spec.autapse[nz], 1)
        del forms
        # the input synapses whose weights change with every observation, in target order
        self.in_conns = None
        if self.host_matrix:
            conns = self._nest.GetConnections(source=self.clock_in)
            targets = np.asarray(conns.get("target"), dtype=np.int64).reshape(-1)
            self.in_conns = conns
            self._in_targets = targets

    def _recorders(self) -> None:
        nest = self._nest
        total = max(p.first + p.spec.size for p in self.pops.values()) + 1
        self._slot = np.full(total, -1, dtype=np.int64)  # global id -> index into the count vector
        self._start = np.zeros(total, dtype=np.int64)  # global id -> first window step
        self._offsets: dict[str, int] = {}
        k = 0
        for p in self.spiking:
            self._slot[p.first:p.first + p.spec.size] = np.arange(k, k + p.spec.size)
            self._offsets[p.op.name] = k
            k += p.spec.size
        for p in self.pops.values():
            self._start[p.first:p.first + p.spec.size] = p.window_start
        self._n_spiking = k
        self.spike_rec = nest.Create("spike_recorder", params={"time_in_steps": True})
        for p in self.spiking:
            nest.Connect(p.nodes, self.spike_rec)
        self.multimeter = None
        if self.traced:
            self.multimeter = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": self.h,
                                                                 "time_in_steps": True})
            for name in self.traced:
                nest.Connect(self.multimeter, self.pops[name].nodes)

    # ------------------------------------------------------------------ one observation

    def _set_input(self, obs: np.ndarray, s_in: np.ndarray | None) -> None:
        kernel.set_nodes(self.generators, [{"origin": self._origin * self.h}])
        if self.in_conns is not None:
            x = obs.reshape(-1).astype(np.float64)
            w = np.zeros(self._slot.size)
            for name, mat in self.host_matrix.items():
                p = self.pops[name]
                w[p.first:p.first + p.spec.size] = mat @ x + self.host_const[name]
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

    def _read(self) -> CycleResult:
        T, base = self.T, self._origin
        ev = kernel.events(self.spike_rec)
        kernel.clear_events(self.spike_rec)
        senders = np.asarray(ev["senders"], dtype=np.int64)
        t_loc = np.asarray(ev["times"], dtype=np.int64) - base - self._start[senders]
        ok = (t_loc >= 0) & (t_loc < T)
        senders, t_loc = senders[ok], t_loc[ok]
        counts = np.bincount(self._slot[senders], minlength=self._n_spiking)
        res = CycleResult(counts)
        for name in self.train_pops:
            p = self.pops[name]
            m = (senders >= p.first) & (senders < p.first + p.spec.size)
            train = np.zeros((T, p.spec.size), dtype=np.float64)
            train[t_loc[m], senders[m] - p.first] = 1.0
            res.trains[name] = train
        if self.multimeter is not None:
            mv = kernel.events(self.multimeter)
            kernel.clear_events(self.multimeter)
            snd = np.asarray(mv["senders"], dtype=np.int64)
            tl = np.asarray(mv["times"], dtype=np.int64) - base - self._start[snd]
            vm = np.asarray(mv["V_m"], dtype=np.float64)
            for name in self.traced:
                p = self.pops[name]
                m = (snd >= p.first) & (snd < p.first + p.spec.size) & (tl >= 0) & (tl < T)
                trace = np.full((T, p.spec.size), np.nan)
                trace[tl[m], snd[m] - p.first] = vm[m]
                if np.isnan(trace).any():
                    raise AssertionError(f"multimeter missed steps of {name!r}")
                res.traces[name] = trace
        return res

    def _cycle(self, obs: np.ndarray, s_in: np.ndarray | None,
               timings: dict[str, float] | None = None) -> CycleResult:
        t0 = time.perf_counter()
        self._set_input(obs, s_in)
        t1 = time.perf_counter()
        self._nest.Simulate(self.cycle * self.h)
        t2 = time.perf_counter()
        res = self._read()
        t3 = time.perf_counter()
        self._origin += self.cycle
        if timings is not None:
            timings["set_input"] += t1 - t0
            timings["simulate"] += t2 - t1
            timings["read_out"] += t3 - t2
        return res

    # ------------------------------------------------------------------ readout (mirrors the reference)

    def _final_membrane(self, cycles: list[CycleResult]) -> torch.Tensor | None:
        name = self.src.name
        if name not in self.pops or name not in self.traced:
            return None
        p = self.pops[name]
        v = np.stack([c.traces[name][-1] for c in cycles])
        if p.spec.v_correction is not None:  # eprop_iaf variants: the plan's V(T) from NEST's
            last = np.stack([c.trains[name][-1] if name in c.trains else np.zeros(p.spec.size) for c in cycles])
            v = v + p.spec.v_correction * last
        return torch.as_tensor(v.reshape(len(cycles), *p.op.out_shape))

    def _series(self, name: str, cycles: list[CycleResult]) -> torch.Tensor:
        """[T, N, *shape] spike trains (or V_m traces of a non-spiking population)."""
        p = self.pops[name]
        data = [c.trains[name] if p.spec.spiking else c.traces[name] for c in cycles]
        arr = np.stack(data, axis=1)  # [T, N, n]
        return torch.as_tensor(arr.reshape(self.T, len(cycles), *p.op.out_shape))

    def _q(self, obs: torch.Tensor, s_in: torch.Tensor | None, cycles: list[CycleResult]) -> tuple[
            torch.Tensor, torch.Tensor | None]:
        T, sem, src = self.T, self.sem, self.src
        values: dict[str, torch.Tensor] = {}
        if self.plan.input in [i for op in self.tail for i in op.inputs] or self.src.name == self.plan.input:
            values[self.plan.input] = s_in if s_in is not None else (
                obs.unsqueeze(0) if sem.encoding == "current" else self._encode(obs))
        for name in self.leaf_pops:
            if not self.mean_from_counts:
                values[name] = self._series(name, cycles)
        for op in self.tail:
            if self.pushdown and op.name == src.name:
                continue
            values[op.name] = per_step(op, self._summed(op, values), _tensor_params(op))
        if self.mean_from_counts:
            p = self.pops[src.inputs[0]]
            k = self._offsets[p.op.name]
            counts = np.stack([c.counts[k:k + p.spec.size] for c in cycles]).astype(np.float64)
            mean = torch.as_tensor((counts / T).reshape(len(cycles), *p.op.out_shape))
            q = per_step(src, mean.unsqueeze(0), _tensor_params(src))[0]
        elif self.pushdown:
            x = self._summed(src, values)
            mean = x[0] if x.shape[0] == 1 else x.mean(dim=0)
            q = per_step(src, mean.unsqueeze(0), _tensor_params(src))[0]
        else:
            q = reduce_time(values[src.name], sem.reduce, T)
            if sem.divisor != 1.0:
                q = q / sem.divisor
        q = q.reshape(q.shape[0], -1)
        membrane = self._final_membrane(cycles)
        if sem.membrane_divisor:
            assert membrane is not None
            q = q + membrane.reshape(q.shape) / sem.membrane_divisor
        if sem.offset != 0.0:
            q = q + sem.offset
        tiebreak = membrane.reshape(q.shape) if sem.tiebreak == "membrane" and membrane is not None else None
        return q, tiebreak

    def _summed(self, op: Op, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Several inputs to a node are summed, broadcasting a constant input over T (as the reference)."""
        T = self.T
        x = values[op.inputs[0]]
        for other in op.inputs[1:]:
            y = values[other]
            x = x + y if x.shape[0] == y.shape[0] else x.expand(T, *x.shape[1:]) + y.expand(T, *y.shape[1:])
        return x

    def _encode(self, obs: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.sem.encoding_seed)
        return encode(obs, self.T, self.sem.encoding, gen)

    # ------------------------------------------------------------------ public interface

    def _retire(self) -> None:
        self._valid = False

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """backends.base.Backend.run: ``obs`` ``[N, *obs_shape]`` -> Readout; one NEST cycle per observation."""
        if not self._valid:
            raise UserError("this NEST network was closed or replaced by a newer NestBackend (NEST holds one "
                            "network per process); build it again")
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
            s_in = self._encode(x)  # the whole batch with the graph's seed, like the reference
        timings = {"set_input": 0.0, "simulate": 0.0, "read_out": 0.0}
        cycles = []
        x_np = x.numpy()
        s_np = None if s_in is None else s_in.numpy()
        for i in range(n):
            cycles.append(self._cycle(x_np[i], None if s_np is None else s_np[:, i], timings))
        t0 = time.perf_counter()
        spikes = {}
        counts = np.stack([c.counts for c in cycles]) if cycles else np.zeros((0, self._n_spiking), np.int64)
        for p in self.spiking:
            k = self._offsets[p.op.name]
            spikes[p.op.name] = counts[:, k:k + p.spec.size].reshape(n, *p.op.out_shape).astype(np.int64)
        if n:
            with torch.no_grad():
                q, tiebreak = self._q(x, s_in, cycles)
            action = greedy_action(q, tiebreak).numpy().astype(np.int64)
            q_np = q.to(torch.float64).numpy()
        else:
            q_np, action = np.zeros((0, self.n_out)), np.zeros((0,), np.int64)
        timings["read_out"] += time.perf_counter() - t0
        return Readout(q=q_np, action=action, spikes=spikes, timings=timings)

    def close(self) -> None:
        """Reset the NEST kernel (if this backend still owns it)."""
        if self._valid:
            kernel.release(self)
        self._valid = False
