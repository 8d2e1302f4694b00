"""``import-agent``: agents trained elsewhere -> a dsqn-deploy ``model.pt`` (kind ``dqn``).

Two sources are read, and nothing in either is unpickled:

* a Stable-Baselines3 ``.zip`` (``model.save(...)``): its ``data`` member is parsed as JSON and
  only its plain fields are used (the base64 ``:serialized:`` blobs SB3 writes beside them are
  cloudpickles and are never decoded); ``policy.pth`` is read with ``torch.load(weights_only=True)``.
  The algorithm is recognised from the policy's module and the algorithm's own hyperparameter
  names; the network from the state_dict's names and shapes.
* a plain torch ``state_dict`` (``torch.save(net.state_dict(), ...)``) with the architecture
  named by the user (``--arch``, ``--hidden``).

What comes out is an ordinary DQN checkpoint: ReLU hidden stages and a linear head whose argmax
is the agent's greedy action. For DQN that head is Q; for QR-DQN it is the mean over quantiles
(folded exactly into the head's weights: the mean of affine maps is affine); for PPO and A2C it
is the actor's logits (the critic is dropped), so ``evaluate-agent``, ``convert-dqn``,
``export-nir`` and ``run-backend`` take an imported agent like one trained here. Policy-gradient
conversion (Hahn 2020) is ``convert-dqn`` on an imported PPO/A2C actor.

Preprocessing comes along: SB3 divides image observations by 255 (``normalize_images``), a
stacked-frame Atari observation ``(k, 84, 84)`` becomes our Atari wrappers with frame stack k,
and ``VecNormalize`` statistics (``--vecnormalize vecnormalize.pkl``) become the offset and scale
``(x - mean) / sqrt(var + eps)``. That pickle is read by :mod:`pipeline.picklescan`, which walks
its opcodes as data and never imports or calls anything.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.checkpoint import Checkpoint, is_sb3_zip, provenance
from pipeline.errors import UserError, check_choice
from pipeline.import_cli import main, make_parser, parse_hidden  # noqa: F401  (pipeline.sb3_import.* keeps working)
from pipeline.models import NATURE_CONVS, NATURE_FC, build_model
from pipeline.spec import ARCHS, ModelSpec, Preprocessing

SUPPORTED_ALGORITHMS = ("DQN", "QR-DQN", "PPO", "A2C")
# policy modules of algorithms we recognise but cannot convert, with the reason
UNSUPPORTED_MODULES = {
    "stable_baselines3.sac.policies": "SAC (continuous actions)",
    "stable_baselines3.td3.policies": "TD3/DDPG (continuous actions)",
    "sb3_contrib.common.recurrent.policies": "RecurrentPPO (an LSTM policy)",
    "sb3_contrib.common.maskable.policies": "MaskablePPO (action masks)",
    "sb3_contrib.tqc.policies": "TQC (continuous actions)",
    "sb3_contrib.ars.policies": "ARS",
    "sb3_contrib.crossq.policies": "CrossQ (continuous actions)",
}
# the activation each algorithm's MlpPolicy uses when policy_kwargs names none
DEFAULT_ACTIVATION = {"DQN": "ReLU", "QR-DQN": "ReLU", "PPO": "Tanh", "A2C": "Tanh"}
CLASS_REPR = re.compile(r"<class '([\w.]+)'>")


# --- reading the zip --------------------------------------------------------------------------


@dataclass
class SB3File:
    """The plain facts of an SB3 zip: algorithm, spaces, policy kwargs and the policy's weights."""

    path: Path
    algorithm: str
    data: dict[str, Any]
    policy_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    sb3_version: str = ""

    @property
    def obs_space(self) -> dict[str, Any]:
        return self.data.get("observation_space") or {}

    @property
    def obs_shape(self) -> tuple[int, ...]:
        shape = self.obs_space.get("_shape", self.obs_space.get("shape"))
        if not isinstance(shape, list):
            raise UserError(f"{self.path}: the zip's observation space has no plain shape "
                            f"({self.obs_space.get(':type:', 'unknown type')})")
        return tuple(int(s) for s in shape)


def class_name(value: Any) -> str:
    """``"<class 'torch.nn.modules.activation.ReLU'>"`` -> ``ReLU`` (SB3's plain repr of a class)."""
    m = CLASS_REPR.search(str(value))
    return m.group(1).rsplit(".", 1)[-1] if m else str(value)


