"""The benchmark entry point's plumbing: one matrix cell, refusals, reports from JSON.

The measurements themselves are run by ``make bench``; here the pieces that turn a backend's
output into the figures are checked on tiny graphs, so that a wrong key or a lost number
fails fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest

from backends.reference import ReferenceBackend
from benchmarks import backend_cell, report, run_all
from exporters.to_nir import model_to_nir
from exporters.zoo import make_checkpoint
from pipeline.errors import UserError


def _tiny(tmp_path: Path, kind: str = "liu", n: int = 4) -> tuple[Path, Path, Path, np.ndarray]:
    ckpt = make_checkpoint(kind, obs_shape=(4,), n_actions=2, time_steps=6, seed=1, hidden=(8, 8))
    graph = model_to_nir(ckpt)
    gpath, opath, rpath = tmp_path / "g.nir", tmp_path / "obs.npy", tmp_path / "ref.npz"
    nir.write(str(gpath), graph)
    obs = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    np.save(opath, obs)
    ReferenceBackend(graph, dtype="float64").run(obs).save(rpath)
    return gpath, opath, rpath, obs


@pytest.mark.parametrize("target", ["reference", "nest"])
def test_cell_figures(tmp_path: Path, target: str) -> None:
    gpath, opath, rpath, obs = _tiny(tmp_path)
    out = tmp_path / "cell.json"
    assert backend_cell.main(["--target", target, "--graph", str(gpath), "--obs", str(opath), "--reference",
                              str(rpath), "--out", str(out)]) == 0
    cell = json.loads(out.read_text())
    assert cell["n"] == len(obs)
    assert cell["agreement"] == 1.0 and cell["spike_counts_equal"] == 1.0
    assert cell["q_abs_err_max"] < 1e-4
    assert cell["timing_ms"]["simulate_median"] > 0 and cell["build_s"] >= 0
    assert cell["peak_rss_mb"] >= cell["rss_before_build_mb"] > 0
    # the SOPs are the reference spikes times the fan-out: 8 hidden neurons feed 8, then 2
    ref = ReferenceBackend(nir.read(str(gpath)), dtype="float64").run(obs)
    l0, l1 = (v.reshape(len(obs), -1).sum(axis=1).mean() for v in ref.spikes.values())
    assert cell["work"]["total_sops"] == pytest.approx(8 * l0 + 2 * l1) == pytest.approx(cell["sops"])
    assert cell["energy_est"]["pj"] == cell["energy_pj"]["snn_45nm"]
    assert 0 < cell["sim_per_step"] <= cell["wall_per_step"]
    assert cell["energy_pj"]["snn_45nm"] > 0 and cell["energy_pj"]["dqn_macs"] == 4 * 8 + 8 * 8 + 8 * 2


def test_cell_disagreement_is_measured(tmp_path: Path) -> None:
    gpath, opath, rpath, obs = _tiny(tmp_path)
    ref = ReferenceBackend(nir.read(str(gpath)), dtype="float64").run(obs)
    flipped = type(ref)(q=-ref.q, action=1 - ref.action, spikes=ref.spikes)
    flipped.save(rpath)
    out = tmp_path / "cell.json"
    backend_cell.main(["--target", "reference", "--graph", str(gpath), "--obs", str(opath), "--reference",
                       str(rpath), "--out", str(out)])
    cell = json.loads(out.read_text())
    assert cell["agreement"] == 0.0 and cell["q_abs_err_max"] > 0


def test_refusal_is_unsupported_not_a_crash(tmp_path: Path) -> None:
    gpath, opath, rpath, _ = _tiny(tmp_path, kind="hahn")  # soft reset: sPyNNaker 7.4 has none
    with pytest.raises(run_all.Unsupported, match="soft"):
        run_all.run_script(["benchmarks/backend_cell.py", "--target", "spinnaker-fixedpoint", "--graph", str(gpath),
                            "--obs", str(opath), "--reference", str(rpath), "--out", str(tmp_path / "c.json")])
    with pytest.raises(RuntimeError, match="exited 1"):
        run_all.run_script(["-c", "raise SystemExit(1)"])


def test_bad_choices() -> None:
    with pytest.raises(UserError, match="unknown section"):
        run_all.main(["--only", "nope"])
    with pytest.raises(UserError, match="unknown backend"):
        run_all.main(["--backends", "loihi3"])


def _results() -> dict:
    cell = {"task": "CartPole-v1", "model": "liu-dsqn", "target": "nest", "note": "n", "n": 10, "agreement": 0.9,
            "q_abs_err_max": 0.5, "q_rel_err_max": 0.01, "spike_counts_equal": 0.8, "build_s": 0.5,
            "rss_before_build_mb": 300.0, "peak_rss_mb": 400.0, "peak_rss_children_mb": 40.0,
            "timing_ms": {"set_input_median": 0.1, "simulate_median": 1.0, "read_out_median": 0.2,
                          "wall_per_step_median": 1.4, "wall_over_simulate": 1.4},
            "work": {"total_sops": 1000.0, "total_spikes": 100.0},
            "energy_pj": {"snn_45nm": 900.0, "same_arch_dqn_45nm": 5000.0, "dqn_macs": 1000}}
    refused = {"task": "CartPole-v1", "model": "liu-dsqn", "target": "lava", "note": "n",
               "unsupported": "node 'x' cannot be expressed"}
    return {
        "command": "python benchmarks/run_all.py --quick", "profile": {"name": "quick"}, "started": "now",
        "commit": "abc", "wall_s": 12.0, "section_wall_s": {"matrix": 10.0},
        "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 24, "os": "linux", "load_at_start": [1.0, 1.0, 1.0]},
        "versions": {"python": "3.11"}, "anchors": run_all.ANCHORS, "missing": {"pong-dqn": "not found"},
        "errors": {},
        "matrix": {"cells": [cell, refused], "reference": "float64", "cartpole_obs": "c", "atari_obs": "a"},
        "scores": {"env_seeds": "s", "rows": [{"label": "CartPole liu-dsqn", "env_id": "CartPole-v1",
                                                "model_kind": "dsqn", "variant": "liu", "seeds": [0, 1],
                                                "episodes_per_seed": 3, "mean_return": 487.25, "std_return": 3.5,
                                                "std_of_seed_means": 1.0}]},
        "robustness": {"rows": [{"checkpoint": "a.pt", "model_kind": "dqn", "attack": "fgsm", "eps": e,
                                 "agreement": 1 - e, "return_mean": 500 - 100 * e, "return_std": 1.0,
                                 "env_id": "CartPole-v1", "model": "DQN", "eps_unit": "std", "n_obs": 50,
                                 "episodes": 2}
                                for e in (0.0, 0.1, 0.5)]},
    }


def test_report_from_json(tmp_path: Path) -> None:
    res = _results()
    docs = tmp_path / "docs"
    report.write_reports(res, tmp_path, docs=docs)
    md = (tmp_path / "results.md").read_text()
    assert "| CartPole-v1 | liu-dsqn | 90.00 % (10) | n/a¹ |" in md
    assert "cannot be expressed" in md and "pong-dqn: not found" in md
    assert "487.2 ± 3.5" in md and "| fgsm | 0.1 | 90.0 % | 490.0 ± 1.0 |" in md
    for png in ("agreement_matrix.png", "step_split.png", "robustness.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert (docs / "results" / png).is_file()
    page = (docs / "RESULTS.md").read_text()
    assert page.startswith("# Results") and "](results/agreement_matrix.png)" in page


def test_partial_run_keeps_other_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "bench"
    out.mkdir()
    earlier = _results()
    earlier.update(profile={"name": "quick"}, section_wall_s={"matrix": 10.0, "forward": 5.0},
                   forward={"stale": True})
    (out / "results.json").write_text(json.dumps(earlier))
    monkeypatch.setattr(run_all, "section_forward", lambda prof, work: {
        "time_steps": 64, "threads": 1, "torch": "x", "median_ms": {"a": 1.0}, "ratio_x": 1.5})
    assert run_all.main(["--quick", "--only", "forward", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["forward"]["ratio_x"] == 1.5 and "stale" not in res["forward"]
    assert res["matrix"] == earlier["matrix"] and res["section_wall_s"]["matrix"] == 10.0
    assert res["section_runs"]["matrix"]["command"] == earlier["command"]
    assert "--only forward" in res["section_runs"]["forward"]["command"]
    md = (out / "results.md").read_text()
    assert "more than one run" in md and "| ratio_x | 1.500 |" in md


def test_matrix_rerun_of_some_columns_keeps_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "bench"
    out.mkdir()
    earlier = _results()
    earlier.update(profile={"name": "quick"})
    (out / "results.json").write_text(json.dumps(earlier))
    old_nest, old_lava = earlier["matrix"]["cells"]
    assert "unsupported" in old_lava
    fresh = {**old_nest, "target": "lava", "agreement": 1.0}
    monkeypatch.setattr(run_all, "section_matrix", lambda prof, work, missing, backends: {
        "cells": [fresh], "reference": "float64", "cartpole_obs": "c", "atari_obs": "a"})
    assert run_all.main(["--quick", "--only", "matrix", "--backends", "lava", "--out", str(out)]) == 0
    cells = json.loads((out / "results.json").read_text())["matrix"]["cells"]
    assert [c["target"] for c in cells] == ["nest", "lava"]  # BACKENDS order
    assert cells[0] == old_nest and "rerun_started" not in cells[0]
    assert cells[1]["agreement"] == 1.0 and "unsupported" not in cells[1] and cells[1]["rerun_started"]
    md = (out / "results.md").read_text()
    assert "Columns rerun later, under the load of that time: `lava` (started" in md
    assert f"The other columns come from `{earlier['command']}`" in md


def test_energy_plot_shows_every_bar(tmp_path: Path) -> None:
    """The log axis spans whole decades around every value (no bar cut at the bottom), and a row
    without a spiking model is drawn as 'no SNN', not as a gap."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from benchmarks.report import plot_energy

    rows = [{"label": "CartPole dqn", "energy_dqn_pj": 2.1e4, "energy_snn_pj": None},
            {"label": "Pong converted", "energy_dqn_pj": 4.2e7, "energy_snn_pj": 4.3e7}]
    seen = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *a, **k):
        seen["fig"] = fig
        return real_savefig(fig, *a, **k)

    plt.Figure.savefig = keep
    try:
        plot_energy(rows, tmp_path / "energy.png")
    finally:
        plt.Figure.savefig = real_savefig
    ax = seen["fig"].axes[0]
    lo, hi = ax.get_ylim()
    assert lo <= 21.0 and hi >= 4.3e4 and ax.get_title()
    assert "no SNN" in [t.get_text() for t in ax.texts]
    assert (tmp_path / "energy.png").stat().st_size > 10_000


