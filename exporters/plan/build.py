"""Any NIR graph -> a checked, topologically ordered :class:`~exporters.plan.ir.Plan`.

This is the one place where NIR's continuous-time nodes become docs/DESIGN.md's per-step
arithmetic (forward Euler at ``dt``), where third-party conventions are normalised
(:mod:`exporters.conventions`), and where our tagged soft-reset loop becomes one
subtractive neuron. Unsupported nodes, missing parameters, shape mismatches and loops get a
:class:`UserError` naming the node.

:func:`build_plan` runs in phases: read the settings (convention, dt, extensions, spike
test), flatten nested graphs and collapse each soft-reset loop into one node, check the
Input/Output nodes and order the rest, build one op per node through :data:`NODE_BUILDERS`
(one entry per NIR class, as nirtorch's node map), and finally check the Output and resolve
the :class:`~exporters.plan.ir.Semantics`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import nir
import numpy as np

from exporters.conventions import Convention, get_convention
from exporters.metadata import DEFAULT_DT, is_ours, read_metadata
from exporters.nirio import graph_file_version
from exporters.plan.ir import Op, Plan
from exporters.plan.neurons import (
    NEURON_STEPS,
    check_param_shape,
    collapse,
    neuron_step,
    read_param,
    soft_loop_step,
)
from exporters.plan.semantics import resolve_semantics
from exporters.plan.synapses import SYNAPSE_PARAMS, synapse_output_shape, synapse_params
from pipeline.errors import UserError, check_choice

KNOWN_EXTENSIONS = ("relu",)
Edges = list[tuple[str, str]]

# ---------------------------------------------------------------- graph surgery


def inline_subgraphs(nodes: dict[str, nir.NIRNode], edges: Edges) -> tuple[dict[str, nir.NIRNode], Edges]:
    """Replace nested NIRGraph nodes by their contents (names ``outer.inner``)."""
    while any(isinstance(n, nir.NIRGraph) for n in nodes.values()):
        new_nodes: dict[str, nir.NIRNode] = {}
        new_edges = list(edges)
        for name, node in nodes.items():
            if not isinstance(node, nir.NIRGraph):
                new_nodes[name] = node
                continue
            ins = [k for k, n in node.nodes.items() if isinstance(n, nir.Input)]
            outs = [k for k, n in node.nodes.items() if isinstance(n, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise UserError(f"node {name!r}: nested graph needs exactly one Input and one Output node")
            for k, n in node.nodes.items():
                if k not in (ins[0], outs[0]):
                    new_nodes[f"{name}.{k}"] = n
            entry = [f"{name}.{b}" for a, b in node.edges if a == ins[0]]
            exit_ = [f"{name}.{a}" for a, b in node.edges if b == outs[0]]
            inner = [(f"{name}.{a}", f"{name}.{b}") for a, b in node.edges
                     if a != ins[0] and b != outs[0]]
            rewired: Edges = []
            for a, b in new_edges:
                if b == name:
                    rewired += [(a, e) for e in entry]
                elif a == name:
                    rewired += [(x, b) for x in exit_]
                else:
                    rewired.append((a, b))
            new_edges = rewired + inner
        nodes, edges = new_nodes, new_edges
    return nodes, edges


def find_soft_loops(nodes: Mapping[str, nir.NIRNode], edges: Edges) -> dict[str, tuple[str, str]]:
    """Threshold name -> (soma, scale) for each loop soma(I/LI) -> Threshold -> Scale -> soma."""
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    loops = {}
    for th, node in nodes.items():
        if not isinstance(node, nir.Threshold) or len(pred[th]) != 1:
            continue
        soma = pred[th][0]
        if not isinstance(nodes[soma], (nir.I, nir.LI)):
            continue
        for sc in succ[th]:
            if isinstance(nodes[sc], nir.Scale) and pred[sc] == [th] and succ[sc] == [soma]:
                loops[th] = (soma, sc)
                break
    return loops


def loop_edges(names: list[str], pred: Mapping[str, list[str]], start: str) -> set[tuple[str, str]]:
    """The edges that close loops: a depth-first walk from the Input node (successors in edge order)
    meets each loop at its entry first; the edge leading back to a node on the walk's path is the
    one whose value arrives a step late (snnTorch RLeaky, the Braille nets: ``lif -> w_rec -> lif``,
    the recurrent current W s[t-1] enters lif at step t)."""
    succ: dict[str, list[str]] = {n: [] for n in names}
    for b in names:
        for a in pred[b]:
            succ[a].append(b)
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    stack: list[tuple[str, int]] = [(start, 0)]
    state[start] = 1
    while stack:
        node, i = stack.pop()
        if i < len(succ[node]):
            stack.append((node, i + 1))
            nxt = succ[node][i]
            if state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, 0))
        else:
            state[node] = 2
    return back


def topo_order(names: list[str], pred: Mapping[str, list[str]]) -> list[str]:
    """``names`` with every node after its predecessors; a cycle is a UserError naming its nodes."""
    done: list[str] = []
    placed: set[str] = set()
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if all(p in placed for p in pred[n])]
        if not ready:
            loop = set(remaining)  # prune what only hangs off the loop (no successor left in it)
            while True:
                feeding = {p for n in loop for p in pred[n] if p in loop}
                if feeding >= loop:
                    break
                loop &= feeding
            stuck = ", ".join(sorted(loop)[:6])
            raise UserError(
                f"recurrent NIR graph: nodes {stuck} form a loop that the Input node does not reach"
            )
        for n in ready:
            done.append(n)
            placed.add(n)
        remaining = [n for n in remaining if n not in placed]
    return done


def drop_batch_dim(name: str, shape: tuple[int, ...], nodes: Mapping[str, nir.NIRNode],
                   edges: Edges) -> tuple[int, ...]:
    """An Input of shape (1, *rest) whose consumers all declare ``rest`` carries the batch of
    the exporter's sample data (nirtorch 2.x tracing, seen in Norse and Sinabs graphs)."""
    if len(shape) < 2 or shape[0] != 1:
        return shape
    declared = []
    for a, b in edges:
        if a != name:
            continue
        t = (getattr(nodes[b], "input_type", None) or {}).get("input")
        if t is None or not np.size(t):
            return shape
        declared.append(tuple(int(x) for x in np.asarray(t).reshape(-1)))
    return shape[1:] if declared and all(d == shape[1:] for d in declared) else shape


