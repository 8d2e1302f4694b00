"""Any NIR graph -> a checked, topologically ordered plan of discrete-time operations.

This is the one place where NIR's continuous-time nodes become DESIGN.md's per-step
arithmetic (forward Euler at ``dt``), where third-party conventions are normalised
(:mod:`exporters.conventions`), and where our tagged soft-reset loop becomes one
subtractive neuron. Every backend can build from a :class:`Plan`; the reference executor
does. Unsupported nodes, missing parameters, shape mismatches and loops get a
:class:`UserError` naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import nir
import numpy as np
import torch

from exporters.conventions import Convention, get_convention
from exporters.metadata import DEFAULT_DT, READOUT_REDUCE, REDUCTIONS, is_ours, read_metadata
from pipeline.errors import UserError, check_choice
from pipeline.spec import ENCODINGS

Param = Union[float, np.ndarray]
SYNAPSES = ("affine", "linear", "conv2d", "flatten", "sumpool2d", "avgpool2d", "scale")
KNOWN_EXTENSIONS = ("relu",)


@dataclass(frozen=True)
class NeuronStep:
    """One population's step (DESIGN.md form, tau in steps). ``v_th`` None: non-spiking.

    charge: leaky ``U = V + (gain*I - (V - v_leak)) / tau``; no leak ``U = V + gain*I``
    (CubaLIF first filters I through ``syn = syn + (w_in*x - syn) / tau_syn``).
    spike:  ``U >= v_th`` (or ``>``); multi-spike: ``trunc(U / v_th)`` spikes for U > 0.
    reset:  hard ``V = U (1-S) + v_reset S``; soft ``V = U - v_sub S``; soft_next: the
            subtraction lands on the next step's charge (snnTorch's delayed reset).
    """

    gain: Param = 1.0
    tau: Param | None = None
    v_leak: Param = 0.0
    v_th: Param | None = None
    v_reset: Param = 0.0
    reset: str = "hard"
    v_sub: Param = 0.0
    compare: str = ">="
    v_init: Param = 0.0
    multi_spike: bool = False
    tau_syn: Param | None = None
    w_in: Param = 1.0
    syn_order: str = "nir"

    @property
    def spiking(self) -> bool:
        return self.v_th is not None


@dataclass
class Op:
    name: str
    kind: str  # input | output | relu | threshold | neuron | one of SYNAPSES
    nir_type: str
    inputs: list[str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)
    neuron: NeuronStep | None = None
    members: tuple[str, ...] = ()  # NIR nodes merged into this op (the soft-reset loop)

    @property
    def spiking(self) -> bool:
        return self.kind == "threshold" or (self.neuron is not None and self.neuron.spiking)


@dataclass(frozen=True)
class Semantics:
    """How observations go in and Q-values come out (graph metadata, overrides, defaults)."""

    dt: float
    time_steps: int
    encoding: str = "current"
    encoding_seed: int = 0
    readout: str = "sum"
    reduce: str = "sum"
    divisor: float = 1.0
    membrane_divisor: float = 0.0
    offset: float = 0.0
    tiebreak: str = "none"
    n_actions: int | None = None
    ours: bool = False
    convention: str = "nir"


@dataclass
class Plan:
    ops: list[Op]
    input: str
    output: str
    semantics: Semantics
    metadata: dict[str, Any]

    def op(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(name)

    @property
    def readout_source(self) -> Op:
        """The op feeding the Output node (its membrane serves tie-breaks and robust rates)."""
        return self.op(self.op(self.output).inputs[0])


# ---------------------------------------------------------------- graph surgery


def inline_subgraphs(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]]) -> tuple[
        dict[str, nir.NIRNode], list[tuple[str, str]]]:
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
            rewired: list[tuple[str, str]] = []
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


def find_soft_loops(nodes: Mapping[str, nir.NIRNode], edges: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
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


def topo_order(names: list[str], pred: Mapping[str, list[str]]) -> list[str]:
    done: list[str] = []
    placed: set[str] = set()
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if all(p in placed for p in pred[n])]
        if not ready:
            stuck = ", ".join(sorted(remaining)[:6])
            raise UserError(
                f"recurrent NIR graph: nodes {stuck} form a loop; only feed-forward graphs and the "
                "soft-reset loop (I/LI -> Threshold -> Scale -> I/LI) are supported"
            )
        for n in ready:
            done.append(n)
            placed.add(n)
        remaining = [n for n in remaining if n not in placed]
    return done


# ---------------------------------------------------------------- parameters


def _arr(node: nir.NIRNode, name: str, attr: str) -> np.ndarray:
    value = getattr(node, attr, None)
    if value is None:
        raise UserError(f"node {name!r} ({type(node).__name__}): missing parameter {attr!r}")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise UserError(f"node {name!r} ({type(node).__name__}): parameter {attr!r} is not finite")
    return arr


def collapse(a: np.ndarray | float) -> Param:
    """A uniform parameter becomes a Python float (so the arithmetic matches torch's scalars)."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("empty parameter")
    flat = arr.reshape(-1)
    if np.all(flat == flat[0]):
        return float(flat[0])
    return arr


def snap(x: float) -> float:
    """Undo float noise of tau/dt and dt*r (2e-4/1e-4 must be exactly 2.0): round to 12 digits."""
    if x == 0 or not math.isfinite(x):
        return x
    nice = float(f"{x:.12g}")
    return nice if abs(nice - x) <= 1e-12 * abs(x) else x


def snap_param(p: Param) -> Param:
    if isinstance(p, float):
        return snap(p)
    return np.vectorize(snap, otypes=[np.float64])(p)


def _param_shape(name: str, node: nir.NIRNode, arr: np.ndarray, shape: tuple[int, ...], attr: str) -> None:
    if arr.size == 1:
        return
    try:
        ok = np.broadcast_shapes(arr.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"node {name!r} ({type(node).__name__}): parameter {attr!r} has shape "
                        f"{tuple(arr.shape)} but the node's input has shape {shape}")


def neuron_step(name: str, node: nir.NIRNode, shape: tuple[int, ...], dt: float, cv: Convention,
                compare: str) -> NeuronStep:
    """NIR neuron node -> discrete step, normalised by the graph's convention."""
    def get(attr: str) -> np.ndarray:
        arr = _arr(node, name, attr)
        _param_shape(name, node, arr, shape, attr)
        return arr

    def tau_steps(attr: str) -> Param:
        tau = get(attr)
        if cv.tau_written == "dt_times_tau":
            tau = tau / dt
        if np.any(tau <= 0):
            raise UserError(f"node {name!r} ({type(node).__name__}): {attr} must be positive")
        steps = tau / dt if cv.leak == "euler" else 1.0 / (1.0 - np.exp(-dt / tau))
        p = snap_param(collapse(steps))
        if np.any(np.asarray(p) < 1.0):
            raise UserError(f"node {name!r} ({type(node).__name__}): {attr}={float(np.min(tau)):g} is "
                            f"shorter than one step dt={dt:g}; forward Euler is unstable (pass the right --dt)")
        return p

    def init(v_reset: Param, v_leak: Param) -> Param:
        return {"zero": 0.0, "v_leak": v_leak, "v_reset": v_reset}[cv.v_init]

    def spiking_reset(v_th: Param, v_reset: Param) -> dict[str, Any]:
        if cv.spiking_reset == "graph":
            return {"reset": "hard", "v_reset": v_reset}
        return {"reset": cv.spiking_reset, "v_reset": v_reset, "v_sub": v_th}

    common = {"compare": compare, "multi_spike": cv.multi_spike}
    if isinstance(node, nir.LIF):
        v_th, v_reset, v_leak = (collapse(get(a)) for a in ("v_threshold", "v_reset", "v_leak"))
        return NeuronStep(gain=snap_param(collapse(get("r"))), tau=tau_steps("tau"), v_leak=v_leak, v_th=v_th,
                          v_init=init(v_reset, v_leak), **spiking_reset(v_th, v_reset), **common)
    if isinstance(node, nir.IF):
        v_th, v_reset = collapse(get("v_threshold")), collapse(get("v_reset"))
        r = get("r")
        gain = snap_param(collapse(r * dt if cv.if_gain == "euler" else r))
        return NeuronStep(gain=gain, v_th=v_th, v_init=init(v_reset, 0.0), **spiking_reset(v_th, v_reset), **common)
    if isinstance(node, nir.CubaLIF):
        v_th, v_reset, v_leak = (collapse(get(a)) for a in ("v_threshold", "v_reset", "v_leak"))
        return NeuronStep(gain=snap_param(collapse(get("r"))), tau=tau_steps("tau_mem"), v_leak=v_leak, v_th=v_th,
                          tau_syn=tau_steps("tau_syn"), w_in=collapse(get("w_in")), syn_order=cv.cuba_order,
                          v_init=init(v_reset, v_leak), **spiking_reset(v_th, v_reset), **common)
    if isinstance(node, nir.CubaLI):
        v_leak = collapse(get("v_leak"))
        return NeuronStep(gain=snap_param(collapse(get("r"))), tau=tau_steps("tau_mem"), v_leak=v_leak,
                          tau_syn=tau_steps("tau_syn"), w_in=collapse(get("w_in")), syn_order=cv.cuba_order,
                          v_init=0.0 if cv.v_init == "zero" else v_leak, compare=compare)
    if isinstance(node, nir.LI):
        v_leak = collapse(get("v_leak"))
        return NeuronStep(gain=snap_param(collapse(get("r"))), tau=tau_steps("tau"), v_leak=v_leak,
                          v_init=0.0 if cv.v_init == "zero" else v_leak, compare=compare)
    if isinstance(node, nir.I):
        r = get("r")
        gain = snap_param(collapse(r * dt if cv.if_gain == "euler" else r))
        return NeuronStep(gain=gain, v_init=0.0, compare=compare)
    raise AssertionError(type(node))


def soft_loop_step(names: tuple[str, str, str], nodes: Mapping[str, nir.NIRNode], shape: tuple[int, ...],
                   dt: float, cv: Convention, compare: str) -> NeuronStep:
    """soma -> Threshold(theta) -> Scale(c) -> soma as one subtractive neuron.

    With the feedback one step late (the only way a loop can be run), the soma's state is the
    pre-reset membrane U: I soma ``v += g (x + c S)`` is ``U = V + g x`` with ``V = U - (-g c) S``;
    LI soma needs ``v_sub = -g c / (tau - 1)`` (docs/NIR.md derives both).
    """
    soma_name, th_name, sc_name = names
    soma, th, sc = nodes[soma_name], nodes[th_name], nodes[sc_name]
    base = neuron_step(soma_name, soma, shape, dt, cv, compare)
    theta = _arr(th, th_name, "threshold")
    _param_shape(th_name, th, theta, shape, "threshold")
    c = _arr(sc, sc_name, "scale")
    _param_shape(sc_name, sc, c, shape, "scale")
    g = np.asarray(base.gain, dtype=np.float64)
    if base.tau is None:
        v_sub = -g * c
    else:
        tau = np.asarray(base.tau, dtype=np.float64)
        if np.any(tau == 1.0) and np.any(c != 0):
            raise UserError(f"node {soma_name!r}: soft-reset loop around an LI with tau of one step cannot be "
                            "mapped to a subtractive neuron")
        v_sub = np.where(tau == 1.0, 0.0, -g * c / np.where(tau == 1.0, 2.0, tau - 1.0))
    return NeuronStep(gain=base.gain, tau=base.tau, v_leak=base.v_leak, v_th=collapse(theta), reset="soft",
                      v_sub=snap_param(collapse(v_sub)), compare=compare, v_init=base.v_init,
                      multi_spike=cv.multi_spike)


# ---------------------------------------------------------------- synapses and shapes


def synapse_params(name: str, node: nir.NIRNode) -> tuple[str, dict[str, Any]]:
    if isinstance(node, nir.Affine):
        return "affine", {"weight": _arr(node, name, "weight"), "bias": _arr(node, name, "bias")}
    if isinstance(node, nir.Linear):
        return "linear", {"weight": _arr(node, name, "weight")}
    if isinstance(node, nir.Scale):
        return "scale", {"scale": _arr(node, name, "scale")}
    if isinstance(node, nir.Conv2d):
        w = _arr(node, name, "weight")
        if w.ndim != 4:
            raise UserError(f"node {name!r} (Conv2d): weight must be 4-D (C_out, C_in/groups, kH, kW), got {w.shape}")
        bias = getattr(node, "bias", None)
        b = _arr(node, name, "bias") if bias is not None and np.size(bias) > 1 else np.zeros(w.shape[0])
        if np.size(bias) == 1 and bias is not None:
            b = np.full(w.shape[0], float(np.asarray(bias).reshape(-1)[0]))
        pad = node.padding
        if not isinstance(pad, str):
            pad = tuple(int(p) for p in np.broadcast_to(np.asarray(pad).reshape(-1), (2,)))
        return "conv2d", {
            "weight": w, "bias": b, "padding": pad, "groups": int(node.groups),
            "stride": tuple(int(s) for s in np.broadcast_to(np.asarray(node.stride).reshape(-1), (2,))),
            "dilation": tuple(int(d) for d in np.broadcast_to(np.asarray(node.dilation).reshape(-1), (2,))),
        }
    if isinstance(node, nir.Flatten):
        return "flatten", {"start_dim": int(node.start_dim), "end_dim": int(node.end_dim)}
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        def pair(attr: str) -> tuple[int, int]:
            v = getattr(node, attr, None)
            if v is None:
                raise UserError(f"node {name!r} ({type(node).__name__}): missing parameter {attr!r}")
            return tuple(int(x) for x in np.broadcast_to(np.asarray(v).reshape(-1), (2,)))  # type: ignore
        kind = "sumpool2d" if isinstance(node, nir.SumPool2d) else "avgpool2d"
        return kind, {"kernel_size": pair("kernel_size"), "stride": pair("stride"), "padding": pair("padding")}
    raise AssertionError(type(node))


def synapse_output_shape(op: Op) -> tuple[int, ...]:
    """Run the op once on zeros (float64) to learn its output shape, or name the mismatch."""
    from backends.reference.ops import apply_synapse  # one implementation of the maps

    x = torch.zeros((1, *op.in_shape), dtype=torch.float64)
    try:
        y = apply_synapse(op, x, {k: (torch.as_tensor(v, dtype=torch.float64) if isinstance(v, np.ndarray) else v)
                                  for k, v in op.params.items()})
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"node {op.name!r} ({op.nir_type}): input of shape {op.in_shape} does not fit "
                        f"({first[:160]})") from None
    return tuple(int(s) for s in y.shape[1:])


