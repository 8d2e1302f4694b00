"""``finetune-fixed``: hardware-aware fine-tuning of a spiking Q-network for lava-fixed (Loihi 2, 8 bit).

```
finetune-fixed model.pt -o model.loihi.pt [--episodes 20] [--epochs 30] [--margin 0.02] [--seed 0]
```

Why: 8-bit mantissas with one exponent per layer move the Q-values of a float-trained agent by a
few percent of max |Q|, while the actions of a CartPole agent are often decided by 0.1 %, so
plain quantisation flips 20-50 % of the actions (docs/LAVA.md). Here the network is trained
*through* lava-fixed's own arithmetic and then written back on the 8-bit grid, so that its
float model and its Loihi 2 model compute nearly the same thing and both act as the float agent did.

How (the choices, documented in docs/LAVA.md, "Hardware-aware fine-tuning"):

* **Forward** = lava-fixed's integers (backends.lava.torch_fixed, bit-exact with the Lava
  models), with the quantisation chosen by the real pipeline (export -> lower ->
  ``quantize_layout``) for the current weights, re-chosen every epoch. Mantissas, bias
  mantissas, the host current's rounding, the decay's truncation and the right shifts are
  rounded straight-through; spikes use the model's own ATan surrogate (in volts).
* **Loss** = distillation from the float agent on recorded observations, not the Q-learning
  loss: the float agent already acts well, and what is to be kept is its behaviour. The
  observations come from its own greedy episodes with epsilon-random actions (so that the
  states just off its path are covered too). Per observation: squared Q error (scaled by the
  agent's Q range) plus a hinge that asks the fixed-point Q of the agent's action to exceed
  every other action's by ``margin`` (a fraction of the Q range): a near-tie in the float agent
  becomes a clear decision that 24-bit rounding cannot flip.
* **Written back on the grid**: each weight becomes exactly ``mant * q * 2**e / c`` and each bias
  ``mant * 2**exp * q / c`` (stored in float32, rounded toward zero so that re-quantising the
  checkpoint picks the same mantissas); the float model then differs from lava-fixed only by the
  24-bit state's roundings (host current, leak truncation). The result is a normal checkpoint:
  ``export-nir`` and every backend run it.
* **Convolutions** (the Nature CNN): the parameter is the kernel, not the sparse map lava-fixed
  lowers it to. Every entry of a conv map is one kernel weight times the layer's input scale
  ``c`` (constant per channel), quantised at the map's one exponent, so the 8-bit mantissa of
  every synapse is its kernel weight's mantissa: the forward rounds the kernel
  (``round(c w / (q 2**e))``, straight through) and applies it as a convolution
  (:class:`backends.lava.torch_fixed.ConvMantissas`; integer sums, so the same bits as the
  sparse map), and the write-back snaps the kernel. The exponent quantize.py picks for a conv
  map comes from its largest entry, i.e. the largest kernel weight some output position
  reaches (fan-in only shrinks at padded borders); a kernel weight no position reaches (a tap
  that only meets padding) is in no map and is left as it is. The flatten before the fully
  connected layer is the identity on C-order data and stays so.

A network this cannot fine-tune (a DQN, a layer not fed by exactly one linear or conv map, a
map reading through anything but flatten, a neuron lava-fixed does not implement, an input
encoding other than ``current``, weights or states out of Loihi 2's ranges) gets one
``error:`` line naming the layer and the limit (exit 2).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from backends.common.sparse import conv_coo
from backends.finetune_cli import TARGETS, Settings, main  # noqa: F401  (backends.finetune_fixed.* keeps working)
from backends.lava.backend import default_input_bound
from backends.lava.lowering import Layout, lower
from backends.lava.quantize import BIAS_MANT_MAX, WEIGHT_MANT, FixedPop, input_scale, quantize_layout
from backends.lava.torch_fixed import HOST, ConvMantissas, LoihiFixedTorch, readout_q, simulate, ste
from exporters.canonical import Op, Plan, build_plan
from exporters.to_nir import model_to_nir
from pipeline.checkpoint import Checkpoint
from pipeline.envs import Preprocessor, make_env, n_actions
from pipeline.errors import UserError
from pipeline.models import SpikingQNetwork, greedy_action

# ---------------------------------------------------------------- the grid of the current weights


@dataclass
class Feed:
    """The torch layer whose map (and bias) feeds one population."""

    module: nn.Linear | nn.Conv2d
    source: str  # the source population, or HOST
    op: Op  # the layer's exported synaptic op (a conv's geometry)
    leak: np.ndarray  # v_leak / tau per neuron, folded into the bias


@dataclass
class Grid:
    """lava-fixed's quantisation of the current weights, and which torch layer feeds which population."""

    plan: Plan
    layout: Layout
    quant: dict[str, FixedPop]
    feed: dict[str, Feed]


