"""The bundled Pong agents: their file names and the commands that make them, in one place.

``make demo-atari`` (benchmarks/pong_demo.py) and ``make bench`` (benchmarks/run_all.py) read
the agents from here, so bundling a newly trained one is a copy into ``examples/`` and, for the
converted SNN, the one ``convert-dqn`` command below. A missing agent is one ``error:`` line
naming its file and the command that makes it (:func:`require_agent`); nothing substitutes
random weights or a partially trained network for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# what the three training runs share (the atari preset plus these; docs/ATARI_TRAINING.md)
_TRAIN = ("--env ALE/Pong-v5 --seed 1 --threads 1 --steps 2000000 --hp learning_starts=10000 --hp n_steps=3 "
          "--hp exploration_fraction=0.03 --hp eval_freq=50000 --hp eval_episodes=5 --hp final_eval_episodes=30 "
          "--save-state")


@dataclass(frozen=True)
class PongAgent:
    """One bundled agent: its role, its path relative to the repository, how it is made."""

    role: str
    path: str
    make: str  # the exact command that writes ``path`` (run from the repository root)
    needs: str | None = None  # the role whose file ``make`` reads (the converted SNN needs the DQN)

    @property
    def file(self) -> Path:
        return ROOT / self.path

    def file_in(self, folder: Path | None) -> Path:
        """Where the agent is when read from ``folder`` instead of examples/ (same file name)."""
        return self.file if folder is None else folder / Path(self.path).name


PONG_DQN = PongAgent("dqn", "examples/pong_dqn.pt", f"train-agent --model dqn {_TRAIN} -o examples/pong_dqn.pt")
PONG_DSQN = PongAgent("dsqn", "examples/pong_dsqn.pt",
                      f"train-agent --model dsqn -T 4 --hp init_rate=0.15 {_TRAIN} -o examples/pong_dsqn.pt")
PONG_CONVERTED = PongAgent("converted", "examples/pong_converted.pt",
                           "convert-dqn examples/pong_dqn.pt -o examples/pong_converted.pt -T 100 "
                           "--percentile 99.99 --calib-steps 5000 --eval-obs 1000", needs="dqn")
PONG_AGENTS = {a.role: a for a in (PONG_DQN, PONG_DSQN, PONG_CONVERTED)}

# T at which ``make demo-atari`` runs the converted SNN (run-backend --time-steps; the network is the
# same at every T, only the readout window changes). A converted Pong step costs about T times a
# T-1 step on NEST and Lava, and the demo must stay under 10 minutes, so it is the smallest T of the
# conversion sweep (docs/CONVERSION.md, "Pong") within one point of the DQN's score: T 100 (0.9
# under it over the sweep's 10 episodes; T 50: 1.7 under), the T it is bundled at. The demo took
# 343 s with it (docs/ATARI_TRAINING.md).
DEMO_CONVERTED_T = 100


def how_to_make(agent: PongAgent, folder: Path | None = None) -> str:
    """The command that makes ``agent``, with the DQN's command first when that is missing from
    ``folder`` (default: examples/) too."""
    if agent.needs is not None and not PONG_AGENTS[agent.needs].file_in(folder).is_file():
        return f"{PONG_AGENTS[agent.needs].make}, then {agent.make}"
    return agent.make


def missing_message(agent: PongAgent, path: Path | None = None) -> str:
    """``<file> not found: the bundled Pong <role> is made by `<command>```."""
    shown = path if path is not None else agent.path
    folder = path.parent if path is not None else None
    return f"{shown} not found: the bundled Pong {agent.role} is made by `{how_to_make(agent, folder)}`"


def require_agent(agent: PongAgent, path: Path | None = None) -> Path:
    """``path`` (default: the bundled file) if it exists, else a UserError naming it and its command."""
    p = path if path is not None else agent.file
    if not p.is_file():
        raise UserError(missing_message(agent, path))
    return p


def describe_agent(provenance: dict[str, Any]) -> str:
    """What a checkpoint's provenance says it is: training steps and greedy score, or for a
    converted network its source and conversion rate (never a score it does not record)."""
    if "conversion" in provenance:
        src = (provenance.get("source") or {}).get("path", "a DQN")
        rate = provenance.get("conversion_rate") or {}
        agree = (f", conversion rate {100 * rate['agreement']:.1f} % on {rate['observations']:,} held-out observations"
                 if rate.get("observations") else ", no conversion rate measured")
        return f"converted from {src} at T {provenance['conversion'].get('time_steps')}{agree}"
    ev = provenance.get("evaluation") or {}
    steps = (f"trained {provenance['training_steps']:,} steps" if provenance.get("training_steps")
             else "no training recorded")
    score = (f", greedy return {ev['mean_return']:.1f} ± {ev.get('std_return', 0):.1f} over {ev.get('episodes')} "
             f"episodes" if "mean_return" in ev else "")
    proto = provenance.get("evaluation_atari_protocol") or {}
    if "mean_return" in proto:
        score += (f", {proto['mean_return']:.1f} ± {proto.get('std_return', 0):.1f} with epsilon "
                  f"{proto.get('epsilon')} (Atari protocol)")
    return steps + score
