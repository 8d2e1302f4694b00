"""The ``train-agent`` command line: its options, parsed before torch, Gymnasium or SB3 are
imported (``--help`` and option errors answer at once); the work is :func:`pipeline.train.run`."""

from __future__ import annotations

import argparse

from pipeline.checks import ArgumentParser
from pipeline.cli import cli_entry
from pipeline.hyperparams import HP_PRESETS
from pipeline.spec import ENCODINGS, MODEL_PRESETS, NEURONS, READOUTS, RESETS

DESCRIPTION = "``train-agent``: DQN and DSQN training on Stable-Baselines3's DQN machinery."
# the names of pipeline.envs.REWARD_SHAPINGS (a test keeps them equal), without importing Gymnasium
REWARD_SHAPING_NAMES = ("mountaincar-energy",)


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="train-agent", description=DESCRIPTION)
    p.add_argument("--env", required=True, help="CartPole-v1, MountainCar-v0, ALE/<Game>-v5")
    p.add_argument("--model", default="dsqn", help=f"one of {', '.join(MODEL_PRESETS)}")
    p.add_argument("--arch", help="mlp or nature_cnn (default: nature_cnn for Atari, else mlp)")
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="MLP hidden sizes")
    p.add_argument("--time-steps", "-T", type=int, help="simulation steps per observation")
    p.add_argument("--neuron", help=f"{'/'.join(NEURONS)}")
    p.add_argument("--reset", help=f"{'/'.join(RESETS)}")
    p.add_argument("--tau", type=float, help="membrane time constant in steps (LIF)")
    p.add_argument("--v-th", type=float, help="firing threshold")
    p.add_argument("--alpha", type=float, help="arctan surrogate alpha")
    p.add_argument("--readout", help=f"{'/'.join(READOUTS)}")
    p.add_argument("--encoding", help=f"{'/'.join(ENCODINGS)}")
    p.add_argument("--tau-out", type=float, help="LI output time constant (membrane readouts)")
    p.add_argument("--no-bias", action="store_true", help="no biases in any layer")
    p.add_argument("--scale-obs", action="store_true",
                   help="map finite observation bounds to [-1, 1] (e.g. MountainCar)")
    p.add_argument("--reward-shaping", default="none",
                   help=f"potential-based shaping of the training reward: none, {', '.join(REWARD_SHAPING_NAMES)}; "
                        "evaluation always uses the true reward")
    p.add_argument("--preset", help=f"hyperparameter preset: {', '.join(HP_PRESETS)} (default: per env)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override one hyperparameter (repeatable)")
    p.add_argument("--steps", type=int, help="total environment steps (same as --hp total_steps=N)")
    p.add_argument("--double", action="store_true", help="Double DQN target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--envs", type=int, default=1,
                   help="environments stepped in parallel, each in its own process when > 1 (Gymnasium/SB3 "
                        "vector env; the updates per transition stay the hyperparameters'); changes the run")
    p.add_argument("--device", default="auto", help="auto (CUDA if torch sees a GPU, else CPU), cpu or cuda")
    p.add_argument("--threads", type=int,
                   help="torch threads (default: half the cores, less those the --envs workers use, at least 1); "
                        "part of what makes a seed reproduce a run bit for bit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--save-state", action="store_true",
                   help="at every evaluation also keep what --resume needs: model.state.pt (networks, optimizer, "
                        "counters) and model.replay.npz (the replay buffer: GBs for Atari); neither can run code")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved with --save-state next to -o (same command; --steps may grow); "
                        "the continued run is not bit-identical to an uninterrupted one")
    p.add_argument("--trust-legacy-state", action="store_true",
                   help="with --resume: load model.state.zip/model.replay.pkl of an earlier version (pickles, which "
                        "can run code: only files you wrote) once and convert them to the safe files")
    p.add_argument("-o", "--output", required=True, help="best checkpoint path (model.pt)")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from pipeline.train import run  # torch, Gymnasium, SB3: only once the options are good

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