def drop_batch_dim(name: str, shape: tuple[int, ...], nodes: Mapping[str, nir.NIRNode],
                   edges: list[tuple[str, str]]) -> tuple[int, ...]:
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


# ---------------------------------------------------------------- semantics


def _meta_float(meta: Mapping[str, Any], key: str, default: float) -> float:
    value = meta.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"graph metadata {key!r} is not a number: {value!r}") from None


def readout_from_name(name: str, plan_source: Op | None, T: int) -> dict[str, Any]:
    """Reduction fields for ``--readout NAME`` (or metadata naming only the readout)."""
    check_choice("readout", name, READOUT_REDUCE)
    fields: dict[str, Any] = {"readout": name, "reduce": READOUT_REDUCE[name], "divisor": 1.0,
                              "membrane_divisor": 0.0, "offset": 0.0, "tiebreak": "none"}
    if name == "spike_count":
        fields["tiebreak"] = "membrane"
    if name == "robust_rate":
        src = plan_source
        if src is None or src.neuron is None or not src.neuron.spiking:
            raise UserError("readout robust_rate needs a spiking neuron node (LIF/IF/CubaLIF) feeding Output")
        v_th = src.neuron.v_th
        if not isinstance(v_th, float):
            raise UserError(f"readout robust_rate needs one threshold for node {src.name!r}, it has several")
        fields.update(divisor=float(T), membrane_divisor=float(T * v_th))
    return fields


