"""``inspect-nir --target lava``: how a graph maps to Lava / Loihi 2, without starting Lava.

Per population: delay (Lava steps behind the host-fed layer), the fixed-point state unit,
threshold levels, weight exponents and quantisation errors, the bias and decay errors, the
worst-case state headroom in the 24-bit registers, and the Loihi 2 cores it needs
(backends.lava.quantize.loihi2_resources, with the limits and their sources). Each row also
describes the opt-in weight splitting (``weight_bits=16``: two 8-bit synapse sets per map):
its weight and bias errors (biases then reach 1 LSB through residual synapses), lo exponents,
synapses and cores, so both modes can be compared at once. Likewise the state scale: the main
columns describe ``state_scale`` (lava-fixed's default unless given), and each row's
``state_scales`` entry both modes' weight errors and how many neurons get their own unit
(``run-backend --state-scale``, backends.lava.quantize "Per-neuron state units").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from backends.lava.lowering import lower
from backends.lava.modes import DEFAULT_STATE_SCALE, STATE_SCALES, check_state_scale
from backends.lava.quantize import BIAS_SOURCE, STATE_MAX, FixedPop, check_weight_bits, loihi2_resources, quantize_layout
from exporters.plan.ir import Plan
from pipeline.errors import UserError


def _quantize(layout: Any, bound: float, host_weights: str, bits: int,
              state_scale: str = DEFAULT_STATE_SCALE) -> tuple[dict[str, FixedPop] | None, str | None]:
    try:
        return quantize_layout(layout, bound, host_weights, bits, state_scale), None
    except UserError as exc:
        return None, str(exc)


def lava_report(plan: Plan, input_bound: float | None = None, host_weights: str = "8bit",
                weight_bits: int = 8, state_scale: str = DEFAULT_STATE_SCALE) -> dict[str, Any]:
    """A JSON-able dict: ``layers`` rows, ``totals``, Loihi 2 ``limits``/``sources`` and, when the
    network is beyond the fixed-point ranges, ``fixed_point_error`` (the lava-fixed UserError).

    The main columns describe ``weight_bits`` (default 8); each row's ``split`` entry and
    ``totals['split']`` describe weight splitting (16 bits) whatever ``weight_bits`` is; the main
    columns use ``state_scale``, each row's ``state_scales`` compares both state scales."""
    from backends.lava.backend import default_input_bound

    bits = check_weight_bits(weight_bits)
    scale = check_state_scale(state_scale)
    layout = lower(plan, fixed_point=True)  # unsupported nodes: UserError naming the node
    bound = input_bound or default_input_bound(plan)
    quant, fixed_error = _quantize(layout, bound, host_weights, bits, scale)
    split = quant if bits == 16 else _quantize(layout, bound, host_weights, 16, scale)[0]
    by_scale = {m: quant if m == scale else _quantize(layout, bound, host_weights, bits, m)[0]
                for m in STATE_SCALES}
    res = loihi2_resources(layout, quant if bits == 16 else None)
    cores = {r["name"]: r for r in res["layers"]}
    res_split = loihi2_resources(layout, split) if split is not None else None
    cores_split = {r["name"]: r for r in res_split["layers"]} if res_split else {}
    rows = []
    for name, pop in layout.pops.items():
        row: dict[str, Any] = {"name": name, "kind": pop.kind, "neurons": pop.n, "delay": pop.delay,
                               "synapses": cores[name]["synapses"], "max_fan_in": cores[name]["max_fan_in"],
                               "cores": cores[name]["cores"]}
        if "note" in cores[name]:
            row["note"] = cores[name]["note"]
        if quant is not None:
            row.update(_fixed_columns(quant[name]))
            row["state_scales"] = {m: _scale_columns(q[name]) for m, q in by_scale.items() if q is not None}
        if split is not None:
            row["split"] = _split_columns(split[name], cores_split[name])
        rows.append(row)
    out: dict[str, Any] = {
        "layers": rows,
        "totals": {"depth": layout.depth, "period": layout.period, "time_steps": layout.time_steps,
                   "cores": res["total_cores"], "chips": res["chips"], "input_bound": bound,
                   "host_weights": host_weights, "weight_bits": bits, "state_scale": scale},
        "limits": res["limits"], "sources": res["sources"],
    }
    if res_split is not None:
        out["totals"]["split"] = {"cores": res_split["total_cores"], "chips": res_split["chips"],
                                  "synapses": sum(r["synapses"] for r in res_split["layers"]),
                                  "bias_source": any(r["name"] == BIAS_SOURCE for r in res_split["layers"])}
    if fixed_error:
        out["fixed_point_error"] = fixed_error
    return out