MAP_KINDS = ("affine", "linear", "conv2d")


def _stage_maps(model: SpikingQNetwork) -> dict[str, nn.Linear | nn.Conv2d]:
    """Export names of the synaptic maps (exporters.to_nir) -> torch layers."""
    out: dict[str, nn.Linear | nn.Conv2d] = {}
    for i, stage in enumerate(model.layers):
        for mod in stage:
            if isinstance(mod, nn.Linear):
                out[f"l{i}_fc"] = mod
            elif isinstance(mod, nn.Conv2d):
                out[f"l{i}_conv"] = mod
    out["head"] = model.head
    return out


def _upstream(op: Op, by_name: dict[str, Op]) -> Op | None:
    """The op a map reads through flatten ops (identities on C-order data), or None if it sums several."""
    while len(op.inputs) == 1:
        op = by_name[op.inputs[0]]
        if op.kind != "flatten":
            return op
    return None


def make_grid(ckpt: Checkpoint, model: SpikingQNetwork, input_bound: float | None = None) -> Grid:
    """Export the model's current weights and quantise them as ``--target lava-fixed
    --state-scale layer`` would: the forward (:func:`fixed_forward`) counts every population in
    one state unit; the grid it writes back is kept by ``--state-scale neuron`` as well
    (:func:`neuron_scale_moves`)."""
    ck = Checkpoint(spec=ckpt.spec, state_dict=model.state_dict(), env_id=ckpt.env_id,
                    preprocessing=ckpt.preprocessing, provenance={})
    plan = build_plan(model_to_nir(ck))
    layout = lower(plan, fixed_point=True)
    bound = input_bound or default_input_bound(plan)
    quant = quantize_layout(layout, bound, "8bit", 8, "layer")
    by_name = {op.name: op for op in plan.ops}
    maps = _stage_maps(model)
    incoming: dict[str, list[str]] = {}
    for c in layout.conns:
        incoming.setdefault(c.dst, []).append(c.src)
    grid = Grid(plan=plan, layout=layout, quant=quant, feed={})
    for name, pop in layout.pops.items():
        syn_name = name if pop.kind == "identity" else None
        if syn_name is None:
            inputs = by_name[name].inputs
            syn_name = inputs[0] if len(inputs) == 1 else None
        syn = by_name.get(syn_name) if syn_name else None
        srcs = incoming.get(name, []) + ([HOST] if pop.host else [])
        if syn is None or syn.kind not in MAP_KINDS or syn_name not in maps or len(srcs) != 1:
            what = f"{syn.kind} ({syn_name!r})" if syn is not None else "several inputs"
            raise UserError(f"node {name!r}: fine-tuning for lava-fixed needs every layer fed by exactly one "
                            f"linear or conv map (flatten allowed before it); this layer is fed by {what}")
        up = _upstream(syn, by_name)
        if up is None or (up.kind != "input" if srcs[0] == HOST else up.name != srcs[0]):
            what = "several inputs" if up is None else f"{up.kind} ({up.name!r})"
            raise UserError(f"node {name!r}: its map {syn_name!r} reads {what}; fine-tuning for lava-fixed needs "
                            "the map to read the layer before it directly (flatten allowed)")
        mod = maps[syn_name]
        w = np.asarray(syn.params["weight"], dtype=np.float64)
        if w.shape != tuple(mod.weight.shape) or not np.array_equal(w, mod.weight.detach().double().numpy()):
            raise UserError(f"node {name!r}: its exported map does not match the model's layer {syn_name!r}")
        c, leak = input_scale(pop, pop.n)
        if isinstance(mod, nn.Conv2d):
            for what, v in (("input scale g/tau", c), ("leak v_leak/tau", leak)):
                per = v.reshape(mod.out_channels, -1)
                if not np.all(per == per[:, :1]):
                    raise UserError(f"node {name!r}: its neurons' {what} varies within a channel of {syn_name!r}; "
                                    "a shared conv kernel holds one 8-bit mantissa per kernel weight, so "
                                    "fine-tuning needs it constant per channel")
        grid.feed[name] = Feed(module=mod, source=srcs[0], op=syn, leak=leak)
    return grid


