"""``inspect-nir model.nir``: nodes, shapes, neuron and synapse counts, metadata, and
estimated synaptic operations (SOPs) per observation.

SOPs (docs/DESIGN.md "Metrics") are sum over spiking nodes of spikes x fan-out, where a node's
fan-out is the connections of the synaptic maps it feeds divided by their input size (a
Flatten passes through). With ``--inputs obs.npy`` the spikes are those the reference
records on those observations; without, they are estimated as neurons x T x ``--rate``
(default 0.1 spikes per neuron per step). Maps fed by a non-spiking value (the input layer
with the ``current`` encoding) cost MACs instead: connections, once per observation when
the value is constant over time, else T times.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from backends import TARGETS
from exporters.conventions import convention_arg, convention_names
from pipeline.checks import ArgumentParser, check_int, check_real
from pipeline.cli import cli_entry
from pipeline.errors import UserError


def metadata_rows(semantics: dict[str, Any], metadata: dict[str, Any]) -> list[tuple[str, str]]:
    """The graph's metadata for the table: keys the semantics rows already show are left out (the
    values used are the semantics'), and a flattened group of three or more ``provenance_<group>_*``
    keys (hyperparameters, versions, evaluation) becomes one row of ``key=value`` pairs. ``--json``
    keeps every key as it is in the file."""
    groups: dict[str, list[str]] = {}
    for k in metadata:
        if k.startswith("provenance_") and k.count("_") >= 2:
            groups.setdefault(k.split("_", 2)[1], []).append(k)
    rows, done = [], set(semantics)
    for k, v in metadata.items():
        if k in done:
            continue
        group = k.split("_", 2)[1] if k.startswith("provenance_") and k.count("_") >= 2 else None
        if group is not None and len(groups[group]) >= 3:
            prefix = f"provenance_{group}_"
            rows.append((prefix[:-1], ", ".join(f"{g[len(prefix):]}={metadata[g]}" for g in groups[group])))
            done.update(groups[group])
            continue
        text = str(v)
        rows.append((k, text if len(text) <= 160 else text[:157] + "..."))
        done.add(k)
    return rows


def print_tables(info: dict[str, Any], path: Path) -> None:
    from pipeline.tables import console as make_console
    from pipeline.tables import make_table

    console = make_console()
    table = make_table(f"{path}", ("node", "type", "in", "out", "neurons", "synapses", "spikes/obs", "SOPs/obs"),
                       right=("in", "out", "neurons", "synapses", "spikes/obs", "SOPs/obs"))
    for r in info["nodes"]:
        spikes = r.get("spikes_per_obs", r.get("spikes_per_obs_est"))
        table.add_row(r["name"], r["type"], "x".join(map(str, r["in_shape"])), "x".join(map(str, r["out_shape"])),
                      str(r["neurons"] or ""), str(r["synapses"] or ""),
                      "" if spikes is None else f"{spikes:.1f}", "" if "sops" not in r else f"{r['sops']:.3g}")
    console.print(table)
    tot = info["totals"]
    console.print(f"neurons {tot['neurons']}  synapses {tot['synapses']}  weights {tot['weights']}  "
                  f"SOPs/obs {tot['sops_per_obs']:.4g} ({tot['sops_source']})  MACs/obs {tot['macs_per_obs']:.4g}")
    sem = make_table("semantics", ("key", "value"), show_header=False)
    for k, v in info["semantics"].items():
        sem.add_row(k, str(v))
    console.print(sem)
    meta = make_table("the graph's other metadata (all of it: --json)", ("key", "value"), show_header=False)
    for k, v in metadata_rows(info["semantics"], info["metadata"]):
        meta.add_row(k, v)
    console.print(meta)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="inspect-nir", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graph", type=Path)
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ap.add_argument("--inputs", type=Path, help="observations .npy: count spikes on them with the reference")
    ap.add_argument("--rate", type=float, default=0.1, help="assumed spikes per neuron per step (no --inputs)")
    ap.add_argument("--time-steps", type=int, help="T for graphs without metadata (default 1 for inspection)")
    ap.add_argument("--dt", type=float)
    ap.add_argument("--convention", type=convention_arg, metavar="NAME[+MOD...]",
                    help="normalise a third-party graph: " + ", ".join(convention_names()))
    reports = {name: t.report for name, t in TARGETS.items() if t.report is not None}
    mappings = " or ".join(f"{r.title} mapping ({r.module})" for r in reports.values())
    ap.add_argument("--target", choices=tuple(reports), help=f"also report the {mappings}")
    return ap.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # before the imports below, so that --help answers at once
    from backends.cli import load_array
    from exporters.canonical import build_plan
    from exporters.inspect_nir import summarize
    from exporters.nirio import read_graph
    from exporters.validate import MAX_TIME_STEPS

    check_int("--time-steps", args.time_steps, 1, MAX_TIME_STEPS)
    check_real("--dt", args.dt, positive=True)
    check_real("--rate", args.rate, lo=0.0, hi=1.0)
    graph = read_graph(args.graph)
    T = args.time_steps
    if T is None and "time_steps" not in (graph.metadata or {}):
        T = 1
    plan = build_plan(graph, convention=args.convention, time_steps=T, dt=args.dt)
    spikes = None
    if args.inputs is not None:
        from backends.reference import ReferenceBackend

        obs = load_array(args.inputs, "inputs")
        readout = ReferenceBackend(plan).run(obs)
        spikes = {k: float(v.mean()) for k, v in readout.spikes_per_layer().items()}
    if not 0 <= args.rate <= 1:
        raise UserError(f"--rate must be in [0, 1], got {args.rate}")
    info = summarize(plan, spikes, args.rate)
    report = None
    if args.target is not None:  # the target's mapping report, under its name
        report = importlib.import_module(TARGETS[args.target].report.module)
        info[args.target] = report.report(plan)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print_tables(info, args.graph)
        if report is not None:
            report.print_report(info[args.target])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
