"""The Q-networks: a DQN and the spiking variants, built from one :class:`ModelSpec`.

Both share the same module tree so a DQN's state_dict maps one-to-one onto its converted
SNN: ``layers`` (hidden stages: conv/linear, each followed by a ReLU or a spiking neuron)
and ``head`` (the output linear map, read out according to ``spec.readout``).

The spiking forward is multi-step, layer by layer (Liu et al. 2022's "multi-step mode"):
each synaptic map runs once on a batch of ``T x B`` inputs, and only the element-wise
neuron update loops over time. With the ``current`` encoding the first layer's input
current is computed once per observation and broadcast over T.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pipeline import neurons
from pipeline.backend_api import greedy_action  # defined with the Readout it fills; re-exported here
from pipeline.encoding import encode
from pipeline.spec import MEMBRANE_READOUTS, ModelSpec

NATURE_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (channels, kernel, stride), Mnih 2015
NATURE_FC = 512


def conv_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def build_layers(spec: ModelSpec) -> tuple[nn.ModuleList, nn.Linear]:
    """Hidden stages and head for ``spec.arch`` (no nonlinearity: that depends on the kind)."""
    bias = spec.bias
    stages: list[nn.Module] = []
    if spec.arch == "nature_cnn":
        c, h, w = spec.obs_shape
        for out_c, k, s in NATURE_CONVS:
            stages.append(nn.Sequential(nn.Conv2d(c, out_c, k, stride=s, bias=bias)))
            c, h, w = out_c, conv_out(h, k, s), conv_out(w, k, s)
            if h < 1 or w < 1:
                raise ValueError(f"observation {spec.obs_shape} too small for the Nature CNN")
        stages.append(nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, NATURE_FC, bias=bias)))
        width = NATURE_FC
    else:
        width = 1
        for d in spec.obs_shape:
            width *= d
        first = True
        for hsize in spec.hidden:
            mods: list[nn.Module] = [nn.Flatten()] if first and len(spec.obs_shape) > 1 else []
            mods.append(nn.Linear(width, hsize, bias=bias))
            stages.append(nn.Sequential(*mods))
            width, first = hsize, False
    return nn.ModuleList(stages), nn.Linear(width, spec.n_actions, bias=bias)


class DQN(nn.Module):
    """Plain Q-network: ReLU after every hidden stage, linear head."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.layers, self.head = build_layers(spec)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)

    def activations(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """Post-ReLU activation of every hidden stage, then the head's output (for conversion)."""
        acts = []
        x = obs
        for layer in self.layers:
            x = torch.relu(layer(x))
            acts.append(x)
        acts.append(self.head(x))
        return acts


class SpikingQNetwork(nn.Module):
    """DSQN (Liu, Chen, Hahn variants) and converted SNNs, per docs/DESIGN.md's step semantics.

    ``forward`` returns Q ``[B, A]``. :meth:`run` also returns the spike trains of every
    hidden layer, which the tests and the energy estimate use.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        assert spec.spiking and spec.neuron is not None
        self.spec = spec
        self.layers, self.head = build_layers(spec)

    def forward(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.run(obs, generator)[0]

    @staticmethod
    def per_step(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Apply a synaptic map to ``[T, B, ...]`` as one batch of T*B."""
        T, B = x.shape[:2]
        y = layer(x.reshape(T * B, *x.shape[2:]))
        return y.reshape(T, B, *y.shape[1:])

    def input_current(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The first hidden layer's input current ``[T, B, ...]`` for ``obs`` ``[B, ...]``."""
        T, encoding = self.spec.time_steps, self.spec.encoding
        if encoding == "current":
            first = self.layers[0](obs)  # computed once, constant over the T steps
            return first.unsqueeze(0).expand(T, *first.shape)
        return self.per_step(self.layers[0], encode(obs, T, encoding, generator))

    def run(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """Return (Q, hidden spikes per layer ``[T, B, ...]``, tie-break membrane or None)."""
        spec, p = self.spec, self.spec.neuron
        assert p is not None
        T = spec.time_steps
        spikes, _ = neurons.spiking_layer(self.input_current(obs, generator), p)
        all_spikes = [spikes]
        for layer in self.layers[1:]:
            spikes, _ = neurons.spiking_layer(self.per_step(layer, spikes), p)
            all_spikes.append(spikes)

        readout, tiebreak = spec.readout, None
        if readout == "rate":
            # Q = W_out . mean_t S_L + b  (Liu): the head is linear, so average first.
            q = self.head(spikes.mean(dim=0))
        else:
            out_current = self.per_step(self.head, spikes)
            if readout in MEMBRANE_READOUTS:
                trace = neurons.leaky_integrator(out_current, spec.tau_out)
                if readout == "membrane_max":
                    q = trace.max(dim=0).values
                elif readout == "membrane_mean":
                    q = trace.mean(dim=0)
                else:
                    q = trace[-1]
            elif readout == "voltage":
                q = neurons.integrate_layer(out_current, p)
            else:  # spike_count / robust_rate: a spiking output layer
                out_spikes, v_last = neurons.spiking_layer(out_current, p)
                count = out_spikes.sum(dim=0)
                if readout == "spike_count":
                    q, tiebreak = count, v_last
                else:  # robust_rate (Tan et al. 2020): count / T + V(T) / (T V_th)
                    q = count / T + v_last / (T * p.v_th)
        return q, all_spikes, tiebreak


def build_model(spec: ModelSpec) -> DQN | SpikingQNetwork:
    spec.validate()
    return SpikingQNetwork(spec) if spec.spiking else DQN(spec)


def act_greedy(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Greedy actions ``[N]`` of a DQN or a spiking network (its readout's tie-break included)."""
    with torch.no_grad():
        if isinstance(model, SpikingQNetwork):
            q, _, tie = model.run(x)
            return greedy_action(q, tie)
        return greedy_action(model(x))


def data_dependent_init(model: SpikingQNetwork, obs: torch.Tensor, target_rate: float,
                        iterations: int = 40) -> list[float]:
    """Rescale every hidden stage so that, on ``obs`` (preprocessed, ``[B, *obs_shape]``), its
    neurons fire at ``target_rate`` on average; return the rate each layer reaches.

    Why: with PyTorch's default init a deep spiking net is silent (the Nature-CNN DSQN on Pong
    frames fires 0.04 % in its first layer and not at all after), so its Q-values start
    constant and surrogate gradients must first wake it up. This is a data-dependent
    initialisation in the manner of Salimans & Kingma 2016, aimed at the threshold instead of
    at unit variance. Layer by layer, from the input: each output channel's input current is
    standardised over the batch, the T steps and the positions (std ``v_th``); then one shift
    shared by the layer (its biases) is found by bisection so the layer's mean rate is
    ``target_rate``. A network without biases (Chen) gets a shared gain instead of a shift.
    The spiking semantics are untouched: only the initial weights change.
    """
    if not 0.0 < target_rate < 1.0:
        raise ValueError(f"target firing rate must lie in (0, 1), got {target_rate}")
    p = model.spec.neuron
    assert p is not None

    def rate_of(current: torch.Tensor) -> float:
        return neurons.spiking_layer(current, p)[0].mean().item()

    def bisect(make: Callable[[float], torch.Tensor], lo: float, hi: float) -> float:
        """The knob value in [lo, hi] at which the rate crosses ``target_rate`` (rate rises with it)."""
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if rate_of(make(mid)) < target_rate else (lo, mid)
        return 0.5 * (lo + hi)

    rates: list[float] = []
    with torch.no_grad():
        spikes = torch.empty(0)
        for index, stage in enumerate(model.layers):
            synapse = stage[-1]  # the Conv2d / Linear that ends each hidden stage
            current = model.input_current(obs) if index == 0 else model.per_step(stage, spikes)
            channel_dims = [d for d in range(current.dim()) if d != 2]
            view = [1, 1, -1] + [1] * (current.dim() - 3)
            weight_view = [-1] + [1] * (synapse.weight.dim() - 1)
            if synapse.bias is not None:
                mean = current.mean(dim=channel_dims)
                std = current.std(dim=channel_dims)
                # a channel whose current never varies (its inputs are silent) keeps its scale
                gain = torch.where(std > 1e-6, p.v_th / std.clamp_min(1e-6), torch.ones_like(std))
                standard = (current - mean.view(view)) * gain.view(view)
                shift = bisect(lambda s: standard + s, -8.0 * p.v_th, 8.0 * p.v_th)
                synapse.weight.mul_(gain.view(weight_view))
                synapse.bias.copy_((synapse.bias - mean) * gain + shift)
                current = standard + shift
            else:
                rms = current.pow(2).mean(dim=channel_dims).sqrt()
                rms = torch.where(rms > 1e-6, rms, torch.ones_like(rms))
                unit = current / rms.view(view)
                scale = bisect(lambda g: unit * g, 0.0, 64.0 * p.v_th)
                synapse.weight.mul_((scale / rms).view(weight_view))
                current = unit * scale
            spikes = neurons.spiking_layer(current, p)[0]
            rates.append(spikes.mean().item())
    return rates

