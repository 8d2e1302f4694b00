"""Episodes of one ``run-backend --env`` run as Ray tasks (``--ray-workers N``, ``--ray-address``).

Each Ray worker is an actor that builds the target (and the comparison) once, from the graph's
bytes shipped with it, and then plays whole episodes with the sequential loop
(pipeline.bridge.ClosedLoop): an episode on a worker is the episode a sequential run plays,
bit for bit. The driver (this process) hands out episode numbers, one at a time per worker,
and is the results file's only writer (pipeline.bridge.run_episodes): a record is appended
when it comes back, once per episode.

A worker process that dies is restarted by Ray and its episode re-run (``max_restarts`` /
``max_task_retries``); should the retries run out, the driver gives the episode to another
worker. Nothing a dead worker did reaches the file, so no episode is lost or counted twice.
Everything that can go wrong before the first episode (Ray missing, an address that does not
answer, a worker that cannot import or build the target) is one UserError, raised before the
results file is opened.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.bridge import GraphIO, LoopSettings
from pipeline.errors import UserError

#: how long an address may take to accept a TCP connection before it counts as not answering
CONNECT_TIMEOUT_S = 5.0
#: Ray restarts a dead worker and re-runs its episode this many times before the driver moves it on
RETRIES = 3


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build what the driver would build: shipped by value, so a
    worker on another machine needs only the installed package, not the driver's files."""

    graph_name: str
    graph_bytes: bytes
    target: str
    options: dict[str, Any]
    settings: LoopSettings
    io: GraphIO
    threads: int = 1
    compare_target: str | None = None  # a target name
    compare_options: dict[str, Any] = field(default_factory=dict)
    compare_checkpoint: bytes | None = None  # or a torch checkpoint's bytes (--compare model.pt)
    plan_options: dict[str, Any] = field(default_factory=dict)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--ray-workers/--ray-address need the ray package: pip install 'dsqn-deploy[ray]'") from None
    return ray


def check_address(address: str) -> None:
    """Refuse a ``host:port`` address that does not accept a connection within
    :data:`CONNECT_TIMEOUT_S` (ray.init would otherwise retry for a minute or more)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"--ray-address must be host:port (or 'auto'), got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UserError(f"the Ray cluster at {address} does not answer ({exc.strerror or exc})") from None


def connect(address: str | None, workers: int) -> Any:
    """``ray`` connected to ``address``, or to a local Ray started here with ``workers`` CPUs
    (reused when this process already started one)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address is not None:
        check_address(address)
    try:
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {first}") from None
    return ray