def plain_policy_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    """policy_kwargs without SB3's pickled blob: plain JSON values, and classes by their repr."""
    pk = data.get("policy_kwargs") or {}
    if not isinstance(pk, dict):
        return {}
    return {k: v for k, v in pk.items() if not k.startswith(":")}


def identify_algorithm(path: Path, data: dict[str, Any]) -> str:
    """Which SB3 algorithm wrote ``data``, from the policy's module and its hyperparameter names."""
    pc = data.get("policy_class")
    module = pc.get("__module__", "") if isinstance(pc, dict) else ""
    keys = set(data)
    if module == "stable_baselines3.dqn.policies":
        return "DQN"
    if module == "sb3_contrib.qrdqn.policies":
        return "QR-DQN"
    if module in UNSUPPORTED_MODULES:
        raise UserError(f"{path}: {UNSUPPORTED_MODULES[module]} agents cannot be imported "
                        f"(supported: {', '.join(SUPPORTED_ALGORITHMS)})")
    if module == "stable_baselines3.common.policies":
        if {"cg_max_steps", "n_critic_updates"} & keys:
            raise UserError(f"{path}: TRPO agents cannot be imported (supported: "
                            f"{', '.join(SUPPORTED_ALGORITHMS)})")
        if {"clip_range", "n_epochs"} <= keys:
            return "PPO"
        if {"gae_lambda", "vf_coef", "ent_coef"} <= keys and "clip_range" not in keys:
            return "A2C"
    raise UserError(f"{path}: an SB3 agent of an unsupported algorithm (policy module {module or '?'}); "
                    f"supported: {', '.join(SUPPORTED_ALGORITHMS)}")


def read_sb3_zip(path: str | Path) -> SB3File:
    """Parse an SB3 zip safely: JSON for ``data``, weights-only torch.load for ``policy.pth``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"agent file not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "data" not in names or "policy.pth" not in names:
                raise UserError(f"{path}: a zip but not a Stable-Baselines3 agent (no 'data' and "
                                "'policy.pth' members)")
            raw_data = zf.read("data")
            raw_policy = zf.read("policy.pth")
            version = zf.read("_stable_baselines3_version").decode(errors="replace").strip() \
                if "_stable_baselines3_version" in names else ""
    except zipfile.BadZipFile as exc:
        raise UserError(f"{path}: corrupt zip ({exc})") from None
    try:
        data = json.loads(raw_data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: the zip's 'data' member is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the zip's 'data' member is not a JSON object")
    algorithm = identify_algorithm(path, data)
    try:
        sd = torch.load(io.BytesIO(raw_policy), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: policy.pth is not a plain state_dict ({reason[:200]})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path}: policy.pth is not a state_dict of tensors")
    return SB3File(path=path, algorithm=algorithm, data=data, policy_kwargs=plain_policy_kwargs(data),
                   state_dict=dict(sd), sb3_version=version)


# --- the network ------------------------------------------------------------------------------


@dataclass
class Actor:
    """The part of an agent whose argmax is its greedy action, in our module names."""

    arch: str
    hidden: tuple[int, ...]
    n_actions: int
    state_dict: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)


def numbered_linears(sd: dict[str, torch.Tensor], prefix: str) -> list[str]:
    """Prefixes ``{prefix}.{i}`` of a Sequential's Linear layers, in index order."""
    idx = sorted({int(k[len(prefix) + 1:].split(".")[0]) for k in sd
                  if k.startswith(prefix + ".") and k.endswith(".weight")})
    return [f"{prefix}.{i}" for i in idx]


def refuse_unknown_layers(f: SB3File) -> None:
    for key in f.state_dict:
        low = key.lower()
        if "lstm" in low or "gru" in low:
            raise UserError(f"{f.path}: layer {key.rsplit('.', 1)[0]} is recurrent (LSTM/GRU): "
                            "only feed-forward ReLU policies can be converted")
        if any(t in low for t in ("norm", "bn.", "running_mean")):
            raise UserError(f"{f.path}: layer {key.rsplit('.', 1)[0]} is a normalisation layer: "
                            "only Linear/Conv2d + ReLU policies can be converted")


def check_activation(f: SB3File, n_hidden_linears: int) -> None:
    """Hidden MLP layers must be ReLU (SB3's NatureCNN always is)."""
    if n_hidden_linears == 0:
        return
    act = class_name(f.policy_kwargs.get("activation_fn", DEFAULT_ACTIVATION[f.algorithm]))
    if act != "ReLU":
        raise UserError(f"{f.path}: activation {act} is unsupported: only ReLU networks map onto "
                        "spiking neurons (train with policy_kwargs=dict(activation_fn=torch.nn.ReLU))")