def resolve_semantics(meta: Mapping[str, Any], cv: Convention, source: Op | None, *, time_steps: int | None,
                      dt: float | None, readout: str | None) -> Semantics:
    ours = meta.get("format") == "dsqn-deploy/nir"
    T = time_steps if time_steps is not None else meta.get("time_steps")
    if T is None:
        raise UserError("the graph carries no time_steps metadata; pass --time-steps")
    try:
        T = int(T)
    except (TypeError, ValueError):
        raise UserError(f"time_steps must be an integer, got {T!r}") from None
    if T < 1:
        raise UserError(f"time steps must be >= 1, got {T}")
    encoding = str(meta.get("input_encoding", "current"))
    check_choice("input encoding", encoding, ENCODINGS)
    if readout is not None:
        fields = readout_from_name(readout, source, T)
    elif "readout_reduce" in meta:
        fields = {
            "readout": str(meta.get("readout", "sum")),
            "reduce": str(meta["readout_reduce"]),
            "divisor": _meta_float(meta, "readout_divisor", 1.0),
            "membrane_divisor": _meta_float(meta, "readout_membrane_divisor", 0.0),
            "offset": _meta_float(meta, "readout_offset", 0.0),
            "tiebreak": str(meta.get("readout_tiebreak", "none")),
        }
        check_choice("readout reduction", fields["reduce"], REDUCTIONS)
    else:
        fields = readout_from_name(str(meta.get("readout", "sum")), source, T)
    if fields["membrane_divisor"] and (source is None or source.neuron is None):
        raise UserError("the readout adds a membrane term, but no neuron node feeds Output")
    n_actions = meta.get("n_actions")
    return Semantics(dt=dt, time_steps=T, encoding=encoding, encoding_seed=int(meta.get("encoding_seed", 0)),
                     n_actions=int(n_actions) if n_actions is not None else None, ours=ours,
                     convention=cv.name, **fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the plan


def build_plan(graph: nir.NIRGraph, *, convention: str | None = None, time_steps: int | None = None,
               dt: float | None = None, readout: str | None = None) -> Plan:
    """Check ``graph`` and lower it to a :class:`Plan` (see module docstring)."""
    if not isinstance(graph, nir.NIRGraph):
        raise UserError(f"expected a NIR graph, got a single {type(graph).__name__} node")
    meta = read_metadata(graph.metadata)
    ours = is_ours(meta)
    cv = get_convention(convention or ("dsqn" if ours else "nir"))
    extensions = [e for e in str(meta.get("extensions", "")).replace(",", " ").split() if e]
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

    nodes, edges = inline_subgraphs(dict(graph.nodes), list(graph.edges))
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise UserError(f"edge ({a!r}, {b!r}) names a node {end!r} that is not in the graph")
    loops = find_soft_loops(nodes, edges)
    member_of = {}
    for th, (soma, sc) in loops.items():
        member_of[soma] = th
        member_of[sc] = th
    # the soft loop becomes one op named after its Threshold; its soma's other inputs feed it
    pred: dict[str, list[str]] = {}
    for name in nodes:
        if name in member_of:
            continue
        pred[name] = []
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

    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1:
        raise UserError(f"the graph needs exactly one Input node, it has {len(inputs)}")
    if len(outputs) != 1:
        raise UserError(f"the graph needs exactly one Output node, it has {len(outputs)}")
    order = topo_order(list(pred), pred)

    ops: dict[str, Op] = {}
    for name in order:
        node = nodes[name]
        ins = pred[name]
        tname = type(node).__name__
        if isinstance(node, nir.Input):
            if ins:
                raise UserError(f"node {name!r} (Input) has incoming edges")
            shape = tuple(int(s) for s in np.asarray(node.input_type["input"]).reshape(-1))
            shape = drop_batch_dim(name, shape, nodes, edges)
            ops[name] = Op(name, "input", tname, [], shape, shape)
            continue
        if not ins:
            raise UserError(f"node {name!r} ({tname}) has no input: it is not reachable from the Input node")
        shapes = {ops[i].out_shape for i in ins}
        if len(shapes) != 1:
            listed = ", ".join(f"{i}: {ops[i].out_shape}" for i in ins)
            raise UserError(f"node {name!r} ({tname}): its inputs have different shapes ({listed})")
        in_shape = shapes.pop()
        if isinstance(node, nir.Output):
            declared = node.output_type.get("output")
            want = tuple(int(s) for s in np.asarray(declared).reshape(-1)) if declared is not None else ()
            if want and want != in_shape and want != (1, *in_shape):  # (1, ...): an exporter's batch
                raise UserError(f"node {name!r} (Output): declared shape {tuple(np.asarray(declared).tolist())} "
                                f"but it receives {in_shape}")
            ops[name] = Op(name, "output", tname, ins, in_shape, in_shape)
        elif name in loops:
            soma, sc = loops[name]
            step = soft_loop_step((soma, name, sc), nodes, in_shape, dt, cv, compare)
            ops[name] = Op(name, "neuron", "soft-reset " + type(nodes[soma]).__name__, ins, in_shape, in_shape,
                           neuron=step, members=(soma, name, sc))
        elif isinstance(node, nir.Threshold):
            theta = _arr(node, name, "threshold")
            _param_shape(name, node, theta, in_shape, "threshold")
            role = read_metadata(node.metadata).get("dsqn_role")
            if role == "relu":
                if "relu" not in extensions:
                    raise UserError(f"node {name!r} is tagged relu but the graph does not declare the relu extension")
                ops[name] = Op(name, "relu", "ReLU (dsqn extension)", ins, in_shape, in_shape)
            else:
                ops[name] = Op(name, "threshold", tname, ins, in_shape, in_shape,
                               params={"threshold": collapse(theta), "compare": compare})
        elif isinstance(node, (nir.LIF, nir.IF, nir.LI, nir.I, nir.CubaLIF, nir.CubaLI)):
            ops[name] = Op(name, "neuron", tname, ins, in_shape, in_shape,
                           neuron=neuron_step(name, node, in_shape, dt, cv, compare))
        elif isinstance(node, (nir.Affine, nir.Linear, nir.Scale, nir.Conv2d, nir.Flatten, nir.SumPool2d,
                               nir.AvgPool2d)):
            kind, params = synapse_params(name, node)
            op = Op(name, kind, tname, ins, in_shape, in_shape, params=params)
            op.out_shape = synapse_output_shape(op)
            ops[name] = op
        else:
            raise UserError(f"node {name!r}: NIR node type {tname} is not supported by dsqn-deploy "
                            "(supported: Input, Output, Affine, Linear, Conv2d, Flatten, SumPool2d, AvgPool2d, "
                            "Scale, LIF, IF, LI, I, CubaLIF, CubaLI, Threshold)")
    out_op = ops[outputs[0]]
    source = ops[out_op.inputs[0]] if out_op.inputs else None
    if len(out_op.inputs) != 1:
        raise UserError(f"node {outputs[0]!r} (Output) must have exactly one input, it has {len(out_op.inputs)}")
    semantics = resolve_semantics(meta, cv, source, time_steps=time_steps, dt=dt, readout=readout)
    n_actions = semantics.n_actions
    if n_actions is not None and int(np.prod(out_op.out_shape)) != n_actions:
        raise UserError(f"node {outputs[0]!r} (Output) has {int(np.prod(out_op.out_shape))} values but the graph "
                        f"metadata says {n_actions} actions")
    return Plan(ops=[ops[n] for n in order], input=inputs[0], output=outputs[0], semantics=semantics, metadata=meta)
