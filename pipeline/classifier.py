"""``train-classifier``: the indirect conversion of Hahn 2020 (a classifier of the DQN's actions).

Instead of converting the DQN itself, record observations by playing the DQN, label each with
the DQN's greedy action, and train a classifier of the same shape (ReLU hidden stages, linear
head) with cross-entropy. The classifier is written as an ordinary ``kind: dqn`` checkpoint whose
head gives logits, so ``convert-dqn`` converts it like a DQN and ``run-backend --compare dqn.pt``
measures the spiking classifier's agreement with the source DQN. Hahn reports that the
classifier converts with a smaller simulation time: cross-entropy pushes the winning logit
away from the rest, where Q-values of a DQN often differ by little.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.calibration import CALIB_EPSILON, EVAL_SEED_OFFSET, collect_observations
from pipeline.classifier_cli import main, make_parser  # noqa: F401  (pipeline.classifier.main keeps working)
from pipeline.checkpoint import Checkpoint, provenance
from pipeline.errors import UserError
from pipeline.models import DQN, build_model, greedy_action


@dataclass(frozen=True)
class ClassifierSettings:
    observations: int = 20_000
    epsilon: float = CALIB_EPSILON
    hidden: tuple[int, ...] | None = None  # None: the source DQN's
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    eval_obs: int = 2_000
    seed: int = 0

    def validate(self) -> ClassifierSettings:
        if self.observations < 2:
            raise UserError(f"--observations must be >= 2, got {self.observations}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise UserError(f"--epsilon must lie in [0, 1], got {self.epsilon}")
        if self.hidden is not None and (not self.hidden or min(self.hidden) < 1):
            raise UserError(f"--hidden must list positive sizes, got {self.hidden}")
        if self.epochs < 1 or self.batch_size < 1:
            raise UserError("--epochs and --batch-size must be >= 1")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.eval_obs < 0:
            raise UserError(f"--eval-obs must be >= 0, got {self.eval_obs}")
        return self


def greedy_labels(model: DQN, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([greedy_action(model(x[i:i + batch])) for i in range(0, len(x), batch)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    if len(x) == 0:
        return float("nan")
    with torch.no_grad():
        hits = sum(int((greedy_action(model(x[i:i + batch])) == y[i:i + batch]).sum())
                   for i in range(0, len(x), batch))
    return hits / len(x)


def train_classifier(source: Checkpoint, settings: ClassifierSettings,
                     progress: bool = False) -> tuple[Checkpoint, dict[str, Any]]:
    """A classifier of ``source``'s greedy actions, and what it learned (accuracies, timings)."""
    settings.validate()
    if source.spec.kind != "dqn":
        raise UserError(f"train-classifier needs a DQN checkpoint (its greedy actions are the labels), "
                        f"got kind {source.spec.kind!r}")
    dqn = source.build()
    assert isinstance(dqn, DQN)
    t0 = time.perf_counter()
    data = collect_observations(source, settings.observations, settings.seed, settings.epsilon, progress,
                                desc="recording")
    x = data.model_input(source.preprocessing)
    y = greedy_labels(dqn, x)
    held = None
    if settings.eval_obs:
        held = collect_observations(source, settings.eval_obs, settings.seed + EVAL_SEED_OFFSET,
                                    settings.epsilon, progress, desc="held-out")
    t1 = time.perf_counter()

    spec = source.spec.with_(variant="classifier",
                             hidden=settings.hidden if settings.hidden is not None else source.spec.hidden)
    torch.manual_seed(settings.seed)
    clf = build_model(spec)
    assert isinstance(clf, DQN)
    opt = torch.optim.Adam(clf.parameters(), lr=settings.lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(settings.seed)
    losses = []
    for _epoch in range(settings.epochs):
        clf.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), settings.batch_size):
            idx = order[i:i + settings.batch_size]
            opt.zero_grad()
            loss = loss_fn(clf(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    clf.eval()
    t2 = time.perf_counter()
    counts = torch.bincount(y, minlength=spec.n_actions).tolist()
    report: dict[str, Any] = {
        "settings": {**asdict(settings), "hidden": list(spec.hidden)},
        "recording": data.source, "label_counts": counts,
        "train_accuracy": accuracy(clf, x, y), "final_loss": losses[-1], "losses": losses,
        "timings": {"recording_s": t1 - t0, "training_s": t2 - t1},
    }
    if held is not None:
        xh = held.model_input(source.preprocessing)
        report["heldout_accuracy"] = accuracy(clf, xh, greedy_labels(dqn, xh))
        report["heldout"] = held.source
    prov = provenance(settings.seed, classifier={
        k: report[k] for k in ("settings", "label_counts", "train_accuracy", "final_loss")
        if k in report} | {"heldout_accuracy": report.get("heldout_accuracy"),
                           "source_command": source.provenance.get("command"),
                           "source_evaluation": source.provenance.get("evaluation")})
    out = Checkpoint(spec=spec, state_dict=clf.state_dict(), env_id=source.env_id,
                     preprocessing=source.preprocessing, provenance=prov)
    return out, report


if __name__ == "__main__":
    raise SystemExit(main())
