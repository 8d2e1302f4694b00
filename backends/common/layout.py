"""Simulator-independent layout of a Plan as populations with delays (no simulator imported here).

Every delayed-spike target (NEST, PyNN-NEST, SpiNNaker and its fixed-point model) builds the
same network: one population per neuron (or bare Threshold) op, one projection per (source
population, target population) pair, the synaptic ops between them composed into one sparse
matrix (:mod:`backends.common.sparse`), and the ops after the last population (the readout
head) evaluated on the host by the Plan's readout tail (:mod:`exporters.plan.readout`). What
differs between simulators is only how a population is parameterised and how the
per-observation reset is done.

Delay compensation (docs/DESIGN.md "Time-step semantics"): every simulated connection has a delay
of at least one step, so a population at depth k (k neurons on the longest path from the
input) sees its inputs k steps after the input. Connections get delay = depth difference
(skip connections included), population k integrates the window of steps k+1 .. k+T of
each cycle, and spike counts are taken inside that window.

A loop's closing edge (``Op.recurrent``, docs/NIR.md "Recurrence") carries the previous step's
value: its terms (:attr:`Drive.late`) get one step more than a forward connection between the
same populations, ``delay = depth(dst) - lag(dst) - depth(src) + 1``. That is one step for a
population that feeds itself (snnTorch RLeaky, a self-loop through Affine/Linear, a CubaLIF whose
target charges its current in the same step: ``same_step``), and less than one, which no simulator
has, for a loop through a deeper population or into a synaptic current charged a step late;
:meth:`NetLayout.loop_delay` refuses those naming the node.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from backends.base import refuse_loop_start, refuse_resets, spiking_populations
from backends.common.sparse import Form, add_forms, apply_op, delay_form, estimate_add, estimate_apply
from exporters.plan.ir import SYNAPSES, Op, Plan
from exporters.plan.readout import pushes_mean_through_head
from pipeline.errors import UserError


@dataclass
class PopLayout:
    """One population: its op, depth (pipeline stage) and the populations/input feeding it."""

    op: Op
    depth: int
    sources: set[str]
    size: int
    spiking: bool
    same_step: bool = False  # a synaptic current that charges V in the step it arrives (NEST: gif_psc_exp)
    relayed: bool = False  # its spikes reach other populations through a relay one step later (NEST: multi-spike)

    @property
    def lag(self) -> int:
        """Steps between the population's input and its output: 1 for a synaptic current
        (CubaLIF/CubaLI: NEST's current-based neurons charge V with the previous step's current), so
        its inputs arrive one step before its window and it sits one step deeper; 0 where the
        target's model charges it in the same step (``same_step``); 1 for a population whose
        spikes pass a relay (``relayed``: its neurons run one step before the window, the relay's
        spikes fall in it)."""
        step = self.op.neuron
        return 1 if self.relayed or (step is not None and step.tau_syn is not None and not self.same_step) else 0

    @property
    def input_depth(self) -> int:
        """The step (relative to the cycle) at which its inputs of the window's first step arrive, minus one."""
        return self.depth - self.lag

    @property
    def window_start(self) -> int:
        """First step of the population's window, relative to the cycle's start."""
        return self.depth + 1


@dataclass
class Drive:
    """What one population receives: ``sum_src terms[src] @ s_src + const`` (flattened, C order)."""

    terms: dict[str, sp.csr_matrix] = field(default_factory=dict)
    const: np.ndarray | None = None
    late: dict[str, sp.csr_matrix] = field(default_factory=dict)  # on the previous step's spikes (a loop)


@dataclass
class SynapseCount:
    """Upper bounds from shapes alone: synapses from populations, from the input, and the
    largest single drive matrix (what building holds on the host at once)."""

    between: int
    from_input: int
    largest: int