def _fixed_columns(fp: FixedPop) -> dict[str, Any]:
    """A layer's state unit, exponents and rounding errors at the report's ``weight_bits``."""
    extra = {} if fp.count_max is None else {"graded_count_max": fp.count_max}  # multi-spike: its payload bound
    return {
        **extra,
        "state_unit": fp.q,
        "threshold_lsb": None if fp.threshold is None else int(fp.threshold.max()),
        "weight_exp": {k: m.exp for k, m in fp.maps.items() if m.mant is not None},
        "weight_err_rel_max": fp.errors.get("weight_rel_max", 0.0),
        "weight_err_rel_rms": fp.errors.get("weight_rel_rms", 0.0),
        "bias_err_lsb": fp.errors.get("bias_abs_in_lsb", 0.0),
        "decay_err": fp.errors.get("decay_abs", 0.0),
        "threshold_err_rel": fp.errors.get("threshold_rel", 0.0),
        "state_headroom_bits": math.log2(STATE_MAX / max(fp.bound_lsb, 1e-300)),
    }


def _scale_columns(fp: FixedPop) -> dict[str, Any]:
    """A layer's weight errors under one state scale, and how many of its neurons count in a unit
    of their own (0 with one unit per layer)."""
    return {"own_units": 0 if fp.unit is None else int(np.count_nonzero(fp.unit != fp.q)),
            "weight_err_rel_max": fp.errors.get("weight_rel_max", 0.0),
            "weight_err_rel_rms": fp.errors.get("weight_rel_rms", 0.0)}


def _split_columns(fp: FixedPop, cores: dict[str, Any]) -> dict[str, Any]:
    """The same layer under weight splitting (16 bits): lo exponents, errors, synapses and cores."""
    return {
        "weight_exp_lo": {k: m.exp_lo for k, m in fp.maps.items() if m.lo is not None},
        "exp_lo_clipped": [k for k, m in fp.maps.items() if m.exp_lo_clipped],
        "weight_err_rel_max": fp.errors.get("weight_rel_max", 0.0),
        "weight_err_rel_rms": fp.errors.get("weight_rel_rms", 0.0),
        "bias_err_lsb": fp.errors.get("bias_abs_in_lsb", 0.0),
        "bias_residual_synapses": int((fp.bias_res != 0).sum()) if fp.bias_res is not None else 0,
        "synapses": cores["synapses"], "max_fan_in": cores["max_fan_in"],
        "cores": cores["cores"],
    }