def _hahn_task(env_id: str, pg_only: bool) -> dict:
    run = {"command": f"benchmarks/hahn.py --envs {env_id}", "seeds": [0], "episodes_per_seed": 2,
           "load_at_start": 3.0, "wall_s": 60.0}
    rows = [{"method": "PPO actor (torch)", "source": "-", "T": None, "return_mean": -80.5, "return_std": 9.0,
             "agreement": 1.0, "sops": None},
            {"method": "PG conversion", "source": "PPO actor", "T": 20, "return_mean": -91.25, "return_std": 12.0,
             "agreement": 0.9512, "sops": 1234.4}]
    if not pg_only:
        rows.insert(0, {"method": "DQN", "source": "-", "T": None, "return_mean": -101.0, "return_std": 8.0,
                        "agreement": 1.0, "sops": None})
    return {"env_id": env_id, "rows": rows, "run": run, "hahn": {} if pg_only else {"DQN": -175.4, "DSQN": -130.92},
            "dqn": None if pg_only else "examples/mountaincar_dqn.pt",
            "classifier": None if pg_only else {"heldout_accuracy": 0.987},
            "ppo": {"steps": 2048, "train_s": 5.0, "vecnormalize": True, "settings": {}}}


def test_hahn_section_from_json_and_kept_blocks() -> None:
    """run_all's hahn section renders from its JSON (a PG-only task too); a run of some tasks keeps the
    earlier blocks of the others in docs/results/hahn.md, each with its own command."""
    from benchmarks import hahn

    res = {**_results(), "hahn": {"tasks": [_hahn_task("Acrobot-v1", pg_only=True)]}}
    md = report.md_hahn(res)
    assert "**Acrobot-v1** (PG conversion only" in md and "| PG conversion | PPO actor | 20 | -91.25 ± 12.00 | 95.1 % | 1234 |" in md
    assert "`benchmarks/hahn.py --envs Acrobot-v1`: 1 seeds × 2 episodes" in md and "(VecNormalize)" in md
    earlier = hahn.section({"tasks": [_hahn_task("CartPole-v1", pg_only=False), _hahn_task("Acrobot-v1", True)]})
    merged = hahn.merged_section({"tasks": [_hahn_task("MountainCar-v0", pg_only=False)]}, earlier)
    blocks = hahn.task_blocks(merged)
    assert list(blocks) == ["CartPole-v1", "MountainCar-v0", "Acrobot-v1"]
    assert blocks["CartPole-v1"] == hahn.task_blocks(earlier)["CartPole-v1"]
    assert "energy-shaped reward" in blocks["MountainCar-v0"] and "classifier held-out accuracy 98.7 %" in merged
    assert merged.count(hahn.HEADING) == 1
    raw = _hahn_task("MountainCar-v0", pg_only=False)
    raw["ppo"]["vecnormalize"] = False  # hahn.py's PPOs now train on raw observations
    assert "PPO 2,048 steps in 5 s (raw observations, energy-shaped reward)" in hahn.task_markdown(raw)


