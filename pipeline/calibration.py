"""Calibration data for DQN -> SNN conversion: observations and per-layer activation statistics.

Tan et al. 2020 normalise each layer by a statistic of its ReLU activations over game frames
(at most 15,000, collected by playing the DQN). This module gets those frames — by running the
DQN epsilon-greedily in its environment, or from a ``.npy`` file — and computes, in one pass
over the data, the exact maximum and p-th percentile of every layer's activations.

The percentile is exact (numpy's default "linear" interpolation) but needs no copy of all
activations: with N values known up front, the p-th percentile only depends on the values of
rank floor((N-1)p/100) and the next one, so it is enough to keep the N - floor((N-1)p/100)
largest values seen so far (a few hundred thousand for a Nature-CNN at p = 99.9, instead of
hundreds of millions).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.checkpoint import Checkpoint
from pipeline.envs import Preprocessor, make_env, n_actions
from pipeline.errors import UserError
from pipeline.models import DQN, greedy_action
from pipeline.convert_cli import CALIB_EPSILON, DEFAULT_CALIB_STEPS  # noqa: F401  (the command's defaults)
from pipeline.spec import Preprocessing

EVAL_SEED_OFFSET = 1_000_003  # held-out observations come from other episodes than calibration
BATCH = 256


class TailPercentile:
    """Exact p-th percentile (numpy 'linear') of a stream of ``total`` values, in small memory.

    Keeps only the values that can still be at the two ranks the percentile interpolates
    between: the largest ``total - lo`` ones (or, for small p, the smallest ``lo + 2``).
    """

    def __init__(self, total: int, percentile: float):
        if total < 1:
            raise ValueError("a percentile needs at least one value")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
        self.total = total
        pos = (total - 1) * percentile / 100.0
        self.lo = min(int(math.floor(pos)), total - 1)
        self.frac = pos - self.lo
        self.top = total - self.lo <= self.lo + 2  # keep the large end (p >= ~50) or the small end
        self.keep = total - self.lo if self.top else min(self.lo + 2, total)
        self.kept = torch.empty(0)
        self.seen = 0

    def update(self, values: torch.Tensor) -> None:
        x = values.detach().reshape(-1).to(torch.float64)
        self.seen += x.numel()
        if self.seen > self.total:
            raise ValueError(f"more values than announced ({self.seen} > {self.total})")
        x = x if self.top else -x
        both = torch.cat([self.kept, x]) if self.kept.numel() else x
        if both.numel() > self.keep:
            both = torch.topk(both, self.keep, sorted=False).values
        self.kept = both

    def value(self) -> float:
        if self.seen != self.total:
            raise ValueError(f"saw {self.seen} of {self.total} values")
        if self.top:
            asc = torch.sort(self.kept).values  # ranks lo .. total-1
            v_lo, v_hi = asc[0], asc[min(1, asc.numel() - 1)]
        else:
            asc = torch.sort(-self.kept).values  # ranks 0 .. lo+1
            v_lo, v_hi = asc[self.lo], asc[min(self.lo + 1, asc.numel() - 1)]
        return float(v_lo + (v_hi - v_lo) * self.frac)


@dataclass
class ObservationSet:
    """Observations for calibration or evaluation, with where they came from.

    ``raw``: as the environment gives them (uint8 Atari frames are kept as they are, 1/4 of the
    float32 size) and preprocessed batch by batch; otherwise already preprocessed.
    """

    obs: np.ndarray
    raw: bool
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def batches(self, pre: Preprocessing, batch_size: int = BATCH) -> Iterator[torch.Tensor]:
        """The network's input (float32, preprocessed), ``batch_size`` observations at a time."""
        prep = Preprocessor(pre) if self.raw else None
        for lo in range(0, len(self), batch_size):
            x = torch.as_tensor(np.asarray(self.obs[lo:lo + batch_size]))
            with torch.no_grad():
                yield prep(x) if prep is not None else x.to(torch.float32)

    def model_input(self, pre: Preprocessing) -> torch.Tensor:
        return torch.cat(list(self.batches(pre))) if len(self) else torch.empty(0)


