"""Hahn 2020's comparison in one table: DQN, DSQN, direct conversion, classifier (indirect)
conversion and policy-gradient conversion on CartPole-v1 and MountainCar-v0, and policy-gradient
conversion alone on Acrobot-v1 (a second task for the PG conversion, with no DQN or DSQN).

For each task:

* **DQN** — ``examples/cartpole_dqn.pt`` and ``examples/mountaincar_dqn.pt`` (``--mc-dqn`` names
  another; how they were made: examples/README.md). Acrobot has no DQN or DSQN: PG rows only.
* **DSQN** — ``examples/cartpole_dsqn.pt`` and ``examples/mountaincar_dsqn.pt`` (trained directly).
* **direct conversion** — ``convert-dqn`` on the DQN (Tan/Hahn: IF, soft reset).
* **classifier conversion** — ``train-classifier`` on the DQN's greedy actions, then ``convert-dqn``.
* **PG conversion** — a PPO (ReLU MLP) trained here by Stable-Baselines3, read with
  ``import-agent`` (raw observations; MountainCar trained with the energy shaping used for the
  DSQN), then ``convert-dqn``. ``train_ppo`` still supports ``VecNormalize`` (``VECNORMALIZE``).

Torch rows are played by ``evaluate-agent``'s code; spiking rows are exported to NIR and run
closed loop on the reference backend (``run-backend --env ... --compare SOURCE``), which gives the
return, the step agreement with the source network on the SNN's own trajectory, and the
spikes per step. SOPs per observation = sum over hidden layers of spikes x fan-out (the next
layer's width; these are MLPs), the input current and the readout excluded.

Returns are mean ± std over all episodes of all seeds (episode i of seed s is reset with
seed ``1000 s + i``).

    nice -n 5 .venv/bin/python benchmarks/hahn.py --out out/hahn [--envs Acrobot-v1 --episodes 10 --seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ENVS = ("CartPole-v1", "MountainCar-v0", "Acrobot-v1")
DQN_TASKS = {  # tasks with a bundled DQN and DSQN: every row; the others get the PPO rows only
    "CartPole-v1": ("cartpole_dqn.pt", "cartpole_dsqn.pt"),
    "MountainCar-v0": ("mountaincar_dqn.pt", "mountaincar_dsqn.pt"),
}
HAHN = {  # Hahn 2020's reported returns (DSQN trained directly vs DQN)
    "CartPole-v1": {"DQN": 226.31, "DSQN": 454.84},
    "MountainCar-v0": {"DQN": -175.4, "DSQN": -130.92},
}
PPO_SETTINGS = {
    # RL-Zoo's CartPole PPO, ReLU instead of Tanh so the actor converts
    "CartPole-v1": dict(n_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                        ent_coef=0.0, learning_rate=1e-3, clip_range=0.2),
    # MountainCar: the potential-based energy shaping (as for the DSQN) on raw observations, ReLU. With
    # VecNormalize the same settings left the actor at -200 after 150,000 steps; on raw observations
    # it reaches the flag after 300,000 (-200 still at 180,000; which change mattered: docs/IMPORT.md)
    "MountainCar-v0": dict(n_envs=8, n_steps=128, batch_size=256, gae_lambda=0.95, gamma=0.99, n_epochs=10,
                           ent_coef=0.0, learning_rate=1e-3, clip_range=0.2),
    # Acrobot: CleanRL's classic-control PPO settings (4 envs, 128 steps, 4 minibatches of 128, 4 epochs,
    # lr 2.5e-4 held constant, ent_coef 0.01) on raw observations, ReLU. RL-Zoo's settings
    # (VecNormalize, 16 envs, n_steps 256, lambda 0.94) learn with Tanh but left every ReLU run
    # at -500 here; without VecNormalize the ReLU actor learns (docs/IMPORT.md)
    "Acrobot-v1": dict(n_envs=4, n_steps=128, batch_size=128, gae_lambda=0.95, gamma=0.99, n_epochs=4,
                       ent_coef=0.01, learning_rate=2.5e-4, clip_range=0.2),
}
VECNORMALIZE: tuple[str, ...] = ()  # tasks whose PPO trains under VecNormalize (none now)


def log(msg: str) -> None:
    print(f"[hahn {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_cli(module: str, args: list[str]) -> None:
    """Run one of our console scripts as a subprocess (its own torch state, one thread)."""
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def train_ppo(env_id: str, steps: int, seed: int, out: Path) -> dict[str, Any]:
    """A ReLU PPO trained by SB3; returns where its zip (and VecNormalize stats) are, and the time."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from pipeline.envs import shape_reward

    hp = dict(PPO_SETTINGS[env_id])
    n_envs = hp.pop("n_envs")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    vecnorm = None
    wrap = None
    if env_id == "MountainCar-v0":
        wrap = lambda env: shape_reward(env, env_id, "mountaincar-energy", hp["gamma"])  # noqa: E731
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed, wrapper_class=wrap)
    if env_id in VECNORMALIZE:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False)
    model = PPO("MlpPolicy", venv, seed=seed, verbose=0,
                policy_kwargs=dict(activation_fn=torch.nn.ReLU, net_arch=[64, 64]), **hp)
    model.learn(steps)
    zip_path = out / f"ppo_{env_id.split('-')[0].lower()}.zip"
    model.save(zip_path)
    if isinstance(venv, VecNormalize):
        vecnorm = out / f"ppo_{env_id.split('-')[0].lower()}.vecnormalize.pkl"
        venv.save(str(vecnorm))
    venv.close()
    return {"zip": zip_path, "vecnormalize": vecnorm, "train_s": time.perf_counter() - t0, "steps": steps}


