"""The ``convert-dqn`` command line: its options and their defaults, parsed before anything heavy
is imported (``--help`` and option errors answer at once); the work is :func:`pipeline.convert.convert`."""

from __future__ import annotations

import argparse

from pipeline.checks import ArgumentParser
from pipeline.cli import cli_entry
from pipeline.spec import ENCODINGS

DESCRIPTION = "``convert-dqn``: a trained DQN checkpoint -> a spiking Q-network checkpoint (Tan et al. 2020)."
NORMALIZATIONS = ("robust", "data", "model")
CONVERSION_READOUTS = ("robust_rate", "spike_count", "voltage")
DEFAULT_PERCENTILE = 99.9
DEFAULT_T = 500
DEFAULT_EVAL_OBS = 2_000
DEFAULT_CALIB_STEPS = 15_000  # calibration observations (Tan et al. 2020: at most 15,000 frames)
CALIB_EPSILON = 0.05  # exploration while playing the DQN for calibration observations


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="convert-dqn", description=DESCRIPTION)
    p.add_argument("checkpoint", help="DQN checkpoint (train-agent --model dqn)")
    p.add_argument("-o", "--output", required=True, help="converted checkpoint to write (snn.pt)")
    p.add_argument("--norm", "--normalization", dest="normalization", default="robust",
                   help=f"per-layer scale: {', '.join(NORMALIZATIONS)} (default robust)")
    p.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                   help="p for robust normalisation, in (0, 100] (default 99.9)")
    p.add_argument("--reset", default="soft", help="IF reset: soft (subtract V_th, default) or hard (to 0)")
    p.add_argument("--encoding", default="current", help=f"input encoding: {', '.join(ENCODINGS)}")
    p.add_argument("--readout", default="robust_rate", help=f"{', '.join(CONVERSION_READOUTS)}")
    p.add_argument("-T", "--time-steps", type=int, default=DEFAULT_T, help="steps per observation (500)")
    p.add_argument("--v-init", type=float, default=0.0,
                   help="initial membrane potential V_r (soft reset; 0.5 rounds rates to nearest; default 0)")
    p.add_argument("--calib-steps", type=int,
                   help=f"calibration observations (default {DEFAULT_CALIB_STEPS} from the env; "
                        "with --calib-obs: all rows of the file)")
    p.add_argument("--calib-obs", help="calibration observations [N, *obs_shape] (.npy), preprocessed "
                                       "as the DQN's input unless --calib-raw")
    p.add_argument("--calib-raw", action="store_true",
                   help="--calib-obs holds raw env observations (the checkpoint's preprocessing is applied)")
    p.add_argument("--calib-epsilon", type=float, default=CALIB_EPSILON,
                   help="exploration while collecting calibration observations (0.05)")
    p.add_argument("--calib-envs", type=int, default=1,
                   help="episodes played side by side while collecting, one batched DQN forward per "
                        "step (default 1)")
    p.add_argument("--eval-obs", type=int, default=DEFAULT_EVAL_OBS,
                   help="held-out observations for the conversion rate (0: skip; default 2000)")
    p.add_argument("--seed", type=int, default=0,
                   help="calibration episodes use seed + i; held-out ones seed + 1000003 + i")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1; see pipeline.runtime.set_torch_threads)")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from pipeline.convert import convert, print_report
    from pipeline.runtime import set_torch_threads

    # torch's default (one thread per core) spent 10x the CPU on a busy 2-core machine: the
    # calibration's batch-1 DQN forwards wait on each other (docs/ATARI_TRAINING.md)
    set_torch_threads(args.threads)

    print_report(convert(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
