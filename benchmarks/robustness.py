"""FGSM robustness of DQNs and DSQNs (after Chen et al. 2022): agreement and return vs eps.

For every checkpoint and every perturbation size ``eps`` this measures

- ``agreement`` (open loop) — on observations recorded from the checkpoint's own clean greedy
  episodes, the fraction whose greedy action under attack equals the clean greedy action;
- ``return`` (closed loop) — episodes in which the attacker perturbs every observation the agent
  sees (mean ± std over episodes; episode ``i`` is reset with seed ``seed + i``, as in
  ``evaluate-agent``, so eps = 0 reproduces ``evaluate_checkpoint`` exactly), and
  ``loop_agreement``, the fraction of those steps whose action equals the clean action on the
  same observation.

Attacks, both in the network's input space (after the checkpoint's preprocessing), then clipped
to the valid range:

- ``fgsm`` (Goodfellow et al. 2015, on policies as in Huang et al. 2017):
  ``x_adv = clip(x + eps * scale * sign(grad_x L))`` with ``L`` the cross-entropy between
  ``softmax(Q(x))`` and the clean greedy action ``a*`` (ascent pushes away from ``a*``);
- ``noise`` — the same step with uniformly random signs (the control: FGSM should be worse).

``scale`` and the clipping range: for pixel observations (uint8 spaces, e.g. Atari frames scaled
by 1/255) ``scale = 1`` and eps is in input units (``2/255`` is two grey levels), clipped to
[0, 1]. For vector observations with unbounded features (CartPole) eps is in units of each
feature's standard deviation over the clean recorded observations (``scale = std``, per feature;
a constant feature is not perturbed), clipped to the observation space's bounds where those are
finite (CartPole: x in ±4.8, theta in ±0.418 rad). ``--scale`` fixes the scale instead, e.g. to
use the same perturbation for several checkpoints.

Gradients of spiking nets are the model's own training-time backward: the forward runs with
autograd on and an input that requires grad, which is what makes ``pipeline.neurons`` take the
ATan-surrogate path instead of its no-grad inference path. With ``poisson`` / ``regular`` input
encodings the spikes are not a differentiable function of the observation; the gradient is then
taken w.r.t. the encoded input spikes, summed over the T steps and passed through the derivative
of the expected per-step input ``clamp(x, -1, 1)`` (a straight-through estimator). The
attacked action is always decided by the deployed (no-grad) forward.

    .venv/bin/python benchmarks/robustness.py examples/cartpole_*.pt --eps 0 0.05 0.1 0.2 \\
        --episodes 5 --obs 500 --json out/robustness.json --png out/robustness.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.checkpoint import Checkpoint, load_checkpoint
from pipeline.envs import Preprocessor, is_atari, make_env, n_actions
from pipeline.cli import cli_entry
from pipeline.errors import UserError, check_choice
from pipeline.models import DQN, SpikingQNetwork, greedy_action

ATTACKS = ("fgsm", "noise")
DEFAULT_EPS = (0.0, 0.05, 0.1, 0.2)
OBS_SEED_OFFSET = 1_000_003  # open-loop observations come from other episodes than the closed-loop ones
ATARI_MAX_STEPS = 1_000  # default agent-step cap per closed-loop Atari episode (each step needs a backward)
Model = DQN | SpikingQNetwork


# --- the model as a differentiable function of its input ----------------------------------------


def _generator(model: Model) -> torch.Generator | None:
    """A fresh generator for the poisson encoder, so equal batches always see equal spikes."""
    if isinstance(model, SpikingQNetwork) and model.spec.encoding == "poisson":
        return torch.Generator().manual_seed(model.spec.encoding_seed)
    return None


def q_values(model: Model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(Q, tie-break membrane or None) of a batch ``x`` in the network's input space."""
    if isinstance(model, SpikingQNetwork):
        q, _, tie = model.run(x, _generator(model))
        return q, tie
    return model(x), None


def actions_of(model: Model, x: torch.Tensor) -> torch.Tensor:
    """Greedy actions of the deployed model (no autograd: the inference path of the neurons)."""
    with torch.no_grad():
        q, tie = q_values(model, x)
        return greedy_action(q, tie)