def extractor_stages(f: SB3File, prefix: str, sd_out: dict[str, torch.Tensor]) -> bool:
    """Map a NatureCNN extractor at ``prefix`` onto ``layers.0..3``; False when there is none."""
    sd = f.state_dict
    if f"{prefix}.cnn.0.weight" not in sd:
        other = [k for k in sd if k.startswith(prefix + ".")]
        if other:
            raise UserError(f"{f.path}: features extractor {other[0].rsplit('.', 1)[0]} is not "
                            "SB3's NatureCNN: only FlattenExtractor and NatureCNN can be imported")
        return False
    cnn = numbered_linears(sd, f"{prefix}.cnn")
    if len(cnn) != 3 or f"{prefix}.linear.0.weight" not in sd:
        raise UserError(f"{f.path}: features extractor {prefix} has {len(cnn)} convolutions: only the "
                        "Nature CNN (3 convolutions and one Linear) can be imported")
    for i, (key, (out_c, k, _s)) in enumerate(zip(cnn, NATURE_CONVS)):
        w = sd[f"{key}.weight"]
        if w.dim() != 4 or w.shape[0] != out_c or tuple(w.shape[2:]) != (k, k):
            raise UserError(f"{f.path}: convolution {key} has weight {tuple(w.shape)}; the Nature CNN "
                            f"needs ({out_c}, C, {k}, {k})")
        sd_out[f"layers.{i}.0.weight"] = w
        if f"{key}.bias" in sd:
            sd_out[f"layers.{i}.0.bias"] = sd[f"{key}.bias"]
    lin = sd[f"{prefix}.linear.0.weight"]
    if lin.shape[0] != NATURE_FC:
        raise UserError(f"{f.path}: the CNN's Linear has {lin.shape[0]} features; the Nature CNN "
                        f"has {NATURE_FC} (features_extractor_kwargs features_dim)")
    sd_out["layers.3.1.weight"] = lin
    if f"{prefix}.linear.0.bias" in sd:
        sd_out["layers.3.1.bias"] = sd[f"{prefix}.linear.0.bias"]
    return True


def actor_of(f: SB3File) -> Actor:
    """Our DQN-shaped network from the agent's weights (Q, mean quantile, or actor logits)."""
    refuse_unknown_layers(f)
    sd = f.state_dict
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    if f.algorithm in ("DQN", "QR-DQN"):
        net = "q_net" if f.algorithm == "DQN" else "quantile_net"
        extractor = f"{net}.features_extractor"
        mlp = numbered_linears(sd, f"{net}.{net}")
        notes.append(f"{net} (target network dropped)")
    else:
        shared = f.policy_kwargs.get("share_features_extractor", True)
        extractor = "features_extractor" if any(k.startswith("features_extractor.") for k in sd) \
            else "pi_features_extractor"
        mlp = [*numbered_linears(sd, "mlp_extractor.policy_net"), "action_net"]
        if "action_net.weight" not in sd:
            raise UserError(f"{f.path}: no action_net in the policy: not a discrete actor")
        notes.append("actor (features extractor, policy_net, action_net; critic dropped; "
                     f"{'shared' if shared else 'separate'} extractor)")
    cnn = extractor_stages(f, extractor, out)
    if not mlp or f"{mlp[-1]}.weight" not in sd:
        raise UserError(f"{f.path}: the policy has no output layer where {f.algorithm} keeps it")
    hidden_mlp, head = mlp[:-1], mlp[-1]
    if cnn and hidden_mlp:
        raise UserError(f"{f.path}: {len(hidden_mlp)} hidden layer(s) after the Nature CNN (net_arch "
                        "not empty) are unsupported: the Nature-CNN architecture ends in its 512 features")
    check_activation(f, len(hidden_mlp))
    hidden: list[int] = []
    for i, key in enumerate(hidden_mlp):
        w = sd[f"{key}.weight"]
        if w.dim() != 2:
            raise UserError(f"{f.path}: layer {key} is not Linear (weight {tuple(w.shape)})")
        out[f"layers.{i}.0.weight" if len(f.obs_shape) == 1 or i else f"layers.{i}.1.weight"] = w
        if f"{key}.bias" in sd:
            out[f"layers.{i}.0.bias" if len(f.obs_shape) == 1 or i else f"layers.{i}.1.bias"] = sd[f"{key}.bias"]
        hidden.append(int(w.shape[0]))
    w_head = sd[f"{head}.weight"]
    b_head = sd.get(f"{head}.bias")
    n_out = int(w_head.shape[0])
    if f.algorithm == "QR-DQN":
        n_quantiles = int(f.policy_kwargs.get("n_quantiles", 0)) or None
        n_actions = action_count(f)
        if n_out % n_actions:
            raise UserError(f"{f.path}: quantile head has {n_out} outputs, not a multiple of "
                            f"{n_actions} actions")
        n_quantiles = n_out // n_actions if n_quantiles is None else n_quantiles
        if n_quantiles * n_actions != n_out:
            raise UserError(f"{f.path}: quantile head has {n_out} outputs, not {n_quantiles} quantiles x "
                            f"{n_actions} actions")
        # SB3-contrib views the output as [B, n_quantiles, n_actions]; Q = mean over quantiles
        w_head = w_head.reshape(n_quantiles, n_actions, -1).mean(dim=0)
        b_head = b_head.reshape(n_quantiles, n_actions).mean(dim=0) if b_head is not None else None
        notes.append(f"head = mean of {n_quantiles} quantiles")
        n_out = n_actions
    out["head.weight"] = w_head
    if b_head is not None:
        out["head.bias"] = b_head
    if not cnn and not hidden:
        raise UserError(f"{f.path}: a policy without hidden layers (net_arch []) cannot be imported: "
                        "an MLP needs at least one hidden layer")
    return Actor(arch="nature_cnn" if cnn else "mlp", hidden=tuple(hidden) if not cnn else (64, 64),
                 n_actions=n_out, state_dict=out, notes=notes)