def check_env_fits(ckpt: Checkpoint, env: Any, what: str) -> None:
    if n_actions(env) != ckpt.spec.n_actions or tuple(env.observation_space.shape) != ckpt.spec.obs_shape:
        raise UserError(f"{what}: model expects obs {ckpt.spec.obs_shape} and {ckpt.spec.n_actions} actions; "
                        f"{ckpt.env_id} gives {env.observation_space.shape} and {n_actions(env)}")


def collect_observations(ckpt: Checkpoint, n: int, seed: int, epsilon: float = CALIB_EPSILON,
                         progress: bool = True, desc: str = "calibration", envs: int = 1) -> ObservationSet:
    """Play the checkpoint's DQN epsilon-greedily and record the first ``n`` observations it sees.

    Episode ``i`` is reset with seed ``seed + i`` and the exploration RNG is seeded with
    ``seed``, so the same arguments give the same observations. With ``envs`` > 1 that many
    episodes run side by side (a new one starts, with the next seed, whenever one ends) and the
    DQN sees them as one batch per step: several times faster for a Nature-CNN on a CPU, at the
    price of more, shorter pieces of episodes in the first ``n`` observations.
    """
    if n < 1:
        raise UserError(f"the number of observations to collect must be >= 1, got {n}")
    if envs < 1:
        raise UserError(f"the number of parallel environments must be >= 1, got {envs}")
    model = ckpt.build()
    if not isinstance(model, DQN):
        raise UserError(f"collecting observations needs a DQN checkpoint, got kind {ckpt.spec.kind!r}")
    games = [make_env(ckpt.env_id, ckpt.preprocessing.atari or None) for _ in range(min(envs, n))]
    check_env_fits(ckpt, games[0], "calibration")
    pre = Preprocessor(ckpt.preprocessing)
    rng = np.random.default_rng(seed)
    space = games[0].observation_space
    out = np.empty((n, *space.shape), dtype=space.dtype)
    returns: list[float] = []
    t0 = time.perf_counter()
    current, totals = [], [0.0] * len(games)
    for k, env in enumerate(games):
        current.append(np.asarray(env.reset(seed=seed + k)[0]))
    episodes, filled = len(games), 0
    bar = tqdm(total=n, desc=desc, unit="obs", disable=not progress)
    while filled < n:
        take = min(len(games), n - filled)
        out[filled:filled + take] = np.stack(current[:take])
        filled += take
        bar.update(take)
        if filled == n:
            break
        with torch.no_grad():
            greedy = greedy_action(model(pre(torch.as_tensor(np.stack(current))))).tolist()
        for k, env in enumerate(games):
            action = int(rng.integers(ckpt.spec.n_actions)) if rng.random() < epsilon else int(greedy[k])
            obs, reward, terminated, truncated, _ = env.step(action)
            totals[k] += float(reward)
            if terminated or truncated:
                returns.append(totals[k])
                totals[k] = 0.0
                obs, _ = env.reset(seed=seed + episodes)
                episodes += 1
            current[k] = np.asarray(obs)
    bar.close()
    for env in games:
        env.close()
    source = {"source": "env", "env_id": ckpt.env_id, "observations": n, "seed": seed, "epsilon": epsilon,
              "envs": len(games), "episodes": episodes, "finished_episodes": len(returns),
              "mean_return": float(np.mean(returns)) if returns else None,
              "wall_s": round(time.perf_counter() - t0, 3)}
    return ObservationSet(out, raw=True, source=source)


