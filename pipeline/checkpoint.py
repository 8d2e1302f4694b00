"""The ``model.pt`` checkpoint: a plain dict of tensors and primitives (docs/DESIGN.md).

Loaded with ``torch.load(..., weights_only=True)``: a checkpoint from a stranger cannot run
code. Anything that is not ours (wrong marker), from a newer format, or damaged gets one
:class:`UserError` naming the cause.
"""

from __future__ import annotations

import math
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
            detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[1:3])
            raise UserError(f"checkpoint weights do not match its architecture: {detail[:300]}") from None
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
        raise UserError(f"{path}: not a safe dsqn-deploy checkpoint ({unsafe_reason(exc)})") from None
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
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{path}: checkpoint has no valid format_version (got {version!r})")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format version {version!r} is newer than this dsqn-deploy "
            f"reads ({FORMAT_VERSION}); upgrade dsqn-deploy"
        )
    check_fields(data, path)
    try:
        spec = ModelSpec.from_dict(data["spec"])
        ckpt = Checkpoint(
            spec=spec,
            state_dict=dict(data["state_dict"]),
            env_id=str(data["env_id"]),
            preprocessing=Preprocessing.from_dict(data.get("preprocessing", {})),
            provenance=dict(data.get("provenance", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: checkpoint is missing or has a malformed field ({exc})") from None
    return ckpt


def unsafe_reason(exc: BaseException) -> str:
    """The global torch refused to load (it names it deep in a long message), without ANSI codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    name = re.search(r"GLOBAL ([\w.]+)", text)
    if name and name.group(1).startswith("torch.nn.modules."):
        return (f"a whole torch module ({name.group(1)}) saved with torch.save(model); loading it could run "
                "code. Save model.state_dict() instead and import it: import-agent FILE --arch ARCH --env ENV")
    if name:
        return f"it holds a pickled {name.group(1)}, and loading that could run code"
    found = re.search(r"(?:Unsupported global|Unsupported operand)[^\n]*?(?=\. |\n|$)", text)
    if found:
        return f"refused to load {found.group(0).strip()[:160]}: loading it could run code"
    first = text.strip().splitlines()[0] if text.strip() else "unsafe or corrupt pickle"
    return f"{first[:160]}; loading it could run code"


MAX_PARAMETERS = 1 << 28  # weights of one model: 1 GiB in float32


def check_fields(data: dict[str, Any], path: Path) -> None:
    """Types and ranges of the checkpoint's fields, before a model is built from them."""
    def bad(what: str) -> UserError:
        return UserError(f"{path}: checkpoint field {what}")

    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise bad(f"'spec' must be a dict, got {type(spec).__name__}")
    for key in ("kind", "arch"):
        if not isinstance(spec.get(key), str):
            raise bad(f"'spec.{key}' must be a string")
    shape, hidden, actions = spec.get("obs_shape"), spec.get("hidden", ()), spec.get("n_actions")
    if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 8 or not all(
            isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 1 << 20 for x in shape):
        raise bad(f"'spec.obs_shape' must be 1 to 8 positive integers, got {shape!r}")
    if not isinstance(hidden, (list, tuple)) or not all(
            isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 1 << 24 for x in hidden):
        raise bad(f"'spec.hidden' must be positive integers, got {hidden!r}")
    if not isinstance(actions, int) or isinstance(actions, bool) or not 1 <= actions <= 1 << 20:
        raise bad(f"'spec.n_actions' must be a positive integer, got {actions!r}")
    T = spec.get("time_steps", 1)
    if not isinstance(T, int) or isinstance(T, bool) or not 1 <= T <= 100_000:
        raise bad(f"'spec.time_steps' must be an integer in [1, 100000], got {T!r}")
    if spec.get("arch") == "mlp":
        sizes = [math.prod(shape), *hidden, actions]
        if sum(a * b for a, b in zip(sizes, sizes[1:])) > MAX_PARAMETERS:
            raise bad(f"'spec' describes more than {MAX_PARAMETERS:,} weights")
    if not isinstance(spec.get("bias", True), (bool, int)) or spec.get("bias", True) not in (0, 1):
        raise bad(f"'spec.bias' must be true or false, got {spec.get('bias')!r}")
    for key in ("variant", "encoding", "readout"):
        if key in spec and not isinstance(spec[key], str):
            raise bad(f"'spec.{key}' must be a string, got {spec[key]!r}")
    seed = spec.get("encoding_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise bad(f"'spec.encoding_seed' must be a non-negative integer, got {seed!r}")
    for key in ("tau_out",):
        if key in spec and not (isinstance(spec[key], (int, float)) and math.isfinite(spec[key])):
            raise bad(f"'spec.{key}' must be a finite number")
    neuron = spec.get("neuron")
    if neuron is not None and (not isinstance(neuron, dict) or not all(
            isinstance(v, str) or (isinstance(v, (int, float)) and math.isfinite(v)) for v in neuron.values())):
        raise bad("'spec.neuron' must map names to finite numbers or strings")
    sd = data.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise bad("'state_dict' must map names to tensors")
    for name, t in sd.items():
        if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.bool)):
            raise bad(f"'state_dict.{name}' must hold real numbers (got {t.dtype})")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise bad(f"'state_dict.{name}' holds NaN or infinite values")
    if not isinstance(data.get("env_id"), str):
        raise bad("'env_id' must be a string")
    pre = data.get("preprocessing", {})
    if not isinstance(pre, dict):
        raise bad("'preprocessing' must be a dict")
    for key in ("offset", "scale"):
        values = pre.get(key, (0.0,))
        if not isinstance(values, (list, tuple)) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise bad(f"'preprocessing.{key}' must be finite numbers")
        if len(values) not in (1, shape[-1]):
            raise bad(f"'preprocessing.{key}' has {len(values)} values for {shape[-1]} features")
    if not isinstance(pre.get("atari", {}), dict):
        raise bad("'preprocessing.atari' must be a dict")
    if not isinstance(data.get("provenance", {}), dict):
        raise bad("'provenance' must be a dict")


def provenance(seed: int | None, **extra: Any) -> dict[str, Any]:
    return {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "seed": seed,
            "versions": versions(), **extra}