def action_count(f: SB3File) -> int:
    space = f.data.get("action_space") or {}
    kind = str(space.get(":type:", "")) if isinstance(space, dict) else ""
    if "Discrete" not in kind or "MultiDiscrete" in kind:
        what = class_name(kind) if kind else "unknown"
        extra = " (continuous actions)" if "Box" in kind else ""
        raise UserError(f"{f.path}: action space {what}{extra} is unsupported: only Discrete actions "
                        "have a greedy action")
    try:
        return int(space["n"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{f.path}: the Discrete action space has no plain 'n'") from None


# --- environment and preprocessing ------------------------------------------------------------


def parse_bounds(text: Any) -> np.ndarray | None:
    """numpy's printed array (``"[-4.8  -inf ...]"``) -> floats; None when numpy elided it."""
    if not isinstance(text, str) or "..." in text:
        return None
    try:
        return np.array(text.replace("[", " ").replace("]", " ").split(), dtype=np.float64)
    except ValueError:
        return None


def describe_space(shape: tuple[int, ...], low: np.ndarray | None, high: np.ndarray | None) -> str:
    bounds = "" if low is None or high is None or low.size > 8 else \
        f", low {np.array2string(low, precision=4)}, high {np.array2string(high, precision=4)}"
    return f"Box{shape}{bounds}"


def env_matches(f: SB3File, env_id: str, atari: dict[str, Any] | None) -> str | None:
    """None when ``env_id``'s spaces equal the zip's, else what differs."""
    from pipeline.envs import make_env, n_actions

    env = make_env(env_id, atari)
    try:
        space = env.observation_space
        shape = tuple(int(s) for s in space.shape)
        ours = describe_space(shape, np.asarray(space.low, np.float64).ravel(),
                              np.asarray(space.high, np.float64).ravel())
        n = n_actions(env)
    finally:
        env.close()
    low, high = parse_bounds(f.obs_space.get("low")), parse_bounds(f.obs_space.get("high"))
    theirs = describe_space(f.obs_shape, low, high)
    if shape != f.obs_shape or n != action_count(f):
        return f"the zip's observations are {theirs} with {action_count(f)} actions; {env_id} gives " \
               f"{ours} with {n}"
    for name, val, ref in (("low", low, space.low), ("high", high, space.high)):
        ref = np.asarray(ref, np.float64).ravel()
        if val is not None and val.size == ref.size and not np.allclose(val, ref, rtol=1e-6, equal_nan=True):
            return f"the zip's observations are {theirs}; {env_id} gives {ours} ({name} bounds differ)"
    return None


def infer_env(f: SB3File) -> str:
    """The one classic-control environment whose spaces equal the zip's."""
    from pipeline.envs import CLASSIC_ENVS

    if len(f.obs_shape) != 1:
        raise UserError(f"{f.path}: the zip does not name its environment; pass --env (e.g. ALE/Pong-v5)")
    hits = [e for e in CLASSIC_ENVS if env_matches(f, e, None) is None]
    if len(hits) != 1:
        raise UserError(f"{f.path}: the zip does not name its environment and its spaces match "
                        f"{len(hits)} of {', '.join(CLASSIC_ENVS)}; pass --env")
    return hits[0]


def sb3_preprocessing(f: SB3File, env_id: str, cnn: bool, vecnorm: dict[str, Any] | None) -> Preprocessing:
    """SB3's observation pipeline as our (offset, scale, atari) record."""
    from pipeline.envs import ATARI_DEFAULTS, is_atari

    atari: dict[str, Any] = {}
    if is_atari(env_id):
        c, h, w = f.obs_shape if len(f.obs_shape) == 3 else (0, 0, 0)
        if len(f.obs_shape) != 3 or h != w:
            raise UserError(f"{f.path}: Atari observations {f.obs_shape} are not stacked square grey frames "
                            "(k, N, N): channel-last or colour frames are unsupported")
        atari = {**ATARI_DEFAULTS, "frame_stack": int(c), "screen_size": int(h)}
    offset: tuple[float, ...] = (0.0,)
    scale: tuple[float, ...] = (1.0,)
    image = str(f.obs_space.get("dtype", "")) == "uint8" and len(f.obs_shape) == 3
    if cnn and image and f.policy_kwargs.get("normalize_images", True):
        scale = (1.0 / 255.0,)
    if vecnorm is not None:
        if image:
            raise UserError("VecNormalize statistics on image observations are unsupported")
        mean, var, eps = vecnorm["mean"], vecnorm["var"], vecnorm["epsilon"]
        if mean.shape != f.obs_shape:
            raise UserError(f"VecNormalize statistics have shape {mean.shape}; the agent's observations "
                            f"{f.obs_shape}")
        offset = tuple(float(v) for v in mean.ravel())
        scale = tuple(float(v) for v in (1.0 / np.sqrt(var.ravel() + eps)))
    return Preprocessing(offset=offset, scale=scale, atari=atari)


# --- the two importers ------------------------------------------------------------------------


def import_sb3(path: str | Path, env_id: str | None = None, vecnormalize: str | Path | None = None) -> Checkpoint:
    """An SB3 zip as a dsqn-deploy checkpoint (see the module docstring)."""
    from pipeline.envs import check_env_id, is_atari

    f = read_sb3_zip(path)
    n_actions = action_count(f)
    actor = actor_of(f)
    if env_id is None:
        env_id = infer_env(f)
    check_env_id(env_id)
    atari = None
    if is_atari(env_id) and len(f.obs_shape) == 3:
        atari = {"frame_stack": f.obs_shape[0], "screen_size": f.obs_shape[1]}
    diff = env_matches(f, env_id, atari)
    if diff is not None:
        raise UserError(f"{f.path} does not fit --env {env_id}: {diff}")
    vecnorm = None
    if vecnormalize is not None:
        from pipeline.picklescan import read_vecnormalize

        vecnorm = read_vecnormalize(vecnormalize)
    pre = sb3_preprocessing(f, env_id, actor.arch == "nature_cnn", vecnorm)
    spec = ModelSpec(kind="dqn", arch=actor.arch, obs_shape=f.obs_shape, n_actions=n_actions,
                     hidden=actor.hidden, bias="head.bias" in actor.state_dict,
                     variant=f"sb3-{f.algorithm.lower()}").validate()
    model = build_model(spec)
    load_into(model, actor.state_dict, f"{f.path}")
    from pipeline.convert import file_sha256

    imported: dict[str, Any] = {
        "format": "stable-baselines3", "algorithm": f.algorithm, "sb3_version": f.sb3_version,
        "path": str(f.path), "sha256": file_sha256(f.path), "network": "; ".join(actor.notes),
        "output": "Q" if f.algorithm == "DQN" else "mean quantile Q" if f.algorithm == "QR-DQN"
        else "actor logits (SB3's deterministic action)",
        "num_timesteps": f.data.get("num_timesteps"), "seed": f.data.get("seed"),
    }
    if vecnorm is not None:
        imported["vecnormalize"] = {"path": str(vecnormalize), "clip_obs": vecnorm.get("clip_obs"),
                                    "note": "observations are normalised but not clipped"}
    return Checkpoint(spec=spec, state_dict=model.state_dict(), env_id=env_id, preprocessing=pre,
                      provenance=provenance(f.data.get("seed"), imported=imported))


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Load weights whose names we produced; a shape mismatch names the layer."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in sd]
    if missing:
        raise UserError(f"{what}: no weights for layer {missing[0].rsplit('.', 1)[0]} of the architecture")
    for k, v in sd.items():
        if k not in ours:
            raise UserError(f"{what}: weight {k} has no place in the architecture")
        if tuple(v.shape) != tuple(ours[k].shape):
            raise UserError(f"{what}: layer {k.rsplit('.', 1)[0]} has {k.rsplit('.', 1)[1]} "
                            f"{tuple(v.shape)}, the architecture needs {tuple(ours[k].shape)}")
        if not v.is_floating_point():
            raise UserError(f"{what}: weight {k} is not a float tensor ({v.dtype})")
    model.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()})


