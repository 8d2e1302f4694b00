"""``convert-dqn``: a trained DQN checkpoint -> a spiking Q-network checkpoint (Tan et al. 2020).

The DQN's ReLU stages become IF neurons (V_th 1, soft reset by default) with the same weights,
rescaled layer by layer so that each layer's activations map onto firing rates in [0, 1]
(Diehl et al. 2015, Rueckauer et al. 2017, Tan et al. 2020 eq. 16):

    W_l <- W_l * lambda_{l-1} / lambda_l        b_l <- b_l / lambda_l

with lambda_l the layer's scale: ``model`` — the largest activation the weights allow for inputs
in range (Diehl's model-based bound); ``data`` — the largest activation seen on calibration
observations; ``robust`` — the p-th percentile of those activations (default 99.9). Because
ReLU(c z) = c ReLU(z) for c > 0, the rescaled DQN computes exactly Q / lambda_L on inputs
x / lambda_0: only the spiking approximation changes the answer. docs/CONVERSION.md has the
details (input scale lambda_0, the output layer, what each readout needs).

The command reports the conversion rate (Tan's metric: how often the SNN's greedy action equals
the DQN's) on held-out observations from other episodes than the calibration ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.calibration import (
    DEFAULT_CALIB_STEPS,
    EVAL_SEED_OFFSET,
    CalibrationStats,
    ObservationSet,
    activation_stats,
    collect_observations,
    layer_names,
    load_observations,
)
from pipeline.checkpoint import Checkpoint, load_checkpoint, provenance, save_checkpoint
from pipeline.convert_cli import (  # noqa: F401  (make_parser and main: pipeline.convert.* keeps working)
    CONVERSION_READOUTS,
    DEFAULT_EVAL_OBS,
    DEFAULT_PERCENTILE,
    DEFAULT_T,
    NORMALIZATIONS,
    make_parser,
    main,
)
from pipeline.errors import UserError, check_choice
from pipeline.models import DQN, SpikingQNetwork, greedy_action
from pipeline.spec import ENCODINGS, RESETS, ModelSpec, NeuronParams, Preprocessing

V_TH = 1.0
SNN_MEMORY_BUDGET = 512 * 2**20  # bytes of live spike/current tensors per evaluation chunk


@dataclass(frozen=True)
class ConversionSettings:
    """Everything that decides the converted network (recorded in its provenance)."""

    normalization: str = "robust"
    percentile: float = DEFAULT_PERCENTILE
    reset: str = "soft"
    encoding: str = "current"
    readout: str = "robust_rate"
    time_steps: int = DEFAULT_T
    v_init: float = 0.0  # initial membrane (= V_r); soft reset only
    encoding_seed: int = 0

    def validate(self) -> ConversionSettings:
        check_choice("normalisation", self.normalization, NORMALIZATIONS)
        check_choice("reset mode", self.reset, RESETS)
        check_choice("input encoding", self.encoding, ENCODINGS)
        check_choice("conversion readout", self.readout, CONVERSION_READOUTS)
        if not (0.0 < self.percentile <= 100.0) or not np.isfinite(self.percentile):
            raise UserError(f"--percentile must lie in (0, 100], got {self.percentile}")
        if self.time_steps < 1:
            raise UserError(f"time steps T must be >= 1, got {self.time_steps}")
        if not 0.0 <= self.v_init < V_TH:
            raise UserError(f"--v-init must lie in [0, V_th = {V_TH}), got {self.v_init}")
        if self.v_init != 0.0 and self.reset != "soft":
            raise UserError("--v-init needs --reset soft (with a hard reset V_r is also the reset value)")
        return self


@dataclass
class Scales:
    """lambda_0 (input, per feature or one value), lambda_1..lambda_{L-1} (hidden), lambda_L (head)."""

    input: np.ndarray
    layers: list[float]
    output: float

    def to_dict(self) -> dict[str, Any]:
        return {"input": [float(v) for v in self.input], "layers": [float(v) for v in self.layers],
                "output": float(self.output)}


# --- what can be converted --------------------------------------------------------------------


def weight_module(stage: nn.Module, name: str) -> tuple[int, nn.Module]:
    """The one Linear/Conv2d of a hidden stage (after an optional Flatten), or a UserError naming it."""
    mods = list(stage.children()) if isinstance(stage, nn.Sequential) else [stage]
    found: list[tuple[int, nn.Module]] = []
    for j, m in enumerate(mods):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            found.append((j, m))
        elif not isinstance(m, nn.Flatten):
            raise UserError(f"layer {name}.{j} ({type(m).__name__}) cannot be converted: only Linear, "
                            "Conv2d and Flatten stages followed by ReLU map onto IF neurons")
    if len(found) != 1 or found[0][0] != len(mods) - 1:
        raise UserError(f"layer {name} cannot be converted: expected one Linear/Conv2d (after an optional "
                        f"Flatten), found {[type(m).__name__ for m in mods]}")
    j, m = found[0]
    if isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or m.groups != 1):
        raise UserError(f"layer {name}.{j} (Conv2d) cannot be converted: padding_mode "
                        f"{m.padding_mode!r}, groups {m.groups} (need zero padding, groups 1)")
    return j, m


def check_convertible(ckpt: Checkpoint, path: str | Path = "checkpoint") -> DQN:
    """The DQN of ``ckpt``, or one UserError naming the layer that stops the conversion."""
    spec = ckpt.spec
    if spec.kind != "dqn":
        p = spec.neuron
        what = f"{p.model.upper()} neurons, {p.reset} reset" if p is not None else "spiking neurons"
        raise UserError(f"{path} is a {spec.kind!r} checkpoint (variant {spec.variant!r}), not a DQN: layer "
                        f"layers.0 is already spiking ({what}); convert-dqn takes a DQN checkpoint")
    model = ckpt.build()
    assert isinstance(model, DQN)
    for i, stage in enumerate(model.layers):
        weight_module(stage, f"layers.{i}")
    if not isinstance(model.head, nn.Linear):
        raise UserError(f"layer head ({type(model.head).__name__}) cannot be converted: expected Linear")
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise UserError(f"layer {name.rsplit('.', 1)[0]} cannot be converted: {name} has NaN or "
                            "infinite values")
    return model


def weighted_layers(model: DQN) -> list[tuple[str, nn.Module]]:
    """(state_dict prefix, module) of every weight layer in order, head last."""
    out = []
    for i, stage in enumerate(model.layers):
        j, m = weight_module(stage, f"layers.{i}")
        out.append((f"layers.{i}.{j}", m))
    out.append(("head", model.head))
    return out


# --- scale factors ----------------------------------------------------------------------------


def positive_sum(weight: torch.Tensor, input_bound: np.ndarray | float, signed_input: bool) -> torch.Tensor:
    """Largest input current each output unit can get: sum_i W+_ji m_i (|W| if inputs may be < 0).

    For a Conv2d ``input_bound`` is one value and the sum runs over the kernel (C_in, kH, kW);
    zero padding could only lower it.
    """
    w = weight.detach().to(torch.float64)
    w = w.abs() if signed_input else w.clamp(min=0)
    m = torch.as_tensor(np.asarray(input_bound, dtype=np.float64))
    if w.dim() == 2 and m.numel() == w.shape[1]:
        return w @ m
    return w.reshape(w.shape[0], -1).sum(dim=1) * float(m.reshape(-1)[0])


def model_based_scales(model: DQN, input_bound: np.ndarray, signed_input: bool) -> tuple[list[float], float]:
    """Diehl et al. 2015's model-based scales, chained through the layers.

    With inputs |x_i| <= m_i, layer l's activation is at most
    max_j [sum_i W+_ji lambda_{l-1} + b_j]^+ (layer 1: sum_i |W_ji| m_i + b_j); that bound is
    lambda_l, so after eq. 16 no unit can be driven above rate 1. The head's lambda_L bounds |Q|.
    """
    layers = weighted_layers(model)
    hidden: list[float] = []
    bound: np.ndarray | float = input_bound
    signed = signed_input
    for name, m in layers[:-1]:
        b = m.bias.detach().to(torch.float64) if m.bias is not None else 0.0
        upper = positive_sum(m.weight, bound, signed) + b
        hidden.append(float(upper.clamp(min=0).max()))
        bound, signed = hidden[-1], False
    head = layers[-1][1]
    w = head.weight.detach().to(torch.float64)
    b = (head.bias.detach().to(torch.float64) if head.bias is not None
         else torch.zeros(w.shape[0], dtype=torch.float64))
    upper = w.clamp(min=0).sum(dim=1) * float(bound) + b
    lower = w.clamp(max=0).sum(dim=1) * float(bound) + b
    return hidden, float(torch.maximum(upper.abs(), lower.abs()).max())


def scale_factors(model: DQN, stats: CalibrationStats, settings: ConversionSettings) -> Scales:
    """lambda_l for every layer by ``settings.normalization`` (see the module docstring)."""
    method = settings.normalization
    names = layer_names(model)
    if settings.encoding == "current":
        lam0 = np.ones(1)  # the real-valued observation is the input current itself: nothing to fit
    else:
        # spike encodings carry rate |x| <= 1: scale the input into range like any other layer
        raw = stats.input_percentile if method == "robust" else stats.input_max
        lam0 = np.where(raw > 0, raw, 1.0).astype(np.float64)
    if method == "model":
        m = stats.input_max if settings.encoding == "current" else np.minimum(stats.input_max, lam0)
        hidden, output = model_based_scales(model, m, signed_input=stats.input_min < 0)
        basis = "model-based bound"
    else:
        pick = (lambda s: s.max) if method == "data" else (lambda s: s.percentile)
        hidden = [pick(s) for s in stats.layers[:-1]]
        output = pick(stats.layers[-1])
        basis = "maximum" if method == "data" else f"{stats.percentile:g}th percentile"
    for name, lam, s in zip(names, [*hidden, output], stats.layers):
        if not (lam > 0 and np.isfinite(lam)):
            if s.max <= 0:
                what = "every activation" if name != "head" else "every Q-value"
                raise UserError(f"layer {name} cannot be normalised: {what} is 0 on the {stats.observations} "
                                "calibration observations (a dead layer)")
            hint = ("; use a higher --percentile or --norm data" if method == "robust"
                    else "; use --norm data or robust" if method == "model" else "")
            raise UserError(f"layer {name} cannot be normalised: its {basis} is {lam:g} (only "
                            f"{100 * (1 - s.zero_fraction):.3g}% of its activations are non-zero){hint}")
    return Scales(input=lam0, layers=[float(v) for v in hidden], output=float(output))


def normalised_state_dict(model: DQN, scales: Scales) -> dict[str, torch.Tensor]:
    """Tan et al. eq. 16 on every weight layer: W_l lambda_{l-1} / lambda_l, b_l / lambda_l.

    Layer 1 sees the encoded input x / lambda_0, so its columns are multiplied by lambda_0
    (per input feature for 1-D observations).
    """
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lams = [*scales.layers, scales.output]
    prev: torch.Tensor | float = 1.0
    for idx, ((prefix, m), lam) in enumerate(zip(weighted_layers(model), lams)):
        w = sd[f"{prefix}.weight"].to(torch.float64)
        if idx == 0:
            lam0 = torch.as_tensor(scales.input, dtype=torch.float64)
            if lam0.numel() > 1:
                if not (isinstance(m, nn.Linear) and w.shape[1] == lam0.numel()):
                    raise UserError(f"layer {prefix}: a per-feature input scale needs a Linear first layer")
                w = w * lam0.unsqueeze(0)
            else:
                w = w * float(lam0[0])
        else:
            w = w * float(prev)
        sd[f"{prefix}.weight"] = (w / lam).to(torch.float32)
        if f"{prefix}.bias" in sd:
            sd[f"{prefix}.bias"] = (sd[f"{prefix}.bias"].to(torch.float64) / lam).to(torch.float32)
        prev = lam
    return sd


def converted_preprocessing(pre: Preprocessing, lam0: np.ndarray) -> Preprocessing:
    """The DQN's preprocessing followed by x / lambda_0 (identity for the current encoding)."""
    if np.all(lam0 == 1.0):
        return pre
    scale = np.broadcast_arrays(np.asarray(pre.scale, np.float64), 1.0 / np.asarray(lam0, np.float64))
    return Preprocessing(offset=pre.offset, scale=tuple(float(v) for v in scale[0] * scale[1]),
                         atari=dict(pre.atari))


