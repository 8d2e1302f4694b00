"""Synaptic operations and an energy estimate per observation (docs/DESIGN.md "Metrics": ``sops``,
the ANN's MACs, ``energy_est``).

Why counts first and joules second: the counts (spikes, synaptic operations, MACs) are exact
and come from what a backend actually did; the conversion to joules is a model with published
per-operation figures that are approximate and node-dependent. Every figure used here carries
its source and how far it could be verified (docs/ENERGY.md).

What is counted, per observation (one observation = T steps of the graph, state reset before):

- ``sops``: every spike of a spiking op (a neuron with ``v_th`` or a Threshold) costs one
  accumulate per synapse it drives: ``SOPs = sum_i spikes[i] * fanout[i]``, with ``fanout`` an
  exact per-neuron array (:func:`fanout_per_neuron`: borders, stride, padding and groups of a
  convolution included). Spikes come from :class:`backends.base.Readout`, i.e. from any backend.
- input work: with the ``current`` encoding the first synaptic layer sees the same real-valued
  observation at every step, so its map is one dense pass per observation: ``input_macs``.
  With ``poisson``/``regular`` the input spikes are events and cost ``|spikes| * fanout`` like
  any other spike (``input_sops``), from spike trains given by the caller or, failing that, from
  the observations (``regular``: exact, it is deterministic; ``poisson``: the expectation
  ``T * min(|x|, 1)``; the field ``input_spikes_source`` says which).
- ``bias_acs``: a neuron whose input carries a constant term receives it at every step:
  ``T`` accumulates for every output with a non-zero bias, and under ``current`` encoding for
  every neuron fed by the once-computed input current (which already contains that layer's bias).
- ``dense_macs``: synaptic maps driven by a non-spiking hidden op (a ReLU or a non-spiking
  neuron that is not the readout) cannot be event-driven: ``T`` times their MACs.
- the DQN of the same architecture: :func:`ann_macs` on the same plan (every synaptic map once,
  conv ``out_positions * C_out * C_in/groups * kH * kW``, dense ``in * out``).

Energy (:class:`EnergyModel`, 45 nm figures of Horowitz, ISSCC 2014):
``E_snn = (sops + input_sops + bias_acs) * E_AC + (input_macs + dense_macs) * E_MAC`` and
``E_dqn = macs * E_MAC + adds * E_AC`` (adds: biases and pooling). Hardware rows
(:data:`HARDWARE`) multiply the synaptic events (``sops + input_sops``) by a published energy per
synaptic event; a figure that could not be confirmed has no value and gives no estimate.

    python benchmarks/energy.py examples/cartpole_dsqn.pt examples/cartpole_dqn.pt --obs 500 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import nir
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.base import Readout  # noqa: E402
from exporters.canonical import SYNAPSES, Op, Plan, build_plan  # noqa: E402
from exporters.plan.ops import apply_synapse  # noqa: E402


# ---------------------------------------------------------------- energy figures


@dataclass(frozen=True)
class EnergyModel:
    """Energy per arithmetic operation of a conventional digital implementation, in pJ.

    ``e_mac_pj``: one multiply-accumulate (dense ANN work, the SNN's dense input pass);
    ``e_ac_pj``: one accumulate (a synaptic operation of a binary spike: weight added, no multiply).
    """

    name: str
    e_mac_pj: float
    e_ac_pj: float
    source: str
    verified: str


HOROWITZ_45NM_FP32 = EnergyModel(
    name="45nm-fp32",
    e_mac_pj=4.6,  # 3.7 (mult) + 0.9 (add), written out to avoid float noise in tables
    e_ac_pj=0.9,
    source=("M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
            "energy table for 45 nm at 0.9 V: 32-bit float multiply 3.7 pJ, 32-bit float add 0.9 pJ; "
            "MAC = mult + add = 4.6 pJ, AC = add = 0.9 pJ"),
    verified=("confirmed: the 3.7 pJ / 0.9 pJ values and their attribution to Horowitz (45 nm, 0.9 V) "
              "checked in a published table that cites it (PMC8934428, Table 3); arithmetic only, "
              "no memory access energy"),
)


@dataclass(frozen=True)
class HardwareFigure:
    """A published energy per synaptic event of a neuromorphic chip, in pJ; None: not confirmed."""

    name: str
    pj_per_sop: float | None
    source: str
    verified: str
    note: str = ""


HARDWARE: tuple[HardwareFigure, ...] = (
    HardwareFigure(
        name="loihi",
        pj_per_sop=23.6,
        source=("M. Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip Learning', "
                "IEEE Micro 38(1):82-99, 2018, Table 2, row 'Energy per synaptic spike op (min)': 23.6 pJ"),
        verified=("secondary sources only: several independent texts quote this row and value from "
                  "Table 2; the primary table text itself could not be read here"),
        note=("reported by those sources as a pre-silicon figure (table captioned pre-silicon) and a "
              "minimum: the synaptic operation only, without neuron updates (quoted from the same table "
              "as 81/52 pJ active/inactive), spike routing or static power"),
    ),
    HardwareFigure(
        name="loihi2",
        pj_per_sop=None,
        source="Intel Loihi 2 (2021): no per-synaptic-operation energy found in a primary source",
        verified="not confirmed",
        note="only blog-level 'order of 1 pJ' claims were found; not used",
    ),
    HardwareFigure(
        name="spinnaker1",
        pj_per_sop=43_000.0,
        source=("T. Sharp, F. Galluppi, A. Rast, S. Furber, 'Power-efficient simulation of detailed "
                "cortical microcircuits on SpiNNaker', J. Neurosci. Methods 210:110-118, 2012, "
                "abstract: '43 nJ per postsynaptic potential' (and 100 nJ per neuron per millisecond)"),
        verified="confirmed from the paper's abstract",
        note=("whole-system energy divided by events for one workload (4 chips, 10k neurons, 4M "
              "synapses, real time); the per-neuron 100 nJ/ms term is not added here. Stromatias et "
              "al., IJCNN 2013 ('Power analysis of large-scale, real-time neural networks on "
              "SpiNNaker') fit a power model on a 48-chip board; its per-synaptic-event coefficient "
              "could not be confirmed and is not used"),
    ),
)


# ---------------------------------------------------------------- plan topology


def consumers(plan: Plan) -> dict[str, list[Op]]:
    """Op name -> the ops that read its output (a loop's closing edge included: its spikes drive
    synapses too, one step later)."""
    out: dict[str, list[Op]] = {op.name: [] for op in plan.ops}
    for op in plan.ops:
        for src in (*op.inputs, *op.recurrent):
            out[src].append(op)
    return out


def _structural(op: Op) -> tuple[Op, dict[str, Any]]:
    """The op with every weight 1 and no bias: its map counts paths instead of weighting them."""
    p: dict[str, Any] = {}
    for k, v in op.params.items():
        p[k] = torch.as_tensor(v, dtype=torch.float64) if isinstance(v, np.ndarray) else v
    kind = op.kind
    if kind in ("affine", "linear", "conv2d"):
        p["weight"] = torch.ones_like(p["weight"])
        if "bias" in p:
            p["bias"] = torch.zeros_like(p["bias"])
    elif kind == "scale":
        p["scale"] = torch.ones_like(p["scale"]) if isinstance(p["scale"], torch.Tensor) else 1.0
    elif kind == "avgpool2d":
        kind = "sumpool2d"  # the same connectivity, each input counted once per window
    return dataclasses.replace(op, kind=kind), p


def _adjoint(op: Op, out_weight: np.ndarray) -> np.ndarray:
    """``J^T w`` of the op's structural map: for each input element, the sum of ``w`` over the
    outputs it reaches, each counted once per path (kernel taps, overlapping pooling windows)."""
    sop, p = _structural(op)
    x = torch.zeros((1, *op.in_shape), dtype=torch.float64, requires_grad=True)
    y = apply_synapse(sop, x, p)
    (y * torch.as_tensor(out_weight, dtype=torch.float64).reshape(y.shape)).sum().backward()
    assert x.grad is not None
    return np.rint(x.grad[0].numpy()).astype(np.int64)


def synapse_costs(plan: Plan) -> dict[str, np.ndarray]:
    """Synaptic op name -> ``[*in_shape]`` int64: the synaptic operations that one unit event at
    that input element causes before it reaches neurons (the op's own synapses plus those of
    the synaptic ops after it; Flatten is free, pooling is one operation per window it enters)."""
    cons = consumers(plan)
    cost: dict[str, np.ndarray] = {}

    def of(op: Op) -> np.ndarray:  # a loop's edge may lead to a synaptic op earlier in plan order
        if op.name not in cost:
            down = np.zeros(op.out_shape, dtype=np.int64)
            for c in cons[op.name]:
                if c.kind in SYNAPSES:
                    down += of(c)
            per_synapse = 0 if op.kind == "flatten" else 1
            cost[op.name] = _adjoint(op, down + per_synapse)
        return cost[op.name]

    for op in reversed(plan.ops):
        if op.kind in SYNAPSES:
            of(op)
    return cost


def fanout_of(plan: Plan, name: str, costs: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """``[*shape]`` int64: synapses driven by each element of op ``name``'s output.

    Synaptic consumers contribute their chain's cost; an edge straight into a neuron op is an
    identity synapse (1 each); edges into Output, ReLU or Threshold ops deliver nothing.
    """
    costs = synapse_costs(plan) if costs is None else costs
    src = plan.op(name)
    total = np.zeros(src.out_shape, dtype=np.int64)
    for c in consumers(plan)[name]:
        if c.kind in SYNAPSES:
            total += costs[c.name]
        elif c.kind == "neuron":
            total += 1
    return total


def fanout_per_neuron(plan: Plan) -> dict[str, np.ndarray]:
    """Spiking op name -> ``[*node_shape]`` int64 fan-out, so ``SOPs = sum(spikes * fanout)``
    exactly (not with an averaged fan-out). The input's fan-out: :func:`input_fanout`."""
    costs = synapse_costs(plan)
    return {op.name: fanout_of(plan, op.name, costs) for op in plan.ops if op.spiking}


def input_fanout(plan: Plan) -> np.ndarray:
    """Fan-out of each input element, for spike-encoded inputs (``poisson``/``regular``)."""
    return fanout_of(plan, plan.input)


def dense_segment(plan: Plan, sources: Sequence[str]) -> list[Op]:
    """The synaptic ops reachable from ``sources`` without passing a neuron, ReLU or Output."""
    cons = consumers(plan)
    seen: dict[str, Op] = {}
    stack = [c for s in sources for c in cons[s]]
    while stack:
        op = stack.pop()
        if op.kind not in SYNAPSES or op.name in seen:
            continue
        seen[op.name] = op
        stack.extend(cons[op.name])
    return [op for op in plan.ops if op.name in seen]  # topological order


# ---------------------------------------------------------------- dense (ANN) work


@dataclass
class LayerWork:
    """Dense cost of one synaptic op applied once: MACs and plain additions (bias, pooling)."""

    macs: int
    adds: int


def _n(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _nonzero_bias_outputs(op: Op) -> int:
    """Outputs of ``op`` that receive a non-zero bias (conv: per position)."""
    b = op.params.get("bias")
    if b is None or op.kind not in ("affine", "conv2d"):
        return 0
    nnz = int(np.count_nonzero(np.asarray(b)))
    if op.kind == "affine":
        return _n(op.out_shape) // max(int(np.asarray(b).size), 1) * nnz
    return nnz * _n(op.out_shape[1:])


def op_work(op: Op) -> LayerWork:
    """MACs and adds of one application of a synaptic op (documented conventions:
    dense ``out * in``; conv ``out_positions * C_out * C_in/groups * kH * kW`` including padded
    taps, as a dense implementation computes them; pooling ``kH*kW`` adds per output plus one
    multiply (as a MAC) for averaging; Scale one multiply per element; Flatten nothing)."""
    out = _n(op.out_shape)
    bias = _nonzero_bias_outputs(op)
    if op.kind in ("affine", "linear"):
        return LayerWork(out * int(np.asarray(op.params["weight"]).shape[1]), bias)
    if op.kind == "conv2d":
        w = np.asarray(op.params["weight"])
        return LayerWork(out * int(w.shape[1] * w.shape[2] * w.shape[3]), bias)
    if op.kind in ("sumpool2d", "avgpool2d"):
        kh, kw = op.params["kernel_size"]
        return LayerWork(out if op.kind == "avgpool2d" else 0, out * kh * kw)
    if op.kind == "scale":
        return LayerWork(out, 0)
    return LayerWork(0, 0)


@dataclass
class AnnWork:
    """A forward pass of the non-spiking network: per-layer MACs, total MACs and adds."""

    per_layer: dict[str, int]
    macs: int
    adds: int


def ann_macs(plan: Plan) -> AnnWork:
    """MACs of one forward pass, every synaptic op once. On a spiking graph: the DQN of the same
    architecture (same maps, ReLUs in place of the neurons)."""
    per_layer: dict[str, int] = {}
    adds = 0
    for op in plan.ops:
        if op.kind in SYNAPSES and op.kind != "flatten":
            w = op_work(op)
            per_layer[op.name] = w.macs
            adds += w.adds
    return AnnWork(per_layer=per_layer, macs=sum(per_layer.values()), adds=adds)


# ---------------------------------------------------------------- spiking work


@dataclass
class SnnWork:
    """Mean work per observation of a spiking graph, from spike counts a backend produced."""

    n_obs: int
    time_steps: int
    encoding: str
    spikes: dict[str, float]  # mean spikes per observation, per spiking op
    sops: dict[str, float]  # mean synaptic operations per observation, per spiking op
    synapses: dict[str, int]  # sum of the fan-out: synapses leaving each spiking op
    input_spikes: float | None  # mean |input spikes| per observation (event encodings)
    input_sops: float | None
    input_spikes_source: str
    input_macs: int  # current encoding: the first pass, once per observation
    dense_macs: int  # T * MACs of maps driven by non-spiking hidden ops
    bias_acs: int  # T * outputs receiving a constant current per step

    @property
    def total_spikes(self) -> float:
        return float(sum(self.spikes.values()))

    @property
    def total_sops(self) -> float | None:
        """Synaptic events: hidden-layer SOPs plus event-encoded input SOPs (None if unknown)."""
        if self.encoding != "current" and self.input_sops is None:
            return None
        return float(sum(self.sops.values()) + (self.input_sops or 0.0))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(total_spikes=self.total_spikes, total_sops=self.total_sops)
        return d


def input_spike_counts(plan: Plan, *, input_spikes: np.ndarray | None = None,
                       obs: np.ndarray | None = None) -> tuple[np.ndarray | None, str]:
    """``[N, *obs_shape]`` |spike| counts of an event-encoded input, and where they came from.

    ``input_spikes`` may be trains ``[T, N, *obs_shape]`` (as handed to backends) or counts
    ``[N, *obs_shape]``; negative spikes (negative observations) count as events too.
    """
    sem = plan.semantics
    obs_shape = plan.op(plan.input).out_shape
    if sem.encoding == "current":
        return None, "current encoding: no input spikes"
    if input_spikes is not None:
        s = np.abs(np.asarray(input_spikes, dtype=np.float64))
        if s.ndim == len(obs_shape) + 2:
            s = s.sum(axis=0)
        if tuple(s.shape[1:]) != tuple(obs_shape):
            raise ValueError(f"input spikes of shape {np.shape(input_spikes)} do not fit the input {obs_shape}")
        return s, "given"
    if obs is None:
        return None, "unknown (no input spikes or observations given)"
    x = np.asarray(obs, dtype=np.float64).reshape(-1, *obs_shape)
    if sem.encoding == "regular":
        from pipeline.encoding import encode

        trains = encode(torch.as_tensor(x), sem.time_steps, "regular").numpy()
        return np.abs(trains).sum(axis=0), "regular: exact, encoded from the observations"
    return sem.time_steps * np.minimum(np.abs(x), 1.0), "poisson: expected count T*min(|x|,1)"


def sops_per_observation(plan: Plan, readout: Readout, *, input_spikes: np.ndarray | None = None,
                         obs: np.ndarray | None = None) -> SnnWork:
    """Mean SOPs per observation, per spiking layer and in total, from ``readout.spikes``.

    A spiking op missing from the readout is an error when its spikes drive synapses (the
    count would silently be low); one that drives nothing (e.g. a spiking output layer) may
    be missing. See the module docstring for input work, biases and dense segments.
    """
    sem = plan.semantics
    T = sem.time_steps
    fan = fanout_per_neuron(plan)
    spikes: dict[str, float] = {}
    sops: dict[str, float] = {}
    n_obs = int(readout.q.shape[0]) if readout.q is not None else 0
    for name, f in fan.items():
        counts = readout.spikes.get(name)
        if counts is None:
            if np.any(f):
                raise KeyError(f"the readout has no spike counts for spiking node {name!r}, which drives "
                               f"{int(f.sum())} synapses")
            continue
        c = np.asarray(counts, dtype=np.int64)
        if tuple(c.shape[1:]) != tuple(f.shape):
            raise ValueError(f"spike counts of {name!r} have shape {c.shape}, expected [N, {f.shape}]")
        n_obs = int(c.shape[0])
        per_obs = (c * f).reshape(c.shape[0], -1).sum(axis=1)
        spikes[name] = float(c.reshape(c.shape[0], -1).sum(axis=1).mean()) if c.shape[0] else 0.0
        sops[name] = float(per_obs.mean()) if c.shape[0] else 0.0

    counts_in, source = input_spike_counts(plan, input_spikes=input_spikes, obs=obs)
    in_spikes = in_sops = None
    if counts_in is not None:
        f_in = input_fanout(plan)
        in_spikes = float(counts_in.reshape(counts_in.shape[0], -1).sum(axis=1).mean())
        in_sops = float((counts_in * f_in).reshape(counts_in.shape[0], -1).sum(axis=1).mean())

    # dense work: the input pass (current encoding) once, maps after non-spiking hidden ops T times
    cons = consumers(plan)
    input_seg = dense_segment(plan, [plan.input])
    input_macs = sum(op_work(op).macs for op in input_seg) if sem.encoding == "current" else 0
    readout_src = plan.readout_source.name
    dense_sources = [op.name for op in plan.ops
                     if (op.kind == "relu" or (op.kind == "neuron" and not op.spiking)) and op.name != readout_src]
    dense_macs = T * sum(op_work(op).macs for op in dense_segment(plan, dense_sources))

    # constant current per step: under `current` encoding every neuron fed by the input pass gets
    # that pass's result (its biases included) each step; elsewhere each non-zero bias output does
    once: set[str] = set()
    bias_acs = 0
    if sem.encoding == "current":
        once = {op.name for op in input_seg}
        fed = {c.name for s in (once | {plan.input}) for c in cons[s] if c.kind == "neuron"}
        bias_acs += T * sum(_n(plan.op(n).in_shape) for n in fed)
    bias_acs += T * sum(_nonzero_bias_outputs(op) for op in plan.ops
                        if op.kind in ("affine", "conv2d") and op.name not in once)

    return SnnWork(n_obs=n_obs, time_steps=T, encoding=sem.encoding, spikes=spikes, sops=sops,
                   synapses={k: int(v.sum()) for k, v in fan.items()}, input_spikes=in_spikes,
                   input_sops=in_sops, input_spikes_source=source, input_macs=int(input_macs),
                   dense_macs=int(dense_macs), bias_acs=int(bias_acs))


# ---------------------------------------------------------------- energy


def snn_energy_pj(work: SnnWork, model: EnergyModel = HOROWITZ_45NM_FP32) -> float | None:
    """``(sops + input_sops + bias_acs) * E_AC + (input_macs + dense_macs) * E_MAC``; None when
    the input events of a spike-encoded input are unknown."""
    sops = work.total_sops
    if sops is None:
        return None
    return (sops + work.bias_acs) * model.e_ac_pj + (work.input_macs + work.dense_macs) * model.e_mac_pj


def ann_energy_pj(work: AnnWork, model: EnergyModel = HOROWITZ_45NM_FP32) -> float:
    """``macs * E_MAC + adds * E_AC`` (adds: biases and pooling)."""
    return work.macs * model.e_mac_pj + work.adds * model.e_ac_pj


def hardware_energy_pj(work: SnnWork, hardware: Sequence[HardwareFigure] = HARDWARE) -> dict[str, float | None]:
    """Synaptic events times each chip's published energy per event (None: no confirmed figure).
    The dense input pass of the ``current`` encoding is left out: it runs on the host."""
    sops = work.total_sops
    return {h.name: (None if h.pj_per_sop is None or sops is None else sops * h.pj_per_sop) for h in hardware}


# ---------------------------------------------------------------- rows


Source = Union[str, Path, nir.NIRGraph, Plan]


@dataclass
class EnergyCase:
    """One model to account for: ``data`` is a Readout from any backend, or preprocessed
    observations ``[N, *obs_shape]`` to run on the reference backend. ``obs`` and
    ``input_spikes`` serve event-encoded inputs (see :func:`input_spike_counts`)."""

    label: str
    source: Source
    data: Readout | np.ndarray
    input_spikes: np.ndarray | None = None
    obs: np.ndarray | None = None


@dataclass
class EnergyRow:
    """One table row; energies in pJ per observation."""

    label: str
    model_kind: str
    encoding: str
    time_steps: int
    n_obs: int
    spikes_per_layer: dict[str, float] = field(default_factory=dict)
    spikes: float | None = None
    sops_per_layer: dict[str, float] = field(default_factory=dict)
    input_sops: float | None = None
    sops: float | None = None
    input_macs: int | None = None
    dense_macs: int | None = None
    bias_acs: int | None = None
    input_spikes_source: str = ""
    dqn_macs: int = 0
    dqn_adds: int = 0
    energy_snn_pj: float | None = None
    energy_dqn_pj: float = 0.0
    snn_over_dqn: float | None = None
    hardware_pj: dict[str, float | None] = field(default_factory=dict)
    energy_model: str = HOROWITZ_45NM_FP32.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_plan(source: Source) -> Plan:
    """A Plan from a checkpoint (.pt), a NIR file, a NIR graph or a Plan."""
    if isinstance(source, Plan):
        return source
    if isinstance(source, nir.NIRGraph):
        return build_plan(source)
    path = Path(source)
    if path.suffix == ".pt":
        from exporters.to_nir import model_to_nir
        from pipeline.checkpoint import load_checkpoint

        return build_plan(model_to_nir(load_checkpoint(path)))
    from exporters.nirio import read_graph

    return build_plan(read_graph(path))


def model_kind(plan: Plan) -> str:
    kind = plan.metadata.get("model_kind")
    if kind:
        return str(kind)
    return "snn" if any(op.spiking for op in plan.ops) else "ann"


def run_reference(plan: Plan, obs: np.ndarray, dtype: str = "float32") -> tuple[Readout, np.ndarray | None]:
    """Run ``obs`` on the reference backend; for event encodings the input trains are made here
    (with the graph's seed, as a backend would) and returned, so the input events are exact."""
    from backends.reference import ReferenceBackend
    from pipeline.encoding import encode

    sem = plan.semantics
    trains = None
    if sem.encoding != "current":
        gen = torch.Generator().manual_seed(sem.encoding_seed)
        trains = encode(torch.as_tensor(np.asarray(obs, dtype=np.float32)), sem.time_steps, sem.encoding,
                        gen).numpy()
    backend = ReferenceBackend(plan, dtype=dtype)
    try:
        return backend.run(np.asarray(obs, dtype=np.float32), trains), trains
    finally:
        backend.close()


def energy_row(case: EnergyCase, model: EnergyModel = HOROWITZ_45NM_FP32,
               hardware: Sequence[HardwareFigure] = HARDWARE, dtype: str = "float32") -> EnergyRow:
    """One row: spikes, SOPs, input MACs, the same-architecture DQN's MACs, energies and ratio."""
    plan = load_plan(case.source)
    sem = plan.semantics
    ann = ann_macs(plan)
    row = EnergyRow(label=case.label, model_kind=model_kind(plan), encoding=sem.encoding,
                    time_steps=sem.time_steps, n_obs=0, dqn_macs=ann.macs, dqn_adds=ann.adds,
                    energy_dqn_pj=ann_energy_pj(ann, model), energy_model=model.name)
    spiking = any(op.spiking for op in plan.ops)
    obs, trains = case.obs, case.input_spikes
    if isinstance(case.data, Readout):
        readout = case.data
    else:
        obs = np.asarray(case.data) if obs is None else obs
        if not spiking:
            row.n_obs = int(obs.shape[0])
            return row
        readout, made = run_reference(plan, obs, dtype)
        trains = made if trains is None else trains
    row.n_obs = int(readout.q.shape[0])
    if not spiking:
        return row
    work = sops_per_observation(plan, readout, input_spikes=trains, obs=obs)
    e_snn = snn_energy_pj(work, model)
    row.spikes_per_layer, row.spikes = work.spikes, work.total_spikes
    row.sops_per_layer, row.input_sops, row.sops = work.sops, work.input_sops, work.total_sops
    row.input_macs, row.dense_macs, row.bias_acs = work.input_macs, work.dense_macs, work.bias_acs
    row.input_spikes_source = work.input_spikes_source
    row.energy_snn_pj = e_snn
    row.snn_over_dqn = None if e_snn is None or row.energy_dqn_pj == 0 else e_snn / row.energy_dqn_pj
    row.hardware_pj = hardware_energy_pj(work, hardware)
    return row


def energy_rows(cases: Sequence[EnergyCase | tuple], model: EnergyModel = HOROWITZ_45NM_FP32,
                hardware: Sequence[HardwareFigure] = HARDWARE, dtype: str = "float32") -> list[EnergyRow]:
    """Rows for ``(label, checkpoint/NIR path or graph or Plan, Readout or observations)`` cases
    (tuples or :class:`EnergyCase`), for tables and for ``benchmarks/run_all.py``."""
    return [energy_row(c if isinstance(c, EnergyCase) else EnergyCase(*c), model, hardware, dtype)
            for c in cases]


def figures_dict(model: EnergyModel = HOROWITZ_45NM_FP32,
                 hardware: Sequence[HardwareFigure] = HARDWARE) -> dict[str, Any]:
    """The energy figures with their sources, for JSON output next to the rows."""
    return {"energy_model": dataclasses.asdict(model), "hardware": [dataclasses.asdict(h) for h in hardware]}


# ---------------------------------------------------------------- CLI


def record_observations(source: Path, n: int, seed: int) -> np.ndarray:
    """``n`` preprocessed observations met by the model's own greedy policy in its environment
    (episode i reset with seed ``seed + i``, as pipeline.evaluate does)."""
    from pipeline.envs import make_env, preprocess
    from pipeline.graph_meta import GraphMeta
    from pipeline.spec import Preprocessing

    if source.suffix == ".pt":
        from pipeline.checkpoint import load_checkpoint
        from pipeline.policy import CheckpointBackend

        ckpt = load_checkpoint(source)
        env_id, pre, atari = ckpt.env_id, ckpt.preprocessing, ckpt.preprocessing.atari or None
        policy: Any = CheckpointBackend(source)
    else:
        from backends.reference import ReferenceBackend

        plan = load_plan(source)
        meta = GraphMeta.read(plan.metadata)
        if meta.env_id is None:
            raise SystemExit(f"{source}: the graph names no env_id; cannot record observations")
        env_id, atari = meta.env_id, None  # offset and scale only, as the graph's Input sees them
        pre = Preprocessing(offset=meta.preprocessing.offset, scale=meta.preprocessing.scale)
        policy = ReferenceBackend(plan)
    env = make_env(env_id, atari)
    out: list[np.ndarray] = []
    episode = 0
    while len(out) < n:
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done and len(out) < n:
            x = preprocess(np.asarray(obs)[None], pre)
            out.append(x[0])
            action = int(policy.run(x).action[0])
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        episode += 1
    env.close()
    policy.close()
    return np.stack(out).astype(np.float32)


def _fmt(x: float | int | None, scale: float = 1.0, digits: int = 1) -> str:
    if x is None:
        return "n/c"
    v = x / scale
    return f"{v:,.{digits}f}"


def print_table(rows: Sequence[EnergyRow], hardware: Sequence[HardwareFigure] = HARDWARE,
                model: EnergyModel = HOROWITZ_45NM_FP32) -> None:
    """A rich table of the rows (energies in nJ per observation), then the figures' sources."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Work and energy per observation ({model.name}: MAC {model.e_mac_pj} pJ, "
                        f"AC {model.e_ac_pj} pJ)")
    cols = ["model", "kind", "T", "spikes/layer", "SOPs", "input MACs", "bias ACs", "DQN MACs",
            "E SNN nJ", "E DQN nJ", "SNN/DQN"] + [f"{h.name} nJ" for h in hardware]
    for c in cols:
        table.add_column(c, justify="left" if c in ("model", "kind", "spikes/layer") else "right")
    for r in rows:
        layers = " / ".join(f"{v:,.1f}" for v in r.spikes_per_layer.values()) or "-"
        snn = r.energy_snn_pj is not None or r.sops is not None
        table.add_row(
            r.label, r.model_kind, str(r.time_steps), layers,
            _fmt(r.sops) if snn else "-", _fmt(r.input_macs, digits=0) if snn else "-",
            _fmt(r.bias_acs, digits=0) if snn else "-", f"{r.dqn_macs:,}",
            _fmt(r.energy_snn_pj, 1e3, 2) if snn else "-", _fmt(r.energy_dqn_pj, 1e3, 2),
            f"{r.snn_over_dqn:.3f}" if r.snn_over_dqn is not None else "-",
            *[(_fmt(r.hardware_pj.get(h.name), 1e3, 1) if snn else "-") for h in hardware],
        )
    # wide enough for every column when the output is a file or a pipe (no terminal to fit)
    console = Console() if sys.stdout.isatty() else Console(width=220)
    console.print(table)
    console.print(f"[bold]{model.name}[/bold]: {model.source} ({model.verified})")
    for h in hardware:
        value = f"{h.pj_per_sop:g} pJ/SOP" if h.pj_per_sop is not None else "no value"
        console.print(f"[bold]{h.name}[/bold] ({value}; {h.verified}): {h.source}. {h.note}")
    console.print("n/c: not computable (unconfirmed figure or unknown input events). DQN MACs: the "
                  "non-spiking network of the same architecture.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="checkpoints (.pt) or NIR files")
    p.add_argument("--obs", type=int, default=500, help="observations recorded per model (greedy policy)")
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    p.add_argument("--obs-file", help="preprocessed observations (.npy, [N, *obs_shape]) used for every model")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (keep the run light)")
    p.add_argument("--json", help="write rows and figure sources here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    t0 = time.perf_counter()
    fixed = np.load(args.obs_file).astype(np.float32) if args.obs_file else None
    for m in args.models:
        path = Path(m)
        obs = fixed if fixed is not None else record_observations(path, args.obs, args.seed)
        rows.append(energy_row(EnergyCase(label=path.name, source=path, data=obs), dtype=args.dtype))
    print_table(rows)
    if args.json:
        result = {"obs_per_model": args.obs if fixed is None else int(fixed.shape[0]), "seed": args.seed,
                  "observations": "greedy policy of each model in its environment" if fixed is None else args.obs_file,
                  "wall_s": round(time.perf_counter() - t0, 2), **figures_dict(),
                  "rows": [r.to_dict() for r in rows]}
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
