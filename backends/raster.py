"""``run-backend --plot-raster``: what each layer does during one observation, step by step.

For every neuron node of the graph, a spike raster (which neuron fired at which time step) beside
the membrane potential U of a few of its neurons (the most active ones, and one that stayed
silent), with the firing threshold drawn in. A non-spiking output (a membrane readout) shows its
U per action. The step-by-step traces come from the reference executor, the oracle every target
is compared with; the chosen target's own spike counts for the same observation are compared with
them and the result is written on the figure, so the picture never claims more than was checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_TRACES = 5  # membrane curves per layer: more become unreadable


def threshold_of(op: Any) -> float | None:
    """The node's threshold as one number (None when it differs between neurons or is absent)."""
    step = op.neuron
    if step is None or not step.spiking:
        return None
    v = np.asarray(step.v_th, dtype=float)
    return float(v.flat[0]) if v.size and np.all(v == v.flat[0]) else None


def chosen_neurons(spikes: np.ndarray | None, u: np.ndarray) -> list[int]:
    """Neurons that show the range of the layer: of those that fired, the most and the least active
    and two between them in rank (their U crosses the threshold at different paces), then one
    that stayed silent; every output of a non-spiking node (up to :data:`MAX_TRACES`)."""
    if spikes is None:
        return list(range(min(MAX_TRACES, u.shape[1])))
    count = spikes.sum(axis=0)
    active = [int(i) for i in np.argsort(-count, kind="stable") if count[i] > 0]
    picked = [active[round(q * (len(active) - 1))] for q in (0.0, 1 / 3, 2 / 3, 1.0)] if active else []
    silent = [int(i) for i in np.flatnonzero(count == 0)]
    picked += silent[:1] if silent else active[-1:]
    return list(dict.fromkeys(picked))


def plot_raster(traces: dict[str, dict[str, np.ndarray]], plan: Any, path: Path, title: str,
                target_note: str = "") -> None:
    """Write the figure: one row per neuron node, raster left, membrane right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(traces)
    T = plan.semantics.time_steps
    dt_ms = plan.semantics.dt * 1e3 if plan.semantics.dt else None
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 2.6 * len(names) + 1.2), squeeze=False,
                             gridspec_kw={"width_ratios": [1.1, 1]})
    steps = np.arange(T)
    for row, name in enumerate(names):
        op = plan.op(name)
        tr = traces[name]
        u, spikes = tr["u"], tr.get("spikes")
        n = u.shape[1]
        left, right = axes[row]
        if spikes is not None:
            t_idx, n_idx = np.nonzero(spikes)
            rate = 100 * spikes.sum() / max(spikes.size, 1)
            left.scatter(t_idx, n_idx, s=max(1.0, min(12.0, 3000 / max(n, 1))), marker="|", color="k",
                         linewidths=0.8)
            left.set_title(f"{name}: spikes ({int(spikes.sum())} in {n} neurons x {T} steps = {rate:.2g} %)",
                           fontsize=9, loc="left")
            if not spikes.any():
                left.text(0.5, 0.5, "no spike in any neuron", transform=left.transAxes, ha="center", va="center",
                          color="0.4")
            left.set_ylabel("neuron (flat index)")
            left.set_ylim(-0.5, n - 0.5)
        else:
            image = left.imshow(u.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                                extent=(-0.5, T - 0.5, -0.5, n - 0.5))
            fig.colorbar(image, ax=left, label="U (the graph's units)")
            left.set_title(f"{name}: membrane U of each output (a membrane readout: no spikes)", fontsize=9,
                           loc="left")
            left.set_ylabel("output (action)")
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_xlim(-0.5, T - 0.5)
        left.set_xlabel("time step" + (f" (1 step = {dt_ms:g} ms)" if dt_ms else ""))
        for i in chosen_neurons(spikes, u):
            fired = int(spikes[:, i].sum()) if spikes is not None else None
            label = f"neuron {i} ({fired} spikes)" if fired is not None else f"output {i} (action {i})"
            right.plot(steps, u[:, i], drawstyle="steps-mid", linewidth=1.1, label=label)
        th = threshold_of(op)
        if th is not None:
            right.axhline(th, color="r", linestyle="--", linewidth=1, label=f"threshold V_th = {th:g}")
        right.set_title(f"{name}: membrane potential U" + (" before reset" if spikes is not None else ""), fontsize=9,
                        loc="left")
        right.set_xlabel("time step")
        right.set_ylabel("U (the graph's units)")
        right.set_xlim(-0.5, T - 0.5)
        right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(title + (f"\n{target_note}" if target_note else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def raster_for(plan: Any, obs: np.ndarray, input_spikes: np.ndarray | None, path: Path, title: str,
               target: str, target_counts: dict[str, np.ndarray] | None) -> str:
    """Trace one observation on the reference, compare with ``target_counts`` (the target's spike
    counts per node for it), plot; returns the comparison line written on the figure."""
    from backends.reference import ReferenceBackend

    ref = ReferenceBackend(plan, dtype="float64")
    traces = ref.traces(obs[None] if obs.ndim == len(ref.obs_shape) else obs, input_spikes)
    note = "traces: the reference executor (float64)"
    if target != "reference" and target_counts is not None:
        differ = sum(int(np.count_nonzero(np.asarray(target_counts[k]).reshape(-1) != tr["spikes"].sum(axis=0)))
                     for k, tr in traces.items() if "spikes" in tr and k in target_counts)
        note += (f"; {target}'s spike count per neuron on this observation: "
                 + ("the same" if differ == 0 else f"differs in {differ} neurons"))
    plot_raster(traces, plan, path, title, note)
    return note