def load_observations(path: str | Path, obs_shape: tuple[int, ...], raw: bool = False,
                      limit: int | None = None) -> ObservationSet:
    """Observations ``[N, *obs_shape]`` from a ``.npy`` file (preprocessed unless ``raw``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"observation file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise UserError(f"{path}: expected a numeric .npy array, got dtype {getattr(arr, 'dtype', '?')}")
    if arr.ndim >= 1 and arr.shape[0] == 0:
        raise UserError(f"{path}: the observation set is empty (0 observations)")
    if tuple(arr.shape[1:]) != tuple(obs_shape):
        raise UserError(f"{path}: observations have shape {tuple(arr.shape[1:])} per row (array "
                        f"{tuple(arr.shape)}), the model expects {tuple(obs_shape)}")
    arr = np.array(arr[:limit] if limit is not None else arr)  # read into memory (writable, contiguous)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise UserError(f"{path}: observations contain NaN or infinite values")
    source = {"source": "file", "path": str(path), "observations": int(arr.shape[0]),
              "preprocessed": not raw}
    return ObservationSet(arr, raw=raw, source=source)


@dataclass
class LayerStats:
    """Statistics of one stage's output over the calibration set.

    Hidden stages: the post-ReLU activations. The head: |Q| (Q-values may be negative; the
    magnitude is what must fit the output neurons' range).
    """

    name: str
    max: float
    percentile: float
    zero_fraction: float
    values: int


@dataclass
class CalibrationStats:
    percentile: float
    layers: list[LayerStats]  # hidden stages, then the head
    input_max: np.ndarray  # max |x|: per feature (1-D observations) or one value
    input_percentile: np.ndarray  # p-th percentile of |x|, same shape
    input_min: float  # smallest input value (>= 0: inputs never negative)
    observations: int
    wall_s: float = 0.0


def layer_names(model: DQN) -> list[str]:
    """``layers.i`` per hidden stage, then ``head``: the names errors and reports use."""
    return [f"layers.{i}" for i in range(len(model.layers))] + ["head"]


def activation_stats(model: DQN, data: ObservationSet, pre: Preprocessing, percentile: float,
                     progress: bool = False, batch_size: int = BATCH) -> CalibrationStats:
    """Max and p-th percentile of every layer's activations over ``data``, in one pass."""
    n = len(data)
    if n == 0:
        raise UserError("the calibration set is empty (0 observations)")
    t0 = time.perf_counter()
    names = layer_names(model)
    with torch.no_grad():
        probe = model.activations(torch.zeros(1, *model.spec.obs_shape))
    sizes = [int(a[0].numel()) for a in probe]
    tails = [TailPercentile(n * s, percentile) for s in sizes]
    maxima = [0.0] * len(sizes)
    zeros = [0] * len(sizes)
    per_feature = len(model.spec.obs_shape) == 1
    in_abs: list[torch.Tensor] = []  # 1-D observations: every |x| (small)
    in_tail = None if per_feature else TailPercentile(n * int(np.prod(model.spec.obs_shape)), percentile)
    in_max = torch.zeros(model.spec.obs_shape if per_feature else ())
    in_min = math.inf
    bar = tqdm(total=n, desc="activations", unit="obs", disable=not progress)
    with torch.no_grad():
        for x in data.batches(pre, batch_size):
            if not torch.isfinite(x).all():
                raise UserError("calibration observations contain NaN or infinite values")
            ax = x.abs()
            in_min = min(in_min, float(x.min()))
            if per_feature:
                in_abs.append(ax)
                in_max = torch.maximum(in_max, ax.max(dim=0).values)
            else:
                assert in_tail is not None
                in_tail.update(ax)
                in_max = torch.maximum(in_max, ax.max())
            acts = model.activations(x)
            for i, a in enumerate(acts):
                a = a.abs() if i == len(acts) - 1 else a  # the head: |Q|
                tails[i].update(a)
                maxima[i] = max(maxima[i], float(a.max()))
                zeros[i] += int((a == 0).sum())
            bar.update(x.shape[0])
    bar.close()
    if per_feature:
        allabs = torch.cat(in_abs).to(torch.float64).numpy()
        in_pct = np.percentile(allabs, percentile, axis=0)
    else:
        assert in_tail is not None
        in_pct = np.asarray([in_tail.value()])
    layers = [LayerStats(name, maxima[i], tails[i].value(), zeros[i] / (n * sizes[i]), n * sizes[i])
              for i, name in enumerate(names)]
    return CalibrationStats(percentile=percentile, layers=layers,
                            input_max=np.atleast_1d(in_max.to(torch.float64).numpy()),
                            input_percentile=np.atleast_1d(in_pct), input_min=in_min, observations=n,
                            wall_s=time.perf_counter() - t0)