def converted_spec(spec: ModelSpec, settings: ConversionSettings) -> ModelSpec:
    neuron = NeuronParams("if", 1.0, V_TH, settings.v_init, settings.reset, 2.0)
    return ModelSpec(kind="converted", arch=spec.arch, obs_shape=spec.obs_shape, n_actions=spec.n_actions,
                     hidden=spec.hidden, bias=spec.bias, variant="tan", neuron=neuron,
                     time_steps=settings.time_steps, encoding=settings.encoding, readout=settings.readout,
                     encoding_seed=settings.encoding_seed).validate()


def build_converted(ckpt: Checkpoint, model: DQN, scales: Scales, settings: ConversionSettings,
                    prov: dict[str, Any]) -> Checkpoint:
    return Checkpoint(spec=converted_spec(ckpt.spec, settings),
                      state_dict=normalised_state_dict(model, scales), env_id=ckpt.env_id,
                      preprocessing=converted_preprocessing(ckpt.preprocessing, scales.input),
                      provenance=prov)


# --- conversion rate --------------------------------------------------------------------------


def q_in_dqn_units(q: torch.Tensor, spec: ModelSpec, output_scale: float) -> torch.Tensor:
    """An SNN readout back in the DQN's Q units: Q_dqn ~ lambda_L * (rate-like readout)."""
    p = spec.neuron
    assert p is not None
    T = spec.time_steps
    if spec.readout == "robust_rate":
        rate = q - (p.v_reset / (T * p.v_th) if p.reset == "soft" else 0.0)  # soft: V starts at V_r
    elif spec.readout == "spike_count":
        rate = q / T
    else:  # voltage: V(T) = V_r + sum_t I_t
        rate = (q - p.v_reset) / T
    return rate * output_scale


