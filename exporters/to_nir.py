"""Torch Q-network (pipeline.models) -> NIR 1.0.8 graph, with our own maps for every module.

nirtorch 2.6's defaults are not used: they leave the Affine bias random, pass torch's
batch-counting ``start_dim`` to NIR's batch-free Flatten and mix up Conv2d channels. The
model tree is small and fixed (``layers``: Sequential stages of Flatten/Linear/Conv2d,
``head``: Linear), so it is walked directly.

How each neuron and readout is written, and why a spec-following reader computes the same
Q-values from it, is documented in docs/NIR.md; the short form:

- LIF hard reset: ``LIF(tau=tau*dt, r=1, v_leak=V_r, v_threshold=V_th, v_reset=V_r)``.
- IF hard reset: ``IF(r=1/dt, v_threshold=V_th, v_reset=V_r)`` (Euler: v += dt*r*I = I).
- Soft reset (no NIR form): ``I(r=1/dt)`` (IF) or ``LI(tau, r=1)`` (LIF) -> ``Threshold``, with
  the feedback ``Threshold -> Scale(c) -> I/LI``; c = -V_th for IF, -V_th*(tau-1) for LIF.
  Tagged ``dsqn_role`` in node metadata.
- ReLU (DQN only): NIR has no such node; written as a tagged ``Threshold(0)`` and flagged in
  graph metadata ``extensions = "relu"`` (a spec reader cannot run a DQN graph; see docs).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from exporters.metadata import DEFAULT_DT, FORMAT, FORMAT_VERSION, READOUT_REDUCE, flatten
from pipeline.checkpoint import Checkpoint
from pipeline.errors import UserError
from pipeline.models import DQN, SpikingQNetwork
from pipeline.spec import MEMBRANE_READOUTS, ModelSpec, NeuronParams


class GraphBuilder:
    """Collects nodes and edges in order; every node knows its batch-free output shape."""

    def __init__(self) -> None:
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}

    def add(self, name: str, node: nir.NIRNode, shape: tuple[int, ...], src: str | None) -> str:
        if name in self.nodes:
            raise ValueError(f"duplicate NIR node name {name!r}")
        self.nodes[name] = node
        self.shapes[name] = tuple(int(s) for s in shape)
        if src is not None:
            self.edges.append((src, name))
        return name


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float64)  # neuron constants: float64 so tau/dt stays exact


def synapse_node(mod: nn.Module, in_shape: tuple[int, ...], path: str) -> tuple[nir.NIRNode, tuple[int, ...]]:
    """Our map of one synaptic module (Linear, Conv2d, Flatten) to a NIR node and its output shape."""
    meta = {"source_module": path}
    with torch.no_grad():
        out_shape = tuple(mod(torch.zeros(1, *in_shape)).shape[1:])
    if isinstance(mod, nn.Linear):
        if mod.bias is None:
            return nir.Linear(weight=_np(mod.weight), metadata=meta), out_shape
        return nir.Affine(weight=_np(mod.weight), bias=_np(mod.bias), metadata=meta), out_shape
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros":
            raise UserError(f"{path}: Conv2d padding_mode {mod.padding_mode!r} has no NIR form")
        bias = _np(mod.bias) if mod.bias is not None else np.zeros(mod.out_channels, np.float32)
        padding = mod.padding if isinstance(mod.padding, str) else tuple(int(p) for p in mod.padding)
        node = nir.Conv2d(
            input_shape=(int(in_shape[1]), int(in_shape[2])),
            weight=_np(mod.weight),  # (C_out, C_in/groups, kH, kW), as torch
            stride=tuple(int(s) for s in mod.stride),
            padding=padding,
            dilation=tuple(int(d) for d in mod.dilation),
            groups=int(mod.groups),
            bias=bias,
            metadata=meta,
        )
        return node, out_shape
    if isinstance(mod, nn.Flatten):
        # torch counts the batch dimension, NIR's Flatten does not
        start = mod.start_dim - 1 if mod.start_dim > 0 else mod.start_dim
        end = mod.end_dim - 1 if mod.end_dim > 0 else mod.end_dim
        node = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start, end_dim=end,
                           metadata=meta)
        return node, out_shape
    raise UserError(f"{path}: module {type(mod).__name__} has no NIR map in dsqn-deploy")


def add_neurons(g: GraphBuilder, prefix: str, src: str, p: NeuronParams, dt: float) -> tuple[str, str]:
    """Append one spiking population fed by ``src``; return (spike node, membrane node)."""
    shape = g.shapes[src]
    if p.reset == "hard":
        if p.model == "lif":
            node = nir.LIF(tau=_full(shape, p.tau * dt), r=_full(shape, 1.0), v_leak=_full(shape, p.v_reset),
                           v_threshold=_full(shape, p.v_th), v_reset=_full(shape, p.v_reset))
            name = g.add(f"{prefix}_lif", node, shape, src)
        else:
            node = nir.IF(r=_full(shape, 1.0 / dt), v_threshold=_full(shape, p.v_th),
                          v_reset=_full(shape, p.v_reset))
            name = g.add(f"{prefix}_if", node, shape, src)
        return name, name
    # Soft reset: integrator -> Threshold, feedback Threshold -> Scale(c) -> integrator. The
    # membrane is written relative to V_r (state starts at 0, threshold V_th - V_r).
    tag = {"dsqn_role": "soft_reset", "dsqn_neuron": p.model, "dsqn_v_sub": float(p.v_th)}
    if p.model == "lif":
        soma: nir.NIRNode = nir.LI(tau=_full(shape, p.tau * dt), r=_full(shape, 1.0), v_leak=_full(shape, 0.0),
                                   metadata={**tag, "dsqn_part": "soma"})
        feedback = -p.v_th * (p.tau - 1.0)
    else:
        soma = nir.I(r=_full(shape, 1.0 / dt), metadata={**tag, "dsqn_part": "soma"})
        feedback = -p.v_th
    soma_name = g.add(f"{prefix}_soma", soma, shape, src)
    spike = g.add(f"{prefix}_spike", nir.Threshold(threshold=_full(shape, p.v_th - p.v_reset),
                                                   metadata={**tag, "dsqn_part": "spike"}), shape, soma_name)
    reset = g.add(f"{prefix}_reset", nir.Scale(scale=_full(shape, feedback),
                                               metadata={**tag, "dsqn_part": "reset"}), shape, spike)
    g.edges.append((reset, soma_name))
    return spike, soma_name


def readout_fields(spec: ModelSpec, p: NeuronParams | None) -> dict[str, Any]:
    """Graph metadata that turns the Output node's series y[t] into q (docs/NIR.md):

    q = reduce_t(y) / readout_divisor + V_out(T) / readout_membrane_divisor + readout_offset
    """
    T = spec.time_steps
    if p is None:
        return {"readout": "q", "readout_reduce": "last"}
    r = spec.readout
    fields: dict[str, Any] = {"readout": r, "readout_reduce": READOUT_REDUCE[r]}
    if r == "voltage":
        fields["readout_offset"] = float(p.v_reset)
        if p.model == "if":
            fields["readout_reduce"] = "sum"  # V(T) = V_r + sum_t I_t
    elif r == "spike_count":
        fields["readout_tiebreak"] = "membrane"
    elif r == "robust_rate":
        if p.model == "if" and p.reset == "soft":
            # count/T + V(T)/(T V_th) = (V_r + sum_t I_t) / (T V_th): read the head's current
            fields["readout_divisor"] = float(T * p.v_th)
            fields["readout_offset"] = float(p.v_reset) / (T * p.v_th)
        else:
            fields["readout_divisor"] = float(T)
            fields["readout_membrane_divisor"] = float(T * p.v_th)
            if p.reset == "soft":  # membrane written relative to V_r
                fields["readout_offset"] = float(p.v_reset) / (T * p.v_th)
    return fields


def add_head(g: GraphBuilder, spec: ModelSpec, head: nn.Linear, src: str, dt: float) -> str:
    """Head map plus the readout's output layer; returns the node that feeds Output."""
    node, shape = synapse_node(head, g.shapes[src], "head")
    name = g.add("head", node, shape, src)
    if not spec.spiking:
        return name
    p = spec.neuron
    assert p is not None
    r = spec.readout
    if r == "rate":
        return name
    if r in MEMBRANE_READOUTS:
        li = nir.LI(tau=_full(shape, spec.tau_out * dt), r=_full(shape, 1.0), v_leak=_full(shape, 0.0))
        return g.add("out_li", li, shape, name)
    if r == "voltage":
        if p.model == "if":
            return name
        li = nir.LI(tau=_full(shape, p.tau * dt), r=_full(shape, 1.0), v_leak=_full(shape, 0.0))
        return g.add("out_li", li, shape, name)
    if r == "robust_rate" and p.model == "if" and p.reset == "soft":
        return name
    spike, _ = add_neurons(g, "out", name, p, dt)
    return spike


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def graph_metadata(ckpt: Checkpoint, dt: float, source: Path | None) -> dict[str, Any]:
    spec = ckpt.spec
    p = spec.neuron
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nir_version": nir.version,
        "dt": float(dt),
        "time_steps": int(spec.time_steps if spec.spiking else 1),
        "discretization": "forward_euler",
        "threshold": ">=",
        "input_encoding": spec.encoding if spec.spiking else "current",
        "encoding_seed": int(spec.encoding_seed),
        "n_actions": int(spec.n_actions),
        "obs_shape": np.asarray(spec.obs_shape, dtype=np.int64),
        "model_kind": spec.kind,
        "model_variant": spec.variant,
        "model_arch": spec.arch,
        "bias": int(spec.bias),
        "env_id": ckpt.env_id,
        "extensions": "" if spec.spiking else "relu",
        **readout_fields(spec, p),
    }
    if spec.arch == "mlp":
        meta["hidden"] = np.asarray(spec.hidden, dtype=np.int64)
    if p is not None:
        meta.update({"neuron_model": p.model, "neuron_reset": p.reset, "neuron_tau": float(p.tau),
                     "v_th": float(p.v_th), "v_reset": float(p.v_reset), "tau_out": float(spec.tau_out)})
    pre = ckpt.preprocessing
    meta["preprocessing_offset"] = np.asarray(pre.offset, dtype=np.float64)
    meta["preprocessing_scale"] = np.asarray(pre.scale, dtype=np.float64)
    meta.update(flatten("preprocessing_atari", pre.atari))
    meta.update(flatten("provenance", ckpt.provenance))
    if source is not None:
        meta["source_checkpoint"] = str(source)
        meta["source_sha256"] = file_sha256(source)
    return meta