def _conv_mantissas(feed: Feed, kernel: torch.Tensor) -> ConvMantissas:
    p = feed.op.params
    padding = p["padding"] if isinstance(p["padding"], str) else tuple(int(v) for v in p["padding"])
    return ConvMantissas(kernel, tuple(int(v) for v in feed.op.in_shape), tuple(int(v) for v in p["stride"]),
                         padding, tuple(int(v) for v in p["dilation"]), int(p["groups"]))


def _per_channel(v: torch.Tensor | np.ndarray, mod: nn.Conv2d) -> Any:
    """A per-neuron vector that is constant per channel (checked by make_grid) -> one value per channel."""
    return v.reshape(mod.out_channels, -1)[:, 0]


def _folded_scale(fp: FixedPop, feed: Feed) -> np.ndarray:
    """The input scale c folded into the map: per output neuron (Linear) or per channel (Conv2d)."""
    c = fp.c.astype(np.float64)
    return _per_channel(c, feed.module) if isinstance(feed.module, nn.Conv2d) else c


def fixed_forward(grid: Grid, x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Q-values ``[B, A]`` of lava-fixed (8-bit) for preprocessed observations ``x`` (float64),
    differentiable in the Linear and Conv2d layers' weights and biases (straight-through roundings).

    A conv map's mantissas are its kernel's (weight sharing): ``round(c w / (q 2**e))`` per
    kernel weight at the map's one exponent, applied as a convolution, so each gradient step
    moves a kernel weight and with it every synapse that shares it."""
    host: dict[str, torch.Tensor] = {}
    sets: dict[tuple[str, str], list] = {}
    bias: dict[str, torch.Tensor] = {}
    for name, pop in grid.layout.pops.items():
        fp, feed = grid.quant[name], grid.feed[name]
        mod = feed.module
        fmap = fp.maps[feed.source]
        step = fp.q * 2.0 ** fmap.exp
        c = torch.as_tensor(_folded_scale(fp, feed), dtype=torch.float64)
        shape = (-1,) + (1,) * (mod.weight.dim() - 1)
        mant: torch.Tensor | ConvMantissas = ste((c.reshape(shape) * mod.weight.double()) / step,
                                                 torch.round).clamp(*WEIGHT_MANT)
        if isinstance(mod, nn.Conv2d):
            mant = _conv_mantissas(feed, mant)
        if feed.source == HOST:
            flat = x.reshape(x.shape[0], -1)
            cur = mant(flat) if isinstance(mant, ConvMantissas) else flat @ mant.T
            host[name] = ste(cur * 2.0 ** fmap.exp, torch.round).unsqueeze(0)
        else:
            sets[(name, feed.source)] = [(mant, fmap.exp)]
        b = torch.as_tensor(feed.leak, dtype=torch.float64)
        if mod.bias is not None:
            per = mod.bias.double()
            if isinstance(mod, nn.Conv2d):
                per = per.repeat_interleave(pop.n // mod.out_channels)
            b = torch.as_tensor(fp.c, dtype=torch.float64) * per + b
        scale = torch.as_tensor(2.0 ** fp.bias_exp, dtype=torch.float64)
        bias[name] = ste(b / fp.q / scale, torch.round).clamp(-BIAS_MANT_MAX, BIAS_MANT_MAX) * scale
    run = simulate(grid.layout, grid.quant, host, sets, bias=bias, alpha=alpha)
    return readout_q(grid.layout, grid.quant, grid.plan.semantics, run)


def snap(grid: Grid) -> None:
    """Write every weight and bias back as exactly its lava-fixed value (float32, toward zero).

    A conv kernel is written back per kernel weight (the value all its synapses share); a
    kernel weight that no output position reaches (a tap that only ever meets padding) is not
    in the map and is left as it is."""
    with torch.no_grad():
        for name, pop in grid.layout.pops.items():
            fp, feed = grid.quant[name], grid.feed[name]
            mod = feed.module
            conv = isinstance(mod, nn.Conv2d)
            c = _folded_scale(fp, feed)
            e = fp.maps[feed.source].exp
            w = mod.weight.detach().double().numpy()
            cw = c.reshape((-1,) + (1,) * (w.ndim - 1))
            mant = np.clip(np.round(cw * w / (fp.q * 2.0 ** e)), *WEIGHT_MANT)
            new = _toward_zero(mant * (fp.q * 2.0 ** e) / cw)
            if conv:
                new = np.where(_used_taps(feed.op), new, mod.weight.detach().numpy())
            mod.weight.copy_(torch.as_tensor(new))
            if mod.bias is not None:
                per = mod.bias.detach().double().numpy()
                if conv:
                    per = np.repeat(per, pop.n // mod.out_channels)
                b = fp.c * per + feed.leak
                scale = 2.0 ** fp.bias_exp
                bm = np.clip(np.round(b / fp.q / scale), -BIAS_MANT_MAX, BIAS_MANT_MAX)
                nb = (bm * scale * fp.q - feed.leak) / fp.c
                mod.bias.copy_(torch.as_tensor(_toward_zero(_per_channel(nb, mod) if conv else nb)))


def _used_taps(op: Op) -> np.ndarray:
    """Which kernel weights of a conv op appear in its sparse map (some output position reaches them)."""
    w = np.asarray(op.params["weight"])
    index = replace(op, params={**op.params, "weight": np.arange(1, w.size + 1, dtype=np.float64).reshape(w.shape)})
    used = np.zeros(w.size, dtype=bool)
    used[np.unique(conv_coo(index)[2]).astype(np.int64) - 1] = True
    return used.reshape(w.shape)


def _toward_zero(v: np.ndarray) -> np.ndarray:
    """float64 -> float32, rounding toward zero (never a larger magnitude)."""
    f = v.astype(np.float32)
    over = np.abs(f.astype(np.float64)) > np.abs(v)
    f[over] = np.nextafter(f[over], np.float32(0))
    return f


def grid_mismatch(before: Grid, after: Grid) -> dict[str, int]:
    """Weight mantissas (or exponents) that differ between two quantisations: 0 everywhere means
    the written checkpoint quantises to the weights it was trained with. Thresholds and biases
    are reported apart (:func:`threshold_drift`, :func:`unit_drift`): a population whose state
    unit is set by its 24-bit range (not by its weights or threshold) gets a unit that moves with
    the rounded weights (their sum bounds the state; ~1e-4 with a conv layer's fan-in of
    hundreds), so its threshold integer and its large bias integers move with it (a threshold of
    ~80,000 LSBs by a few), while every mantissa stays."""
    out = {}
    for name, fa in after.quant.items():
        fb = before.quant[name]
        n = 0
        for src, ma in fa.maps.items():
            mb = fb.maps[src]
            n += int((ma.mant != mb.mant).nnz) if ma.exp == mb.exp else ma.mant.nnz
        out[name] = n
    return out


def threshold_drift(before: Grid, after: Grid) -> dict[str, float]:
    """Largest relative change of a population's integer threshold between two quantisations (0
    for populations without one)."""
    out = {}
    for name, fa in after.quant.items():
        tb = before.quant[name].threshold
        if fa.threshold is None or tb is None:
            out[name] = 0.0
            continue
        out[name] = float(np.max(np.abs(fa.threshold - tb) / np.maximum(np.abs(tb), 1)))
    return out


def neuron_scale_moves(ckpt: Checkpoint, input_bound: float | None = None) -> list[str]:
    """The populations to which ``--state-scale neuron`` would give per-neuron units for this
    checkpoint (so lava-fixed would run it differently from the layer grid it was tuned on): none
    for weights on that grid, since a neuron leaves the layer's unit only where its own rounds its
    weights more finely (backends.lava.quantize)."""
    plan = build_plan(model_to_nir(ckpt))
    layout = lower(plan, fixed_point=True)
    quant = quantize_layout(layout, input_bound or default_input_bound(plan), "8bit", 8, "neuron")
    return [name for name, fp in quant.items() if fp.unit is not None]


def unit_drift(before: Grid, after: Grid) -> dict[str, float]:
    """Relative change of every population's state unit between two quantisations."""
    return {name: abs(fa.q / before.quant[name].q - 1.0) for name, fa in after.quant.items()}