# ---------------------------------------------------------------- phases of build_plan


@dataclass(frozen=True)
class BuildSettings:
    """What the graph's metadata, its convention and the overrides fix before any node is read."""

    meta: dict[str, Any]
    convention: Convention
    extensions: tuple[str, ...]
    dt: float
    compare: str


def read_settings(graph: nir.NIRGraph, convention: str | None, dt: float | None) -> BuildSettings:
    meta = read_metadata(graph.metadata)
    cv = get_convention(convention or ("dsqn" if is_ours(meta) else "nir"))
    if cv.needs_dt and dt is None and meta.get("dt") is None:
        raise UserError(f"--convention {cv.name}: the graph does not record the dt it was exported at (an "
                        "argument of the framework's exporter, not stored in the file); pass --dt")
    if cv.tau_written == "auto":
        cv = replace(cv, tau_written=_norse_tau_encoding(graph, cv))
    extensions = tuple(e for e in str(meta.get("extensions", "")).replace(",", " ").split() if e)
    for ext in extensions:
        if ext not in KNOWN_EXTENSIONS:
            raise UserError(f"the graph needs extension {ext!r}, which this dsqn-deploy does not know")
    if dt is None:
        dt = meta.get("dt") if meta.get("dt") is not None else (cv.dt if cv.dt is not None else DEFAULT_DT)
    dt = float(dt)  # type: ignore[arg-type]
    if not dt > 0:
        raise UserError(f"dt must be positive, got {dt}")
    compare = str(meta.get("threshold", cv.compare)) if cv.name in ("nir", "dsqn") else cv.compare
    check_choice("threshold comparison", compare, (">=", ">"))
    return BuildSettings(meta=meta, convention=cv, extensions=extensions, dt=dt, compare=compare)


