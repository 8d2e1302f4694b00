"""``run-backend``: run a NIR graph on a target.

Closed loop: ``run-backend --target nest model.nir --env CartPole-v1 --episodes 10
--compare reference`` plays episodes with the backend choosing actions (pipeline.bridge),
appends one JSON line per finished episode to ``--results`` (``--resume`` continues an
interrupted run) and ends with a table.

Open loop: ``run-backend --target reference model.nir --inputs obs.npy --out readouts.npz``
runs recorded, preprocessed observations ``[N, *obs_shape]`` and writes the common readout
file (backends.base.Readout): ``q`` [N, A] float64, ``action`` [N] int64 and
``spikes/<node>`` counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from backends import TARGETS, make_backend
from backends.base import plan_for_env
from backends.lava.modes import DEFAULT_STATE_SCALE, STATE_SCALES
from exporters.conventions import convention_arg, convention_names
from exporters.metadata import READOUT_REDUCE
from pipeline.checks import (
    PLOT_FORMATS,
    ArgumentParser,
    check_int,
    check_observations,
    check_output,
    check_q,
    check_real,
    check_seed,
    load_npy,
)
from pipeline.cli import cli_entry
from pipeline.errors import UserError, check_choice
from pipeline.graph_meta import GraphMeta
from pipeline.runtime import set_torch_threads


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="run-backend", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graph", type=Path, help="NIR file (export-nir output or a third-party graph)")
    ap.add_argument("--target", default="reference", help=f"backend: {', '.join(TARGETS)} (default reference)")
    src = ap.add_argument_group("open loop")
    src.add_argument("--inputs", type=Path, help="preprocessed observations [N, *obs_shape] (.npy)")
    src.add_argument("--input-spikes", type=Path,
                     help="encoded input spikes [T, N, *obs_shape] (.npy) for poisson/regular graphs")
    src.add_argument("--out", type=Path, help="readouts .npz to write (q, action, spikes/<node>)")
    loop = ap.add_argument_group("closed loop")
    loop.add_argument("--env", help="Gymnasium environment id (CartPole-v1, ALE/Pong-v5, ...)")
    loop.add_argument("--episodes", type=int, default=10)
    loop.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    loop.add_argument("--epsilon", type=float,
                      help="random-action probability (default: 0.05 on Atari, 0 otherwise)")
    loop.add_argument("--max-steps", type=int, help="agent steps per episode (Atari default 18000)")
    loop.add_argument("--compare", help="also run this on the same observations and report agreement: "
                                        "a target name (reference, ...; also in the open loop) or a "
                                        "checkpoint .pt (closed loop)")
    loop.add_argument("--results", type=Path, help="per-episode JSON lines (default out/<graph>.<target>.<env>.jsonl)")
    loop.add_argument("--resume", action="store_true", help="continue the run in --results")
    loop.add_argument("--plot", type=Path, help="write a PNG of returns, agreement and spikes per layer")
    loop.add_argument("--no-progress", action="store_true",
                      help="no progress bar: one plain line on stderr every 60 s instead (DSQN_PROGRESS_SECONDS)")
    loop.add_argument("--envs", type=int, default=1,
                      help="environments stepped together (Gymnasium's vector API), their observations run as "
                           "one batch; the episodes are those of the sequential run (docs/SCALING.md)")
    loop.add_argument("--ray-workers", type=int,
                      help="run the episodes as Ray tasks on this many workers, each building the target once "
                           "(default with --ray-address: the cluster's CPUs); this process writes --results")
    loop.add_argument("--ray-address", help="a running Ray cluster (host:port or auto); without it a local Ray "
                                            "is started for --ray-workers")
    loop.add_argument("--record", type=Path,
                      help="write the preprocessed observation of every agent step here (.npy, [N, *obs_shape]): "
                           "the --inputs of an open-loop run")
    sem = ap.add_argument_group("semantics for graphs without our metadata")
    sem.add_argument("--readout", choices=sorted(READOUT_REDUCE), help="override the graph's readout")
    sem.add_argument("--time-steps", type=int, help="T steps per observation")
    sem.add_argument("--dt", type=float, help="seconds per step")
    sem.add_argument("--convention", type=convention_arg, metavar="NAME[+MOD...]",
                     help="normalise a third-party graph: " + ", ".join(convention_names()))
    ref = ap.add_argument_group("backend options")
    ref.add_argument("--dtype", choices=("float32", "float64"),
                     help="reference precision (default float32; float64 when it is the comparison "
                          "for a double-precision simulator)")
    ref.add_argument("--threads", type=int, default=1,
                     help="simulator threads (NEST) and torch threads in this process (reference executor, "
                          "host-side maps); one keeps batch-1 steps fast on a busy machine")
    ref.add_argument("--batch-size", type=int, help="observations per batch (default: by memory)")
    ref.add_argument("--weight-bits", type=int, choices=(8, 16),
                     help="lava-fixed weight precision: 8 (default, one 8-bit mantissa + exponent per "
                          "map) or 16 (weight splitting: each map as two 8-bit synapse sets, docs/LAVA.md)")
    ref.add_argument("--state-scale", choices=STATE_SCALES,
                     help=f"lava-fixed state units: layer (one per layer) or neuron (each neuron, each "
                          f"channel of a conv layer, its own where that rounds its weights more finely: "
                          f"fewer spikes moved on graphs not fine-tuned, a threshold per neuron; "
                          f"docs/LAVA.md) (default {DEFAULT_STATE_SCALE})")
    ap.add_argument("--json", type=Path, help="write a JSON summary here")
    ap.add_argument("--plot-raster", type=Path,
                    help="write a figure of one observation: each layer's spike raster and membrane potential "
                         "over the T steps (the open loop's --raster-obs, the closed loop's first step)")
    ap.add_argument("--raster-obs", type=int, default=0, help="open loop: the observation --plot-raster shows (0)")
    return ap.parse_args(argv)


def load_array(path: Path, what: str) -> np.ndarray:
    """A numeric .npy file as float32; NaN, inf or values beyond float32 are refused alike for every target."""
    arr = load_npy(path, what)
    check_observations(arr, f"{path}: {what}")
    return arr.astype(np.float32)


def backend_options(target: str, args: argparse.Namespace, comparing: bool = False) -> dict[str, Any]:
    """Options of ``target`` from the command line; each backend takes only the ones its registry
    entry names (backends.TARGETS), plus its ``compare_options`` when it is the comparison for
    another target and the command line leaves them open (the reference in float64).

    ``pynn-spinnaker`` takes its machine from the SPINNAKER_* / SPALLOC_* environment variables
    (backends/pynn/spinnaker_config.py), like the Docker image's entrypoint.
    """
    entry = TARGETS[check_choice("target", target, TARGETS)]
    options: dict[str, Any] = dict(convention=args.convention, time_steps=args.time_steps, dt=args.dt,
                                   readout=args.readout)
    options.update({k: getattr(args, k) for k in entry.cli_options if getattr(args, k) is not None})
    if comparing and target != args.target:
        for k, v in entry.compare_options.items():
            options.setdefault(k, v)
    return options


#: options that change speed, not results: not recorded, and --resume may change them
PERFORMANCE_OPTIONS = ("batch_size", "threads")


def recorded_options(target: str, options: dict) -> dict:
    """The options of ``target`` that can change its results, with their defaults filled in:
    written to the results header, JSON and plot title, and compared by ``--resume``."""
    out = dict(TARGETS[target].defaults) if target in TARGETS else {}  # giving the default records the same
    out.update({k: v for k, v in options.items() if v is not None and k not in PERFORMANCE_OPTIONS})
    return dict(sorted(out.items()))


def legacy_options(recorded: dict, old: dict | None, target: str | None) -> dict:
    """The options to resume under: ``old`` (a results header's) when it lacks only options that
    ``target`` added later (``Target.legacy``) and ``recorded`` gives them the value every run
    before them used, so that such a run resumes as itself; otherwise ``recorded`` (compared, and
    refused where it differs, by the results file)."""
    legacy = TARGETS[target].legacy if target in TARGETS else {}
    if old is None or not set(old) < set(recorded):
        return recorded
    added = set(recorded) - set(old)
    same = all(recorded[k] == v for k, v in old.items())
    if same and all(k in legacy and recorded[k] == legacy[k] for k in added):
        return dict(old)
    return recorded


# Backend options refused (rather than ignored) when neither --target nor --compare takes them,
# unless they carry the value every target assumes: (argparse dest, flag, that value; None: none
# does, e.g. a state scale means nothing to a float simulator).
STRICT_OPTIONS = (("weight_bits", "--weight-bits", 8), ("state_scale", "--state-scale", None))


def check_args(args: argparse.Namespace) -> None:
    from exporters.validate import MAX_TIME_STEPS

    check_int("--time-steps", args.time_steps, 1, MAX_TIME_STEPS)
    check_real("--dt", args.dt, positive=True)
    check_seed("--seed", args.seed)
    check_real("--epsilon", args.epsilon, lo=0.0, hi=1.0)
    check_int("--episodes", args.episodes, 1)
    check_int("--max-steps", args.max_steps, 1)
    check_int("--envs", args.envs, 1, 1024)
    check_int("--ray-workers", args.ray_workers, 1, 4096)
    if args.ray_workers is not None or args.ray_address is not None:
        if args.envs > 1:
            raise UserError("choose --envs (one process) or --ray-workers/--ray-address (episodes on Ray), not both")
        if args.record is not None:
            raise UserError("--record keeps the observations of this process; it does not run with Ray")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    for dest, flag, assumed in STRICT_OPTIONS:
        takers = [name for name, t in TARGETS.items() if dest in t.cli_options]
        if getattr(args, dest) not in (None, assumed) and not {args.target, args.compare} & set(takers):
            raise UserError(f"{flag} applies to --target {' or '.join(takers)} only")
    if args.env is not None and args.inputs is not None:
        raise UserError("choose one mode: --env (closed loop) or --inputs (open loop)")
    if args.env is None and args.inputs is None:
        raise UserError("nothing to run: pass --env ENV_ID (closed loop) or --inputs obs.npy (open loop)")
    check_output("--out", args.out, suffixes=("npz",))  # every output before any work
    check_output("--json", args.json)
    check_output("--plot", args.plot, suffixes=PLOT_FORMATS)
    check_output("--results", args.results)
    check_output("--record", args.record, suffixes=("npy",))
    check_output("--plot-raster", args.plot_raster, suffixes=PLOT_FORMATS)
    check_int("--raster-obs", args.raster_obs, 0)
    if args.record is not None and (args.env is None or args.resume):
        raise UserError("--record keeps the observations of the episodes a closed-loop run plays: it needs --env "
                        "and cannot go with --resume (the finished episodes' observations are not kept)")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(args)
    set_torch_threads(args.threads)  # also validates --threads
    if args.env is not None:
        return closed_loop(args)
    return open_loop(args)


def open_loop(args: argparse.Namespace) -> int:
    from exporters.nirio import read_graph
    from exporters.plan.semantics import with_input_series

    if args.out is None:
        raise UserError("pass --out readouts.npz for the open-loop results")
    if args.compare is not None:
        if args.compare.endswith(".pt"):
            raise UserError("--compare model.pt needs the environment's raw observations (the checkpoint has its own "
                            "preprocessing): use it in the closed loop (--env); in the open loop compare with a "
                            f"target ({', '.join(TARGETS)})")
        check_choice("comparison target", args.compare, TARGETS)
    graph = read_graph(args.graph)
    obs = load_array(args.inputs, "inputs")
    spikes_in = load_array(args.input_spikes, "input spikes") if args.input_spikes else None
    t0 = time.perf_counter()
    plan, _, _ = plan_for_env(graph, convention=args.convention, time_steps=args.time_steps, dt=args.dt,
                              readout=args.readout)
    if spikes_in is not None:  # a time-varying input also for a graph whose input is a constant current
        plan = with_input_series(plan)
    backend = make_backend(args.target, plan, **backend_options(args.target, args))
    t_build = time.perf_counter() - t0
    try:
        readout = backend.run(obs, spikes_in)
    finally:
        backend.close()
    check_q(readout.q, f"--target {args.target}")
    agreement = None
    if args.compare is not None:  # the same observations and input spikes on the comparison target
        other = make_backend(args.compare, plan, **backend_options(args.compare, args, comparing=True))
        try:
            theirs = other.run(obs, spikes_in)
        finally:
            other.close()
        check_q(theirs.q, f"--compare {args.compare}")
        differ = int(np.count_nonzero(readout.action != theirs.action))
        dq = float(np.abs(readout.q - theirs.q).max()) if readout.q.size else 0.0
        agreement = {"compare": args.compare, "agreement": 1.0 - differ / max(len(readout.action), 1),
                     "disagreements": differ, "q_abs_err": dq,
                     "q_rel_err": dq / max(float(np.abs(theirs.q).max()) if theirs.q.size else 0.0, 1e-12)}
    if args.plot_raster is not None:
        if args.raster_obs >= len(obs):
            raise UserError(f"--raster-obs {args.raster_obs}: --inputs holds {len(obs)} observations")
        i = args.raster_obs
        draw_raster(args, plan, obs[i], None if spikes_in is None else spikes_in[:, i:i + 1],
                    {k: v[i] for k, v in readout.spikes.items()}, f"observation {i} of {args.inputs}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    readout.save(args.out)
    n = int(readout.q.shape[0])
    per_layer = {k: float(v.mean()) for k, v in readout.spikes_per_layer().items()}
    recorded = {"backend_options": recorded_options(args.target, backend_options(args.target, args))}
    if args.compare in TARGETS:
        recorded["compare_options"] = recorded_options(args.compare,
                                                       backend_options(args.compare, args, comparing=True))
    summary = {"target": args.target, "graph": str(args.graph), "inputs": str(args.inputs), "out": str(args.out),
               **recorded,
               "n": n, "build_s": t_build, "timings": readout.timings,
               "wall_per_obs": sum(readout.timings.values()) / max(n, 1),
               "action_counts": np.bincount(readout.action, minlength=readout.q.shape[1]).tolist() if n else [],
               "spikes_per_obs": per_layer, "firing_rates": warn_activity(plan, per_layer), **(agreement or {})}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.target}: {n} observations -> {args.out}")
    print(f"  {'node':<24}{'spikes/obs':>14}")
    for k, v in per_layer.items():
        print(f"  {k:<24}{v:>14.1f}")
    print(f"  actions: {summary['action_counts']}   wall/obs: {summary['wall_per_obs'] * 1e3:.3f} ms")
    if agreement is not None:
        print(f"  agreement vs {args.compare}: {100 * agreement['agreement']:.2f} % ({differ} differ), "
              f"max |dQ| {dq:.3g} (relative {agreement['q_rel_err']:.3g})")
    return 0


def closed_loop(args: argparse.Namespace) -> int:
    """Episodes in ``args.env`` with the backend acting (pipeline.bridge)."""
    from exporters.nirio import read_graph
    from exporters.to_nir import file_sha256
    from pipeline.bridge import GraphIO, LoopSettings, plot_results, summarize
    from pipeline.envs import check_env_id, is_atari

    check_env_id(args.env)
    if args.input_spikes is not None or args.out is not None:
        raise UserError("--input-spikes and --out belong to the open loop (--inputs)")
    check_choice("target", args.target, TARGETS)
    graph = read_graph(args.graph)
    plan, obs_shape, n_out = plan_for_env(graph, convention=args.convention, time_steps=args.time_steps,
                                          dt=args.dt, readout=args.readout)
    meta = GraphMeta.read(plan.metadata)
    io = GraphIO(obs_shape=obs_shape, n_actions=meta.n_actions if meta.n_actions is not None else n_out,
                 preprocessing=meta.preprocessing)
    epsilon = args.epsilon if args.epsilon is not None else (0.05 if is_atari(args.env) else 0.0)
    settings = LoopSettings(
        env_id=args.env, target=args.target, graph=str(args.graph), graph_sha256=file_sha256(args.graph),
        compare=args.compare, episodes=args.episodes, seed=args.seed, epsilon=epsilon, max_steps=args.max_steps,
        encoding=plan.semantics.encoding, time_steps=plan.semantics.time_steps,
        backend_options=recorded_options(args.target, backend_options(args.target, args)),
        compare_options=(recorded_options(args.compare, backend_options(args.compare, args, comparing=True))
                         if args.compare in TARGETS else {}),
    ).validate()
    results = args.results or Path("out") / f"{args.graph.stem}.{args.target}.{args.env.replace('/', '_')}.jsonl"
    check_output("--results", results)
    if args.resume:  # a header written before an option existed (Target.legacy)
        from dataclasses import replace

        from pipeline.bridge import read_results

        header, _ = read_results(results)
        old = header.get("settings", {}) if header else {}
        settings = replace(settings,
                           backend_options=legacy_options(settings.backend_options, old.get("backend_options"),
                                                          args.target),
                           compare_options=legacy_options(settings.compare_options, old.get("compare_options"),
                                                          args.compare))
    if meta.env_id and meta.env_id != args.env:
        print(f"note: the graph was made for {meta.env_id}, running it on {args.env}")

    if args.ray_workers is not None or args.ray_address is not None:
        records, t_build, backend = (*ray_episodes(args, io, settings, results), None)
    else:
        records, t_build, backend = local_episodes(args, graph, plan, io, settings, results)
    summary = {"target": args.target, "compare": args.compare, "env": args.env, "graph": str(args.graph),
               "backend_options": settings.backend_options, "compare_options": settings.compare_options,
               "results": str(results), "build_s": t_build, **summarize(records)}
    if getattr(backend, "batch_path", None):  # how a batch of observations ran (docs/SCALING.md §1)
        summary["batch_path"] = backend.batch_path
    summary["firing_rates"] = warn_activity(plan, summary["spikes_per_step"])
    if args.record is not None:
        summary["record"] = {"path": str(args.record), "observations": backend.save(args.record)}
    if args.plot_raster is not None and backend.batches:
        draw_raster(args, plan, backend.batches[0][0], None, backend.first_counts,
                    f"the first step of episode {records[0]['episode'] if records else 0} of {args.env}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.plot:
        opts = settings.describe_options()
        plot_results(records, args.plot,
                     f"{args.graph.name} on {args.target}{f' ({opts})' if opts else ''}, {args.env}",
                     compare=args.compare)
    print_closed_loop_table(summary)
    if args.record is not None:
        print(f"recorded {summary['record']['observations']} preprocessed observations -> {args.record} "
              f"(run them again: run-backend {args.graph} --inputs {args.record} --out readouts.npz)")
    return 0


def local_episodes(args: argparse.Namespace, graph: Any, plan: Any, io: Any, settings: Any,
                   results: Path) -> tuple[list[dict], float, Any]:
    """The episodes in this process (sequential, or ``--envs N`` vectorised);
    (records, build seconds, the closed backend: a :class:`Recorder` with ``--record``)."""
    from pipeline.bridge import run_episodes
    from pipeline.vector_loop import make_env_for, make_runner

    env = make_env_for(settings, io, args.envs)  # made and checked once, before anything is built
    backend = compare = None
    try:
        t0 = time.perf_counter()
        options = backend_options(args.target, args)
        slots = getattr(env, "num_envs", 1)
        if slots > 1 and TARGETS[args.target].copies:  # one window for the batch, a speed setting
            options["copies"] = slots
        backend = make_backend(args.target, plan, **options)
        if slots > 1 and getattr(backend, "batch_path", None):
            print(f"{args.target} with --envs {slots}: {backend.batch_path}")
        if args.record is not None or args.plot_raster is not None:
            backend = Recorder(backend)
        t_build = time.perf_counter() - t0
        compare_preprocessing = None
        if args.compare is not None:
            if args.compare.endswith(".pt"):  # the torch model: its own preprocessing, Q in the graph's units
                from pipeline.policy import CheckpointBackend

                compare = CheckpointBackend(args.compare, graph.metadata)
                compare_preprocessing = compare.preprocessing
            else:
                check_choice("comparison target", args.compare, TARGETS)
                compare = make_backend(args.compare, plan, **backend_options(args.compare, args, comparing=True))
        loop = make_runner(backend, io, settings, compare, compare_preprocessing, env)
        records = run_episodes(loop, results, resume=args.resume, progress=not args.no_progress)
    finally:
        env.close()
        if backend is not None:
            backend.close()
        if compare is not None:
            compare.close()
    return records, t_build, backend


def ray_episodes(args: argparse.Namespace, io: Any, settings: Any, results: Path) -> tuple[list[dict], float]:
    """The episodes as Ray tasks (backends.ray_runner); this process writes the results file."""
    from backends.ray_runner import RayRunner, WorkerSpec
    from pipeline.bridge import make_loop_env, run_episodes

    make_loop_env(settings, io).close()  # the environment fits the graph, checked before Ray starts
    checkpoint = None
    if args.compare is not None and args.compare.endswith(".pt"):
        if not Path(args.compare).is_file():
            raise UserError(f"--compare {args.compare}: no such checkpoint")
        checkpoint = Path(args.compare).read_bytes()
    elif args.compare is not None:
        check_choice("comparison target", args.compare, TARGETS)
    spec = WorkerSpec(
        graph_name=args.graph.name, graph_bytes=args.graph.read_bytes(), target=args.target,
        options=backend_options(args.target, args), settings=settings, io=io, threads=args.threads,
        compare_target=args.compare if checkpoint is None else None,
        compare_options=backend_options(args.compare, args, comparing=True) if args.compare in TARGETS else {},
        compare_checkpoint=checkpoint,
        plan_options=dict(convention=args.convention, time_steps=args.time_steps, dt=args.dt, readout=args.readout))
    runner = RayRunner.start(spec, args.ray_workers, args.ray_address)  # every worker built, or one error
    try:
        records = run_episodes(runner, results, resume=args.resume, progress=not args.no_progress)
    finally:
        runner.close()
    return records, runner.build_s


class Recorder:
    """A backend that keeps every batch of preprocessed observations it is asked to run
    (``--record``), and the spike counts of the first one (``--plot-raster``); the loop sees the
    wrapped backend unchanged."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.name, self.batches = backend, backend.name, []
        self.first_counts: dict[str, np.ndarray] | None = None

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Any:
        self.batches.append(np.array(obs, dtype=np.float32, copy=True))
        readout = self.backend.run(obs, input_spikes)
        if self.first_counts is None:
            self.first_counts = {k: v[0] for k, v in readout.spikes.items()}
        return readout

    def close(self) -> None:
        self.backend.close()

    def __getattr__(self, name: str) -> Any:  # anything else the loop asks of the backend
        return getattr(self.backend, name)

    def save(self, path: Path) -> int:
        """Write the observations as one ``[N, *obs_shape]`` float32 array; returns N."""
        if not self.batches:
            raise UserError("--record: no observation was run, nothing to write")
        obs = np.concatenate(self.batches)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, obs)
        return int(obs.shape[0])


