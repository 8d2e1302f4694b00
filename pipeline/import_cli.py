"""The ``import-agent`` command line, parsed before anything heavy is imported (``--help`` and
option errors answer at once); the work is :func:`pipeline.sb3_import.run_import`."""

from __future__ import annotations

import argparse

from pipeline.checks import ArgumentParser
from pipeline.cli import cli_entry
from pipeline.errors import UserError
from pipeline.spec import ARCHS

DESCRIPTION = "``import-agent``: agents trained elsewhere -> a dsqn-deploy ``model.pt`` (kind ``dqn``)."


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="import-agent", description=DESCRIPTION)
    p.add_argument("agent", help="an SB3 .zip (DQN, QR-DQN, PPO, A2C) or a torch state_dict (with --arch)")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write (model.pt)")
    p.add_argument("--env", help="environment id; must fit the zip's spaces (classic control: inferred "
                                 "when omitted)")
    p.add_argument("--vecnormalize", help="SB3 VecNormalize statistics (vecnormalize.pkl, read without "
                                          "unpickling)")
    p.add_argument("--arch", help=f"state_dict only: {', '.join(ARCHS)}")
    p.add_argument("--hidden", default="64,64", help="state_dict only: MLP hidden sizes (default 64,64)")
    p.add_argument("--scale-obs", action="store_true",
                   help="state_dict only: observations were mapped to [-1, 1] from the env's bounds")
    return p


def parse_hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--hidden must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--hidden must list positive sizes, got {text!r}")
    return sizes


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from pipeline.checkpoint import save_checkpoint
    from pipeline.sb3_import import run_import

    ckpt = run_import(args)
    save_checkpoint(ckpt, args.output)
    imp = ckpt.provenance["imported"]
    what = imp.get("algorithm", imp["format"])
    s = ckpt.spec
    net = f"{s.arch} {'x'.join(map(str, s.hidden))}" if s.arch == "mlp" else s.arch
    print(f"imported {what} ({net}, {s.n_actions} actions) for {ckpt.env_id} -> {args.output}")
    if "output" in imp:
        print(f"  greedy action = argmax of {imp['output']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