def sops_per_step(ckpt_path: Path, spikes_per_step: dict[str, float]) -> float:
    """Hidden-layer spikes x the width of the layer each drives (NIR nodes ``l{i}_spike``/``l{i}_lif``)."""
    from pipeline.checkpoint import load_checkpoint

    spec = load_checkpoint(ckpt_path).spec
    widths = [*spec.hidden[1:], spec.n_actions]
    total = 0.0
    for node, spikes in spikes_per_step.items():
        m = re.match(r"l(\d+)_", node)
        if m and int(m.group(1)) < len(widths):
            total += spikes * widths[int(m.group(1))]
    return total


def run_snn(ckpt: Path, env_id: str, compare: Path, seeds: list[int], episodes: int, out: Path) -> dict[str, Any]:
    """Closed loop on the reference backend, per seed; pooled returns, agreement, spikes, SOPs."""
    from exporters.nirio import write_graph
    from exporters.to_nir import model_to_nir
    from pipeline.bridge import read_results, summarize
    from pipeline.checkpoint import load_checkpoint

    snn = load_checkpoint(ckpt)
    nir_path = out / (ckpt.stem + ".nir")
    write_graph(model_to_nir(snn), nir_path)
    records = []
    t0 = time.perf_counter()
    for s in seeds:
        res = out / f"{ckpt.stem}.seed{s}.jsonl"
        res.unlink(missing_ok=True)
        run_cli("backends.cli", [str(nir_path), "--target", "reference", "--env", env_id, "--episodes",
                                 str(episodes), "--seed", str(1000 * s), "--compare", str(compare),
                                 "--results", str(res), "--no-progress"])
        records += read_results(res)[1]
    summ = summarize(records)
    sops = sops_per_step(ckpt, summ["spikes_per_step"])
    return {"returns": summ["returns"], "return_mean": summ["return_mean"], "return_std": summ["return_std"],
            "agreement": summ["agreement"], "T": snn.spec.time_steps, "sops": sops,
            "spikes_per_step": summ["spikes_per_step"], "wall_s": time.perf_counter() - t0}