_AS_SCRIPT = r"""
import runpy, sys
from pathlib import Path
base = [p for p in sys.path if p not in ("", ".")]
failed = []
for script in sys.argv[1:]:
    # as `python benchmarks/x.py` from another folder: only the script's folder is added to the path
    sys.path[:] = [str(Path(script).parent), *base]
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        del sys.modules[name]
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    except Exception as e:  # an import that fails outside the repository's own folder
        code = f"{type(e).__name__}: {e}"
    if code not in (0, None):
        failed.append(f"{Path(script).name}: {code}")
print("FAILED " + "; ".join(failed) if failed else "ALL OK")
"""


def test_every_benchmark_script_runs_as_a_script(tmp_path: Path) -> None:
    """Each benchmark's docstring says ``python benchmarks/x.py ...``: that must work without
    PYTHONPATH from any folder (sweep_conversion.py and bench_lava.py once failed to import
    ``benchmarks`` so)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    scripts = sorted(str(p) for p in (root / "benchmarks").glob("*.py")
                     if '__name__ == "__main__"' in p.read_text())
    assert len(scripts) > 10
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _AS_SCRIPT, *scripts], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip().splitlines()[-1:] == ["ALL OK"], (proc.stdout[-2000:], proc.stderr[-2000:])


def test_conversion_section_resumes_an_earlier_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupted ``make bench`` keeps its finished sweep settings: the second run passes
    ``--resume`` to the sweep whose results file is there, and only to that one."""
    calls: list[list[str]] = []

    def fake_run_script(args: list[str], timeout: float | None = None) -> None:
        calls.append(args)
        out = Path(args[args.index("--out") + 1]).with_suffix(".json")
        out.write_text(json.dumps({"rows": [], "ran": len(calls)}))

    monkeypatch.setattr(run_all, "run_script", fake_run_script)
    prof = run_all.QUICK
    missing: dict[str, str] = {}
    first = run_all.section_conversion(prof, tmp_path, missing)
    assert all("--resume" not in c for c in calls) and first["cartpole"]["ran"] == 1
    (tmp_path / "sweep_pong.json").unlink(missing_ok=True)
    calls.clear()
    run_all.section_conversion(prof, tmp_path, missing)
    assert "--resume" in calls[0]  # the CartPole sweep's file was left by the first run
    assert all("--resume" not in c for c in calls[1:])  # the Pong one was not (removed above, or not run)


def test_quick_scores_cut_pong_episodes_and_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """make bench-quick is a small run: a whole Pong game takes minutes per agent, so its score episodes are
    cut at atari_score_max_steps, and the row's label and ``max_steps`` say so; the full profile
    plays whole games."""
    from benchmarks import ray_tasks

    assert (run_all.ROOT / "examples" / "pong_dqn.pt").is_file()  # bundled: the Pong rows must be there
    seen: list[tuple] = []

    def fake(calls, workers=None, address=None):
        seen.extend(calls)
        return [{"returns": [1.0], "mean_return": 1.0} for _ in calls]

    monkeypatch.setattr(ray_tasks, "run_scores", fake)
    rows = run_all.section_scores(run_all.QUICK, tmp_path, {})["rows"]
    pong = [r for r in rows if r["env_id"].startswith("ALE/")]
    assert pong and all(r["max_steps"] == 200 and r["label"].endswith("(first 200 steps)") for r in pong)
    assert all(r["max_steps"] is None for r in rows if not r["env_id"].startswith("ALE/"))
    assert {c[3] for c in seen if "pong" in c[0].name} == {200}
    assert run_all.FULL.atari_score_max_steps is None