def _norse_tau_encoding(graph: nir.NIRGraph, cv: Convention) -> str:
    """Norse 1.1 writes ``tau = dt / tau_mem_inv`` into NIR >= 1.0 files; the Norse of the NIR paper
    wrote ``1 / tau_mem_inv`` into NIR 0.x files (``lif_norse.nir``, version 0.1.1). A graph
    built in memory says neither: the modifier must."""
    version = graph_file_version(graph)
    if version is None:
        raise UserError(f"--convention {cv.name}: this graph was not read from a file, so its tau encoding "
                        f"cannot be told; use --convention {cv.name}+dt-tau (Norse 1.1) or "
                        f"{cv.name}+tau-inverse (older Norse)")
    return "dt_times_tau" if version >= (1,) else "tau"


@dataclass(frozen=True)
class FlatGraph:
    """The graph with nested graphs inlined and each soft-reset loop standing as one node.

    ``loops`` maps a loop's Threshold name (the merged node's name) to its (soma, scale);
    ``pred`` lists every remaining node's inputs: the soma's other inputs feed the merged node.
    """

    nodes: dict[str, nir.NIRNode]
    edges: Edges
    loops: dict[str, tuple[str, str]]
    pred: dict[str, list[str]]
    recurrent: dict[str, list[str]] = field(default_factory=dict)  # node -> sources one step late


def flatten_graph(graph: nir.NIRGraph) -> FlatGraph:
    nodes, edges = inline_subgraphs(dict(graph.nodes), list(graph.edges))
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise UserError(f"edge ({a!r}, {b!r}) names a node {end!r} that is not in the graph")
    loops = find_soft_loops(nodes, edges)
    return FlatGraph(nodes, edges, loops, _collapse_soft_loops(nodes, edges, loops))


def _collapse_soft_loops(nodes: Mapping[str, nir.NIRNode], edges: Edges,
                         loops: Mapping[str, tuple[str, str]]) -> dict[str, list[str]]:
    """Predecessors of every node, with each loop one node named after its Threshold."""
    member_of = {}
    for th, (soma, sc) in loops.items():
        member_of[soma] = th
        member_of[sc] = th
    pred: dict[str, list[str]] = {name: [] for name in nodes if name not in member_of}
    for a, b in edges:
        if a in member_of:
            th = member_of[a]
            soma, sc = loops[th]
            if a == sc or b == th:
                continue  # the loop's own edges: scale -> soma, soma -> threshold
            raise UserError(f"node {a!r}: the membrane of a soft-reset loop feeds {b!r}; only its Threshold "
                            "may read it")
        if a in loops and b == loops[a][1]:
            continue  # threshold -> its feedback scale
        pred[member_of.get(b, b)].append(a)
    for th, (soma, sc) in loops.items():
        outs = [b for a, b in edges if a == sc]
        if outs != [soma]:
            raise UserError(f"node {sc!r}: a soft-reset feedback Scale must feed only its soma {soma!r}")
    return pred


def _split_loops(g: FlatGraph, input_name: str) -> FlatGraph:
    """Take each loop-closing edge (:func:`loop_edges`) out of ``pred`` into ``recurrent``; a loop
    the Input node does not reach stays in ``pred`` and :func:`topo_order` names it."""
    back = loop_edges(list(g.pred), g.pred, input_name) if input_name in g.pred else set()
    if not back:
        return g
    pred = {n: [a for a in ins if (a, n) not in back] for n, ins in g.pred.items()}
    recurrent: dict[str, list[str]] = {}
    for a, b in sorted(back):
        recurrent.setdefault(b, []).append(a)
    for b, srcs in recurrent.items():
        if not pred[b]:
            raise UserError(f"node {b!r}: it is reached only through a loop ({', '.join(srcs)}), never from the "
                            "Input node")
    return FlatGraph(g.nodes, g.edges, g.loops, pred, recurrent)


