"""A canonical Plan -> the layout the Lava backend builds: populations, synapse maps, delays.

No Lava import here (so ``inspect-nir`` and the quantiser can use it without starting Lava).

* **Populations** are the plan's neuron and Threshold ops, plus one ``identity`` population
  when the Output node reads a synaptic map directly (the head of the ``rate``, Hahn
  ``voltage`` and Tan ``robust_rate`` readouts): it integrates the map's current ``W s + b``
  over the window, which is what the reference reduces over time.
* **Synapse maps.** Every maximal chain of synaptic ops between two populations (``conv ->
  flatten -> affine``, ``affine -> scale`` ...) becomes one sparse matrix ``[n_dst, n_src]``
  (the product of the chain, C-order flattening, so ``flatten`` is the identity) and one bias
  vector added by the destination population. Conv and pooling layers are explicit sparse
  matrices (:mod:`backends.common.sparse`, the index arithmetic NEST's synapses use; a Loihi
  core also stores them as explicit synapses; docs/LAVA.md compares Lava's own ``Conv``).
* **The host region** — the Input node and the synaptic ops computed from it alone — runs on
  the host once per observation with the reference's own torch calls (``current``: one
  constant current per observation; ``poisson``/``regular``: one current per step), and the
  first populations read that current from their payload port. This is the "input process
  that holds the observation's layer-1 current": the layer-1 map costs one host call per
  observation instead of T on-chip steps, and in float64 it is bit-identical to the reference.
* **Delays.** Lava's connection processes send at step t what they received at t-1, so a
  population that is k synapse maps away from the host-fed layer sees its inputs k steps
  late: its *delay* is k. Each observation gets a window of ``P = T + D`` steps (D = largest
  delay); population p integrates on window steps ``[d_p, d_p + T)``, resets at ``d_p`` and
  sends zeros outside, so windows line up with the reference's steps 1..T and nothing leaks
  from one observation into the next. A population's delay is the latest arrival among its
  inputs; a synapse map on a shorter branch (a skip connection, an input feeding a deep layer)
  holds its output back for the difference (``Connection.extra``), so every input of a layer
  arrives at the same step of its window, as in the reference.
* **Loops.** A loop's closing edge (``Op.recurrent``, docs/NIR.md "Recurrence") carries the
  previous step's value: its map (:attr:`Connection.recurrent`) is held back so that it arrives
  one step later than a forward map between the same populations would, ``extra = d_dst -
  d_src``. A population feeding itself (snnTorch RLeaky/RSynaptic, the Braille nets) gets a map
  of Lava's one step; a loop through a population that sits deeper would need fewer steps than
  one and is refused naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from backends.base import refuse_loop_start
from backends.common.sparse import conv_matrix, dense_bias, dense_matrix, pool_matrix
from exporters.canonical import SYNAPSES, NeuronStep, Op, Plan
from pipeline.errors import UserError

Matrix = sp.csr_matrix


@dataclass
class Connection:
    """A synapse map (or a direct wire) from population ``src`` into population ``dst``."""

    src: str
    dst: str
    matrix: Matrix | None  # [n_dst, n_src]; None: a direct wire (same size, no Lava process, no delay)
    graded: bool  # the source sends real values (non-spiking or multi-spike), not 0/1 spikes
    extra: int = 0  # steps the map holds its output back beyond Lava's one, so that branches align
    recurrent: bool = False  # a loop's closing edge: the source's value of the previous step

    @property
    def delay(self) -> int:
        return 0 if self.matrix is None else 1 + self.extra


@dataclass
class Population:
    """One Lava population process: a neuron op, a Threshold op, or a readout integrator."""

    name: str
    kind: str  # neuron | threshold | identity
    shape: tuple[int, ...]
    step: NeuronStep | None = None
    threshold: Any = None  # Threshold ops: value (float or array) ...
    compare: str = ">="  # ... and comparison
    bias: np.ndarray | None = None  # [n] float64: sum of the incoming maps' biases
    host: list[str] = field(default_factory=list)  # host-region ops whose value this population reads
    host_matrix: Matrix | None = None  # the host region as one map from the input (fixed point only)
    host_bias: np.ndarray | None = None
    delay: int = 0
    readout: str | None = None  # the reduction (sum/mean/max/last) when this population feeds Output

    @property
    def n(self) -> int:
        return int(np.prod(self.shape))

    @property
    def spiking(self) -> bool:
        if self.kind == "threshold":
            return True
        return self.kind == "neuron" and self.step is not None and self.step.spiking

    @property
    def graded_out(self) -> bool:
        """Whether the values this population sends downstream are real numbers, not 0/1."""
        if self.kind == "identity":
            return True
        if self.kind == "neuron":
            assert self.step is not None
            return not self.step.spiking or self.step.multi_spike
        return False

    @property
    def has_membrane(self) -> bool:
        return self.kind == "neuron"


@dataclass
class Layout:
    """Everything the backend builds, in plan order."""

    plan: Plan
    pops: dict[str, Population]
    conns: list[Connection]
    host_ops: list[str]
    readout_pop: str
    time_steps: int

    @property
    def depth(self) -> int:
        return max(p.delay for p in self.pops.values())

    @property
    def period(self) -> int:
        """Lava steps per observation: T plus one step per synapse map on the longest path."""
        return self.time_steps + self.depth


# ---------------------------------------------------------------- synaptic ops as sparse matrices


def synapse_matrix(op: Op) -> tuple[Matrix, np.ndarray | None]:
    """A synaptic op as a sparse matrix ``[prod(out_shape), prod(in_shape)]`` and bias (or None).

    Unlike :func:`backends.common.sparse.synapse_matrix` (NEST's composition, where None is
    the identity and an all-zero bias is no bias), every op has an explicit matrix here, and a
    conv keeps its bias vector even when it is all zero.
    """
    n_in = int(np.prod(op.in_shape))
    n_out = int(np.prod(op.out_shape))
    kind = op.kind
    if kind in ("affine", "linear"):
        return dense_matrix(op), (dense_bias(op) if kind == "affine" else None)
    if kind == "scale":
        s = np.broadcast_to(np.asarray(op.params["scale"], dtype=np.float64), op.in_shape).reshape(-1)
        return sp.diags(s, format="csr"), None
    if kind == "flatten":
        return sp.identity(n_in, format="csr"), None
    if kind == "conv2d":
        bias = np.repeat(np.asarray(op.params["bias"], dtype=np.float64), n_out // op.out_shape[0])
        return conv_matrix(op), bias
    if kind in ("sumpool2d", "avgpool2d"):
        return pool_matrix(op), None
    raise AssertionError(kind)


# ---------------------------------------------------------------- lowering


@dataclass
class _Linear:
    """A value that is an affine function of population outputs: sum_k M_k s_k + b."""

    terms: dict[str, Matrix]
    bias: np.ndarray | None
    host: list[str] = field(default_factory=list)
    late: dict[str, Matrix] = field(default_factory=dict)  # on the previous step's outputs (a loop)


def _add(a: _Linear, b: _Linear) -> _Linear:
    terms, late = dict(a.terms), dict(a.late)
    for k, m in b.terms.items():
        terms[k] = terms[k] + m if k in terms else m
    for k, m in b.late.items():
        late[k] = late[k] + m if k in late else m
    bias = a.bias if b.bias is None else (b.bias if a.bias is None else a.bias + b.bias)
    return _Linear(terms, bias, a.host + b.host, late)


def _delayed(value: _Linear, node: str) -> _Linear:
    """``value`` over a loop's closing edge into ``node``: its terms one step late; the bias stays
    (every output is zero before the first step)."""
    if value.late:
        raise UserError(f"node {node!r}: it receives {', '.join(map(repr, value.late))} through two loop edges "
                        "(two steps late); the Lava backend lays out loops of one step only")
    return _Linear({}, value.bias, [], dict(value.terms))


def lower(plan: Plan, *, fixed_point: bool = False) -> Layout:
    """Check that Lava can run ``plan`` and lay it out (see the module docstring)."""
    out_src = plan.readout_source
    walk = _Walk(by_name={op.name: op for op in plan.ops})
    for op in plan.ops:
        walk.add(op)
    walk.add_readout(out_src, plan.semantics.reduce)
    conns = _connections(walk.pops, walk.direct, fixed_point)
    for c in conns:
        if c.recurrent:
            refuse_loop_start(walk.by_name[c.src], c.dst, "Lava")
    _assign_delays(walk.pops, conns)
    if fixed_point:
        by_name = {op.name: op for op in plan.ops}
        for pop in walk.pops.values():
            if pop.host:
                pop.host_matrix, pop.host_bias = host_map(plan, pop.host, by_name)
    return Layout(plan=plan, pops=walk.pops, conns=conns, host_ops=walk.host_order, readout_pop=out_src.name,
                  time_steps=plan.semantics.time_steps)


@dataclass
class _Walk:
    """The plan's ops sorted, in plan order, into the host region, synapse maps and populations."""

    by_name: dict[str, Op] = field(default_factory=dict)
    composing: set[str] = field(default_factory=set)  # loop sources being composed ahead of plan order
    host: set[str] = field(default_factory=set)
    host_order: list[str] = field(default_factory=list)
    pops: dict[str, Population] = field(default_factory=dict)
    linear: dict[str, _Linear] = field(default_factory=dict)  # non-host synaptic ops
    # pop -> [(src pop, map or None, via a synapse map?)]
    direct: dict[str, list[tuple[str, Matrix | None, bool]]] = field(default_factory=dict)

    def add(self, op: Op) -> None:
        if op.kind == "input":
            self.host.add(op.name)
            self.host_order.append(op.name)
        elif op.kind == "output":
            return
        elif op.kind == "relu":
            raise UserError(f"node {op.name!r}: ReLU (a DQN graph) cannot run on Lava, which runs spiking "
                            "networks; convert the DQN first (convert-dqn)")
        elif op.kind in SYNAPSES:
            if op.name not in self.linear:  # a loop's source may have been composed earlier, on demand
                self.add_synapse(op)
        else:  # a population: neuron or Threshold op
            pop = Population(name=op.name, kind="neuron" if op.kind == "neuron" else "threshold",
                             shape=op.out_shape, step=op.neuron)
            if op.kind == "threshold":
                pop.threshold = op.params["threshold"]
                pop.compare = op.params["compare"]
            self.add_population(pop, op.inputs, [self.late_value(op)] if op.recurrent else [])

    def add_synapse(self, op: Op) -> None:
        """A map computed from the input alone joins the host region; any other is composed into
        the affine function of population outputs it computes."""
        if not op.recurrent and all(i in self.host for i in op.inputs):
            self.host.add(op.name)
            self.host_order.append(op.name)
            return
        if any(i in self.host for i in op.inputs):
            raise UserError(f"node {op.name!r}: a synaptic map that adds the input layer to a neuron "
                            "layer's output is not supported by the Lava backend")
        acc = self.value_of(op.inputs[0])
        for other in op.inputs[1:]:
            acc = _add(acc, self.value_of(other))
        if op.recurrent:
            acc = _add(acc, self.late_value(op))
        m, b = synapse_matrix(op)
        terms = {k: (m @ v).tocsr() for k, v in acc.terms.items()}
        late = {k: (m @ v).tocsr() for k, v in acc.late.items()}
        bias = m @ acc.bias if acc.bias is not None else None
        if b is not None:
            bias = b if bias is None else bias + b
        self.linear[op.name] = _Linear(terms, bias, late=late)

    def late_value(self, op: Op) -> _Linear:
        """What ``op`` receives over its loop edges (sources later in plan order are composed now)."""
        acc = None
        for src in op.recurrent:
            if src in self.host or (src not in self.linear and self.by_name[src].kind == "input"):
                raise UserError(f"node {op.name!r}: the input reaches it over a loop edge (one step late); the "
                                "Lava backend lays out loops between neuron layers only")
            if src not in self.pops and src not in self.linear:
                later = self.by_name[src]
                if later.kind in SYNAPSES:
                    if later.name in self.composing:
                        raise UserError(f"node {later.name!r}: a loop through synaptic nodes only (no neuron on it)")
                    self.composing.add(later.name)
                    self.add_synapse(later)
                    if later.name in self.host:
                        raise UserError(f"node {op.name!r}: the input reaches it over a loop edge (one step "
                                        "late); the Lava backend lays out loops between neuron layers only")
            value = self.value_of(src)
            acc = value if acc is None else _add(acc, value)
        assert acc is not None
        return _delayed(acc, op.name)

    def add_population(self, pop: Population, inputs: list[str], late: list[_Linear] | None = None) -> None:
        _wire(pop, inputs, self.host, self.pops, self.linear, self.direct, late or [])
        self.pops[pop.name] = pop

    def add_readout(self, out_src: Op, reduce: str) -> None:
        """Mark the population Output reads; a synaptic map read by Output gets an integrator."""
        if out_src.name in self.host:
            raise UserError(f"the Output node reads {out_src.name!r}, which is computed from the input "
                            "alone: the graph has no neuron layer for Lava to run")
        if out_src.name in self.linear:  # Output reads a synaptic map: integrate its current
            self.add_population(Population(name=out_src.name, kind="identity", shape=out_src.out_shape),
                                [out_src.name])
        self.pops[out_src.name].readout = reduce

    def value_of(self, name: str) -> _Linear:
        if name in self.pops or (name not in self.linear and self.by_name[name].kind in ("neuron", "threshold")):
            n = int(np.prod(self.by_name[name].out_shape))  # a loop's source population may come later
            return _Linear({name: sp.identity(n, format="csr")}, None)
        return self.linear[name]