@dataclass
class NetLayout:
    """Populations in topological order, the host-side head, and what must be recorded."""

    plan: Plan
    pops: dict[str, PopLayout]
    upstream: list[str]  # synaptic ops that feed populations (become projections)
    tail: list[Op]  # ops after the populations, run on the host
    leaf_pops: list[str]  # populations the tail reads
    traced: list[str]  # populations whose membrane must be recorded
    src: Op  # the op feeding Output
    pushdown: bool  # rate readout: W mean_t(s) + b, as the reference computes it
    need_membrane: bool

    @property
    def depth(self) -> int:
        return max(p.depth for p in self.pops.values())

    @property
    def spiking(self) -> list[PopLayout]:
        return [p for p in self.pops.values() if p.spiking]

    @property
    def tail_reads_input(self) -> bool:
        plan = self.plan
        return self.src.name == plan.input or any(plan.input in op.inputs for op in self.tail)

    @property
    def mean_from_counts(self) -> bool:
        """A rate readout of one spiking population: its time mean is count / T, bit for bit the
        mean of the 0/1 train (an exact integer sum, one correctly rounded division), so its
        per-step trains need not be recorded."""
        if not self.pushdown or len(self.src.inputs) != 1:
            return False
        p = self.pops.get(self.src.inputs[0])
        return p is not None and p.spiking

    @property
    def train_pops(self) -> list[str]:
        """Spiking populations whose per-step trains the head or the final membrane needs."""
        keep = [] if self.mean_from_counts else self.leaf_pops
        return [n for n in self.pops if self.pops[n].spiking and (n in keep or n in self.traced)]

    def synapse_counts(self, copies: dict[str, int] | None = None) -> SynapseCount:
        """Synapse counts from shapes alone, before anything is built (upper bounds). ``copies``: a
        multi-spike population's copies per neuron (NEST), each receiving the neuron's synapses, all
        connected to one another and to the neuron's relay."""
        copies = copies or {}
        plan = self.plan
        sizes = {plan.input: int(np.prod(plan.op(plan.input).out_shape))}
        sizes.update({n: p.size for n, p in self.pops.items()})
        est: dict[str, dict[str, tuple[int, int]]] = {n: {n: (size, 1)} for n, size in sizes.items()}
        count = SynapseCount(0, 0, 0)

        def of(name: str) -> dict[str, tuple[int, int]]:  # a loop's source may come later in plan order
            if name not in est:
                op = self.plan.op(name)
                est[name] = estimate_apply(op, estimate_add([of(i) for i in (*op.inputs, *op.recurrent)]), sizes)
                count.largest = max(count.largest, *(v[0] for v in est[name].values()))
            return est[name]

        for name, p in self.pops.items():
            drive = estimate_add([of(i) for i in (*p.op.inputs, *p.op.recurrent)])
            k = copies.get(name, 1)
            if k > 1:
                count.between += (k * k + k) * p.size
            for src, (nnz, _) in drive.items():
                nnz *= k
                if src == plan.input:
                    count.from_input += nnz
                else:
                    count.between += nnz
                count.largest = max(count.largest, nnz)
        return count

    def drives(self) -> dict[str, Drive]:
        """Every population's drive as sparse matrices per source (built on demand: it is the
        expensive part, and a refused network must fail before it)."""
        return dict(self.iter_drives())

    def iter_drives(self) -> Iterator[tuple[str, Drive]]:
        """:meth:`drives` one population at a time, in plan order (a builder that connects each
        drive at once never holds all of them)."""
        plan = self.plan
        forms: dict[str, Form] = {plan.input: Form({plan.input: None})}
        forms.update({name: Form({name: None}) for name in self.pops})
        visiting: set[str] = set()

        def form_of(name: str) -> Form:  # a loop's source may come later in plan order
            if name not in forms:
                if name in visiting:
                    raise UserError(f"node {name!r}: a loop through synaptic nodes only (no neuron on it)")
                visiting.add(name)
                op = plan.op(name)
                forms[name] = apply_op(op, input_form(op))
            return forms[name]

        def input_form(op: Op) -> Form:
            return add_forms([form_of(i) for i in op.inputs] + [delay_form(form_of(r), op.name) for r in op.recurrent],
                             int(np.prod(op.in_shape)))

        def matrices(found: dict[str, sp.csr_matrix | None], n: int) -> dict[str, sp.csr_matrix]:
            out = {}
            for src, m in found.items():
                mat = sp.identity(n, format="csr", dtype=np.float64) if m is None else m.tocsr()
                mat.eliminate_zeros()
                out[src] = mat
            return out

        for name, p in self.pops.items():
            drive = input_form(p.op)
            const = None if drive.const is None else np.broadcast_to(drive.const, (p.size,)).astype(np.float64)
            yield name, Drive(matrices(drive.terms, p.size), const, matrices(drive.late, p.size))

    def check_loops(self, target: str) -> None:
        """Every loop laid out (:meth:`loop_delay`) or refused naming the node, before anything is
        built; a target calls it once its populations have passed its own checks."""
        byname = {op.name: op for op in self.plan.ops}
        for name, p in self.pops.items():
            for s in sorted(_late_sources(p.op, byname, {self.plan.input})):
                if s == self.plan.input:
                    raise UserError(f"node {name!r} ({p.op.nir_type}): the input reaches it over a loop edge (one "
                                    f"step late); {target} lays out loops between populations only")
                refuse_loop_start(byname[s], name, target)
                self.loop_delay(s, name, target)

    def loop_delay(self, src: str, dst: str, target: str) -> int:
        """Steps a late term from population ``src`` into ``dst`` must take: one more than a forward
        connection between them would; below one step a UserError names the node and says why."""
        p, q = self.pops[dst], self.pops[src]
        delay = p.input_depth - q.depth + 1
        if delay >= 1:
            return delay
        if src == dst and p.relayed:
            raise UserError(f"node {dst!r} ({p.op.nir_type}): a loop into a multi-spike population, whose spikes "
                            f"reach other populations through a relay one step late on {target}; the reference "
                            "and Lava (lava) run it")
        if src == dst:  # the lag is all that is in the way
            reset = p.op.neuron.reset if p.op.neuron is not None else "?"
            raise UserError(f"node {dst!r} ({p.op.nir_type}): its loop enters its synaptic current, which {target} "
                            "charges into the membrane one step after it arrives, so its own spike of step t-1 "
                            "would reach its membrane at t+1, not at t (NEST's one model that charges it in the "
                            f"same step, gif_psc_exp, has no reset in the spike's own step; this node's reset is "
                            f"{reset!r}); the reference and Lava (lava, lava-fixed) run it")
        raise UserError(f"node {dst!r} ({p.op.nir_type}): it receives {src!r} through a loop, and {src!r} is "
                        f"{q.depth - p.depth} population(s) deeper; on {target} every spike takes one step per "
                        "population, the loop gives one step in all, so only a population feeding itself "
                        "(through synaptic nodes) is laid out")