SKIPPED_PREFIXES = ("q_net_target.", "quantile_net_target.", "value_net.", "mlp_extractor.value_net.",
                    "vf_features_extractor.", "log_std")


def import_state_dict(path: str | Path, env_id: str, arch: str, hidden: tuple[int, ...],
                      scale_obs: bool = False) -> Checkpoint:
    """A plain torch state_dict whose architecture the user names.

    The tensors are matched to the named architecture in file order, as (weight, bias) pairs
    (our names, SB3's policy names, or any Sequential's: the names are not trusted, the order
    and shapes are); SB3 critics and target networks are skipped. Any mismatch is one error.
    """
    from pipeline.envs import default_preprocessing, make_env, n_actions

    path = Path(path)
    if not path.is_file():
        raise UserError(f"state_dict file not found: {path}")
    check_choice("architecture", arch, ARCHS)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a plain torch state_dict ({reason[:200]}); save net.state_dict(), "
                        "not the module") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path}: not a state_dict (a dict of tensors)")
    env = make_env(env_id)
    try:
        shape = tuple(int(s) for s in env.observation_space.shape)
        n = n_actions(env)
    finally:
        env.close()
    spec = ModelSpec(kind="dqn", arch=arch, obs_shape=shape, n_actions=n, hidden=hidden,
                     variant="state-dict").validate()
    model = build_model(spec)
    ours = list(model.state_dict().items())
    theirs = [(k, v) for k, v in sd.items() if not k.startswith(SKIPPED_PREFIXES)
              and v.is_floating_point()]
    named = f"--arch {arch}" + (f" --hidden {','.join(map(str, hidden))}" if arch == "mlp" else "")
    if len(theirs) != len(ours):
        raise UserError(f"{path}: {len(theirs)} weight tensors do not match {named} ({len(ours)} expected: "
                        f"{', '.join(k for k, _ in ours)})")
    mapped = {}
    for (k_ours, v_ours), (k_theirs, v) in zip(ours, theirs):
        if tuple(v.shape) != tuple(v_ours.shape):
            raise UserError(f"{path}: {k_theirs} has shape {tuple(v.shape)} where {named} needs "
                            f"{tuple(v_ours.shape)} ({k_ours})")
        mapped[k_ours] = v
    load_into(model, mapped, str(path))
    from pipeline.convert import file_sha256

    imported = {"format": "torch state_dict", "path": str(path), "sha256": file_sha256(path),
                "keys": [k for k, _ in theirs]}
    return Checkpoint(spec=spec, state_dict=model.state_dict(), env_id=env_id,
                      preprocessing=default_preprocessing(env_id, scale_obs),
                      provenance=provenance(None, imported=imported))


# --- the command ------------------------------------------------------------------------------


def run_import(args: argparse.Namespace) -> Checkpoint:
    src = Path(args.agent)
    if not src.is_file():
        raise UserError(f"agent file not found: {src}")
    if Path(args.output).resolve() == src.resolve():
        raise UserError("--output would overwrite the agent file")
    if is_sb3_zip(src):
        if args.arch:
            raise UserError("--arch is for plain state_dicts; an SB3 zip describes its own network")
        return import_sb3(src, args.env, args.vecnormalize)
    if args.vecnormalize:
        raise UserError("--vecnormalize goes with an SB3 zip")
    if not args.arch:
        raise UserError(f"{src}: not an SB3 zip; a plain state_dict needs --arch ({', '.join(ARCHS)}) "
                        "and --env")
    if not args.env:
        raise UserError("a plain state_dict needs --env")
    return import_state_dict(src, args.env, args.arch, parse_hidden(args.hidden), args.scale_obs)


if __name__ == "__main__":
    raise SystemExit(main())