# ---------------------------------------------------------------- data


def record(ckpt: Checkpoint, model: SpikingQNetwork, episodes: int, seed: int, epsilon: float,
           max_steps: int | None = None) -> tuple[np.ndarray, list[float]]:
    """Preprocessed observations of the float agent's episodes (epsilon-random actions) and the
    returns of those episodes."""
    env = make_env(ckpt.env_id, ckpt.preprocessing.atari or None, max_episode_steps=max_steps)
    if n_actions(env) != ckpt.spec.n_actions:
        raise UserError(f"{ckpt.env_id} has {n_actions(env)} actions, the model {ckpt.spec.n_actions}")
    pre = Preprocessor(ckpt.preprocessing)
    rng = np.random.default_rng(seed)
    obs_all, returns = [], []
    for i in range(episodes):
        raw, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            x = pre(torch.as_tensor(np.asarray(raw)).unsqueeze(0))
            obs_all.append(x[0].numpy())
            if epsilon > 0 and rng.random() < epsilon:
                action = int(rng.integers(ckpt.spec.n_actions))
            else:
                with torch.no_grad():
                    q, _, tie = model.run(x)
                action = int(greedy_action(q, tie)[0])
            raw, reward, term, trunc, _ = env.step(action)
            total += float(reward)
            done = term or trunc
        returns.append(total)
    env.close()
    return np.stack(obs_all).astype(np.float32), returns