def _connections(pops: dict[str, Population], direct: dict[str, list[tuple[str, Matrix | None, bool]]],
                 fixed_point: bool) -> list[Connection]:
    conns: list[Connection] = []
    for name, pop in pops.items():
        for src, mat, via, late in direct.get(name, []):
            if src not in pops:
                raise UserError(f"node {name!r}: its loop source {src!r} is not a layer the Lava backend runs")
            if not via and (fixed_point or late):  # fixed point scales every input, a loop edge waits a step
                mat, via = sp.identity(pops[src].n, format="csr"), True
            conns.append(Connection(src=src, dst=name, matrix=mat if via else None,
                                    graded=pops[src].graded_out, recurrent=late))
    return conns


def _wire(pop: Population, inputs: list[str], host: set[str], pops: dict[str, Population],
          linear: dict[str, _Linear], direct: dict[str, list], late: list[_Linear]) -> None:
    """Record where ``pop``'s input current comes from (host ops, direct wires, synapse maps,
    and over loop edges ``late``)."""
    entries: list[tuple[str, Matrix | None, bool, bool]] = []
    bias = None
    values: list[_Linear] = list(late)
    for i in inputs:
        if i in host:
            pop.host.append(i)
        elif i in pops:
            entries.append((i, None, False, False))
        else:
            values.append(linear[i])
    for lin in values:
        for src, m in lin.terms.items():
            entries.append((src, m, True, False))
        for src, m in lin.late.items():
            entries.append((src, m, True, True))
        if lin.bias is not None:
            bias = lin.bias.copy() if bias is None else bias + lin.bias
    # the same source reached by several maps: one summed map
    merged: dict[tuple[str, bool, bool], Matrix | None] = {}
    for src, m, via, is_late in entries:
        key = (src, via, is_late)
        if via:
            merged[key] = m if merged.get(key) is None else merged[key] + m
        elif key in merged:
            raise UserError(f"node {pop.name!r} reads {src!r} twice without a synapse in between")
        else:
            merged[key] = None
    direct[pop.name] = [(src, m, via, is_late) for (src, via, is_late), m in merged.items()]
    pop.bias = bias