class EpisodeWorker:
    """One Ray actor: builds the loop once (:meth:`prepare` says whether it could), then plays
    episodes. The spec comes as a reference inside a list, which Ray leaves unresolved: the
    driver keeps it alive for the whole run, and a restarted worker (a new process, no state)
    builds again from it when its first episode arrives."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.loop = None
        self.build_s = 0.0

    def prepare(self, spec_ref: list[Any]) -> tuple[str | None, str, float]:
        """Build the loop unless built; (error or None, this worker's host, build seconds)."""
        if self.loop is None and self.error is None:
            import ray

            t0 = time.perf_counter()
            try:
                self.loop = build_loop(ray.get(spec_ref[0]))
            except Exception as exc:  # noqa: BLE001 - reported to the driver as one line
                self.error = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            self.build_s = time.perf_counter() - t0
        return self.error, socket.gethostname(), self.build_s

    def pid(self) -> int:
        return os.getpid()

    def run_episode(self, episode: int, spec_ref: list[Any]) -> dict[str, Any]:
        error, host, _ = self.prepare(spec_ref)
        if error is not None:
            raise UserError(f"the Ray worker on {host} cannot build the loop: {error}")
        return self.loop.run_episode(episode)


def build_loop(spec: WorkerSpec):
    """The sequential loop a worker plays in: the same target, comparison and environment the
    driver would build for a run without Ray."""
    import importlib

    from backends import TARGETS, make_backend
    from backends.base import plan_for_env
    from exporters.nirio import read_graph
    from pipeline.bridge import ClosedLoop, make_loop_env
    from pipeline.runtime import set_torch_threads

    set_torch_threads(spec.threads)
    for name in (spec.target, spec.compare_target):
        for module in (TARGETS[name].requires if name in TARGETS else ()):
            try:
                importlib.import_module("backends.lava.compat" if module == "lava" else module)
                importlib.import_module(module)
            except ImportError as exc:
                raise UserError(f"a Ray worker on {socket.gethostname()} cannot import {module!r} for target "
                                f"{name} ({exc})") from None
    tmp = Path(tempfile.mkdtemp(prefix="dsqn-ray-"))
    graph_path = tmp / spec.graph_name
    graph_path.write_bytes(spec.graph_bytes)
    graph = read_graph(graph_path)
    plan, _, _ = plan_for_env(graph, **spec.plan_options)
    env = make_loop_env(spec.settings, spec.io)
    backend = make_backend(spec.target, plan, **spec.options)
    compare, compare_pre = None, None
    if spec.compare_checkpoint is not None:
        from pipeline.policy import CheckpointBackend

        ckpt = tmp / "compare.pt"
        ckpt.write_bytes(spec.compare_checkpoint)
        compare = CheckpointBackend(ckpt, graph.metadata)
        compare_pre = compare.preprocessing
    elif spec.compare_target is not None:
        compare = make_backend(spec.compare_target, plan, **spec.compare_options)
    return ClosedLoop(backend, spec.io, spec.settings, compare, compare_preprocessing=compare_pre, env=env)


class RayRunner:
    """Episodes on ``workers`` Ray actors (pipeline.bridge.EpisodeRunner); :meth:`start` makes
    them and checks that every one of them built the loop before anything is written."""

    def __init__(self, ray: Any, actors: list[Any], settings: LoopSettings, spec_ref: Any, build_s: float):
        self.ray, self.actors, self.settings, self.spec_ref, self.build_s = ray, actors, settings, spec_ref, build_s
        self.reruns = 0  # episodes the driver gave to another worker after Ray's retries ran out

    @classmethod
    def start(cls, spec: WorkerSpec, workers: int | None, address: str | None) -> RayRunner:
        """``workers`` actors (default: the cluster's CPUs), no more than there are episodes."""
        ray = connect(address, workers or os.cpu_count() or 1)
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = min(workers, spec.settings.episodes)
        remote = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(EpisodeWorker)
        ref = ray.put(spec)
        actors = [remote.remote() for _ in range(workers)]
        try:
            states = ray.get([a.prepare.remote([ref]) for a in actors])
        except ray.exceptions.RayError as exc:
            cls._kill(ray, actors)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
            raise UserError(f"a Ray worker could not start: {first}") from None
        errors = [f"{err}" for err, _, _ in states if err]
        if errors:
            cls._kill(ray, actors)
            raise UserError(errors[0])
        return cls(ray, actors, spec.settings, ref, max(s[2] for s in states))

    @staticmethod
    def _kill(ray: Any, actors: list[Any]) -> None:
        for a in actors:
            ray.kill(a, no_restart=True)

    def worker_pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def episodes(self, todo: list[int]) -> Iterator[dict[str, Any]]:
        """Keep every worker busy with one episode; yield records as they come back."""
        ray = self.ray
        queue = list(reversed(todo))
        running: dict[Any, tuple[int, Any]] = {}  # object ref -> (episode, actor)

        def submit(actor: Any) -> None:
            if queue:
                episode = queue.pop()
                running[actor.run_episode.remote(episode, [self.spec_ref])] = (episode, actor)

        for actor in self.actors:
            submit(actor)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            episode, actor = running.pop(done[0])
            try:
                rec = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # the episode itself failed: a real error
                raise UserError(f"episode {episode} failed on a Ray worker: "
                                f"{(str(exc).strip().splitlines() or ['?'])[-1][:300]}") from None
            except ray.exceptions.RayError:  # the worker died beyond Ray's retries: another one runs it
                self.reruns += 1
                self.actors.remove(actor)
                if not self.actors:
                    raise UserError(f"every Ray worker died; episode {episode} and those after it did not run "
                                    "(--resume runs them)") from None
                queue.append(episode)
                for other in self.actors:
                    if all(a is not other for _, a in running.values()):
                        submit(other)
                continue
            yield rec
            submit(actor)

    def close(self) -> None:
        self._kill(self.ray, self.actors)
