"""dsqn-deploy's public Python API: the commands as functions, importable from one place.

    import dsqn_deploy as dd

    agent = dd.load_agent("examples/cartpole_dsqn.pt")
    graph = dd.export_nir(agent, "cartpole.nir")
    readout = dd.run_open_loop(graph, observations, target="nest")

What is named in ``__all__`` is public and stays (docs/API.md); everything else in the repository
is internal and may change. Each function mirrors a console script and runs the same code, so a
result here equals the command's result; bad input raises :class:`UserError` with the message the
command would print after ``error:``.

This package sits on its own floor above ``backends`` (tests/test_layering.py): it reaches every
target, and no module below it imports it. Heavy libraries (torch, the simulators) load when a
function needs them, not on ``import dsqn_deploy``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Mapping
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.backend_api import Backend, Readout
from pipeline.checks import package_version
from pipeline.errors import UserError

if TYPE_CHECKING:
    import nir
    import numpy as np

    from exporters.plan.ir import Plan
    from pipeline.checkpoint import Checkpoint

__version__ = package_version()

__all__ = [
    "Backend",
    "Readout",
    "UserError",
    "__version__",
    "convert_dqn",
    "evaluate_agent",
    "export_nir",
    "import_agent",
    "inspect_nir",
    "layer_activity",
    "load_agent",
    "make_backend",
    "read_nir",
    "read_readout",
    "read_results",
    "record_observations",
    "run_closed_loop",
    "run_open_loop",
    "save_agent",
    "targets",
    "train_agent",
]

PathLike = str | os.PathLike


# ---------------------------------------------------------------- agents (model.pt)


def load_agent(path: PathLike) -> Checkpoint:
    """Read a ``model.pt`` (any kind: DQN, DSQN, converted, imported) without running pickled code.

    The :class:`~pipeline.checkpoint.Checkpoint` has ``.spec`` (the model's settings), ``.env_id``,
    ``.preprocessing`` and ``.build()`` (the torch module)."""
    from pipeline.checkpoint import load_checkpoint

    return load_checkpoint(path)


def save_agent(agent: Checkpoint, path: PathLike) -> None:
    """Write a checkpoint as ``model.pt`` (the format every command reads)."""
    from pipeline.checkpoint import save_checkpoint

    save_checkpoint(agent, path)


def _with_options(argv: list[str], options: Mapping[str, Any]) -> list[str]:
    """A command's flags from keywords: ``time_steps=8`` -> ``--time-steps 8``, ``no_progress=True``
    -> ``--no-progress``, ``hidden=[16, 16]`` -> ``--hidden 16 16``, ``hp={"learning_starts": 100}``
    -> ``--hp learning_starts=100`` (one flag per entry); None and False leave a flag out."""
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                argv += [flag, f"{k}={v}"]
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


def train_agent(env_id: str, output: PathLike, *, model: str = "dsqn", steps: int | None = None, seed: int = 0,
                **options: Any) -> dict[str, Any]:
    """Train an agent as ``train-agent --env ENV --model MODEL -o OUTPUT`` does; returns the run's
    summary (what ``model.train.json`` holds). ``options`` are the command's other flags by their
    long names (``time_steps=8``, ``hp="learning_starts=100"``, ``no_progress=True``)."""
    from pipeline.train import make_parser, train

    argv = ["--env", env_id, "--model", model, "-o", str(output), "--seed", str(seed)]
    if steps is not None:
        argv += ["--steps", str(steps)]
    return train(make_parser().parse_args(_with_options(argv, options)))


def evaluate_agent(agent: PathLike, *, episodes: int = 10, seed: int = 0, epsilon: float = 0.0,
                   max_steps: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Greedy (or ε-greedy) episodes of a checkpoint's torch model; episode i is reset with seed + i.
    Returns ``evaluate-agent --json``'s record: ``mean_return``, ``std_return``, ``returns``, ..."""
    from pipeline.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(agent, episodes, seed, epsilon, max_steps, progress=progress)


def import_agent(path: PathLike, output: PathLike | None = None, *, env_id: str | None = None,
                 vecnormalize: PathLike | None = None) -> Checkpoint:
    """A Stable-Baselines3 ``.zip`` (DQN, QR-DQN, PPO, A2C) as a checkpoint, read without unpickling
    (``import-agent``); written to ``output`` when given."""
    from pipeline.sb3_import import import_sb3

    agent = import_sb3(Path(path), env_id, None if vecnormalize is None else str(vecnormalize))
    if output is not None:
        save_agent(agent, output)
    return agent


def convert_dqn(dqn: PathLike, output: PathLike, **options: Any) -> dict[str, Any]:
    """Convert a trained DQN checkpoint to a spiking one, as ``convert-dqn DQN -o OUTPUT`` does;
    returns the conversion report. ``options`` are the command's flags by long name
    (``time_steps=100``, ``calib_steps=500``, ``norm="robust"``, ``eval_obs=0``)."""
    from pipeline.convert import convert
    from pipeline.convert_cli import make_parser

    options = {"no_progress": True, **options}
    return convert(make_parser().parse_args(_with_options([str(dqn), "-o", str(output)], options)))


# ---------------------------------------------------------------- NIR graphs


def export_nir(agent: Checkpoint | PathLike, output: PathLike | None = None, *, dt: float | None = None) -> nir.NIRGraph:
    """A checkpoint's model as a NIR graph (``export-nir``); written to ``output`` when given."""
    from exporters.metadata import DEFAULT_DT
    from exporters.nirio import write_graph
    from exporters.to_nir import model_to_nir

    source = None
    if not hasattr(agent, "spec"):
        source, agent = Path(agent), load_agent(agent)
    graph = model_to_nir(agent, dt=DEFAULT_DT if dt is None else dt, source=source)
    if output is not None:
        write_graph(graph, output)
    return graph


def read_nir(path: PathLike) -> nir.NIRGraph:
    """A NIR file, checked as every command checks it (sizes, values, structure) before use."""
    from exporters.nirio import read_graph

    return read_graph(path)


def _graph(graph: nir.NIRGraph | Plan | PathLike) -> Any:
    return read_nir(graph) if isinstance(graph, (str, os.PathLike)) else graph


def inspect_nir(graph: nir.NIRGraph | PathLike, *, observations: np.ndarray | None = None,
                time_steps: int | None = None, convention: str | None = None, rate: float = 0.1) -> dict[str, Any]:
    """What ``inspect-nir --json`` prints: nodes, shapes, neurons, synapses, SOPs and MACs per
    observation, semantics and metadata. With ``observations`` the spikes are counted on the
    reference; without, ``rate`` spikes per neuron per step are assumed."""
    from exporters.canonical import build_plan
    from exporters.inspect_nir import summarize

    g = _graph(graph)
    T = time_steps if time_steps is not None or "time_steps" in (g.metadata or {}) else 1
    plan = build_plan(g, convention=convention, time_steps=T)
    spikes = None
    if observations is not None:
        readout = run_open_loop(plan, observations)
        spikes = {k: float(v.mean()) for k, v in readout.spikes_per_layer().items()}
    return summarize(plan, spikes, rate)


# ---------------------------------------------------------------- targets


def targets(*, runnable: bool = False) -> list[str]:
    """The ``--target`` names, in the registry's order; with ``runnable`` only those whose
    simulator is installed here and that need no machine beyond this computer (SpiNNaker does)."""
    import importlib.util

    from backends import TARGETS

    if not runnable:
        return list(TARGETS)
    return [name for name, t in TARGETS.items()
            if not t.hardware and all(importlib.util.find_spec(m) is not None for m in t.requires)]


def make_backend(target: str, graph: nir.NIRGraph | Plan | PathLike, **options: Any) -> Backend:
    """Build ``target`` for ``graph``: ``.run(obs)`` gives a :class:`Readout`; call ``.close()`` after.
    ``options`` are the target's ``run-backend`` options (``dtype``, ``threads``, ``weight_bits``,
    ``state_scale``, ``time_steps``, ``convention``, ...)."""
    from backends import make_backend as build

    return build(target, _graph(graph), **options)


def run_open_loop(graph: nir.NIRGraph | Plan | PathLike, observations: np.ndarray, *, target: str = "reference",
                  input_spikes: np.ndarray | None = None, **options: Any) -> Readout:
    """Run preprocessed observations ``[N, *obs_shape]`` on ``target`` (``run-backend --inputs``):
    Q-values, actions and spike counts per node. The backend is closed afterwards."""
    import numpy as np

    from pipeline.checks import check_observations

    obs = np.asarray(observations)
    check_observations(obs)
    backend = make_backend(target, graph, **options)
    try:
        return backend.run(obs.astype(np.float32), input_spikes)
    finally:
        backend.close()


def layer_activity(readout: Readout, graph: nir.NIRGraph | Plan | PathLike, *,
                   time_steps: int | None = None) -> dict[str, float]:
    """Each spiking layer's firing rate in a readout (spikes per neuron per step), the figure
    behind run-backend's silent (< 0.1 %) / saturated (> 90 %) warning."""
    from backends.common.activity import layer_activity as rates
    from backends.common.activity import neuron_counts, readout_rates
    from exporters.canonical import Plan, build_plan

    g = _graph(graph)
    plan = g if isinstance(g, Plan) else build_plan(g, time_steps=time_steps)
    return {a.node: a.rate for a in rates(readout_rates(readout.spikes), neuron_counts(plan),
                                           plan.semantics.time_steps)}


def _run_backend(argv: list[str]) -> dict[str, Any]:
    """``run-backend`` in this process with its summary written to a temporary --json, its table
    printed into nothing; returns that summary."""
    from backends.cli import check_args, closed_loop, parse_args

    with tempfile.TemporaryDirectory(prefix="dsqn-api-") as tmp:
        summary = Path(tmp) / "summary.json"
        args = parse_args([*argv, "--json", str(summary)])
        check_args(args)
        with redirect_stdout(io.StringIO()):
            closed_loop(args)
        return json.loads(summary.read_text())


def run_closed_loop(graph: PathLike, env_id: str, *, target: str = "reference", episodes: int = 10, seed: int = 0,
                    compare: str | None = None, results: PathLike | None = None, **options: Any) -> dict[str, Any]:
    """Episodes of ``env_id`` with ``target`` acting (``run-backend --env``): returns the summary
    (``return_mean``, ``agreement`` with ``compare``, ``spikes_per_step``, ``firing_rates``, ...);
    one JSON line per episode goes to ``results`` (default ``out/<graph>.<target>.<env>.jsonl``).
    ``options`` are run-backend's other flags by long name (``max_steps=200``, ``resume=True``)."""
    argv = [str(graph), "--target", target, "--env", env_id, "--episodes", str(episodes), "--seed", str(seed),
            "--no-progress"]
    if compare is not None:
        argv += ["--compare", str(compare)]
    if results is not None:
        argv += ["--results", str(results)]
    return _run_backend(_with_options(argv, options))


def record_observations(graph: PathLike, env_id: str, output: PathLike, *, target: str = "reference",
                        episodes: int = 1, seed: int = 0, results: PathLike | None = None,
                        **options: Any) -> np.ndarray:
    """Play ``episodes`` closed-loop and keep the preprocessed observation of every agent step as
    ``output`` (``run-backend --record obs.npy``): the input of :func:`run_open_loop`. Returns them.
    The episodes' results go to ``results`` when given (else they are not kept)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="dsqn-api-") as tmp:
        run_closed_loop(graph, env_id, target=target, episodes=episodes, seed=seed,
                        results=results if results is not None else Path(tmp) / "results.jsonl",
                        record=str(output), **options)
    return np.load(output, allow_pickle=False)


# ---------------------------------------------------------------- results


def read_readout(path: PathLike) -> Readout:
    """An open-loop ``readouts.npz`` (``q``, ``action``, ``spikes/<node>``)."""
    return Readout.load(path)


def read_results(path: PathLike) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A closed-loop ``--results`` file: its header (the run's settings) and one dict per finished
    episode (``return``, ``steps``, ``agreement``, ``spikes_per_step``, ...)."""
    from pipeline.bridge import read_results as read

    p = Path(path)
    if not p.is_file():
        raise UserError(f"results file not found: {p}")
    return read(p)