def model_to_nir(ckpt: Checkpoint, dt: float = DEFAULT_DT, source: Path | None = None) -> nir.NIRGraph:
    """The NIR graph of a checkpoint's model (docs/DESIGN.md "NIR encoding")."""
    if not dt > 0:
        raise UserError(f"dt must be positive, got {dt}")
    spec = ckpt.spec
    model = ckpt.build()
    assert isinstance(model, (DQN, SpikingQNetwork))
    g = GraphBuilder()
    src = g.add("input", nir.Input(input_type={"input": np.array(spec.obs_shape)}), spec.obs_shape, None)
    for i, stage in enumerate(model.layers):
        for j, mod in enumerate(stage):
            node, shape = synapse_node(mod, g.shapes[src], f"layers.{i}.{j}")
            kind = {"Linear": "fc", "Conv2d": "conv", "Flatten": "flatten"}[type(mod).__name__]
            src = g.add(f"l{i}_{kind}", node, shape, src)
        if spec.spiking:
            assert spec.neuron is not None
            src, _ = add_neurons(g, f"l{i}", src, spec.neuron, dt)
        else:
            relu = nir.Threshold(threshold=np.zeros(g.shapes[src], np.float32),
                                 metadata={"dsqn_role": "relu"})
            src = g.add(f"l{i}_relu", relu, g.shapes[src], src)
    last = add_head(g, spec, model.head, src, dt)
    g.add("output", nir.Output(output_type={"output": np.array(g.shapes[last])}), g.shapes[last], last)
    meta = graph_metadata(ckpt, dt, source)
    return nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=meta, type_check=True)