def teacher_q(model: SpikingQNetwork, obs: np.ndarray, batch: int = 1024) -> np.ndarray:
    out = []
    with torch.no_grad():
        for lo in range(0, len(obs), batch):
            out.append(model.run(torch.as_tensor(obs[lo:lo + batch]))[0].double().numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------- fine-tuning


def check_finetunable(ckpt: Checkpoint) -> None:
    spec = ckpt.spec
    if not spec.spiking:
        raise UserError(f"model kind {spec.kind!r} is not spiking: convert it first (convert-dqn), then fine-tune")
    if spec.encoding != "current":
        raise UserError(f"node 'input': fine-tuning for lava-fixed needs the 'current' encoding (this model "
                        f"uses {spec.encoding!r}, whose spikes would be a second random stream)")


def finetune(ckpt: Checkpoint, s: Settings, log=None) -> tuple[Checkpoint, dict[str, Any]]:
    """Fine-tune ``ckpt`` for lava-fixed (8-bit); return the new checkpoint and a summary."""
    check_finetunable(ckpt)
    if log is None:
        def log(msg: str) -> None:
            print(msg, flush=True)
    torch.manual_seed(s.seed)
    teacher = ckpt.build()
    assert isinstance(teacher, SpikingQNetwork)
    student = copy.deepcopy(teacher).train()
    grid = make_grid(ckpt, student, s.input_bound)  # refuses out-of-range layers by name
    t0 = time.perf_counter()
    obs, rec_returns = record(ckpt, teacher, s.episodes, 10_000 + s.seed, s.epsilon, s.max_steps)
    q_t = torch.as_tensor(teacher_q(teacher, obs))
    a_t = q_t.argmax(dim=1)
    q_range = float(q_t.abs().max(dim=1).values.mean().clamp_min(1e-6))
    adv_scale = float((q_t - q_t.mean(dim=1, keepdim=True)).abs().mean().clamp_min(1e-6 * q_range))
    margin = s.margin * q_range
    log(f"recorded {len(obs)} observations from {s.episodes} episodes (epsilon {s.epsilon}; returns "
        f"{np.mean(rec_returns):.1f}); Q scale {q_range:.3g}, mean |advantage| {adv_scale:.3g}, margin {margin:.3g}")
    x_all = torch.as_tensor(obs, dtype=torch.float64)
    alpha = float(ckpt.spec.neuron.surrogate_alpha) if ckpt.spec.neuron is not None else 2.0
    opt = torch.optim.Adam(student.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(s.seed)
    history = []
    for epoch in range(s.epochs):
        grid = make_grid(ckpt, student, s.input_bound)
        perm = torch.randperm(len(obs), generator=gen)
        agree = n = 0
        loss_sum = 0.0
        for lo in range(0, len(obs), s.batch):
            idx = perm[lo:lo + s.batch]
            q, act = fixed_forward(grid, x_all[idx], alpha)
            loss = distill_loss(q, q_t[idx], a_t[idx], q_range, margin, adv_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            agree += int((act == a_t[idx]).sum())
            n += len(idx)
        history.append({"epoch": epoch, "loss": loss_sum / n, "agreement_with_agent": agree / n,
                        "wall_s": round(time.perf_counter() - t0, 1)})
        log(f"epoch {epoch + 1}/{s.epochs}: loss {loss_sum / n:.4f}, lava-fixed agrees with the float agent "
            f"on {100 * agree / n:.2f} % (while training; {time.perf_counter() - t0:.0f} s)")
    final = make_grid(ckpt, student, s.input_bound)
    snap(final)
    out = Checkpoint(spec=ckpt.spec, state_dict={k: v.detach().clone() for k, v in student.state_dict().items()},
                     env_id=ckpt.env_id, preprocessing=ckpt.preprocessing, provenance={})
    again = make_grid(out, student, s.input_bound)
    mismatch = grid_mismatch(final, again)
    summary = {"unit_drift": unit_drift(final, again), "threshold_drift": threshold_drift(final, again),
               "observations": len(obs), "record_returns": rec_returns, "q_range": q_range, "margin": margin,
               "history": history, "grid_mismatch": mismatch,
               "neuron_scale_moves": neuron_scale_moves(out, s.input_bound),
               "wall_s": round(time.perf_counter() - t0, 1)}
    return out, summary


def distill_loss(q: torch.Tensor, q_t: torch.Tensor, a_t: torch.Tensor, scale: float, margin: float,
                 adv_scale: float) -> torch.Tensor:
    """Distillation of what decides the actions. The agent's Q-values are large and nearly
    equal (CartPole: ~100, apart by ~0.1), so a plain squared Q error is dominated by the
    common level: the advantages ``Q - mean_a Q`` are matched instead (in units of their spread
    ``adv_scale``), the level only weakly (in units of ``scale``, the agent's mean max |Q|), and a
    hinge asks the agent's action to lead by ``margin``."""
    adv, adv_t = q - q.mean(dim=1, keepdim=True), q_t - q_t.mean(dim=1, keepdim=True)
    match = ((adv - adv_t) / adv_scale).pow(2).mean()
    level = ((q.mean(dim=1) - q_t.mean(dim=1)) / scale).pow(2).mean()
    chosen = q.gather(1, a_t[:, None])
    others = q.masked_fill(torch.nn.functional.one_hot(a_t, q.shape[1]).bool(), -math.inf)
    hinge = torch.relu(margin - (chosen - others.max(dim=1, keepdim=True).values)) / adv_scale
    return match + level + hinge.mean()


def agreement_report(ckpt: Checkpoint, obs: np.ndarray, teacher: SpikingQNetwork | None = None) -> dict[str, float]:
    """lava-fixed (the bit-exact torch model) against the checkpoint's own float64 reference
    (and against ``teacher``) on preprocessed observations."""
    from backends.reference import ReferenceBackend

    graph = model_to_nir(ckpt)
    fixed = LoihiFixedTorch(graph).run(obs)
    ref = ReferenceBackend(graph, dtype="float64").run(obs)
    out = {"agreement_fixed_vs_own_float": float(np.mean(fixed.action == ref.action))}
    if teacher is not None:
        a = greedy_action(torch.as_tensor(teacher_q(teacher, obs))).numpy()
        out["agreement_fixed_vs_agent"] = float(np.mean(fixed.action == a))
        out["agreement_float_vs_agent"] = float(np.mean(ref.action == a))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
