"""Markdown tables and PNGs from ``benchmarks/run_all.py``'s results.json.

Kept apart from the measuring code so a report can be rebuilt (``run_all.py --report-only``)
without re-running anything; every number printed here is read from the JSON.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from backends import BENCH_COLUMNS

BACKEND_ORDER = BENCH_COLUMNS  # the agreement matrix's columns, in table order (backends.REGISTRY)


ROOT = Path(__file__).resolve().parents[1]
_RUNS_PATH = re.compile(r"(?<![\w/])runs/[\w./-]+\.pt")


def mark_unbundled(text: str) -> str:
    """Flag a checkpoint under runs/ that a clone does not have (an earlier run's input named by
    its path in the author's run folder), so that a page never reads as if it shipped."""
    return _RUNS_PATH.sub(lambda m: m.group(0) if (ROOT / m.group(0)).is_file()
                          else f"{m.group(0)} (the author's run, not in the repository)", text)


def rerun_note(sec: dict[str, Any]) -> str:
    """Which columns partial reruns (``--only matrix --backends ...``) replaced, and where the rest came from."""
    reruns: dict[str, list[str]] = {}
    for c in sec.get("cells", []):
        if "rerun_started" in c and c["target"] not in reruns.setdefault(c["rerun_started"], []):
            reruns[c["rerun_started"]].append(c["target"])
    if not reruns:
        return ""
    earlier = sec.get("earlier_run") or {}
    src = (f"`{earlier['command']}`, started {earlier['started']}, commit `{earlier['commit']}`"
           if earlier else "an earlier run")
    parts = [f"{', '.join(f'`{t}`' for t in targets)} (started {started})" for started, targets in reruns.items()]
    return (f"Columns rerun later, under the load of that time: {'; '.join(parts)}. "
            f"The other columns come from {src}.")


def _f(x: Any, fmt: str = "{:.1f}", none: str = "–") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return none
    return fmt.format(x)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _models(cells: list[dict[str, Any]]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for c in cells:
        key = (c["task"], c["model"])
        if key not in seen:
            seen.append(key)
    return seen


def _targets(cells: list[dict[str, Any]]) -> list[str]:
    present = {c["target"] for c in cells}
    return [t for t in BACKEND_ORDER if t in present]


def _cell(cells: list[dict[str, Any]], task: str, model: str, target: str) -> dict[str, Any] | None:
    for c in cells:
        if (c["task"], c["model"], c["target"]) == (task, model, target):
            return c
    return None


# ---------------------------------------------------------------- sections


def md_header(res: dict[str, Any]) -> str:
    m = res["machine"]
    v = ", ".join(f"{k} {val}" for k, val in res["versions"].items())
    walls = ", ".join(f"{k} {s:.0f} s" for k, s in res.get("section_wall_s", {}).items())
    out = [
        f"Command: `{res['command']}` (profile **{res['profile']['name']}**), started {res['started']}, "
        f"commit `{res['commit']}`, total wall time of the sections **{res.get('wall_s', 0):.0f} s** ({walls}).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_at_start'])} (the machine is shared: compare ratios "
        "measured in one run, not absolute times across runs).",
        "",
        f"Versions: {v}.",
    ]
    runs = res.get("section_runs", {})
    if len({(r["command"], r["started"]) for r in runs.values()}) > 1:
        out += ["", "Sections were produced by more than one run:", ""]
        out += [f"- {k}: `{r['command']}`, started {r['started']}, commit `{r['commit']}`" for k, r in runs.items()]
    if res.get("missing"):
        allowed = (" The run was allowed to go on without them (`--allow-missing` or the quick profile), so "
                   "their figures are left out of the tables below." if res["profile"].get("allow_missing") else "")
        out += ["", f"**Not available in this run** (inputs missing, with what makes them).{allowed}", ""]
        out += [f"- {k}: {mark_unbundled(val)}" for k, val in res["missing"].items()]
    if res.get("errors"):
        out += ["", "**Sections that failed:**", ""]
        out += [f"- {k}: `{val}`" for k, val in res["errors"].items()]
    return "\n".join(out)


def md_scores(res: dict[str, Any]) -> str:
    sec = res.get("scores")
    if not sec:
        return ""
    rows = []
    for r in sec["rows"]:
        rows.append([r["label"], r["env_id"], f"{r['model_kind']} {r.get('variant') or ''}".strip(),
                     f"{len(r['seeds'])} × {r['episodes_per_seed']}",
                     f"{r['mean_return']:.1f} ± {r['std_return']:.1f}", f"{r['std_of_seed_means']:.1f}",
                     res["anchors"].get(r["env_id"], "")])
    return ("## Task scores\n\nGreedy episodes (ε 0), env seeds " + sec["env_seeds"] + "; mean ± std over all "
            "episodes of all seeds, and the std of the per-seed means.\n\n"
            + table(["agent", "env", "kind", "seeds × episodes", "return", "std of seed means", "anchor"], rows))


def md_matrix(res: dict[str, Any]) -> str:
    sec = res.get("matrix")
    if not sec:
        return ""
    cells = sec["cells"]
    targets = _targets(cells)
    agree, err, spikes = [], [], []
    for task, model in _models(cells):
        a, e, s = [task, model], [task, model], [task, model]
        for t in targets:
            c = _cell(cells, task, model, t)
            if c is None:
                a.append("–"), e.append("–"), s.append("–")
            elif "unsupported" in c:
                a.append("n/a¹"), e.append("n/a¹"), s.append("n/a¹")
            elif "error" in c:
                a.append("error"), e.append("error"), s.append("error")
            else:
                a.append(f"{100 * c['agreement']:.2f} % ({c['n']})")
                e.append(f"{c['q_abs_err_max']:.2g} ({100 * c['q_rel_err_max']:.2g} %)")
                s.append(f"{100 * c['spike_counts_equal']:.1f} %")
        agree.append(a), err.append(e), spikes.append(s)
    notes = []
    for task, model in _models(cells):
        c = next(c for c in cells if (c["task"], c["model"]) == (task, model))
        notes.append(f"- {task} / {model}: {mark_unbundled(c.get('note', ''))}")
    errors = [f"- {c['task']} / {c['model']} / {c['target']}: `{c['error'][:300]}`" for c in cells if "error" in c]
    reasons = sorted({c["unsupported"] for c in cells if "unsupported" in c})
    unsupported = ("¹ The backend refuses the graph (one clear error, exit 2):\n\n"
                   + "\n".join(f"- {r}" for r in reasons)) if reasons else ""
    return "\n\n".join(filter(None, [
        "## Agreement matrix\n\nEach backend runs the exported NIR graph one observation per call (as in the "
        f"closed loop), in its own process, against the reference executor in float64 ({sec['reference']}). "
        f"CartPole observations: {sec['cartpole_obs']}; Atari: {sec['atari_obs']}. "
        "`lava-fixed-w16` is `lava-fixed` with weight splitting (`--weight-bits 16`, docs/LAVA.md); "
        "`spinnaker-fixedpoint` is the numpy emulation of sPyNNaker's fixed-point arithmetic (no board here).",
        rerun_note(sec),
        "Actions equal to the reference (observations):",
        table(["task", "model", *targets], agree),
        "Largest |ΔQ| (relative to max |Q|):",
        table(["task", "model", *targets], err),
        "Observations whose spike counts match the reference in every layer:",
        table(["task", "model", *targets], spikes),
        "\n".join(notes),
        unsupported,
        ("Cells that failed:\n\n" + "\n".join(errors)) if errors else "",
    ]))


def md_timing(res: dict[str, Any]) -> str:
    sec = res.get("matrix")
    if not sec:
        return ""
    rows = []
    for c in sec["cells"]:
        if "timing_ms" not in c:
            continue
        t = c["timing_ms"]
        rows.append([c["task"], c["model"], c["target"], _f(c["build_s"], "{:.2f}"),
                     _f(c["rss_before_build_mb"], "{:.0f}"), _f(c["peak_rss_mb"], "{:.0f}"),
                     _f(c["peak_rss_children_mb"], "{:.0f}"),
                     _f(t["set_input_median"], "{:.2f}"), _f(t["simulate_median"], "{:.2f}"),
                     _f(t["read_out_median"], "{:.2f}"), _f(t["wall_per_step_median"], "{:.2f}"),
                     _f(t["wall_over_simulate"], "{:.2f}")])
    return ("## Per-step wall time, build time, memory\n\nMedians over the cell's observations, in ms; "
            "`set_input` includes the state reset, `wall/step` is the whole `run` call, `wall/sim` its sum "
            "over the simulate sum. Memory in MB: RSS of the cell's process before the build (imports, data), its "
            "peak (VmHWM), and the peak of its largest child process (Lava runs process models in children; a "
            "forked child starts from the parent's RSS, so this over- rather than under-states). The machine was "
            "shared with training jobs during the run: compare backends within a row group, not across runs.\n\n"
            + table(["task", "model", "backend", "build s", "RSS before MB", "peak MB", "child MB", "set_input", "simulate",
                     "read_out", "wall/step", "wall/sim"], rows))


def md_energy(res: dict[str, Any]) -> str:
    sec = res.get("energy")
    if not sec:
        return ""
    hw_names = [h["name"] for h in sec.get("hardware", [])]
    rows = []
    for r in sec["rows"]:
        hw = r.get("hardware_pj", {})
        rows.append([r["label"], str(r["time_steps"]), _f(r.get("spikes"), "{:,.0f}"), _f(r.get("sops"), "{:,.0f}"),
                     _f(r.get("input_macs"), "{:,}"), _f(r.get("bias_acs"), "{:,}"), f"{r['dqn_macs']:,}",
                     _f(r.get("energy_snn_pj") and r["energy_snn_pj"] / 1e3, "{:,.2f}"),
                     _f(r["energy_dqn_pj"] / 1e3, "{:,.2f}"), _f(r.get("snn_over_dqn"), "{:.3f}"),
                     *[_f(hw.get(n) and hw[n] / 1e3, "{:,.1f}") for n in hw_names]])
    em = sec["energy_model"]
    srcs = "\n".join(f"- **{h['name']}**: {_f(h.get('pj_per_sop'), '{:,} pJ', 'no figure')} per synaptic event — "
                     f"{h['source']}. Verification: {h['verified']}. {h.get('note', '')}"
                     for h in sec.get("hardware", []))
    by = {r["label"]: r for r in sec["rows"]}
    liu = by.get("CartPole liu-dsqn")
    conv = next((r for k, r in by.items() if k.startswith("CartPole converted")), None)
    ratio = ""
    if liu and conv and liu.get("snn_over_dqn") and conv.get("snn_over_dqn"):
        ratio = ("\n\nLiu DSQN vs converted SNN on CartPole, each relative to the DQN of its own architecture "
                 f"(the bundled agents differ in size): {liu['snn_over_dqn']:.3f} / {conv['snn_over_dqn']:.3f} = "
                 f"**{liu['snn_over_dqn'] / conv['snn_over_dqn']:.2f}** (anchor: {res['anchors']['energy']}).")
    dsqn = next((r for k, r in by.items() if k.startswith("Pong dsqn")), None)
    pconv = next((r for k, r in by.items() if k.startswith("Pong converted")), None)
    if dsqn and pconv and dsqn.get("energy_snn_pj") and pconv.get("energy_snn_pj"):  # one architecture: a direct ratio
        ratio += (f"\n\nPong, the bundled DSQN ({dsqn['label']}) vs the bundled converted SNN ({pconv['label']}), "
                  f"both Nature CNNs, on the same frames: {dsqn['energy_snn_pj'] / 1e3:,.2f} / "
                  f"{pconv['energy_snn_pj'] / 1e3:,.2f} nJ = **{dsqn['energy_snn_pj'] / pconv['energy_snn_pj']:.2f}** "
                  f"(anchor: {res['anchors']['energy']}).")
    per = sec.get("per_backend", [])
    prow = [[p["task"], p["model"], p["target"], _f(p.get("spikes"), "{:,.0f}"), _f(p.get("sops"), "{:,.0f}"),
             _f(p.get("snn_45nm") and p["snn_45nm"] / 1e3, "{:,.2f}")] for p in per]
    return ("## Energy estimate\n\n"
            f"Model: {em['name']} — MAC {em['e_mac_pj']} pJ, AC {em['e_ac_pj']} pJ ({em['source']}; {em['verified']}). "
            "SNN energy = SOPs × AC + first-layer input MACs × MAC + bias accumulates × AC; DQN energy = MACs × MAC "
            "(+ adds × AC) of the same architecture. Spike counts from the reference executor on "
            f"{sec['observations']}. Energies in nJ per observation.\n\n"
            + table(["model", "T", "spikes/obs", "SOPs", "input MACs", "bias ACs", "DQN MACs", "SNN nJ", "DQN nJ",
                     "SNN/DQN", *[f"{n} nJ" for n in hw_names]], rows)
            + ratio + "\n\nPer-synaptic-event hardware figures:\n\n" + srcs
            + ("\n\nThe same estimate from the spikes each backend produced (matrix cells):\n\n"
               + table(["task", "model", "backend", "spikes/obs", "SOPs", "SNN nJ"], prow) if prow else ""))


def md_conversion(res: dict[str, Any]) -> str:
    sec = res.get("conversion")
    if not sec:
        return ""
    out = ["## Conversion (DQN → SNN)\n\n" + res["anchors"]["conversion"] + "."]
    pong = sec.get("pong_checkpoint")
    for key, title in (("cartpole", "CartPole, bundled DQN"),
                       ("pong", f"Pong, the DQN {pong} (its score is under Task scores)" if pong else
                        "Pong, a DQN not bundled (its checkpoint lies outside the repository)")):
        s = sec.get(key)
        if not s:
            continue
        Ts = sorted({r["time_steps"] for r in s["rows"]})
        settings: list[tuple[str, str]] = []
        for r in s["rows"]:
            k = (r["normalization"], r["readout"])
            if k not in settings:
                settings.append(k)
        rows = []
        for norm, readout in settings:
            line = [norm, readout]
            for T in Ts:
                r = next((r for r in s["rows"] if (r["normalization"], r["readout"], r["time_steps"]) ==
                          (norm, readout, T)), None)
                if r is None:
                    line.append("–")
                else:
                    ret = f" ({r['return']:.0f})" if "return" in r else ""
                    line.append(f"{100 * r['agreement']:.1f} %{ret}")
            rows.append(line)
        dqn = s.get("dqn_return")
        head = (f"### {title}\n\nAgreement on {s['eval_obs']} held-out observations"
                + (f" (return over {s['episodes']} episodes in brackets; DQN {dqn['mean']:.1f})" if dqn else "")
                + f"; percentile {s['percentile']}, {s['reset']} reset, {s['encoding']} input.")
        out.append(head + "\n\n" + table(["normalisation", "readout", *[f"T {T}" for T in Ts]], rows))
    return "\n\n".join(out)


def md_robustness(res: dict[str, Any]) -> str:
    sec = res.get("robustness")
    if not sec or not sec.get("rows"):
        return ""
    rows = []
    for r in sec["rows"]:
        ret = r.get("return_mean")
        rows.append([Path(str(r.get("checkpoint", ""))).name, str(r.get("model_kind", "")), str(r.get("attack", "")),
                     _f(r.get("eps"), "{:.4g}"), _f(r.get("agreement") is not None and 100 * r["agreement"], "{:.1f} %"),
                     "–" if ret is None else f"{ret:.1f} ± {r.get('return_std', 0):.1f}"])
    return ("## Robustness (FGSM, Chen et al. 2022)\n\nFGSM on the network input (ε in units of each feature's "
            "std for CartPole, of the [0, 1] pixel range for Atari) and random-sign noise of the same size; "
            "agreement with the clean greedy action on recorded observations, and the return of episodes "
            f"attacked at every step. Anchor: {res['anchors']['robustness']}.\n\n"
            + table(["checkpoint", "kind", "attack", "ε", "agreement", "return"], rows))


def md_forward(res: dict[str, Any]) -> str:
    f = res.get("forward")
    if not f:
        return ""
    rows = [[k, f"{v:.2f}"] for k, v in f["median_ms"].items()]
    ratios = [[k, f"{v:.3f}"] for k, v in f.items() if k.startswith("ratio")]
    return (f"## Torch forward speed\n\nNature CNN, T {f['time_steps']}, {f['threads']} threads, torch "
            f"{f['torch']}; medians of interleaved repeats ({res['anchors']['forward']})."
            + ({True: " glibc keeps freed heap blocks (pipeline.runtime, as the console scripts do).",
                False: " glibc's default allocator settings."}.get(f.get("malloc_keep_freed"), "")) + "\n\n"
            + table(["case", "median ms"], rows) + "\n\n" + table(["ratio", "value"], ratios))


def md_spinnaker(res: dict[str, Any]) -> str:
    s = res.get("spinnaker")
    if not s:
        return ""
    rows = [[name, str(r.get("chips")), str(r.get("cores")), str(r.get("routing_entries")), f"{r.get('synapses', 0):,}",
             _f(r.get("map_seconds"), "{:.1f}")] for name, r in s.items() if isinstance(r, dict) and "cores" in r]
    return ("## sPyNNaker virtual board (mapping only)\n\n"
            + table(["network", "chips", "cores", "routing entries", "synapses", "mapping s"], rows))


# ---------------------------------------------------------------- plots


def plot_energy(rows: list[dict[str, Any]], path: Path) -> None:
    """DQN vs SNN energy per observation on a log axis that shows every bar whole (the axis spans
    whole decades around the values), each bar labelled with its value, and rows without a
    spiking model marked as such rather than left as a gap."""
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    snn = np.array([r["energy_snn_pj"] / 1e3 if r.get("energy_snn_pj") else np.nan for r in rows])
    dqn = np.array([r["energy_dqn_pj"] / 1e3 for r in rows])
    values = np.concatenate([dqn, snn])
    values = values[np.isfinite(values) & (values > 0)]
    lo = 10 ** np.floor(np.log10(values.min())) if values.size else 1e-3
    hi = 10 ** (np.ceil(np.log10(values.max())) + 0.5) if values.size else 1.0  # room for the labels
    fig, ax = plt.subplots(figsize=(9, 4.2))
    x = np.arange(len(rows))
    for offset, vals, label in ((-0.2, dqn, "DQN of the same architecture: multiply-accumulates x 4.6 pJ"),
                                (0.2, snn, "SNN: synaptic operations x 0.9 pJ (+ its input layer's MACs)")):
        bars = ax.bar(x + offset, np.where(np.isfinite(vals), vals, 0), 0.4, label=label)
        for bar, v in zip(bars, vals):
            text = "no SNN" if not np.isfinite(v) else (f"{v:.3g}" if v < 1e3 else f"{v:.2e}")
            y = lo * 1.3 if not np.isfinite(v) else v * 1.15
            ax.text(bar.get_x() + bar.get_width() / 2, y, text, ha="center", va="bottom", fontsize=7,
                    rotation=90 if np.isfinite(v) else 0, color="0.2" if np.isfinite(v) else "0.45")
    ax.set_xticks(x, labels, rotation=25, ha="right")
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_ylabel("nJ per observation (log scale)")
    ax.set_title("Estimated arithmetic energy per observation (45 nm float32 operation costs, "
                 "docs/ENERGY.md); lower is better", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_all(res: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []
    cells = [c for c in res.get("matrix", {}).get("cells", [])]
    if cells:
        models, targets = _models(cells), _targets(cells)
        grid = np.full((len(models), len(targets)), np.nan)
        state = np.full((len(models), len(targets)), "not run", dtype=object)
        for i, (task, model) in enumerate(models):
            for j, t in enumerate(targets):
                c = _cell(cells, task, model, t)
                if c and "agreement" in c:
                    grid[i, j] = 100 * c["agreement"]
                elif c:
                    state[i, j] = "error"
        fig, ax = plt.subplots(figsize=(max(1.6 * len(targets) + 4, 7.5), 0.55 * len(models) + 2))
        ax.set_facecolor("0.9")  # cells without a figure: light grey, labelled
        im = ax.imshow(grid, vmin=50, vmax=100, cmap="viridis", aspect="auto")
        for i in range(len(models)):
            for j in range(len(targets)):
                missing = np.isnan(grid[i, j])
                ax.text(j, i, state[i, j] if missing else f"{grid[i, j]:.1f}", ha="center", va="center",
                        color="0.3" if missing else ("w" if grid[i, j] < 80 else "k"), fontsize=8)
        ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
        ax.set_yticks(range(len(models)), [f"{t} / {m}" for t, m in models])
        fig.colorbar(im, ax=ax, label="% equal actions")
        fig.suptitle("Actions equal to the float64 reference's on the same observations (%)\n"
                     "error: the cell failed or was refused (see the table); not run: not measured",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "agreement_matrix.png", dpi=110)
        plt.close(fig)
        made.append("agreement_matrix.png")

        ok = [c for c in cells if "timing_ms" in c]
        if ok:
            # stacked segments on a log axis would misstate their sizes: the total on a log axis
            # on the left, and what share of it each phase takes (linear) on the right
            fig, (tot_ax, ax) = plt.subplots(1, 2, figsize=(12, 0.32 * len(ok) + 1.8), sharey=True,
                                             gridspec_kw={"width_ratios": [1, 1]})
            labels = [f"{c['task'].split()[0]} {c['model']} · {c['target']}" for c in ok]
            keys = (("set_input_median", "tab:blue", "set input (and reset state)"),
                    ("simulate_median", "tab:orange", "simulate T steps"),
                    ("read_out_median", "tab:green", "read out (spikes to Q)"))
            parts = np.array([[c["timing_ms"][k] for k, _, _ in keys] for c in ok])
            total = parts.sum(axis=1)
            tot_ax.barh(labels, total, color="0.4")
            tot_ax.set_xscale("log")
            tot_ax.set_xlabel("ms per observation (sum of the phases' medians), log scale")
            tot_ax.invert_yaxis()
            left = np.zeros(len(ok))
            share = 100 * parts / np.where(total > 0, total, 1)[:, None]
            for j, (_, color, label) in enumerate(keys):
                ax.barh(labels, share[:, j], left=left, color=color, label=label)
                left += share[:, j]
            ax.set_xlim(0, 100)
            ax.set_xlabel("% of the time per observation")
            ax.legend(loc="lower right", fontsize=8)
            fig.suptitle("Time per observation by target and where it goes (median over observations)",
                         fontsize=10)
            fig.tight_layout()
            fig.savefig(out / "step_split.png", dpi=110)
            plt.close(fig)
            made.append("step_split.png")

    rob = res.get("robustness", {}).get("rows", [])
    if rob:
        # one figure per environment: eps is in different units (feature std vs grey levels) and
        # the returns on different scales (CartPole 0..500, Pong -21..21), so one axis serves neither
        from benchmarks.robustness import plot as plot_robustness

        envs = list(dict.fromkeys(str(r.get("env_id")) for r in rob))
        for env in envs:
            name = "robustness.png" if len(envs) == 1 else f"robustness_{env.split('/')[-1].split('-')[0].lower()}.png"
            plot_robustness([r for r in rob if str(r.get("env_id")) == env], out / name, title=env)
            made.append(name)

    en = res.get("energy", {}).get("rows", [])
    if en:
        plot_energy(en, out / "energy.png")
        made.append("energy.png")

    work = out / "work"
    for name in ("sweep_cartpole.png", "sweep_pong.png"):
        if (work / name).is_file():
            shutil.copy(work / name, out / name)
            made.append(name)
    return made


def md_hahn(res: dict[str, Any]) -> str:
    """Hahn 2020's comparison: this run's ``hahn`` section when it has one, else the tables that
    ``benchmarks/hahn.py --docs`` keeps in docs/results/hahn.md (each with its own command)."""
    from benchmarks.hahn import section

    if res.get("hahn", {}).get("tasks"):
        return section(res["hahn"]).strip()
    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "hahn.md"
    return path.read_text().strip() if path.is_file() else ""


def md_finetune_fixed(res: dict[str, Any]) -> str:
    """The fine-tuning figures of ``benchmarks/bench_fixed.py`` (not a run_all section: hours of
    fine-tuning), kept with their commands in docs/results/finetune_fixed.md."""
    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "finetune_fixed.md"
    return path.read_text().strip() if path.is_file() else ""


# ---------------------------------------------------------------- driver


def write_reports(res: dict[str, Any], out: Path, docs: Path | None = None) -> None:
    pngs = plot_all(res, out)
    body = "\n\n".join(filter(None, [md_scores(res), md_matrix(res), md_timing(res), md_energy(res),
                                     md_conversion(res), md_hahn(res), md_robustness(res), md_forward(res), md_spinnaker(res),
                                     md_finetune_fixed(res)]))
    images = "\n\n".join(f"![{p}]({{img}}/{p})" for p in pngs)
    page = "# Results\n\n{header}\n\n{body}\n\n## Figures\n\n{images}\n"
    text = page.format(header=md_header(res), body=body, images=images)
    (out / "results.md").write_text(text.replace("{img}", "."))
    print(text.replace("{img}", "."))
    if docs is not None:
        figs = docs / "results"
        figs.mkdir(parents=True, exist_ok=True)
        for p in pngs:
            shutil.copy(out / p, figs / p)
        intro = ("<!-- generated by benchmarks/run_all.py --docs; edit the generator, not this page -->\n\n"
                 "Every figure below was produced by the command in the first line, on the machine described "
                 "under it; the JSON behind it is `" + str(out.name) + "/results.json`. Regenerate with "
                 "`make bench` (full) or `make bench-quick`.\n\n")
        (docs / "RESULTS.md").write_text(text.replace("{img}", "results").replace("# Results\n\n",
                                                                                  "# Results\n\n" + intro, 1))
