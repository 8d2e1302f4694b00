"""Every model kind the exporter must handle, as checkpoints with random weights.

Used by the tests and by ``benchmarks/check_reference.py``: the export must be exact for any
weights, and random ones (scaled so that every layer spikes at a useful rate) reach corners
trained ones may not. Trained checkpoints are checked the same way when given.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.checkpoint import Checkpoint
from pipeline.models import build_model
from pipeline.spec import MODEL_PRESETS, ModelSpec, NeuronParams, Preprocessing

IF_SOFT = NeuronParams("if", 1.0, 1.0, 0.0, "soft", 2.0)

# name -> ModelSpec fields beyond arch/obs/actions: the presets, every readout and encoding
KINDS: dict[str, dict[str, Any]] = {
    "dqn": dict(MODEL_PRESETS["dqn"]),
    "liu": dict(MODEL_PRESETS["dsqn"]),
    "chen": dict(MODEL_PRESETS["chen-dsqn"]),
    "chen_mean": dict(MODEL_PRESETS["chen-dsqn"], readout="membrane_mean"),
    "chen_last": dict(MODEL_PRESETS["chen-dsqn"], readout="membrane_last", tau_out=3.0),
    "hahn": dict(MODEL_PRESETS["if-dsqn"]),
    "lif_voltage": dict(MODEL_PRESETS["dsqn"], readout="voltage"),
    "spike_count": dict(MODEL_PRESETS["dsqn"], readout="spike_count"),
    "robust_rate_lif": dict(MODEL_PRESETS["dsqn"], readout="robust_rate"),
    "tan_converted": dict(kind="converted", variant="tan", neuron=IF_SOFT, readout="robust_rate", time_steps=20),
    "converted_spike_count": dict(kind="converted", variant="tan", neuron=IF_SOFT, readout="spike_count",
                                  time_steps=20),
    "if_hard_rate": dict(kind="dsqn", variant="if-hard", neuron=NeuronParams("if", 1.0, 1.0, 0.0, "hard"),
                         readout="rate"),
    "lif_soft_rate": dict(kind="dsqn", variant="lif-soft", neuron=NeuronParams("lif", 3.0, 1.0, 0.0, "soft"),
                          readout="rate"),
    "poisson": dict(MODEL_PRESETS["dsqn"], encoding="poisson", encoding_seed=7),
    "regular": dict(MODEL_PRESETS["dsqn"], encoding="regular"),
}


def make_checkpoint(kind: str, arch: str = "mlp", obs_shape: tuple[int, ...] = (4,), n_actions: int = 2,
                    time_steps: int | None = None, seed: int = 0, gain: float | None = None,
                    hidden: tuple[int, ...] = (64, 64)) -> Checkpoint:
    """A checkpoint of model kind ``kind`` with random weights scaled by ``gain``.

    The default gain keeps every layer spiking: 3 for MLPs and IF nets, 8 for LIF CNNs (a
    tau-2 LIF halves its input, and five LIF stages at gain 3 go silent).
    """
    fields = dict(KINDS[kind])
    if gain is None:
        neuron = fields.get("neuron")
        gain = 8.0 if arch == "nature_cnn" and neuron is not None and neuron.model == "lif" else 3.0
    if fields.get("kind") != "dqn":
        fields.setdefault("time_steps", 16 if arch == "mlp" else 8)
        if time_steps is not None:
            fields["time_steps"] = time_steps
    spec = ModelSpec(arch=arch, obs_shape=tuple(obs_shape), n_actions=n_actions, hidden=hidden,
                     **fields).validate()
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if spec.spiking:
                p.mul_(gain)
    pre = Preprocessing(offset=(0.0,), scale=(1.0 / 255.0,)) if arch == "nature_cnn" else Preprocessing()
    env = "ALE/Pong-v5" if arch == "nature_cnn" else "CartPole-v1"
    return Checkpoint(spec=spec, state_dict=model.state_dict(), env_id=env, preprocessing=pre,
                      provenance={"command": f"zoo {kind}", "seed": seed, "note": "random weights"})


def cartpole_obs(n: int, seed: int = 0) -> torch.Tensor:
    """Random CartPole-shaped observations spanning the env's typical ranges."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.2, 1.5, 0.2, 1.5])
    return (torch.rand((n, 4), generator=g) * 2 - 1) * scale