def _one_input_and_output(nodes: Mapping[str, nir.NIRNode]) -> tuple[str, str]:
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1:
        raise UserError(f"the graph needs exactly one Input node, it has {len(inputs)}")
    if len(outputs) != 1:
        raise UserError(f"the graph needs exactly one Output node, it has {len(outputs)}")
    return inputs[0], outputs[0]


# ---------------------------------------------------------------- one op per node


@dataclass(frozen=True)
class NodeContext:
    """What a node builder may read besides its own node: the settings and the flat graph."""

    settings: BuildSettings
    graph: FlatGraph


Shape = tuple[int, ...]
NodeBuilder = Callable[[NodeContext, str, nir.NIRNode, list[str], Shape], Op]


def _output_op(ctx: NodeContext, name: str, node: nir.NIRNode, ins: list[str], in_shape: Shape) -> Op:
    declared = node.output_type.get("output")
    want = tuple(int(s) for s in np.asarray(declared).reshape(-1)) if declared is not None else ()
    if want and want != in_shape and want != (1, *in_shape):  # (1, ...): an exporter's batch
        raise UserError(f"node {name!r} (Output): declared shape {tuple(np.asarray(declared).tolist())} "
                        f"but it receives {in_shape}")
    return Op(name, "output", type(node).__name__, ins, in_shape, in_shape)


def _threshold_op(ctx: NodeContext, name: str, node: nir.NIRNode, ins: list[str], in_shape: Shape) -> Op:
    """A Threshold outside a soft-reset loop: a spike test, or our tagged ReLU extension."""
    theta = read_param(node, name, "threshold")
    check_param_shape(name, node, theta, in_shape, "threshold")
    if read_metadata(node.metadata).get("dsqn_role") == "relu":
        if "relu" not in ctx.settings.extensions:
            raise UserError(f"node {name!r} is tagged relu but the graph does not declare the relu extension")
        return Op(name, "relu", "ReLU (dsqn extension)", ins, in_shape, in_shape)
    return Op(name, "threshold", type(node).__name__, ins, in_shape, in_shape,
              params={"threshold": collapse(theta), "compare": ctx.settings.compare})


def _neuron_op(ctx: NodeContext, name: str, node: nir.NIRNode, ins: list[str], in_shape: Shape) -> Op:
    s = ctx.settings
    return Op(name, "neuron", type(node).__name__, ins, in_shape, in_shape,
              neuron=neuron_step(name, node, in_shape, s.dt, s.convention, s.compare,
                                 recurrent=name in ctx.graph.recurrent))


def _synapse_op(ctx: NodeContext, name: str, node: nir.NIRNode, ins: list[str], in_shape: Shape) -> Op:
    kind, params = synapse_params(name, node)
    op = Op(name, kind, type(node).__name__, ins, in_shape, in_shape, params=params)
    op.out_shape = synapse_output_shape(op)
    return op


NODE_BUILDERS: dict[type[nir.NIRNode], NodeBuilder] = {
    nir.Output: _output_op,
    nir.Threshold: _threshold_op,
    **{cls: _neuron_op for cls in NEURON_STEPS},
    **{cls: _synapse_op for cls in SYNAPSE_PARAMS},
}
"""One entry per supported NIR class (Input and the soft-reset loop are built by :func:`build_ops`)."""

_SUPPORTED = ("Input, Output, Affine, Linear, Conv2d, Flatten, SumPool2d, AvgPool2d, Scale, LIF, IF, LI, I, "
              "CubaLIF, CubaLI, Threshold")


def _input_op(g: FlatGraph, name: str, node: nir.NIRNode) -> Op:
    if g.pred[name]:
        raise UserError(f"node {name!r} (Input) has incoming edges")
    shape = tuple(int(s) for s in np.asarray(node.input_type["input"]).reshape(-1))
    shape = drop_batch_dim(name, shape, g.nodes, g.edges)
    return Op(name, "input", type(node).__name__, [], shape, shape)