def run_torch(ckpt: Path, seeds: list[int], episodes: int) -> dict[str, Any]:
    from pipeline.evaluate import evaluate_checkpoint

    t0 = time.perf_counter()
    returns: list[float] = []
    for s in seeds:
        returns += evaluate_checkpoint(ckpt, episodes=episodes, seed=1000 * s, progress=False)["returns"]
    return {"returns": returns, "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "agreement": 1.0, "T": None, "sops": None, "wall_s": time.perf_counter() - t0}


def convert(src: Path, dst: Path, T: int, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    rep = dst.with_suffix(".json")
    run_cli("pipeline.convert", [str(src), "-o", str(dst), "-T", str(T), "--norm", "data", "--readout",
                                 "spike_count", "--seed", str(seed), "--no-progress", "--json", str(rep)])
    ev = json.loads(rep.read_text()).get("evaluation", {})
    return {"convert_s": time.perf_counter() - t0, "heldout_agreement": ev.get("agreement")}


def bundled_agents(env_id: str, args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """The task's DQN and DSQN (None for a PG-only task); ``--mc-dqn`` replaces MountainCar's DQN."""
    if env_id not in DQN_TASKS:
        return None, None
    dqn, dsqn = (EXAMPLES / name for name in DQN_TASKS[env_id])
    return (Path(args.mc_dqn) if env_id == "MountainCar-v0" and args.mc_dqn else dqn), dsqn


def task(env_id: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    short = env_id.split("-")[0].lower()
    timings: dict[str, float] = {}
    seeds, episodes = args.seeds, args.episodes
    dqn, dsqn = bundled_agents(env_id, args)
    log(f"{env_id}: PPO ({args.ppo_steps[env_id]} steps)")
    ppo = train_ppo(env_id, args.ppo_steps[env_id], args.train_seed, out)
    timings["ppo_train_s"] = ppo["train_s"]
    actor = out / f"ppo_{short}_actor.pt"
    imp = ["--env", env_id, "-o", str(actor)] + (["--vecnormalize", str(ppo["vecnormalize"])]
                                                  if ppo["vecnormalize"] else [])
    run_cli("pipeline.sb3_import", [str(ppo["zip"]), *imp])
    clf, clf_info = None, None
    if dqn is not None:
        log(f"{env_id}: classifier of the DQN")
        clf = out / f"classifier_{short}.pt"
        t0 = time.perf_counter()
        run_cli("pipeline.classifier", [str(dqn), "-o", str(clf), "--observations", str(args.clf_obs),
                                        "--seed", str(args.train_seed), "--no-progress"])
        timings["classifier_train_s"] = time.perf_counter() - t0
        from pipeline.checkpoint import load_checkpoint

        clf_info = load_checkpoint(clf).provenance["classifier"]

    rows: list[dict[str, Any]] = []

    def add(method: str, source: str, res: dict[str, Any], **extra: Any) -> None:
        rows.append({"method": method, "source": source, **res, **extra})
        log(f"{env_id}: {method} T={res['T']} return {res['return_mean']:.2f} ± {res['return_std']:.2f}, "
            f"agreement {res['agreement']:.3f}")

    if dqn is not None:
        add("DQN", "-", run_torch(dqn, seeds, episodes), path=str(dqn))
    add("PPO actor (torch)", "-", run_torch(actor, seeds, episodes), path=str(actor))
    if dsqn is not None:
        add("DSQN (trained directly)", "DQN", run_snn(dsqn, env_id, dqn, seeds, episodes, out), path=str(dsqn))
    methods = [("PG conversion", actor, "pg")]
    if dqn is not None:
        methods = [("direct conversion", dqn, "direct"), ("classifier conversion", clf, "clf"), *methods]
    for T in args.T:
        for method, src, name in methods:
            dst = out / f"{name}_{short}_T{T}.pt"
            conv = convert(src, dst, T, args.train_seed)
            compare = actor if name == "pg" else dqn
            res = run_snn(dst, env_id, compare, seeds, episodes, out)
            add(method, "PPO actor" if name == "pg" else "DQN", res, **conv)
    return {"env_id": env_id, "rows": rows, "timings": timings, "classifier": clf_info,
            "ppo": {"steps": ppo["steps"], "settings": PPO_SETTINGS[env_id], "train_s": ppo["train_s"],
                    "vecnormalize": bool(ppo["vecnormalize"])},
            "hahn": HAHN.get(env_id, {}), "dqn": str(dqn) if dqn else None}


HEADING = "## Hahn 2020's comparison (DQN, DSQN, direct, classifier and policy-gradient conversion)"
METHOD = (
    "Made by `benchmarks/hahn.py` (one run per task; the line above each table gives its command, seeds, "
    "episodes, wall time and the machine's load average when it started; JSON in `<--out>/hahn.json`). "
    "Returns are mean ± std over all episodes of all seeds (episode i of seed s reset with 1000 s + i). "
    "Spiking rows run closed loop on the reference backend; agreement is the step agreement with the named "
    "source network on the spiking agent's own trajectory; SOPs per observation are hidden-layer spikes × "
    "the width they drive. Conversions: IF, soft reset, `--norm data --readout spike_count`, calibration "
    "seed 0. PPO: ReLU 64-64, SB3, trained by the script. Method and caveats: `docs/IMPORT.md`.")


def task_markdown(t: dict[str, Any]) -> str:
    """One task's block: its heading, the run that measured it, its table."""
    h, run = t["hahn"], t["run"]
    anchor = f"Hahn 2020: DQN {h['DQN']}, DSQN {h['DSQN']}" if h else "PG conversion only: no DQN or DSQN here"
    notes = (["VecNormalize"] if t["ppo"]["vecnormalize"] else ["raw observations"]) + (
        ["energy-shaped reward"] if t["env_id"] == "MountainCar-v0" else [])
    ppo = (f"PPO {t['ppo']['steps']:,} steps in {t['ppo']['train_s']:.0f} s"
           + (f" ({', '.join(notes)})" if notes else "")
           + (" with " + ", ".join(f"{k} {v}" for k, v in t["ppo"]["settings"].items()) if t["ppo"].get("settings")
              else ""))
    facts = [f"`{run['command']}`: {len(run['seeds'])} seeds × {run['episodes_per_seed']} episodes (seeds "
             f"{', '.join(map(str, run['seeds']))}), {run['wall_s']:.0f} s wall, load average "
             f"{run['load_at_start']:.1f} at its start", ppo]
    if t.get("dqn"):
        facts.append(f"DQN `{rel(t['dqn'])}`")
    if t.get("classifier"):
        facts.append(f"classifier held-out accuracy {100 * t['classifier']['heldout_accuracy']:.1f} %")
    lines = [f"**{t['env_id']}** ({anchor})", "", "; ".join(facts) + ".", "",
             "| method | agreement with | T | return (mean ± std) | agreement | SOPs / obs | Hahn 2020 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in t["rows"]:
        hahn = h.get("DQN", "") if r["method"] == "DQN" else h.get("DSQN", "") if r["method"].startswith("DSQN") else ""
        sops = f"{r['sops']:.0f}" if r["sops"] is not None else "(MACs)"
        agree = f"{100 * r['agreement']:.1f} %" if r["source"] != "-" else "-"
        lines.append(f"| {r['method']} | {r['source']} | {r['T'] or '-'} | {r['return_mean']:.2f} ± "
                     f"{r['return_std']:.2f} | {agree} | {sops} | {hahn} |")
    return "\n".join(lines) + "\n"


def rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def section(results: dict[str, Any]) -> str:
    """The docs/RESULTS.md section: how it was measured, then one block per task."""
    return "\n".join([HEADING, "", METHOD, "", *(task_markdown(t) for t in results["tasks"])])


def task_blocks(text: str) -> dict[str, str]:
    """The per-task blocks of an earlier section, keyed by environment id (``**<env>** (...`` starts one)."""
    starts = sorted((text.find(f"**{env}** ("), env) for env in ENVS if f"**{env}** (" in text)
    ends = [pos for pos, _ in starts[1:]] + [len(text)]
    return {env: text[pos:end].strip() + "\n" for (pos, env), end in zip(starts, ends)}


def merged_section(results: dict[str, Any], earlier: str) -> str:
    """This run's task blocks, and the earlier section's blocks of the tasks it did not measure."""
    blocks = task_blocks(earlier)
    blocks.update({t["env_id"]: task_markdown(t) for t in results["tasks"]})
    return "\n".join([HEADING, "", METHOD, "", *(blocks[env] for env in ENVS if env in blocks)])


def write_docs(results: dict[str, Any]) -> None:
    """docs/results/hahn.md, and the same section in docs/RESULTS.md (the rest of it untouched); the
    tasks this run did not measure keep their earlier blocks, each with its own command."""
    path = ROOT / "docs" / "results" / "hahn.md"
    text = merged_section(results, path.read_text() if path.is_file() else "").strip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    page_path = ROOT / "docs" / "RESULTS.md"
    page = page_path.read_text()
    start = page.find("## Hahn 2020's comparison")
    if start >= 0:
        end = page.find("\n## ", start + 3)
        page = page[:start] + text + ("\n" + page[end + 1:] if end >= 0 else "")
    else:
        anchor = page.find("## Robustness")
        page = page[:anchor] + text + "\n" + page[anchor:] if anchor >= 0 else page + "\n" + text
    page_path.write_text(page)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/hahn")
    p.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS)
    p.add_argument("--episodes", type=int, default=10, help="episodes per seed (10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("-T", type=int, nargs="+", default=[50, 200], help="conversion T (50 200)")
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--cartpole-ppo-steps", type=int, default=50_000)
    p.add_argument("--mountaincar-ppo-steps", type=int, default=300_000)
    p.add_argument("--acrobot-ppo-steps", type=int, default=160_000)
    p.add_argument("--mc-dqn", help="a MountainCar DQN checkpoint (default: examples/mountaincar_dqn.pt)")
    p.add_argument("--clf-obs", type=int, default=20_000)
    p.add_argument("--merge", nargs="+", help="only write one table from these hahn.json files")
    p.add_argument("--docs", action="store_true", help="write the section of docs/RESULTS.md")
    args = p.parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        merged = {"tasks": [t for part in parts for t in part["tasks"]]}  # each task carries its run
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "hahn.json").write_text(json.dumps(merged, indent=2, default=float))
        (out / "hahn.md").write_text(section(merged))
        print(section(merged))
        if args.docs:
            write_docs(merged)
        return 0
    args.ppo_steps = {"CartPole-v1": args.cartpole_ppo_steps, "MountainCar-v0": args.mountaincar_ppo_steps,
                      "Acrobot-v1": args.acrobot_ppo_steps}
    for env_id in args.envs:  # before any training: every bundled agent a task needs is there
        for path in bundled_agents(env_id, args):
            if path is not None and not path.is_file():
                print(f"error: {env_id} needs {path}, which is not there (examples/README.md says how it was made)",
                      file=sys.stderr)
                return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    command = " ".join(["benchmarks/hahn.py", *(sys.argv[1:] if argv is None else argv)])
    results: dict[str, Any] = {"command": command, "seeds": args.seeds, "episodes_per_seed": args.episodes,
                               "T": args.T, "tasks": []}
    for env_id in args.envs:
        t_task, load = time.perf_counter(), os.getloadavg()[0]
        results["tasks"].append(task(env_id, args, out))
        results["tasks"][-1]["run"] = {"command": command, "seeds": args.seeds, "episodes_per_seed": args.episodes,
                                       "load_at_start": load, "wall_s": time.perf_counter() - t_task}
        results["wall_s"] = time.perf_counter() - t0
        (out / "hahn.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "hahn.md").write_text(section(results))
    print(section(results))
    if args.docs:
        write_docs(results)
    log(f"wall time {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
