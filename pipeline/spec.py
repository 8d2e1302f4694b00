"""What a Q-network is, as plain data: the one description shared by training, checkpoints,
export and every backend.

A :class:`ModelSpec` plus a state_dict is a whole model. It round-trips through a plain dict
(``to_dict``/``from_dict``) so checkpoints never pickle classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pipeline.errors import UserError, check_choice

MODEL_KINDS = ("dqn", "dsqn", "converted")
ARCHS = ("mlp", "nature_cnn")
NEURONS = ("lif", "if")
RESETS = ("hard", "soft")
ENCODINGS = ("current", "poisson", "regular")
READOUTS = (
    "rate",
    "membrane_max",
    "membrane_mean",
    "membrane_last",
    "spike_count",
    "robust_rate",
    "voltage",
)
MEMBRANE_READOUTS = ("membrane_max", "membrane_mean", "membrane_last")


@dataclass(frozen=True)
class NeuronParams:
    """Hidden-layer neuron, in docs/DESIGN.md's discrete-time units (tau in steps)."""

    model: str = "lif"  # lif | if
    tau: float = 2.0  # membrane time constant in steps (LIF only)
    v_th: float = 1.0
    v_reset: float = 0.0  # reset and resting potential V_r
    reset: str = "hard"  # hard | soft (subtract V_th)
    surrogate_alpha: float = 2.0  # arctan surrogate sharpness (training only)

    def validate(self) -> None:
        check_choice("neuron model", self.model, NEURONS)
        check_choice("reset mode", self.reset, RESETS)
        if self.model == "lif" and not self.tau >= 1.0:
            raise UserError(f"tau must be >= 1 step for forward-Euler LIF, got {self.tau}")
        if not self.v_th > 0:
            raise UserError(f"v_th must be positive, got {self.v_th}")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and spiking semantics of one Q-network.

    ``layers`` of the torch module are the hidden stages (conv/linear, each followed by a
    ReLU in a DQN or a spiking neuron in an SNN); ``head`` is the output linear map whose
    meaning depends on ``readout``.
    """

    kind: str  # dqn | dsqn | converted
    arch: str  # mlp | nature_cnn
    obs_shape: tuple[int, ...]
    n_actions: int
    hidden: tuple[int, ...] = (64, 64)  # MLP hidden sizes (nature_cnn: ignored)
    bias: bool = True
    variant: str = ""  # free-text provenance: liu, chen, hahn, tan, ...
    neuron: NeuronParams | None = None  # None for a DQN
    time_steps: int = 1
    encoding: str = "current"
    readout: str = "rate"
    tau_out: float = 2.0  # LI output layer time constant (membrane_* readouts)
    encoding_seed: int = 0  # seed of the poisson encoder

    @property
    def spiking(self) -> bool:
        return self.kind != "dqn"

    def validate(self) -> ModelSpec:
        check_choice("model kind", self.kind, MODEL_KINDS)
        check_choice("architecture", self.arch, ARCHS)
        if self.n_actions < 1:
            raise UserError(f"n_actions must be >= 1, got {self.n_actions}")
        if self.arch == "nature_cnn" and len(self.obs_shape) != 3:
            raise UserError(f"nature_cnn needs a (C, H, W) observation, got shape {self.obs_shape}")
        if self.arch == "mlp" and not self.hidden:
            raise UserError("an MLP needs at least one hidden layer")
        if self.spiking:
            if self.neuron is None:
                raise UserError("a spiking model needs neuron parameters")
            self.neuron.validate()
            check_choice("input encoding", self.encoding, ENCODINGS)
            check_choice("readout", self.readout, READOUTS)
            if self.time_steps < 1:
                raise UserError(f"time steps T must be >= 1, got {self.time_steps}")
            if self.readout in MEMBRANE_READOUTS and not self.tau_out >= 1.0:
                raise UserError(f"tau_out must be >= 1 step, got {self.tau_out}")
        return self

    def with_(self, **changes: Any) -> ModelSpec:
        return replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["obs_shape"] = list(self.obs_shape)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown model spec field(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        d["obs_shape"] = tuple(int(x) for x in d["obs_shape"])
        d["hidden"] = tuple(int(x) for x in d.get("hidden", ()))
        if d.get("neuron") is not None:
            d["neuron"] = NeuronParams(**d["neuron"])
        return cls(**d).validate()


# Presets for ``train-agent --model``. Each maps to a kind and default semantics; every field
# can still be overridden on the command line.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # plain DQN (Mnih 2015 / MLP)
    "dqn": dict(kind="dqn", variant="dqn"),
    # Liu et al. 2022: LIF (tau 2, V_th 1, V_r 0, hard reset), direct current input, rate readout
    "dsqn": dict(
        kind="dsqn",
        variant="liu",
        neuron=NeuronParams("lif", 2.0, 1.0, 0.0, "hard", 2.0),
        encoding="current",
        readout="rate",
    ),
    # Chen et al. 2022: LIF hidden layers, non-spiking LI output (tau 2), no biases
    "chen-dsqn": dict(
        kind="dsqn",
        variant="chen",
        neuron=NeuronParams("lif", 2.0, 1.0, 0.0, "hard", 2.0),
        encoding="current",
        readout="membrane_max",
        bias=False,
        tau_out=2.0,
    ),
    # Hahn 2020: IF neurons with soft reset, voltage readout, T 20
    "if-dsqn": dict(
        kind="dsqn",
        variant="hahn",
        neuron=NeuronParams("if", 1.0, 1.0, 0.0, "soft", 2.0),
        encoding="current",
        readout="voltage",
        time_steps=20,
    ),
}

# Default T when a preset does not fix one: Liu's 64 on Atari; fewer steps on the small
# classic-control inputs, where the MLP settles much sooner and training stays fast.
DEFAULT_T_ATARI = 64


def is_atari(env_id: str) -> bool:
    """An ALE game (``ALE/<Game>-v5``); here, not in :mod:`pipeline.envs`, so that option parsing
    and hyperparameter presets can ask without importing Gymnasium or torch."""
    return env_id.startswith("ALE/")
DEFAULT_T_CLASSIC = 16


def preset_fields(model: str) -> dict[str, Any]:
    check_choice("model", model, MODEL_PRESETS)
    return dict(MODEL_PRESETS[model])


@dataclass(frozen=True)
class Preprocessing:
    """Observation preprocessing the model was trained with: ``x' = (x - offset) * scale``.

    ``atari`` records the Gymnasium wrapper settings (frame skip, no-op starts, 84x84 grey,
    frame stack) that turn raw ALE frames into the network's observation.
    """

    offset: tuple[float, ...] = (0.0,)
    scale: tuple[float, ...] = (1.0,)
    atari: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"offset": list(self.offset), "scale": list(self.scale), "atari": dict(self.atari)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            offset=tuple(float(x) for x in d.get("offset", (0.0,))),
            scale=tuple(float(x) for x in d.get("scale", (1.0,))),
            atari=dict(d.get("atari", {})),
        )