def _soft_loop_op(ctx: NodeContext, name: str, ins: list[str], in_shape: Shape) -> Op:
    s, nodes = ctx.settings, ctx.graph.nodes
    soma, sc = ctx.graph.loops[name]
    step = soft_loop_step((soma, name, sc), nodes, in_shape, s.dt, s.convention, s.compare)
    return Op(name, "neuron", "soft-reset " + type(nodes[soma]).__name__, ins, in_shape, in_shape,
              neuron=step, members=(soma, name, sc))


def _in_shape(name: str, tname: str, ins: list[str], ops: Mapping[str, Op]) -> tuple[int, ...]:
    """The one shape all of a node's inputs carry (several inputs are summed)."""
    if not ins:
        raise UserError(f"node {name!r} ({tname}) has no input: it is not reachable from the Input node")
    shapes = {ops[i].out_shape for i in ins}
    if len(shapes) != 1:
        listed = ", ".join(f"{i}: {ops[i].out_shape}" for i in ins)
        raise UserError(f"node {name!r} ({tname}): its inputs have different shapes ({listed})")
    return shapes.pop()


def build_ops(ctx: NodeContext, order: list[str]) -> dict[str, Op]:
    """One op per node of ``order`` (topological), each checked against its inputs' shape."""
    g = ctx.graph
    ops: dict[str, Op] = {}
    for name in order:
        node = g.nodes[name]
        if isinstance(node, nir.Input):
            ops[name] = _input_op(g, name, node)
            continue
        ins = g.pred[name]
        tname = type(node).__name__
        in_shape = _in_shape(name, tname, ins, ops)
        if name in g.loops:
            ops[name] = _soft_loop_op(ctx, name, ins, in_shape)
        else:
            builder = next((NODE_BUILDERS[c] for c in type(node).__mro__ if c in NODE_BUILDERS), None)
            if builder is None:
                raise UserError(f"node {name!r}: NIR node type {tname} is not supported by dsqn-deploy "
                                f"(supported: {_SUPPORTED})")
            ops[name] = builder(ctx, name, node, ins, in_shape)
        ops[name].recurrent = list(g.recurrent.get(name, []))
    for name, late in g.recurrent.items():  # a loop's sources are built after the node they feed
        for src in late:
            if ops[src].out_shape != ops[name].in_shape:
                raise UserError(f"node {name!r} ({ops[name].nir_type}): its recurrent input {src!r} has shape "
                                f"{ops[src].out_shape}, its other inputs {ops[name].in_shape}")
    return ops


# ---------------------------------------------------------------- the plan


def build_plan(graph: nir.NIRGraph, *, convention: str | None = None, time_steps: int | None = None,
               dt: float | None = None, readout: str | None = None) -> Plan:
    """Check ``graph`` and lower it to a :class:`Plan` (see module docstring)."""
    if not isinstance(graph, nir.NIRGraph):
        raise UserError(f"expected a NIR graph, got a single {type(graph).__name__} node")
    settings = read_settings(graph, convention, dt)
    flat = flatten_graph(graph)
    input_name, output_name = _one_input_and_output(flat.nodes)
    flat = _split_loops(flat, input_name)
    order = topo_order(list(flat.pred), flat.pred)
    ops = build_ops(NodeContext(settings, flat), order)

    out_op = ops[output_name]
    source = ops[out_op.inputs[0]] if out_op.inputs else None
    if len(out_op.inputs) != 1:
        raise UserError(f"node {output_name!r} (Output) must have exactly one input, "
                        f"it has {len(out_op.inputs)}")
    semantics = resolve_semantics(settings.meta, settings.convention, source, time_steps=time_steps,
                                  dt=settings.dt, readout=readout)
    n_values = int(np.prod(out_op.out_shape))
    if semantics.n_actions is not None and n_values != semantics.n_actions:
        raise UserError(f"node {output_name!r} (Output) has {n_values} values but the graph "
                        f"metadata says {semantics.n_actions} actions")
    return Plan(ops=[ops[n] for n in order], input=input_name, output=output_name, semantics=semantics,
                metadata=settings.meta)
