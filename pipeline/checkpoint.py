"""The ``model.pt`` checkpoint: a plain dict of tensors and primitives (DESIGN.md).

Loaded with ``torch.load(..., weights_only=True)``: a checkpoint from a stranger cannot run
code. Anything that is not ours (wrong marker), from a newer format, or damaged gets one
:class:`UserError` naming the cause.
"""

from __future__ import annotations

import os
import pickle
import platform
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserError
from pipeline.models import DQN, SpikingQNetwork, build_model
from pipeline.spec import ModelSpec, Preprocessing

FORMAT_NAME = "dsqn-deploy/checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    env_id: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    provenance: dict[str, Any] = field(default_factory=dict)

    def build(self) -> DQN | SpikingQNetwork:
        """A model in eval mode with the checkpoint's weights."""
        model = build_model(self.spec)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"checkpoint weights do not match its architecture: {first}") from None
        return model.eval()


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "gymnasium", "stable-baselines3", "ale-py", "dsqn-deploy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike) -> None:
    data = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_kind": ckpt.spec.kind,
        "spec": ckpt.spec.to_dict(),
        "env_id": ckpt.env_id,
        "preprocessing": ckpt.preprocessing.to_dict(),
        "provenance": ckpt.provenance,
        "state_dict": {k: v.detach().cpu().clone() for k, v in ckpt.state_dict.items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


def is_sb3_zip(path: str | os.PathLike) -> bool:
    """True for a zip holding SB3's ``data`` and ``policy.pth`` (a torch checkpoint is a zip too)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "data" in names and "policy.pth" in names


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if is_sb3_zip(path):
        raise UserError(f"{path}: this is a Stable-Baselines3 zip, not a dsqn-deploy checkpoint; use "
                        f"import-agent {path} -o model.pt (docs/IMPORT.md)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unsafe or corrupt pickle"
        raise UserError(f"{path}: not a safe dsqn-deploy checkpoint ({reason[:200]})") from None
    except Exception as exc:  # torch.load raises many types on garbage (KeyError, EOFError, ...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: corrupt or not a torch checkpoint ({reason[:200]})") from None
    if isinstance(data, dict) and data and "format" not in data and \
            all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path}: a plain torch state_dict, not a dsqn-deploy checkpoint; use "
                        f"import-agent {path} --arch ARCH --env ENV -o model.pt (docs/IMPORT.md)")
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise UserError(f"{path}: not a dsqn-deploy checkpoint (no '{FORMAT_NAME}' marker)")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format version {version!r} is newer than this dsqn-deploy "
            f"reads ({FORMAT_VERSION}); upgrade dsqn-deploy"
        )
    try:
        spec = ModelSpec.from_dict(data["spec"])
        ckpt = Checkpoint(
            spec=spec,
            state_dict=dict(data["state_dict"]),
            env_id=str(data["env_id"]),
            preprocessing=Preprocessing.from_dict(data.get("preprocessing", {})),
            provenance=dict(data.get("provenance", {})),
        )
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: checkpoint is missing or has a malformed field ({exc})") from None
    return ckpt


def provenance(seed: int | None, **extra: Any) -> dict[str, Any]:
    return {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "seed": seed,
            "versions": versions(), **extra}