def atari_obs(n: int, seed: int = 0) -> torch.Tensor:
    """Random (4, 84, 84) frames already scaled by 1/255, as the network sees them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 84, 84), generator=g).to(torch.float32) / 255.0


# ---------------------------------------------------------------- NIR graphs no torch model of ours writes


def cubalif_graph(seed: int = 0, hidden: tuple[int, ...] = (64, 64), time_steps: int = 16, gain: float = 3.0,
                  obs_size: int = 4, n_actions: int = 2, dt: float = 1e-4):
    """A CubaLIF MLP as snnTorch ``Synaptic``, Norse ``LIFCell`` or SpikingJelly write one (NIR's
    forward-Euler order), with random weights, per-neuron time constants and an Affine head.

    Time constants of 2 and 4 steps (and per-neuron 8) are powers of two, so the fixed-point
    decays are exact and what lava-fixed gets wrong is its weights' rounding alone.
    """
    import nir
    import numpy as np

    rng = np.random.default_rng(seed)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array([obs_size])})}
    edges: list[tuple[str, str]] = []
    prev, n_in = "input", obs_size
    for i, n in enumerate(hidden):
        w = rng.normal(size=(n, n_in)) * gain / np.sqrt(n_in)
        nodes[f"fc{i}"] = nir.Affine(weight=w.astype(np.float32), bias=(0.3 * rng.normal(size=n)).astype(np.float32))
        tau_mem = np.where(rng.random(n) < 0.5, 4 * dt, 8 * dt)
        nodes[f"lif{i}"] = nir.CubaLIF(tau_syn=np.full(n, 2 * dt), tau_mem=tau_mem, r=np.ones(n),
                                       v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n),
                                       w_in=np.ones(n))
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev, n_in = f"lif{i}", n
    w = rng.normal(size=(n_actions, n_in)) / np.sqrt(n_in)
    nodes["head"] = nir.Affine(weight=w.astype(np.float32), bias=np.zeros(n_actions, np.float32))
    nodes["output"] = nir.Output(output_type={"output": np.array([n_actions])})
    edges += [(prev, "head"), ("head", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": time_steps, "dt": dt})


def skip_graph(seed: int = 0, hidden: tuple[int, ...] = (64, 64), time_steps: int = 16, gain: float = 3.0,
               obs_size: int = 4, n_actions: int = 2, dt: float = 1e-4):
    """A LIF DAG whose branches have unequal depth: the last hidden layer sums the layer before it,
    a skip connection from the first hidden layer, and the input itself (an input feeding a deep
    layer), as residual or dense-skip networks are exported. Weights random; per-neuron taus."""
    import nir
    import numpy as np

    rng = np.random.default_rng(seed)
    names = [f"lif{i}" for i in range(len(hidden) + 1)]
    sizes = [*hidden, hidden[-1]]
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array([obs_size])})}
    edges: list[tuple[str, str]] = []

    def affine(name: str, n_out: int, n_in: int, src: str, dst: str, scale: float = 1.0) -> None:
        w = rng.normal(size=(n_out, n_in)) * gain * scale / np.sqrt(n_in)
        nodes[name] = nir.Affine(weight=w.astype(np.float32), bias=(0.2 * rng.normal(size=n_out)).astype(np.float32))
        edges.extend([(src, name), (name, dst)])

    prev, n_in = "input", obs_size
    for i, (name, n) in enumerate(zip(names, sizes)):
        nodes[name] = nir.LIF(tau=np.where(rng.random(n) < 0.5, 2 * dt, 4 * dt), r=np.ones(n),
                              v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
        affine(f"fc{i}", n, n_in, prev, name, scale=0.6 if i == len(names) - 1 else 1.0)
        prev, n_in = name, n
    last = names[-1]
    affine("skip", sizes[-1], sizes[0], names[0], last, scale=0.6)  # two layers shorter
    affine("from_input", sizes[-1], obs_size, "input", last, scale=0.6)  # the input into the deepest layer
    w = rng.normal(size=(n_actions, sizes[-1])) / np.sqrt(sizes[-1])
    nodes["head"] = nir.Affine(weight=w.astype(np.float32), bias=np.zeros(n_actions, np.float32))
    nodes["output"] = nir.Output(output_type={"output": np.array([n_actions])})
    edges += [(last, "head"), ("head", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": time_steps, "dt": dt})


def recurrent_graph(seed: int = 0, hidden: tuple[int, ...] = (64, 64), time_steps: int = 16, gain: float = 3.0,
                    obs_size: int = 4, n_actions: int = 2, dt: float = 1e-4, cuba: bool = False):
    """Recurrent layers as snnTorch ``RLeaky`` / ``RSynaptic`` export them: every hidden layer a LIF
    (``cuba``: the last one a CubaLIF) with its own loop ``lif -> rec -> lif``, the first loop
    through an Affine (its bias acts from step 0, docs/NIR.md "Recurrence"), the others through a
    Linear (into a CubaLIF: its synaptic current). Random weights, per-neuron taus of 2 and 4 steps."""
    import nir
    import numpy as np

    rng = np.random.default_rng(seed)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array([obs_size])})}
    edges: list[tuple[str, str]] = []
    prev, n_in = "input", obs_size
    for i, n in enumerate(hidden):
        w = rng.normal(size=(n, n_in)) * gain / np.sqrt(n_in)
        nodes[f"fc{i}"] = nir.Affine(weight=w.astype(np.float32), bias=(0.2 * rng.normal(size=n)).astype(np.float32))
        tau = np.where(rng.random(n) < 0.5, 2 * dt, 4 * dt)
        common = dict(r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
        if cuba and i == len(hidden) - 1:
            nodes[f"lif{i}"] = nir.CubaLIF(tau_syn=np.full(n, 2 * dt), tau_mem=tau, w_in=np.ones(n), **common)
        else:
            nodes[f"lif{i}"] = nir.LIF(tau=tau, **common)
        w_rec = (rng.normal(size=(n, n)) * gain * 0.5 / np.sqrt(n)).astype(np.float32)
        nodes[f"rec{i}"] = (nir.Affine(weight=w_rec, bias=(0.2 * rng.normal(size=n)).astype(np.float32)) if i == 0
                            else nir.Linear(weight=w_rec))
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}"), (f"lif{i}", f"rec{i}"), (f"rec{i}", f"lif{i}")]
        prev, n_in = f"lif{i}", n
    w = rng.normal(size=(n_actions, n_in)) / np.sqrt(n_in)
    nodes["head"] = nir.Affine(weight=w.astype(np.float32), bias=np.zeros(n_actions, np.float32))
    nodes["output"] = nir.Output(output_type={"output": np.array([n_actions])})
    edges += [(prev, "head"), ("head", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"time_steps": time_steps, "dt": dt})


def recurrent_cuba_graph(**kw: Any):
    """:func:`recurrent_graph` whose last hidden layer is a CubaLIF (snnTorch ``RSynaptic``)."""
    return recurrent_graph(**kw, cuba=True)


#: zoo kinds that are NIR graphs rather than checkpoints (the conformance test runs them too)
GRAPH_KINDS = {"cubalif": cubalif_graph, "skip": skip_graph, "recurrent": recurrent_graph,
               "recurrent_cuba": recurrent_cuba_graph}
