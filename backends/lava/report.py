"""``inspect-nir --target lava``: how a graph maps to Lava / Loihi 2, without starting Lava.

Per population: delay (Lava steps behind the host-fed layer), the fixed-point state unit,
threshold levels, weight exponents and quantisation errors, the bias and decay errors, the
worst-case state headroom in the 24-bit registers, and the Loihi 2 cores it needs
(backends.lava.quantize.loihi2_resources, with the limits and their sources).
"""

from __future__ import annotations

import math
from typing import Any

from backends.lava.lowering import lower
from backends.lava.quantize import STATE_MAX, loihi2_resources, quantize_layout
from exporters.canonical import Plan
from pipeline.errors import UserError


def lava_report(plan: Plan, input_bound: float | None = None, host_weights: str = "8bit") -> dict[str, Any]:
    """A JSON-able dict: ``layers`` rows, ``totals``, Loihi 2 ``limits``/``sources`` and, when the
    network is beyond the fixed-point ranges, ``fixed_point_error`` (the lava-fixed UserError)."""
    from backends.lava.backend import default_input_bound

    layout = lower(plan, fixed_point=True)  # unsupported nodes: UserError naming the node
    bound = input_bound or default_input_bound(plan)
    fixed_error = None
    try:
        quant = quantize_layout(layout, bound, host_weights)
    except UserError as exc:
        quant, fixed_error = None, str(exc)
    res = loihi2_resources(layout)
    cores = {r["name"]: r for r in res["layers"]}
    rows = []
    for name, pop in layout.pops.items():
        row: dict[str, Any] = {"name": name, "kind": pop.kind, "neurons": pop.n, "delay": pop.delay,
                               "synapses": cores[name]["synapses"], "max_fan_in": cores[name]["max_fan_in"],
                               "cores": cores[name]["cores"]}
        if "note" in cores[name]:
            row["note"] = cores[name]["note"]
        if quant is not None:
            fp = quant[name]
            row.update({
                "state_unit": fp.q,
                "threshold_lsb": None if fp.threshold is None else int(fp.threshold.max()),
                "weight_exp": {k: m.exp for k, m in fp.maps.items() if m.mant is not None},
                "weight_err_rel_max": fp.errors.get("weight_rel_max", 0.0),
                "weight_err_rel_rms": fp.errors.get("weight_rel_rms", 0.0),
                "bias_err_lsb": fp.errors.get("bias_abs_in_lsb", 0.0),
                "decay_err": fp.errors.get("decay_abs", 0.0),
                "threshold_err_rel": fp.errors.get("threshold_rel", 0.0),
                "state_headroom_bits": math.log2(STATE_MAX / max(fp.bound_lsb, 1e-300)),
            })
        rows.append(row)
    out: dict[str, Any] = {
        "layers": rows,
        "totals": {"depth": layout.depth, "period": layout.period, "time_steps": layout.time_steps,
                   "cores": res["total_cores"], "chips": res["chips"], "input_bound": bound,
                   "host_weights": host_weights},
        "limits": res["limits"], "sources": res["sources"],
    }
    if fixed_error:
        out["fixed_point_error"] = fixed_error
    return out


def print_lava_report(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="Lava / Loihi 2 mapping (fixed point: 8-bit weights + exponent, 24-bit state)")
    cols = ("population", "neurons", "delay", "synapses", "cores", "th LSBs", "w exp", "w err rms",
            "headroom")
    for c in cols:
        t.add_column(c, justify="left" if c == "population" else "right")
    for r in info["layers"]:
        q = "state_unit" in r
        th = r.get("threshold_lsb")
        t.add_row(r["name"], str(r["neurons"]), str(r["delay"]), str(r["synapses"]),
                  "-" if r["cores"] is None else str(r["cores"]), "" if th is None else str(th),
                  ",".join(str(v) for v in r["weight_exp"].values()) if q else "",
                  f"{100 * r['weight_err_rel_rms']:.2f}%" if q else "",
                  f"{r['state_headroom_bits']:.1f} b" if q else "")
    console.print(t)
    tot = info["totals"]
    cores = "does not fit" if tot["cores"] is None else f"{tot['cores']} ({tot['chips']} chip(s))"
    console.print(f"Lava steps per observation: T {tot['time_steps']} + depth {tot['depth']} = "
                  f"{tot['period']};  Loihi 2 cores: {cores}")
    lim = info["limits"]
    console.print(f"limits: {lim['neurons_per_core']} neurons and {lim['synapses_per_core']} synapses per "
                  f"core (the latter an assumption), {lim['cores_per_chip']} cores per chip; see --json "
                  "'sources'")
    for r in info["layers"]:
        if "note" in r:
            console.print(f"[yellow]{r['name']}: {r['note']}[/yellow]")
    if "fixed_point_error" in info:
        console.print(f"[red]lava-fixed: {info['fixed_point_error']}[/red]")