def print_lava_report(info: dict[str, Any]) -> None:
    from pipeline.tables import console as make_console
    from pipeline.tables import make_table

    console = make_console()
    bits = info["totals"].get("weight_bits", 8)
    # three narrow tables rather than one of 14 columns: each fits 80 columns with its names whole
    layout = make_table("Lava / Loihi 2 mapping (delay: steps after the input; th: threshold in state LSBs)",
                        ("population", "neurons", "delay", "synapses", "cores", "th"),
                        right=("neurons", "delay", "synapses", "cores", "th"))
    scale = info["totals"].get("state_scale", DEFAULT_STATE_SCALE)
    fixed = make_table(f"fixed point: {bits}-bit weights{' as two 8-bit synapse sets' if bits == 16 else ''} with "
                       f"one exponent per map, 24-bit state, state units per {scale} (--state-scale; errors "
                       "relative to the float weights; own units: neurons counting in their own unit with "
                       "--state-scale neuron; headroom: bits of state left above the largest value)",
                       ("population", "w exp", "w err rms layer", "neuron", "own units", "bias err",
                        "headroom"),
                       right=("w err rms layer", "neuron", "own units", "bias err", "headroom"))
    split = make_table("weight splitting (--weight-bits 16: each map as two 8-bit synapse sets)",
                       ("population", "w err rms", "bias err", "synapses", "cores"),
                       right=("w err rms", "bias err", "synapses", "cores"))
    for r in info["layers"]:
        th = r.get("threshold_lsb")
        layout.add_row(r["name"], str(r["neurons"]), str(r["delay"]), str(r["synapses"]),
                       "-" if r["cores"] is None else str(r["cores"]), "" if th is None else str(th))
        if "state_unit" in r:
            modes = r.get("state_scales", {})
            err = [f"{100 * modes[m]['weight_err_rel_rms']:.2f} %" if m in modes else "-"
                   for m in STATE_SCALES]
            own = modes.get("neuron", {}).get("own_units")
            fixed.add_row(r["name"], ",".join(str(v) for v in r["weight_exp"].values()), *err,
                          "-" if own is None else str(own), f"{r['bias_err_lsb']:.2f} LSB",
                          f"{r['state_headroom_bits']:.1f} bits")
        if r.get("split"):
            s = r["split"]
            split.add_row(r["name"], f"{100 * s['weight_err_rel_rms']:.4f} %", f"{s['bias_err_lsb']:.2f} LSB",
                          str(s["synapses"]), "-" if s["cores"] is None else str(s["cores"]))
    for t in (layout, fixed, split):
        if t.row_count:
            console.print(t)
    tot = info["totals"]
    cores = "does not fit" if tot["cores"] is None else f"{tot['cores']} ({tot['chips']} chip(s))"
    console.print(f"Lava steps per observation: T {tot['time_steps']} + depth {tot['depth']} = "
                  f"{tot['period']};  Loihi 2 cores: {cores}")
    if "split" in tot:
        sc = tot["split"]
        sc_txt = "does not fit" if sc["cores"] is None else f"{sc['cores']} ({sc['chips']} chip(s))"
        nres = sum(r["split"]["bias_residual_synapses"] for r in info["layers"] if "split" in r)
        source = " and one always-on bias neuron (its own core here)" if sc.get("bias_source") else ""
        console.print(f"weight splitting (--weight-bits 16): {sc['synapses']} synapses ({nres} of them carry "
                      f"bias residuals{source}), Loihi 2 cores: {sc_txt}")
        clipped = [f"{r['name']} (from {', '.join(r['split']['exp_lo_clipped'])})" for r in info["layers"]
                   if r.get("split", {}).get("exp_lo_clipped")]
        if clipped:
            console.print(f"[yellow]lo exponent clipped at -8 (coarser lo step, larger residual): "
                          f"{'; '.join(clipped)}[/yellow]")
    lim = info["limits"]
    console.print(f"limits: {lim['neurons_per_core']} neurons and {lim['synapses_per_core']} synapses per "
                  f"core (the latter an assumption), {lim['cores_per_chip']} cores per chip; see --json "
                  "'sources'")
    for r in info["layers"]:
        if "note" in r:
            console.print(f"[yellow]{r['name']}: {r['note']}[/yellow]")
    if "fixed_point_error" in info:
        console.print(f"[red]lava-fixed: {info['fixed_point_error']}[/red]")


# the names ``inspect-nir --target lava`` calls (backends.Report)
report = lava_report
print_report = print_lava_report