def _assign_delays(pops: dict[str, Population], conns: list[Connection]) -> None:
    """Each population's delay is the latest arrival of its inputs; an input that would arrive
    earlier (a skip connection, a shorter branch of a DAG) is held back in its synapse map for the
    difference, so every input of a layer reaches it at the same step of its window. A direct wire
    that must wait becomes an identity map (a wire has no process to wait in)."""
    incoming: dict[str, list[Connection]] = {}
    for c in conns:
        if not c.recurrent:
            incoming.setdefault(c.dst, []).append(c)
    for name, pop in pops.items():  # plan (topological) order
        ins = incoming.get(name, [])
        pop.delay = max((pops[c.src].delay + c.delay for c in ins), default=0)
        for c in ins:
            lag = pop.delay - (pops[c.src].delay + c.delay)
            if lag and c.matrix is None:
                c.matrix = sp.identity(pops[c.src].n, format="csr", dtype=np.float64)
                lag -= 1
            c.extra += lag
    for c in conns:  # a loop edge: the source's step t-1 reaches the window's step t of dst
        if not c.recurrent:
            continue
        c.extra = pops[c.dst].delay - pops[c.src].delay
        if c.extra < 0:
            raise UserError(f"node {c.dst!r}: it receives {c.src!r} through "
                            f"a loop, and {c.src!r} is {-c.extra} synapse map(s) further from the input; on Lava "
                            "every map takes one step, the loop gives one step in all, so only a layer feeding "
                            "itself (through synaptic nodes) is laid out")


def host_map(plan: Plan, names: list[str], by_name: dict[str, Op]) -> tuple[Matrix, np.ndarray | None]:
    """The host region feeding a population as one sparse map from the input (and its bias)."""
    cache: dict[str, tuple[Matrix, np.ndarray | None]] = {}

    def of(name: str) -> tuple[Matrix, np.ndarray | None]:
        if name in cache:
            return cache[name]
        op = by_name[name]
        if op.kind == "input":
            res = (sp.identity(int(np.prod(op.out_shape)), format="csr"), None)
        else:
            m0, b0 = of(op.inputs[0])
            for other in op.inputs[1:]:
                m1, b1 = of(other)
                m0 = m0 + m1
                b0 = b1 if b0 is None else (b0 if b1 is None else b0 + b1)
            m, b = synapse_matrix(op)
            mm = (m @ m0).tocsr()
            bb = m @ b0 if b0 is not None else None
            if b is not None:
                bb = b if bb is None else bb + b
            res = (mm, bb)
        cache[name] = res
        return res

    total_m, total_b = of(names[0])
    for other in names[1:]:
        m, b = of(other)
        total_m = total_m + m
        total_b = b if total_b is None else (total_b if b is None else total_b + b)
    return total_m.tocsr(), total_b