def snn_batch_size(model: SpikingQNetwork) -> int:
    """Observations per chunk so that the [T, B, ...] currents and spikes fit the memory budget."""
    with torch.no_grad():
        x = torch.zeros(1, *model.spec.obs_shape)
        widths = 0
        for stage in model.layers:
            x = stage(x)
            widths += x.numel()
        widths += model.spec.n_actions
    per_obs = model.spec.time_steps * widths * 4 * 4
    return int(max(1, min(4096, SNN_MEMORY_BUDGET // per_obs)))


@dataclass
class RateResult:
    """Conversion rate and friends on one observation set."""

    observations: int
    agreement: float
    disagreements: int
    q_abs_err: float | None  # mean |Q_snn - Q_dqn| in DQN units (over observations and actions)
    q_abs_err_max: float | None
    regret: float  # mean Q_dqn(s, a_dqn) - Q_dqn(s, a_snn): what a disagreement costs, in DQN units
    action_gap_median: float  # median Q_dqn(s, best) - Q_dqn(s, second best): how close the calls are
    agreement_decisive: float  # agreement on the observations whose action gap is >= that median
    spike_rate: list[float]  # mean spikes per neuron per step, per hidden layer
    spikes_per_obs: float  # hidden-layer spikes per observation
    wall_s: float


def conversion_rate(dqn: DQN, snn: SpikingQNetwork, data: ObservationSet, dqn_pre: Preprocessing,
                    lam0: np.ndarray, output_scale: float | None = None, progress: bool = False,
                    seed: int | None = None) -> RateResult:
    """Greedy-action agreement of ``snn`` with ``dqn`` on every observation of ``data``.

    The SNN sees the DQN's input divided by lambda_0 (its own preprocessing); poisson inputs
    come from one generator seeded with ``seed`` (default: the spec's encoding seed).
    """
    if len(data) == 0:
        raise UserError("no observations to measure the conversion rate on")
    t0 = time.perf_counter()
    spec = snn.spec
    gen = torch.Generator().manual_seed(spec.encoding_seed if seed is None else seed)
    lam = torch.as_tensor(np.asarray(lam0, np.float32))
    chunk = snn_batch_size(snn)
    agree = 0
    err_sum, err_max, n_q, regret = 0.0, 0.0, 0, 0.0
    gaps: list[torch.Tensor] = []
    hits: list[torch.Tensor] = []
    spike_sums: list[float] = [0.0] * len(snn.layers)
    widths: list[int] = [0] * len(snn.layers)
    bar = tqdm(total=len(data), desc=f"conversion rate T={spec.time_steps}", unit="obs", disable=not progress)
    with torch.no_grad():
        for x in data.batches(dqn_pre, chunk):
            q_dqn = dqn(x)
            q, spikes, tie = snn.run(x / lam, gen)
            a_snn, a_dqn = greedy_action(q, tie), greedy_action(q_dqn)
            agree += int((a_snn == a_dqn).sum())
            hits.append(a_snn == a_dqn)
            picked = q_dqn.gather(1, a_snn.unsqueeze(1)).squeeze(1)
            regret += float((q_dqn.gather(1, a_dqn.unsqueeze(1)).squeeze(1) - picked).sum())
            if q_dqn.shape[1] > 1:
                top2 = q_dqn.topk(2, dim=1).values
                gaps.append(top2[:, 0] - top2[:, 1])
            if output_scale is not None:
                d = (q_in_dqn_units(q, spec, output_scale) - q_dqn).abs()
                err_sum += float(d.sum())
                err_max = max(err_max, float(d.max()))
                n_q += d.numel()
            for i, s in enumerate(spikes):
                spike_sums[i] += float(s.sum())
                widths[i] = int(s[0, 0].numel())
            bar.update(x.shape[0])
    bar.close()
    n = len(data)
    T = spec.time_steps
    gap = torch.cat(gaps) if gaps else torch.zeros(n)
    median = float(gap.median()) if n else 0.0
    decisive = torch.cat(hits)[gap >= median] if n else torch.zeros(0, dtype=torch.bool)
    return RateResult(observations=n, agreement=agree / n, disagreements=n - agree,
                      q_abs_err=err_sum / n_q if n_q else None, q_abs_err_max=err_max if n_q else None,
                      regret=regret / n, action_gap_median=median,
                      agreement_decisive=float(decisive.float().mean()) if decisive.numel() else 1.0,
                      spike_rate=[s / (n * T * w) for s, w in zip(spike_sums, widths)],
                      spikes_per_obs=sum(spike_sums) / n, wall_s=time.perf_counter() - t0)


# --- the command ------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_args(args: argparse.Namespace) -> ConversionSettings:
    settings = ConversionSettings(args.normalization, args.percentile, args.reset, args.encoding,
                                  args.readout, args.time_steps, args.v_init, args.seed).validate()
    if args.calib_steps is not None and args.calib_steps < 1:
        raise UserError(f"--calib-steps must be >= 1, got {args.calib_steps}")
    if args.calib_envs < 1:
        raise UserError(f"--calib-envs must be >= 1, got {args.calib_envs}")
    if args.eval_obs < 0:
        raise UserError(f"--eval-obs must be >= 0, got {args.eval_obs}")
    if not 0.0 <= args.calib_epsilon <= 1.0:
        raise UserError(f"--calib-epsilon must lie in [0, 1], got {args.calib_epsilon}")
    if args.calib_raw and not args.calib_obs:
        raise UserError("--calib-raw describes --calib-obs; pass --calib-obs FILE")
    if Path(args.output).resolve() == Path(args.checkpoint).resolve():
        raise UserError("--output would overwrite the source DQN checkpoint")
    from pipeline.checks import check_output, check_seed

    check_seed("--seed", args.seed)
    check_output("-o", args.output)
    return settings


def calibration_set(args: argparse.Namespace, ckpt: Checkpoint, progress: bool) -> ObservationSet:
    if args.calib_obs:
        data = load_observations(args.calib_obs, ckpt.spec.obs_shape, raw=args.calib_raw,
                                 limit=args.calib_steps)
    else:
        n = args.calib_steps or DEFAULT_CALIB_STEPS
        data = collect_observations(ckpt, n, args.seed, args.calib_epsilon, progress, envs=args.calib_envs)
    if len(data) == 0:
        raise UserError("the calibration set is empty (0 observations)")
    return data


def convert(args: argparse.Namespace) -> dict[str, Any]:
    settings = check_args(args)
    progress = not args.no_progress
    src = Path(args.checkpoint)
    ckpt = load_checkpoint(src)
    model = check_convertible(ckpt, src)

    t0 = time.perf_counter()
    data = calibration_set(args, ckpt, progress)
    t1 = time.perf_counter()
    stats = activation_stats(model, data, ckpt.preprocessing, settings.percentile, progress)
    t2 = time.perf_counter()
    scales = scale_factors(model, stats, settings)
    conversion = {**asdict(settings), "v_th": V_TH, "scales": scales.to_dict(), "output_scale": scales.output,
                  "calibration": data.source}
    source = {"path": str(src), "sha256": file_sha256(src), "kind": ckpt.spec.kind,
              "command": ckpt.provenance.get("command"), "seed": ckpt.provenance.get("seed"),
              "evaluation": ckpt.provenance.get("evaluation")}
    prov = provenance(args.seed, conversion=conversion, source=source)
    out = build_converted(ckpt, model, scales, settings, prov)
    t3 = time.perf_counter()
    timings = {"calibration_s": t1 - t0, "statistics_s": t2 - t1, "normalise_s": t3 - t2,
               "conversion_s": t3 - t0}

    report: dict[str, Any] = {
        "source": str(src), "output": args.output, "env_id": ckpt.env_id, "settings": asdict(settings),
        "calibration": data.source,
        "layers": [{"name": s.name, "max": s.max, "percentile": s.percentile,
                    "zero_fraction": s.zero_fraction, "lambda": lam}
                   for s, lam in zip(stats.layers, [*scales.layers, scales.output])],
        "scales": scales.to_dict(), "timings": timings,
    }
    if args.eval_obs > 0:
        eval_data = collect_observations(ckpt, args.eval_obs, args.seed + EVAL_SEED_OFFSET,
                                         args.calib_epsilon, progress, desc="held-out",
                                         envs=args.calib_envs)
        snn = out.build()
        assert isinstance(snn, SpikingQNetwork)
        res = conversion_rate(model, snn, eval_data, ckpt.preprocessing, scales.input, scales.output,
                              progress)
        report["evaluation"] = {**asdict(res), "time_steps": settings.time_steps, "source": eval_data.source}
        out.provenance["conversion_rate"] = {k: report["evaluation"][k] for k in
                                             ("observations", "agreement", "q_abs_err", "time_steps")}
        out.provenance["conversion_rate"]["seed"] = args.seed + EVAL_SEED_OFFSET
    save_checkpoint(out, args.output)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    return report


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["settings"]
    console = Console()
    norm = s["normalization"] + (f" p{s['percentile']:g}" if s["normalization"] == "robust" else "")
    layers = Table(title=f"convert-dqn scales ({norm})")
    for col in ("layer", "max", f"p{s['percentile']:g}", "zeros", "lambda"):
        layers.add_column(col, justify="right")
    layers.add_row("input", "", "", "", ", ".join(f"{v:.3g}" for v in report["scales"]["input"]))
    for row in report["layers"]:
        layers.add_row(row["name"], f"{row['max']:.4g}", f"{row['percentile']:.4g}",
                       f"{100 * row['zero_fraction']:.1f}%", f"{row['lambda']:.4g}")
    console.print(layers)
    t = report["timings"]
    summary = Table(title="conversion", show_header=False)
    summary.add_column("what")
    summary.add_column("value")
    summary.add_row("source -> output", f"{report['source']} -> {report['output']}")
    summary.add_row("neurons", f"IF, V_th 1, {s['reset']} reset, V_init {s['v_init']:g}; "
                               f"T {s['time_steps']}; {s['encoding']} input; {s['readout']} readout")
    cal = report["calibration"]
    where = f" (seed {cal['seed']}, epsilon {cal['epsilon']:g})" if cal["source"] == "env" else ""
    summary.add_row("calibration", f"{cal['observations']} observations from {cal['source']}{where}")
    summary.add_row("conversion time", f"{t['conversion_s']:.2f} s (observations {t['calibration_s']:.2f} s, "
                                       f"statistics {t['statistics_s']:.2f} s, "
                                       f"weights {t['normalise_s']:.3f} s)")
    ev = report.get("evaluation")
    if ev:
        summary.add_row("conversion rate", f"{100 * ev['agreement']:.2f}% agreement on {ev['observations']} "
                                           f"held-out observations ({ev['disagreements']} differ; "
                                           f"{ev['wall_s']:.1f} s)")
        if ev["q_abs_err"] is not None:
            summary.add_row("|Q_snn - Q_dqn|",
                            f"mean {ev['q_abs_err']:.4g}, max {ev['q_abs_err_max']:.4g} (DQN units)")
        summary.add_row("action gap", f"median DQN gap Q(best) - Q(second) {ev['action_gap_median']:.4g}; "
                                      "agreement where the gap >= median "
                                      f"{100 * ev['agreement_decisive']:.2f}%; "
                                      f"mean regret {ev['regret']:.4g}")
        summary.add_row("spike rate", ", ".join(f"{r:.3f}" for r in ev["spike_rate"])
                        + f" per neuron per step; {ev['spikes_per_obs']:.0f} spikes per observation")
    console.print(summary)


if __name__ == "__main__":
    raise SystemExit(main())
