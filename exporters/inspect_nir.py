"""``inspect-nir model.nir``: nodes, shapes, neuron and synapse counts, metadata, and
estimated synaptic operations (SOPs) per observation.

SOPs (DESIGN.md "Metrics") are sum over spiking nodes of spikes x fan-out, where a node's
fan-out is the connections of the synaptic maps it feeds divided by their input size (a
Flatten passes through). With ``--inputs obs.npy`` the spikes are those the reference
records on those observations; without, they are estimated as neurons x T x ``--rate``
(default 0.1 spikes per neuron per step). Maps fed by a non-spiking value (the input layer
with the ``current`` encoding) cost MACs instead: connections, once per observation when
the value is constant over time, else T times.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from exporters.canonical import Op, Plan, build_plan
from exporters.conventions import CONVENTIONS
from exporters.nirio import read_graph
from pipeline.errors import UserError, cli_entry


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


def print_tables(info: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{path}")
    for col in ("node", "type", "in", "out", "neurons", "synapses", "spikes/obs", "SOPs/obs"):
        table.add_column(col, justify="right" if col not in ("node", "type") else "left")
    for r in info["nodes"]:
        spikes = r.get("spikes_per_obs", r.get("spikes_per_obs_est"))
        table.add_row(r["name"], r["type"], "x".join(map(str, r["in_shape"])), "x".join(map(str, r["out_shape"])),
                      str(r["neurons"] or ""), str(r["synapses"] or ""),
                      "" if spikes is None else f"{spikes:.1f}", "" if "sops" not in r else f"{r['sops']:.3g}")
    console.print(table)
    tot = info["totals"]
    console.print(f"neurons {tot['neurons']}  synapses {tot['synapses']}  weights {tot['weights']}  "
                  f"SOPs/obs {tot['sops_per_obs']:.4g} ({tot['sops_source']})  MACs/obs {tot['macs_per_obs']:.4g}")
    sem = Table(title="semantics and metadata", show_header=False)
    sem.add_column("key")
    sem.add_column("value")
    for k, v in info["semantics"].items():
        sem.add_row(k, str(v))
    for k, v in info["metadata"].items():
        text = str(v)
        sem.add_row(k, text if len(text) <= 100 else text[:97] + "...")
    console.print(sem)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="inspect-nir", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graph", type=Path)
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ap.add_argument("--inputs", type=Path, help="observations .npy: count spikes on them with the reference")
    ap.add_argument("--rate", type=float, default=0.1, help="assumed spikes per neuron per step (no --inputs)")
    ap.add_argument("--time-steps", type=int, help="T for graphs without metadata (default 1 for inspection)")
    ap.add_argument("--dt", type=float)
    ap.add_argument("--convention", choices=sorted(CONVENTIONS))
    ap.add_argument("--target", choices=("lava",),
                    help="also report the Lava / Loihi 2 mapping (backends.lava.report)")
    return ap.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    graph = read_graph(args.graph)
    T = args.time_steps
    if T is None and "time_steps" not in (graph.metadata or {}):
        T = 1
    plan = build_plan(graph, convention=args.convention, time_steps=T, dt=args.dt)
    spikes = None
    if args.inputs is not None:
        from backends.cli import load_array
        from backends.reference import ReferenceBackend

        obs = load_array(args.inputs, "inputs")
        readout = ReferenceBackend(plan).run(obs)
        spikes = {k: float(v.mean()) for k, v in readout.spikes_per_layer().items()}
    if not 0 <= args.rate <= 1:
        raise UserError(f"--rate must be in [0, 1], got {args.rate}")
    info = summarize(plan, spikes, args.rate)
    if args.target == "lava":
        from backends.lava.report import lava_report

        info["lava"] = lava_report(plan)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print_tables(info, args.graph)
        if "lava" in info:
            from backends.lava.report import print_lava_report

            print_lava_report(info["lava"])
    return 0
