"""What ``inspect-nir`` reports about a Plan, computed from the Plan alone: connections and weights
per map, fan-out, and synaptic operations (SOPs) and MACs per observation.

SOPs (docs/DESIGN.md "Metrics") are sum over spiking nodes of spikes x fan-out, where a node's
fan-out is the connections of the synaptic maps it feeds divided by their input size (a
Flatten passes through). Given recorded spikes per node, those are used; without, they are
estimated as neurons x T x ``rate``. Maps fed by a non-spiking value (the input layer with the
``current`` encoding) cost MACs instead: connections, once per observation when the value is
constant over time, else T times.

The command itself (it runs the reference and the Lava report, so it sits with the backends)
is :mod:`backends.inspect_cli`; ``exporters.inspect_nir.main`` still resolves to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exporters.plan.ir import Op, Plan


def connections(op: Op) -> int:
    """Synaptic connections of a map (weights applied per step), 0 for reshapes."""
    out = int(np.prod(op.out_shape))
    p = op.params
    if op.kind in ("affine", "linear"):
        w = p["weight"]
        return int(w.shape[-2] * w.shape[-1] * (int(np.prod(op.in_shape)) // w.shape[-1]))
    if op.kind == "conv2d":
        w = p["weight"]
        return out * int(w.shape[1] * w.shape[2] * w.shape[3])
    if op.kind in ("sumpool2d", "avgpool2d"):
        k = p["kernel_size"]
        return out * int(k[0] * k[1])
    if op.kind == "scale":
        return out
    return 0


def weight_count(op: Op) -> int:
    return int(sum(np.size(v) for k, v in op.params.items() if k in ("weight", "bias", "scale")))


def fan_out(plan: Plan, name: str) -> float:
    """Average synaptic connections leaving one element of ``name``'s output."""
    total = 0.0
    for op in plan.ops:
        if name not in op.inputs:
            continue
        if op.kind == "flatten":
            total += fan_out(plan, op.name)
        elif op.kind in ("affine", "linear", "conv2d", "sumpool2d", "avgpool2d", "scale"):
            total += connections(op) / max(int(np.prod(op.in_shape)), 1)
    return total


def summarize(plan: Plan, spikes_per_obs: dict[str, float] | None = None, rate: float = 0.1) -> dict[str, Any]:
    T = plan.semantics.time_steps
    constant = {plan.input: plan.semantics.encoding == "current"}
    rows = []
    sops = 0.0
    macs = 0.0
    for op in plan.ops:
        ins = op.inputs
        if op.kind in ("input",):
            pass
        elif op.spiking or op.neuron is not None or op.kind == "relu":
            constant[op.name] = False if op.neuron is not None else all(constant.get(i, False) for i in ins)
        else:
            constant[op.name] = all(constant.get(i, False) for i in ins)
        neurons = int(np.prod(op.out_shape)) if op.neuron is not None or op.kind in ("threshold", "relu") else 0
        conn = connections(op)
        row: dict[str, Any] = {"name": op.name, "type": op.nir_type, "kind": op.kind,
                               "in_shape": list(op.in_shape), "out_shape": list(op.out_shape),
                               "neurons": neurons, "synapses": conn, "weights": weight_count(op)}
        if op.neuron is not None:
            row["step"] = {k: (v if not isinstance(v, np.ndarray) else f"array{list(v.shape)}")
                           for k, v in vars(op.neuron).items()}
        if op.kind in ("affine", "linear", "conv2d", "sumpool2d", "avgpool2d", "scale") and ins:
            fed_by_spikes = all(plan.op(i).spiking for i in ins)
            if not fed_by_spikes:
                macs += conn * (1 if constant[op.name] else T)
        if op.spiking:
            if spikes_per_obs is not None:
                spikes = float(spikes_per_obs.get(op.name, 0.0))
                row["spikes_per_obs"] = spikes
            else:
                spikes = neurons * T * rate
                row["spikes_per_obs_est"] = spikes
            row["fan_out"] = fan_out(plan, op.name)
            row["sops"] = spikes * row["fan_out"]
            sops += row["sops"]
        rows.append(row)
    meta = {k: (v.tolist() if isinstance(v, np.ndarray) and v.size <= 16 else
                (f"array{list(v.shape)}" if isinstance(v, np.ndarray) else v)) for k, v in plan.metadata.items()}
    sem = plan.semantics
    return {
        "nodes": rows,
        "totals": {"nodes": len(rows), "neurons": sum(r["neurons"] for r in rows),
                   "synapses": sum(r["synapses"] for r in rows), "weights": sum(r["weights"] for r in rows),
                   "sops_per_obs": sops, "macs_per_obs": macs,
                   "sops_source": "recorded" if spikes_per_obs is not None else f"estimated at rate {rate}"},
        "semantics": {k: getattr(sem, k) for k in sem.__dataclass_fields__},
        "metadata": meta,
    }
