"""The ``finetune-fixed`` command line and its settings, parsed before anything heavy is imported
(``--help`` and option errors answer at once); the work is :func:`backends.finetune_fixed.finetune`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.checks import ArgumentParser
from pipeline.cli import cli_entry
from pipeline.errors import UserError

DESCRIPTION = ("``finetune-fixed``: hardware-aware fine-tuning of a spiking Q-network for lava-fixed "
               "(Loihi 2, 8 bit).")
TARGETS = ("lava-fixed",)
# held-out agreement with the float agent lost (fraction) beyond which the result is flagged
AGENT_DROP_WARN = 0.02


@dataclass
class Settings:
    """What a fine-tuning run is given (docs/LAVA.md, "Hardware-aware fine-tuning")."""

    episodes: int = 20
    epsilon: float = 0.1
    epochs: int = 30
    batch: int = 64
    lr: float = 2e-3
    margin: float = 0.005  # of the agent's mean max |Q|
    seed: int = 0
    input_bound: float | None = None
    max_steps: int | None = None  # episode length limit while recording (None: the env's own)


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="finetune-fixed", description=DESCRIPTION,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a spiking checkpoint, MLP or Nature CNN (train-agent / convert-dqn)")
    ap.add_argument("-o", "--output", required=True, help="the fine-tuned checkpoint to write")
    ap.add_argument("--target", default="lava-fixed", help=f"fixed-point target ({', '.join(TARGETS)})")
    ap.add_argument("--episodes", type=int, default=Settings.episodes,
                    help="float-agent episodes recorded for distillation (default %(default)s)")
    ap.add_argument("--epsilon", type=float, default=Settings.epsilon,
                    help="random-action probability while recording (default %(default)s)")
    ap.add_argument("--epochs", type=int, default=Settings.epochs, help="passes over the recorded set")
    ap.add_argument("--batch", type=int, default=Settings.batch)
    ap.add_argument("--lr", type=float, default=Settings.lr, help="Adam learning rate (default %(default)s)")
    ap.add_argument("--margin", type=float, default=Settings.margin,
                    help="action margin asked of the fixed-point Q, as a fraction of the agent's mean max |Q| "
                         "(default %(default)s)")
    ap.add_argument("--eval-episodes", type=int, default=4,
                    help="held-out float-agent episodes for the agreement printed at the end (0: none)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="agent steps per recorded or held-out episode at most (default: the environment's own "
                         "limit; Atari: 18000)")
    ap.add_argument("--input-bound", type=float, default=None, help="as run-backend's lava-fixed option")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return ap


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from backends.finetune_fixed import agreement_report, finetune, record
    from pipeline.checkpoint import load_checkpoint, provenance, save_checkpoint
    from pipeline.runtime import set_torch_threads

    if args.target not in TARGETS:
        raise UserError(f"unknown fine-tuning target {args.target!r}; valid choices: {', '.join(TARGETS)}")
    for name in ("episodes", "epochs", "batch", "max_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0.0 <= args.epsilon <= 1.0:
        raise UserError(f"--epsilon must lie in [0, 1], got {args.epsilon}")
    if not (args.lr > 0 and args.margin >= 0):
        raise UserError("--lr must be positive and --margin non-negative")
    if args.eval_episodes < 0:
        raise UserError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    set_torch_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    s = Settings(episodes=args.episodes, epsilon=args.epsilon, epochs=args.epochs, batch=args.batch, lr=args.lr,
                 margin=args.margin, seed=args.seed, input_bound=args.input_bound, max_steps=args.max_steps)
    out, summary = finetune(ckpt, s)
    if args.eval_episodes:
        teacher = ckpt.build()
        held, _ = record(ckpt, teacher, args.eval_episodes, 20_000 + args.seed, 0.0, args.max_steps)
        before = agreement_report(ckpt, held, teacher)
        after = agreement_report(out, held, teacher)
        summary["held_out"] = {"observations": len(held), "before": before, "after": after}
        print(f"held-out: {len(held)} observations of {args.eval_episodes} greedy float-agent episodes")
        print(f"  lava-fixed vs own float64 reference: before {100 * before['agreement_fixed_vs_own_float']:.2f} %, "
              f"after {100 * after['agreement_fixed_vs_own_float']:.2f} %")
        print(f"  lava-fixed vs the float agent:       before {100 * before['agreement_fixed_vs_agent']:.2f} %, "
              f"after {100 * after['agreement_fixed_vs_agent']:.2f} %")
        drop = before["agreement_fixed_vs_agent"] - after["agreement_fixed_vs_agent"]
        if drop > AGENT_DROP_WARN:  # own-reference agreement alone would hide an agent that no longer plays
            print(f"warning: fine-tuning moved lava-fixed's actions away from the float agent's "
                  f"({100 * before['agreement_fixed_vs_agent']:.2f} % -> {100 * after['agreement_fixed_vs_agent']:.2f} % "
                  f"of the held-out observations); try a smaller --lr (docs/LAVA.md section 8)", file=sys.stderr)
    summary["settings"] = {k: v for k, v in vars(s).items()}
    out.provenance = provenance(args.seed, source_checkpoint=str(args.checkpoint),
                                source_provenance=ckpt.provenance,
                                finetune={"target": args.target, "weight_bits": 8, "state_scale": "layer",
                                          **{k: v for k, v in summary.items() if k != "record_returns"}})
    save_checkpoint(out, args.output)
    log_path = Path(args.output).with_suffix(".finetune.json")
    log_path.write_text(json.dumps(summary, indent=1, default=float) + "\n")
    bad = {k: v for k, v in summary["grid_mismatch"].items() if v}
    moved = {k: f"{v:.1e}" for k, v in summary["threshold_drift"].items() if v}
    print(f"wrote {args.output} and {log_path}" + (f" (re-quantising moved {bad} weight mantissas)" if bad else
                                                   " (re-quantising it gives the trained weight mantissas exactly)")
          + (f"; integer thresholds moved by {moved} (relative) with the state unit" if moved else ""))
    if summary["neuron_scale_moves"]:  # not seen on any agent: written-back weights sit on the layer grid
        print(f"note: --state-scale neuron would give {', '.join(summary['neuron_scale_moves'])} per-neuron "
              "units; run this checkpoint with --state-scale layer, the grid it was tuned on")
    return 0


main = cli_entry(_main)

if __name__ == "__main__":
    raise SystemExit(main())