def loops_into_itself(plan: Plan, name: str) -> bool:
    """Whether op ``name`` receives its own value over a loop edge (through synaptic nodes only)."""
    byname = {op.name: op for op in plan.ops}
    return name in _late_sources(byname[name], byname, {plan.input})


def layout(plan: Plan, target: str, loops: bool = False,
           resets: tuple[str, ...] = ("hard", "soft", "soft_next"),
           same_step: frozenset[str] = frozenset(), relayed: frozenset[str] = frozenset()) -> NetLayout:
    """Populations, depths and the host-side readout of ``plan``; UserError naming what a
    spike-passing simulator cannot run (a recurrent loop, unless the caller lays out
    :attr:`Drive.late` terms: ``loops``; a reset outside ``resets``). ``same_step``: the CubaLIF
    ops the target charges in their current's own step (:attr:`PopLayout.same_step`); ``relayed``: the
    ops whose spikes pass a relay (:attr:`PopLayout.relayed`)."""
    byname = {op.name: op for op in plan.ops}
    pop_ops = spiking_populations(plan, target, recurrent=loops)
    refuse_resets(plan, target, resets)
    upstream: set[str] = set()
    stack = [i for op in pop_ops for i in (*op.inputs, *op.recurrent)]
    while stack:
        name = stack.pop()
        if name in upstream:
            continue
        if byname[name].kind in SYNAPSES:
            upstream.add(name)
            stack.extend((*byname[name].inputs, *byname[name].recurrent))
    sources: dict[str, set[str]] = {plan.input: {plan.input}}
    depth: dict[str, int] = {plan.input: 0}
    pops: dict[str, PopLayout] = {}
    for op in plan.ops:
        if op.kind in SYNAPSES and op.name in upstream:
            sources[op.name] = set().union(*(sources[i] for i in op.inputs))
        if op.kind not in ("neuron", "threshold"):
            continue
        src = set().union(*(sources[i] for i in op.inputs))
        for s in src | _late_sources(op, byname, {plan.input}):
            if byname[s].kind in ("neuron", "threshold") and not byname[s].spiking:
                raise UserError(f"node {op.name!r}: its input comes from the membrane of the non-spiking node "
                                f"{s!r}; {target} neurons pass on spikes only")
        pop = PopLayout(op, 1 + max(depth[s] for s in src), src, int(np.prod(op.out_shape)), op.spiking,
                        op.name in same_step, op.name in relayed)
        pop.depth += pop.lag
        pops[op.name] = pop
        sources[op.name] = {op.name}
        depth[op.name] = pop.depth
    sem = plan.semantics
    src_op = plan.readout_source
    pushdown = pushes_mean_through_head(plan)
    tail: list[str] = []
    leaves: set[str] = set()
    stack = [src_op.name]
    while stack:
        name = stack.pop()
        if name in pops or name == plan.input:
            leaves.add(name)
            continue
        if name not in tail:
            if byname[name].recurrent:
                raise UserError(f"node {name!r} ({byname[name].nir_type}): a loop after the last neuron (in the "
                                f"readout head) has no {target} form")
            tail.append(name)
            stack.extend(byname[name].inputs)
    need_membrane = bool(sem.membrane_divisor) or sem.tiebreak == "membrane"
    if sem.tiebreak == "membrane" and src_op.name not in pops:
        raise UserError(f"readout {sem.readout} breaks ties by membrane, but {src_op.name!r} has none")
    leaf_pops = [n for n in pops if n in leaves]
    traced = [n for n in leaf_pops if not pops[n].spiking]
    if need_membrane and src_op.name in pops and src_op.name not in traced:
        traced.append(src_op.name)
    net = NetLayout(plan=plan, pops=pops, upstream=[op.name for op in plan.ops if op.name in upstream],
                    tail=[op for op in plan.ops if op.name in tail], leaf_pops=leaf_pops, traced=traced,
                    src=src_op, pushdown=pushdown, need_membrane=need_membrane)
    return net


def _late_sources(op: Op, byname: dict[str, Op], ends: set[str]) -> set[str]:
    """The populations (or the input) whose values reach ``op`` over its loop edges (through
    synaptic nodes); the populations of a forward path are checked as they are laid out."""
    found: set[str] = set()
    stack, seen = list(op.recurrent), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in ends or byname[name].kind not in SYNAPSES:
            found.add(name)
        else:
            stack.extend((*byname[name].inputs, *byname[name].recurrent))
    return found