def ce_direction(q: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """dL/dQ of ``L = CE(softmax(Q), a*)``, each row divided by ``1 - p(a*)`` (> 0).

    ``dL/dQ_j = p_j - [j = a*]``; dividing by ``sum_{j != a*} p_j`` gives ``softmax`` over the other
    actions for ``j != a*`` and -1 for ``a*``. The sign of the input gradient is unchanged, but a
    confident Q (a gap of ~100, common for CartPole Q-values or spike counts) no longer underflows
    the float32 gradient to exactly zero. With a single action the direction is zero.
    """
    q = q.detach().to(torch.float64)
    n = q.shape[-1]
    if n < 2:
        return torch.zeros_like(q)
    onehot = torch.nn.functional.one_hot(actions.to(torch.long), n).to(torch.bool)
    others = torch.softmax(q.masked_fill(onehot, -math.inf), dim=-1)
    return torch.where(onehot, -torch.ones_like(q), others)


def input_gradient(model: Model, x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Gradient (up to a positive factor per row) of ``CE(softmax(Q(x)), actions)`` w.r.t. ``x``.

    Spiking nets go through their surrogate backward (autograd on, input requiring grad). For
    spike-encoded inputs (poisson, regular) see the module docstring (straight-through).
    """
    spec = model.spec
    x = x.detach().to(torch.float32).clone().requires_grad_(True)
    captured: list[torch.Tensor] = []
    handle = None
    if isinstance(model, SpikingQNetwork) and spec.encoding != "current":

        def leaf_input(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            leaf = args[0].detach().requires_grad_(True)
            captured.append(leaf)
            return (leaf, *args[1:])

        handle = model.layers[0].register_forward_pre_hook(leaf_input)
    try:
        with torch.enable_grad():
            q, _ = q_values(model, x)
            wrt = captured[0] if captured else x
            (grad,) = torch.autograd.grad(q, wrt, grad_outputs=ce_direction(q, actions).to(q.dtype),
                                          allow_unused=True)
    finally:
        if handle is not None:
            handle.remove()
    if grad is None:
        return torch.zeros_like(x.detach())
    if captured:  # d/dx of the expected per-step input clamp(x, -1, 1), summed over the T steps
        grad = grad.reshape(spec.time_steps, *x.shape).sum(dim=0) * (x.detach().abs() < 1)
    return grad.detach()


# --- the attacks ----------------------------------------------------------------------------------


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise UserError(f"eps must be a finite number >= 0, got {eps}")
    return eps


def apply_step(x: torch.Tensor, direction: torch.Tensor, eps: float, scale: torch.Tensor | float = 1.0,
               low: torch.Tensor | None = None, high: torch.Tensor | None = None) -> torch.Tensor:
    """``clip(x + eps * scale * direction, low, high)``; eps = 0 returns ``x`` itself, untouched."""
    if check_eps(eps) == 0.0:
        return x
    adv = x + eps * torch.as_tensor(scale, dtype=x.dtype) * direction.to(x.dtype)
    if low is not None or high is not None:
        adv = torch.clamp(adv, min=low, max=high)
    return adv


def fgsm_direction(model: Model, x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.sign(input_gradient(model, x, actions))


def noise_direction(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random signs (+1 / -1) shaped like ``x``."""
    bits = torch.randint(0, 2, x.shape, generator=generator)
    return (bits * 2 - 1).to(x.dtype)


def direction(attack: str, model: Model, x: torch.Tensor, actions: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
    check_choice("attack", attack, ATTACKS)
    if attack == "fgsm":
        return fgsm_direction(model, x, actions)
    return noise_direction(x, generator)


def fgsm(model: Model, x: torch.Tensor, eps: float, scale: torch.Tensor | float = 1.0,
         low: torch.Tensor | None = None, high: torch.Tensor | None = None,
         actions: torch.Tensor | None = None) -> torch.Tensor:
    """One FGSM step away from ``actions`` (default: the clean greedy actions of ``x``)."""
    if check_eps(eps) == 0.0:
        return x
    if actions is None:
        actions = actions_of(model, x)
    return apply_step(x, fgsm_direction(model, x, actions), eps, scale, low, high)


def random_sign_noise(x: torch.Tensor, eps: float, generator: torch.Generator,
                      scale: torch.Tensor | float = 1.0, low: torch.Tensor | None = None,
                      high: torch.Tensor | None = None) -> torch.Tensor:
    if check_eps(eps) == 0.0:
        return x
    return apply_step(x, noise_direction(x, generator), eps, scale, low, high)


def _noise_seed(seed: int, eps: float, phase: str) -> int:
    """A stable seed per (seed, eps, phase): results do not depend on the order of --eps."""
    key = f"{seed}|{eps!r}|{phase}".encode()
    return int.from_bytes(np.random.SeedSequence(list(key)).generate_state(2, np.uint32).tobytes(), "little")


# --- a checkpoint ready to be attacked --------------------------------------------------------------


@dataclass
class Target:
    path: str
    ckpt: Checkpoint
    model: Model
    pre: Preprocessor
    low: torch.Tensor | None  # valid input range in network input space (None: unbounded)
    high: torch.Tensor | None
    pixels: bool  # uint8 observation space: eps in input units, else in std units

    @property
    def label(self) -> str:
        s = self.ckpt.spec
        kind = f"{s.kind}/{s.variant}" if s.variant and s.variant != s.kind else s.kind
        if s.spiking and s.neuron is not None:
            kind += f" {s.neuron.model} {s.readout} T{s.time_steps}"
        return kind

    def make_env(self, max_steps: int | None = None) -> Any:
        env = make_env(self.ckpt.env_id, self.ckpt.preprocessing.atari or None, max_episode_steps=max_steps)
        spec = self.ckpt.spec
        if n_actions(env) != spec.n_actions or tuple(env.observation_space.shape) != spec.obs_shape:
            raise UserError(f"{self.path}: model expects obs {spec.obs_shape} and {spec.n_actions} actions; "
                            f"{self.ckpt.env_id} gives {env.observation_space.shape} and {n_actions(env)}")
        return env

    def network_input(self, raw: np.ndarray) -> torch.Tensor:
        """Raw env observations ``[N, *obs_shape]`` -> the network's float32 input."""
        with torch.no_grad():
            return self.pre(torch.as_tensor(np.asarray(raw)))


def input_bounds(ckpt: Checkpoint, space: Any) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
    """The observation space's bounds mapped through the preprocessing (inf where unbounded)."""
    pre = Preprocessor(ckpt.preprocessing)
    shape = tuple(space.shape)
    with torch.no_grad():
        lo = pre(torch.as_tensor(np.broadcast_to(np.asarray(space.low, np.float64), shape).copy()))
        hi = pre(torch.as_tensor(np.broadcast_to(np.asarray(space.high, np.float64), shape).copy()))
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)  # a negative preprocessing scale swaps them
    pixels = np.dtype(space.dtype) == np.uint8
    return (lo if torch.isfinite(lo).any() else None), (hi if torch.isfinite(hi).any() else None), pixels


def load_target(path: str | Path) -> Target:
    """Load a checkpoint (UserError if missing or bad) and its environment's valid input range."""
    ckpt = load_checkpoint(path)
    model = ckpt.build()
    for p in model.parameters():
        p.requires_grad_(False)  # gradients are taken w.r.t. the input only
    target = Target(str(path), ckpt, model, Preprocessor(ckpt.preprocessing), None, None, False)
    env = target.make_env()
    target.low, target.high, target.pixels = input_bounds(ckpt, env.observation_space)
    env.close()
    return target


def feature_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-feature standard deviation (population) of clean network inputs ``[N, ...]``."""
    if x.shape[0] < 2:
        raise UserError("a per-feature std scale needs at least 2 observations (raise --obs or give --scale)")
    return x.to(torch.float64).std(dim=0, unbiased=False).to(torch.float32)


def resolve_scale(target: Target, x_clean: torch.Tensor, scale: float | Sequence[float] | None
                  ) -> tuple[torch.Tensor, str]:
    """(scale tensor, eps unit): explicit scale, 1 for pixels, else the clean per-feature std."""
    shape = tuple(target.ckpt.spec.obs_shape)
    if scale is not None:
        s = torch.as_tensor(np.asarray(scale, dtype=np.float32))
        if s.numel() not in (1, math.prod(shape)):
            raise UserError(f"--scale needs 1 or {math.prod(shape)} values for observations of shape {shape}, "
                            f"got {s.numel()}")
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise UserError("--scale values must be finite and >= 0")
        return (s.reshape(shape) if s.numel() > 1 else s.reshape(())), "scale"
    if target.pixels:
        return torch.tensor(1.0), "input"
    return feature_scale(x_clean), "std"


# --- the two measurements ----------------------------------------------------------------------------


def record_clean_observations(target: Target, n: int, seed: int, max_steps: int | None = None,
                              progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """The first ``n`` observations of the checkpoint's own clean greedy episodes (raw, as the env
    gives them); episode ``i`` is reset with seed ``seed + OBS_SEED_OFFSET + i``."""
    env = target.make_env(max_steps)
    space = env.observation_space
    out = np.empty((n, *space.shape), dtype=space.dtype)
    filled, episodes = 0, 0
    bar = tqdm(total=n, desc=f"clean obs {Path(target.path).name}", unit="obs", disable=not progress,
               leave=False)
    while filled < n:
        obs, _ = env.reset(seed=seed + OBS_SEED_OFFSET + episodes)
        episodes += 1
        done = False
        while not done and filled < n:
            out[filled] = np.asarray(obs)
            filled += 1
            bar.update(1)
            action = int(actions_of(target.model, target.network_input(np.asarray(obs)[None]))[0])
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    bar.close()
    env.close()
    return out, {"observations": n, "episodes": episodes, "seed": seed + OBS_SEED_OFFSET}


def open_loop_agreement(model: Model, x: torch.Tensor, eps_list: Sequence[float], attack: str,
                        scale: torch.Tensor | float = 1.0, low: torch.Tensor | None = None,
                        high: torch.Tensor | None = None, seed: int = 0, batch_size: int = 256
                        ) -> dict[float, float]:
    """Agreement of attacked with clean greedy actions on the batch ``x`` (network input), per eps.

    One gradient (or noise draw) per observation serves every eps: the FGSM direction does not
    depend on eps, and the noise signs are common random numbers across eps.
    """
    check_choice("attack", attack, ATTACKS)
    eps_list = [check_eps(e) for e in eps_list]
    gen = torch.Generator().manual_seed(_noise_seed(seed, 0.0, "open-loop"))
    same = dict.fromkeys(eps_list, 0)
    for lo in range(0, x.shape[0], batch_size):
        xb = x[lo:lo + batch_size]
        clean = actions_of(model, xb)
        d = direction(attack, model, xb, clean, gen) if any(e > 0 for e in eps_list) else None
        for e in eps_list:
            adv = xb if e == 0 else apply_step(xb, d, e, scale, low, high)
            same[e] += int((actions_of(model, adv) == clean).sum())
    return {e: same[e] / max(1, x.shape[0]) for e in eps_list}


def closed_loop(target: Target, eps: float, attack: str, scale: torch.Tensor | float, episodes: int,
                seed: int, max_steps: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Episodes in which every observation the agent sees is attacked; returns, lengths, agreement."""
    check_choice("attack", attack, ATTACKS)
    eps = check_eps(eps)
    env = target.make_env(max_steps)
    gen = torch.Generator().manual_seed(_noise_seed(seed, eps, "closed-loop"))
    model = target.model
    returns, lengths, same, steps_total = [], [], 0, 0
    bar = tqdm(range(episodes), desc=f"{attack} eps={eps:g}", unit="ep", disable=not progress, leave=False)
    for i in bar:
        obs, _ = env.reset(seed=seed + i)
        total, steps, done = 0.0, 0, False
        while not done:
            x = target.network_input(np.asarray(obs)[None])
            if eps == 0:
                action = int(actions_of(model, x)[0])
                same += 1
            else:
                clean = actions_of(model, x)
                adv = apply_step(x, direction(attack, model, x, clean, gen), eps, scale, target.low, target.high)
                action = int(actions_of(model, adv)[0])
                same += int(action == int(clean[0]))
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            steps += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
        steps_total += steps
        bar.set_postfix(mean=f"{np.mean(returns):.1f}")
    env.close()
    return {"returns": returns, "lengths": lengths,
            "return_mean": float(np.mean(returns)) if returns else None,
            "return_std": float(np.std(returns)) if returns else None,
            "loop_agreement": same / steps_total if steps_total else None}


def evaluate_robustness(checkpoint_path: str | Path, eps_list: Iterable[float] = DEFAULT_EPS, episodes: int = 5,
                        n_obs: int = 500, seed: int = 0, attack: Iterable[str] = ATTACKS,
                        max_steps: int | None = None, scale: float | Sequence[float] | None = None,
                        batch_size: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """One row per (eps, attack): open-loop ``agreement`` and closed-loop ``return`` of a checkpoint.

    ``eps_list`` is in std units of each feature for vector observations, in input units for pixel
    observations (see the module docstring), or in units of ``scale`` when given. ``episodes = 0``
    skips the closed loop. ``max_steps`` caps the agent steps of every episode (Atari default:
    ATARI_MAX_STEPS, since each attacked step needs a backward pass).
    """
    eps_values = sorted({check_eps(e) for e in eps_list})
    if not eps_values:
        raise UserError("give at least one eps")
    attacks = list(dict.fromkeys(attack))
    if not attacks:
        raise UserError("give at least one attack")
    for a in attacks:
        check_choice("attack", a, ATTACKS)
    if episodes < 0:
        raise UserError(f"episodes must be >= 0, got {episodes}")
    if n_obs < 1:
        raise UserError(f"the number of open-loop observations must be >= 1, got {n_obs}")
    if max_steps is not None and max_steps < 1:
        raise UserError(f"max steps must be >= 1, got {max_steps}")
    t0 = time.perf_counter()
    target = load_target(checkpoint_path)
    spec = target.ckpt.spec
    if max_steps is None and is_atari(target.ckpt.env_id):
        max_steps = ATARI_MAX_STEPS
    if batch_size is None:
        batch_size = 16 if spec.arch == "nature_cnn" else 256
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")

    raw, obs_source = record_clean_observations(target, n_obs, seed, max_steps, progress)
    x = target.network_input(raw)
    scale_t, unit = resolve_scale(target, x, scale)
    agreement = {a: open_loop_agreement(target.model, x, eps_values, a, scale_t, target.low, target.high, seed,
                                        batch_size) for a in attacks}
    loops: dict[tuple[str, float], dict[str, Any]] = {}
    if episodes > 0:
        for e in eps_values:
            for a in attacks:
                # eps = 0 is the clean policy for every attack: played once, reported per attack
                key = ("*", 0.0) if e == 0 else (a, e)
                if key not in loops:
                    loops[key] = closed_loop(target, e, a, scale_t, episodes, seed, max_steps, progress)
    base = {
        "checkpoint": str(checkpoint_path), "env_id": target.ckpt.env_id, "model_kind": spec.kind,
        "variant": spec.variant, "model": target.label, "readout": spec.readout if spec.spiking else None,
        "time_steps": spec.time_steps if spec.spiking else None, "eps_unit": unit,
        "scale": scale_t.flatten().tolist() if scale_t.numel() > 1 else float(scale_t),
        "n_obs": n_obs, "obs_source": obs_source, "episodes": episodes, "seed": seed, "max_steps": max_steps,
    }
    rows = []
    for e in eps_values:
        for a in attacks:
            loop = loops.get(("*", 0.0) if e == 0 else (a, e), {})
            rows.append({**base, "eps": e, "attack": a, "agreement": agreement[a][e],
                         "return_mean": loop.get("return_mean"), "return_std": loop.get("return_std"),
                         "loop_agreement": loop.get("loop_agreement"), "returns": loop.get("returns"),
                         "lengths": loop.get("lengths")})
    wall = round(time.perf_counter() - t0, 2)
    for r in rows:
        r["wall_s"] = wall
    return rows


# --- output ----------------------------------------------------------------------------------------


def format_eps(row: dict[str, Any]) -> str:
    e = row["eps"]
    if row["eps_unit"] == "std":
        return f"{e:g} σ"
    if row["eps_unit"] == "input" and e > 0:
        k = e * 255
        return f"{k:.3g}/255" if abs(k - round(k)) > 1e-6 else f"{round(k)}/255"
    return f"{e:g}"


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="robustness: agreement (open loop) and return (closed loop) under attack")
    for col, just in (("checkpoint", "left"), ("model", "left"), ("eps", "right"), ("attack", "left"),
                      ("agreement", "right"), ("return (mean ± std)", "right"), ("loop agr.", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for r in rows:
        name = Path(r["checkpoint"]).name
        ret = "-" if r["return_mean"] is None else f"{r['return_mean']:.1f} ± {r['return_std']:.1f}"
        loop = "-" if r["loop_agreement"] is None else f"{100 * r['loop_agreement']:.1f} %"
        if last is not None and name != last:
            table.add_section()
        table.add_row(name if name != last else "", r["model"] if name != last else "", format_eps(r),
                      r["attack"], f"{100 * r['agreement']:.1f} %", ret, loop)
        last = name
    Console(width=130).print(table)


def plot(rows: list[dict[str, Any]], path: str | Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_returns = any(r["return_mean"] is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if has_returns else 1, figsize=(12 if has_returns else 6, 4.2), squeeze=False)
    ckpts = list(dict.fromkeys(r["checkpoint"] for r in rows))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"fgsm": ("-", "o"), "noise": (":", "x")}
    for k, ck in enumerate(ckpts):
        for attack in dict.fromkeys(r["attack"] for r in rows if r["checkpoint"] == ck):
            sel = sorted((r for r in rows if r["checkpoint"] == ck and r["attack"] == attack), key=lambda r: r["eps"])
            ls, mk = styles.get(attack, ("--", "s"))
            kw = dict(color=colors[k % len(colors)], ls=ls, marker=mk, ms=4,
                      label=f"{Path(ck).stem} ({sel[0]['model']}) {attack}")
            eps = [r["eps"] for r in sel]
            axes[0][0].plot(eps, [100 * r["agreement"] for r in sel], **kw)
            if has_returns:
                ret = [r for r in sel if r["return_mean"] is not None]
                axes[0][1].errorbar([r["eps"] for r in ret], [r["return_mean"] for r in ret],
                                    yerr=[r["return_std"] for r in ret], capsize=2, **kw)
    units = sorted({r["eps_unit"] for r in rows})
    xlabel = "eps (" + ", ".join({"std": "feature std", "input": "input units, pixels in [0, 1]",
                                  "scale": "units of --scale"}[u] for u in units) + ")"
    axes[0][0].set(xlabel=xlabel, ylabel="agreement with clean action (%)", ylim=(-2, 102),
                   title=f"open loop, {rows[0]['n_obs']} clean observations")
    axes[0][0].grid(alpha=0.3)
    if has_returns:
        axes[0][1].set(xlabel=xlabel, ylabel="return (mean ± std)",
                       title=f"closed loop, {rows[0]['episodes']} episodes, every observation attacked")
        axes[0][1].grid(alpha=0.3)
    fig.suptitle(f"{title + ': ' if title else ''}FGSM (solid) vs random-sign noise (dotted) of the same size",
                 fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = min(4, len(labels))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04 * math.ceil(len(labels) / ncol) + 0.02, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_eps(text: str) -> float:
    """A number or a fraction (``2/255``); negative or malformed values are a UserError."""
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"eps must be a number or a fraction like 2/255, got {text!r}") from None
    return check_eps(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="robustness", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="model.pt checkpoints (DQN, DSQN, converted)")
    p.add_argument("--eps", nargs="+", default=[str(e) for e in DEFAULT_EPS],
                   help="perturbation sizes: feature-std units (vector obs) or input units (pixels; 2/255 works)")
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), help="fgsm and/or noise")
    p.add_argument("--episodes", type=int, default=5, help="closed-loop episodes per (eps, attack); 0: none")
    p.add_argument("--obs", type=int, default=500, help="open-loop observations from clean greedy episodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, help=f"agent steps per episode (Atari default {ATARI_MAX_STEPS})")
    p.add_argument("--scale", type=float, nargs="+", help="fixed per-feature scale instead of the clean std")
    p.add_argument("--batch-size", type=int, help="open-loop batch (default 256; 16 for Nature CNNs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--png", help="plot agreement and return vs eps here")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    eps = [parse_eps(e) for e in args.eps]
    for a in args.attacks:
        check_choice("attack", a, ATTACKS)
    for path in args.checkpoints:  # every checkpoint checked before the long run starts
        if not Path(path).is_file():
            raise UserError(f"checkpoint not found: {path}")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for path in args.checkpoints:
        rows += evaluate_robustness(path, eps, args.episodes, args.obs, args.seed, args.attacks, args.max_steps,
                                    args.scale, args.batch_size, progress=not args.no_progress)
        if args.json:  # after every checkpoint, so an interrupted run keeps what it finished
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.png:
        plot(rows, args.png)
    print_table(rows)
    print(f"wall time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
