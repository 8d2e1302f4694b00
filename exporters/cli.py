"""``export-nir model.pt -o model.nir``: a checkpoint's model as a NIR 1.0.8 file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exporters.metadata import DEFAULT_DT
from pipeline.checks import ArgumentParser, check_output, check_real
from pipeline.cli import cli_entry
from pipeline.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="export-nir", description=__doc__)
    ap.add_argument("checkpoint", type=Path, help="model.pt written by train-agent or convert-dqn")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the NIR file to write (HDF5)")
    ap.add_argument("--dt", type=float, default=DEFAULT_DT,
                    help=f"seconds per time step written into the graph (default {DEFAULT_DT})")
    ap.add_argument("--json", type=Path, help="also write a JSON summary of the export here")
    return ap.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # before the imports below, so that --help answers at once
    from exporters.nirio import write_graph
    from exporters.validate import MAX_DT
    from exporters.to_nir import model_to_nir
    from pipeline.checkpoint import load_checkpoint

    check_real("--dt", args.dt, positive=True)
    if args.dt is not None and args.dt > MAX_DT:
        raise UserError(f"--dt must be at most {MAX_DT:g} seconds, got {args.dt:g}")
    if args.output.resolve() == args.checkpoint.resolve():
        raise UserError(f"-o {args.output} would overwrite the checkpoint")
    check_output("-o", args.output)
    check_output("--json", args.json)
    ckpt = load_checkpoint(args.checkpoint)
    graph = model_to_nir(ckpt, dt=args.dt, source=args.checkpoint)
    back = write_graph(graph, args.output, read_back=True)  # refused by the readers: nothing written
    spec = ckpt.spec
    summary = {
        "checkpoint": str(args.checkpoint),
        "output": str(args.output),
        "model_kind": spec.kind,
        "variant": spec.variant,
        "nodes": len(back.nodes),
        "edges": len(back.edges),
        "time_steps": int(back.metadata["time_steps"]),
        "dt": float(back.metadata["dt"]),
        "readout": str(back.metadata["readout"]),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.output}: {summary['nodes']} nodes, {summary['edges']} edges, "
          f"{spec.kind}/{spec.variant or '-'}, T={summary['time_steps']}, readout={summary['readout']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
