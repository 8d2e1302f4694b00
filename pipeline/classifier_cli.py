"""The ``train-classifier`` command line, parsed before anything heavy is imported (``--help`` and
option errors answer at once); the work is :func:`pipeline.classifier.train_classifier`."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.checks import ArgumentParser
from pipeline.cli import cli_entry
from pipeline.convert_cli import CALIB_EPSILON
from pipeline.errors import UserError

DESCRIPTION = ("``train-classifier``: the indirect conversion of Hahn 2020 (a classifier of the DQN's "
               "actions).")


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="train-classifier", description=DESCRIPTION)
    p.add_argument("checkpoint", help="the source DQN checkpoint (train-agent --model dqn, import-agent)")
    p.add_argument("-o", "--output", required=True, help="classifier checkpoint to write (then: convert-dqn)")
    p.add_argument("--observations", type=int, default=20_000, help="recorded observations (20000)")
    p.add_argument("--epsilon", type=float, default=CALIB_EPSILON,
                   help=f"exploration while recording ({CALIB_EPSILON})")
    p.add_argument("--hidden", help="classifier MLP hidden sizes (default: the DQN's)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-obs", type=int, default=2_000,
                   help="held-out observations (other episodes) for the accuracy (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from pipeline.checkpoint import load_checkpoint, save_checkpoint
    from pipeline.classifier import ClassifierSettings, train_classifier
    from pipeline.runtime import set_torch_threads

    hidden = None
    if args.hidden:
        from pipeline.import_cli import parse_hidden

        hidden = parse_hidden(args.hidden)
    settings = ClassifierSettings(args.observations, args.epsilon, hidden, args.epochs, args.batch_size,
                                  args.lr, args.eval_obs, args.seed).validate()
    if Path(args.output).resolve() == Path(args.checkpoint).resolve():
        raise UserError("--output would overwrite the source DQN checkpoint")
    set_torch_threads(args.threads)
    source = load_checkpoint(args.checkpoint)
    out, report = train_classifier(source, settings, progress=not args.no_progress)
    save_checkpoint(out, args.output)
    held = report.get("heldout_accuracy")
    t = report["timings"]
    print(f"classifier of {args.checkpoint}'s greedy actions -> {args.output}: "
          f"{len(report['losses'])} epochs on {settings.observations} observations "
          f"(labels {report['label_counts']}), train accuracy {100 * report['train_accuracy']:.2f}%"
          + (f", held-out {100 * held:.2f}%" if held is not None else "")
          + f" ({t['recording_s']:.1f} s recording, {t['training_s']:.1f} s training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