def draw_raster(args: argparse.Namespace, plan: Any, obs: np.ndarray, input_spikes: np.ndarray | None,
                counts: dict[str, np.ndarray] | None, which: str) -> None:
    """--plot-raster for one observation (backends.raster); says where the figure went."""
    from backends.raster import raster_for

    args.plot_raster.parent.mkdir(parents=True, exist_ok=True)
    title = f"{args.graph.name} on {args.target}: {which} (T {plan.semantics.time_steps})"
    note = raster_for(plan, obs, input_spikes, args.plot_raster, title, args.target, counts)
    print(f"raster plot -> {args.plot_raster} ({note})")


def warn_activity(plan: Any, spikes_per_obs: dict[str, float]) -> dict[str, float]:
    """Print a ``warning:`` line on stderr for each silent or saturated layer (the same check on
    every target: backends.common.activity); returns each layer's firing rate for the summary."""
    from backends.common.activity import layer_activity, layer_activity_warnings, neuron_counts

    neurons, steps = neuron_counts(plan), plan.semantics.time_steps
    for line in layer_activity_warnings(spikes_per_obs, neurons, steps):
        print(f"warning: {line}", file=sys.stderr)
    return {a.node: a.rate for a in layer_activity(spikes_per_obs, neurons, steps)}


def print_closed_loop_table(summary: dict) -> None:
    from pipeline.tables import console, make_table

    table = make_table(f"run-backend --target {summary['target']} {summary['graph']} on {summary['env']}",
                       ("metric", "value"), right=("value",))
    table.add_row("episodes / steps", f"{summary['episodes']} / {summary['steps']}")
    table.add_row("return", f"{summary['return_mean']:.1f} ± {summary['return_std']:.1f}")
    if "agreement" in summary:
        table.add_row(f"agreement vs {summary['compare']}",
                      f"{100 * summary['agreement']:.2f} % ({summary['disagreements']} differ)")
        table.add_row("max |ΔQ|  (relative)", f"{summary['q_abs_err']:.3g}  ({summary['q_rel_err']:.3g})")
    for k, v in summary["spikes_per_step"].items():
        table.add_row(f"spikes/step {k}", f"{v:.1f}")
    table.add_row("wall_per_step", f"{summary['wall_per_step'] * 1e3:.3f} ms")
    table.add_row("sim_per_step", f"{summary['sim_per_step'] * 1e3:.3f} ms")
    table.add_row("build", f"{summary['build_s']:.2f} s")
    console().print(table)
    print(f"per-episode results: {summary['results']}")


if __name__ == "__main__":
    raise SystemExit(main())
