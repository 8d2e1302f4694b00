"""Scaling figures (docs/SCALING.md): episodes per second with ``--envs N`` and on Ray workers,
Ray's own cost per task, and a projection of a large conversion table onto many machines.

Every configuration plays the same seeded episodes, and the script checks that their returns
and lengths equal the sequential run's before it prints a rate. Rates are ratios within one
run (the machine is shared and noisy); run it under ``nice -n 5``:

    nice -n 5 python benchmarks/scaling.py [--quick] [--json out.json]

1. CartPole (the bundled ``examples/cartpole_dsqn.pt``, MLP 4-128-128-2, T 16) on reference,
   NEST and Lava with 1, 2, 4, 8 (reference: and 16) environments, and on 1 and 2 Ray workers.
2. Pong frames per second: a Nature-CNN DSQN (random weights, T 8) on the reference, the same way.
3. Ray's overhead per task, and the projected wall time of Tan et al.'s table (17 games x 4 T x
   3 seeds, each cell some evaluation episodes) on 1, 8 and 64 machines, from the per-frame
   times measured here (one worker per core, episodes as tasks, longest first).
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from backends import make_backend
from backends.base import plan_for_env
from backends.ray_runner import RayRunner, WorkerSpec
from exporters.nirio import read_graph, write_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import make_checkpoint
from pipeline.bridge import GraphIO, LoopSettings
from pipeline.checkpoint import load_checkpoint
from pipeline.graph_meta import GraphMeta
from pipeline.runtime import keep_freed_memory, set_torch_threads
from pipeline.vector_loop import make_env_for, make_runner

ROOT = Path(__file__).resolve().parents[1]


def setup(graph_path: Path, env_id: str, target: str, episodes: int, max_steps: int,
          epsilon: float) -> tuple[Any, GraphIO, LoopSettings]:
    plan, obs_shape, n_out = plan_for_env(read_graph(graph_path))
    meta = GraphMeta.read(plan.metadata)
    io = GraphIO(obs_shape=obs_shape, n_actions=n_out, preprocessing=meta.preprocessing)
    settings = LoopSettings(env_id=env_id, target=target, graph=str(graph_path), graph_sha256="-",
                            episodes=episodes, seed=0, epsilon=epsilon, max_steps=max_steps,
                            encoding=plan.semantics.encoding, time_steps=plan.semantics.time_steps)
    return plan, io, settings


def outcome(records: list[dict]) -> list[tuple[int, float, int]]:
    return sorted((r["episode"], r["return"], r["length"]) for r in records)


class LocalConfig:
    """The target built once; each call plays all episodes with ``n_envs`` environments."""

    def __init__(self, backend: Any, io: GraphIO, settings: LoopSettings, n_envs: int):
        self.backend, self.io, self.settings, self.n_envs = backend, io, settings, n_envs

    def __call__(self) -> tuple[float, list[dict]]:
        env = make_env_for(self.settings, self.io, self.n_envs)
        try:
            loop = make_runner(self.backend, self.io, self.settings, None, None, env)
            t0 = time.perf_counter()
            records = list(loop.episodes(list(range(self.settings.episodes))))
            return time.perf_counter() - t0, records
        finally:
            env.close()


class RayConfig:
    """``workers`` Ray actors, built once (not timed); each call plays all episodes on them."""

    def __init__(self, graph_path: Path, target: str, io: GraphIO, settings: LoopSettings, workers: int,
                 options: dict):
        spec = WorkerSpec(graph_name=graph_path.name, graph_bytes=graph_path.read_bytes(), target=target,
                          options=options, settings=settings, io=io)
        self.settings = settings
        self.runner = RayRunner.start(spec, workers, None)

    def __call__(self) -> tuple[float, list[dict]]:
        t0 = time.perf_counter()
        records = list(self.runner.episodes(list(range(self.settings.episodes))))
        return time.perf_counter() - t0, records

    def close(self) -> None:
        self.runner.close()


def sweep(name: str, graph: Path, env_id: str, target: str, envs: list[int], ray_workers: list[int],
          episodes: int, max_steps: int, options: dict, rounds: int, out: dict, copies: bool = False) -> None:
    """Every configuration ``rounds`` times, interleaved (round 1 of each, then round 2, ...), so
    that the machine's load changes hit all of them alike; the median time of each is reported.
    ``copies``: also ``envs N`` as ``run-backend --envs N`` runs it on a target that builds N
    copies of its network (rows ``envs N copies``); the plain ``envs N`` rows run the batch back
    to back on one copy, as before."""
    plan, io, settings = setup(graph, env_id, target, episodes, max_steps, epsilon=0.05)
    backend = make_backend(target, plan, **options)  # one per process (NEST holds one network)
    configs: dict[str, Any] = {f"envs {n}": LocalConfig(backend, io, settings, n) for n in envs}
    wide = {n: make_backend(target, plan, **options, copies=min(n, episodes)) for n in envs if copies and n > 1}
    configs.update({f"envs {n} copies": LocalConfig(b, io, settings, n) for n, b in wide.items()})
    configs.update({f"ray {w}": RayConfig(graph, target, io, settings, w, options) for w in ray_workers})
    times: dict[str, list[float]] = {k: [] for k in configs}
    frames: dict[str, int] = {}
    base = None
    try:
        for _ in range(rounds):
            for k, run in configs.items():
                secs, recs = run()
                base = base or outcome(recs)
                assert outcome(recs) == base, f"{name} {k}: episodes differ from the sequential run"
                times[k].append(secs)
                frames[k] = sum(r["length"] for r in recs)
    finally:
        backend.close()
        for b in wide.values():
            b.close()
        for run in configs.values():
            if isinstance(run, RayConfig):
                run.close()
    rows = {k: {"s": statistics.median(v), "episodes_per_s": episodes / statistics.median(v),
                "frames_per_s": frames[k] / statistics.median(v), "all_s": v} for k, v in times.items()}
    first = rows[f"envs {envs[0]}"]["frames_per_s"]
    print(f"\n{name}: {target}, {episodes} episodes of <= {max_steps} steps (seeds 0..{episodes - 1}, eps 0.05), "
          f"median of {rounds} interleaved rounds")
    print(f"  {'config':<15}{'seconds':>9}{'episodes/s':>12}{'frames/s':>10}{'x envs 1':>10}")
    for k, v in rows.items():
        print(f"  {k:<15}{v['s']:>9.2f}{v['episodes_per_s']:>12.3f}{v['frames_per_s']:>10.1f}"
              f"{v['frames_per_s'] / first:>10.2f}")
    if len(ray_workers) >= 2:
        r1, r2 = rows[f"ray {ray_workers[0]}"], rows[f"ray {ray_workers[1]}"]
        print(f"  ray {ray_workers[1]} / ray {ray_workers[0]} workers: {r2['frames_per_s'] / r1['frames_per_s']:.2f}x")
    out[name] = {"target": target, "episodes": episodes, "max_steps": max_steps, "rounds": rounds, "rows": rows}


def median_interleaved(fns: dict[Any, Any], repeats: int, clock: Any = time.perf_counter) -> dict[Any, float]:
    """Median seconds of each callable, calls interleaved (one of each, ``repeats`` times);
    ``clock`` time.process_time counts this process's CPU time only (what other processes on a
    loaded machine take away from it is not counted, what they do to its caches is)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[Any, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def executor_speed(cart_ckpt: Path, quick: bool, out: dict) -> None:
    """Issue 18 item 4, side by side: the reference executor's forward against the torch model's
    on the same graph (batch 1), its closed loop against a bare loop of env.step + torch forward,
    and how its cost grows from T 8 to T 256 at batch 128."""
    import torch

    from backends.reference import ReferenceBackend
    from pipeline.bridge import ClosedLoop
    from pipeline.envs import make_env, preprocess

    rows: dict[str, Any] = {}
    reps = 50 if quick else 300
    cases = {"CartPole DSQN (MLP 4-128-128-2, T 16)": load_checkpoint(cart_ckpt),
             "Pong DSQN (Nature CNN, T 8, random weights)": make_checkpoint(
                 "liu", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6, time_steps=8, seed=1)}
    for label, ck in cases.items():
        model = ck.build().eval()
        ref = ReferenceBackend(model_to_nir(ck))
        x = torch.rand(1, *ck.spec.obs_shape)
        xn = x.numpy()
        with torch.inference_mode():
            t = median_interleaved({"torch": lambda: model.run(x), "reference": lambda: ref.run(xn)},
                                   reps if "MLP" in label else reps // 5)
        rows[label] = {"torch_ms": 1e3 * t["torch"], "reference_ms": 1e3 * t["reference"],
                       "ratio": t["reference"] / t["torch"]}
    # closed loop: the reference in ClosedLoop against env.step + the torch model, one CartPole episode
    ck = load_checkpoint(cart_ckpt)
    model = ck.build().eval()
    g = model_to_nir(ck)
    plan, obs_shape, n_out = plan_for_env(g)
    io = GraphIO(obs_shape=obs_shape, n_actions=n_out, preprocessing=ck.preprocessing)
    steps = 100 if quick else 300
    settings = LoopSettings(env_id="CartPole-v1", target="reference", graph="-", graph_sha256="-", episodes=1,
                            max_steps=steps, time_steps=ck.spec.time_steps)
    loop = ClosedLoop(ReferenceBackend(plan), io, settings)
    bare_env = make_env("CartPole-v1", max_episode_steps=steps)

    def bare() -> None:
        obs, _ = bare_env.reset(seed=0)
        done = False
        with torch.inference_mode():
            while not done:
                q, _, _ = model.run(torch.as_tensor(preprocess(np.asarray(obs)[None], ck.preprocessing)))
                obs, _, term, trunc, _ = bare_env.step(int(q.argmax()))
                done = term or trunc

    t = median_interleaved({"bare": bare, "closed_loop": lambda: loop.run_episode(0)}, 3 if quick else 7)
    rows["CartPole closed loop per episode"] = {"bare_ms": 1e3 * t["bare"], "closed_loop_ms": 1e3 * t["closed_loop"],
                                               "ratio": t["closed_loop"] / t["bare"], "steps": steps}
    loop.close()
    bare_env.close()
    # linearity in T at batch 128, in CPU time and in wall time: on a loaded machine a long call is
    # preempted, a short one often not, so wall time alone overstates the cost of a large T
    xb = np.random.default_rng(0).standard_normal((128, 4)).astype(np.float32)
    backends = {T: ReferenceBackend(model_to_nir(make_checkpoint("liu", hidden=(128, 128), time_steps=T, seed=1)))
                for T in (8, 32, 128, 256)}
    calls = {T: (lambda b=b: b.run(xb)) for T, b in backends.items()}
    for clock, name in ((time.process_time, "CPU time"), (time.perf_counter, "wall time")):
        lin = median_interleaved(calls, 5 if quick else 21, clock=clock)
        rows[f"T 8 -> 256 at batch 128 (MLP 4-128-128-2), {name}"] = {
            **{f"T{T}_ms": 1e3 * lin[T] for T in backends},
            **{f"T{T}_ms_per_step": 1e3 * lin[T] / T for T in backends}, "ratio": lin[256] / lin[8], "ideal": 32.0}
    print("\nreference executor speed (medians of interleaved repeats, one thread):")
    for k, v in rows.items():
        figures = ", ".join(f"{n} {x:.2f}" for n, x in v.items() if n != "ratio")
        print(f"  {k}: {figures}; ratio {v['ratio']:.2f}")
    out["executor_speed"] = rows


def ray_task_overhead(n: int = 200) -> dict[str, float]:
    """Seconds per round trip of an empty actor call, and per call when 2 actors take n calls."""
    import ray

    @ray.remote(num_cpus=1)
    class Nop:
        def f(self, x: int) -> int:
            return x

    actors = [Nop.remote(), Nop.remote()]
    ray.get([a.f.remote(0) for a in actors])
    t0 = time.perf_counter()
    for i in range(n):
        ray.get(actors[0].f.remote(i))
    serial = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    ray.get([actors[i % 2].f.remote(i) for i in range(n)])
    batched = (time.perf_counter() - t0) / n
    for a in actors:
        ray.kill(a)
    return {"round_trip_s": serial, "pipelined_s": batched}


def project(frame_s: dict[int, float], overhead_s: float, machines: list[int], cores: int, games: int,
            seeds: int, episodes_per_cell: int, frames_per_episode: int) -> dict[int, float]:
    """Wall seconds of games x len(frame_s) T x seeds cells, episodes as tasks on machines x cores
    workers (longest first onto the earliest free worker), each task paying ``overhead_s``."""
    tasks = []
    for T, per_frame in frame_s.items():
        tasks += [per_frame * frames_per_episode + overhead_s] * (games * seeds * episodes_per_cell)
    tasks.sort(reverse=True)
    out = {}
    for m in machines:
        free = [0.0] * (m * cores)
        for t in tasks:
            heapq.heapreplace(free, free[0] + t)
        out[m] = max(free)
    return out


def main() -> None:  # noqa: C901 - one section after the other
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer episodes (a smoke run)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["cartpole", "nest", "lava", "pong", "ray", "speed"])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats of every configuration")
    ap.add_argument("--episodes-per-cell", type=int, default=10, help="projection: evaluation episodes per cell")
    ap.add_argument("--frames-per-episode", type=int, default=4000,
                    help="projection: agent steps per Atari episode (Pong: about 3,000-5,000; the cap is 18,000)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    keep_freed_memory()
    set_torch_threads(1)
    import ray

    use_ray = "ray" not in args.skip
    if use_ray:
        # 3 logical CPUs: the 1-worker and the 2-worker runners stay built side by side (only one
        # plays at a time; this machine has 2 cores)
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    out: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "quick": args.quick}
    tmp = Path(tempfile.mkdtemp(prefix="scaling-"))
    cart = tmp / "cartpole_dsqn.nir"
    write_graph(model_to_nir(load_checkpoint(ROOT / "examples" / "cartpole_dsqn.pt")), cart)
    eps = 8 if args.quick else 16
    workers = [1, 2] if use_ray else []
    if "speed" not in args.skip:
        executor_speed(ROOT / "examples" / "cartpole_dsqn.pt", args.quick, out)
    if "cartpole" not in args.skip:
        sweep("CartPole reference", cart, "CartPole-v1", "reference", [1, 2, 4, 8, 16], workers, eps,
              100 if args.quick else 200, {}, args.rounds, out)
    if "nest" not in args.skip and importlib.util.find_spec("nest"):
        sweep("CartPole NEST", cart, "CartPole-v1", "nest", [1, 2, 4, 8], workers, eps // 2,
              50 if args.quick else 100, {"threads": 1}, args.rounds, out)
    if "lava" not in args.skip and importlib.util.find_spec("lava"):
        sweep("CartPole Lava", cart, "CartPole-v1", "lava", [1, 2, 4, 8], workers, 8,
              25 if args.quick else 50, {}, args.rounds, out, copies=True)
    frame_s: dict[int, float] = {}
    if "pong" not in args.skip:
        pong_ts = [8] if args.quick else [8, 16, 32, 64]
        for T in pong_ts:
            g = tmp / f"pong_T{T}.nir"
            write_graph(model_to_nir(make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 84, 84), n_actions=6,
                                                     time_steps=T, seed=1)), g)
            if T == 8:
                sweep("Pong reference (T 8)", g, "ALE/Pong-v5", "reference", [1, 2, 4, 8], workers, 8,
                      30 if args.quick else 60, {}, args.rounds, out)
                rows = out["Pong reference (T 8)"]["rows"]
                frame_s[T] = 1.0 / rows["envs 1"]["frames_per_s"]
            else:
                plan, io, settings = setup(g, "ALE/Pong-v5", "reference", 2, 60, epsilon=0.05)
                backend = make_backend("reference", plan)
                secs, recs = LocalConfig(backend, io, settings, 1)()
                frame_s[T] = secs / sum(r["length"] for r in recs)
        print("\nPong reference, one process, seconds per agent step: "
              + ", ".join(f"T {T}: {s * 1e3:.1f} ms" for T, s in frame_s.items()))
        out["pong_frame_s"] = frame_s
    if use_ray:
        oh = ray_task_overhead()
        out["ray_overhead"] = oh
        print(f"\nRay: an empty actor call takes {oh['round_trip_s'] * 1e3:.2f} ms round trip, "
              f"{oh['pipelined_s'] * 1e3:.2f} ms each when 2 actors take 200 calls at once")
        if frame_s:
            games, seeds, machines, cores = 17, 3, [1, 8, 64], 2
            wall = project(frame_s, oh["round_trip_s"], machines, cores, games, seeds, args.episodes_per_cell,
                           args.frames_per_episode)
            out["projection"] = {"games": games, "T": list(frame_s), "seeds": seeds, "cores_per_machine": cores,
                                 "episodes_per_cell": args.episodes_per_cell,
                                 "frames_per_episode": args.frames_per_episode, "wall_s": wall}
            print(f"\nTan et al.'s table, {games} games x T {list(frame_s)} x {seeds} seeds, "
                  f"{args.episodes_per_cell} episodes of {args.frames_per_episode} steps per cell, reference "
                  f"executor, {cores} workers per machine like this one:")
            for m, s in wall.items():
                print(f"  {m:>3} machine(s): {s / 3600:8.1f} h")
        ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
