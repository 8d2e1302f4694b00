"""Conventions of the frameworks that write NIR graphs, normalised on read.

A NIR graph carries no ``dt``, and each exporter leaves out part of what its own simulator
does (snnTorch writes a hard-reset LIF for a subtract-reset neuron, Norse an IF with r=1 for
an integrator that adds its input without dt, Sinabs a leak that it integrates exactly). A
:class:`Convention` names those differences so :mod:`exporters.plan.build` can turn any
graph into the discrete step of docs/DESIGN.md. docs/NIR.md has the table with the evidence.

What the file cannot say (Sinabs' spike function, reset and membrane floor, snnTorch's
``reset_delay``, Norse's tau encoding) is chosen by a modifier: ``--convention
sinabs+single-spike+no-floor``; :data:`MODIFIERS` lists them per convention.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipeline.errors import UserError, check_choice


@dataclass(frozen=True)
class Convention:
    name: str
    dt: float | None  # the framework's step when the graph carries none (None: ours / --dt)
    compare: str = ">="  # spike test: U >= V_th or U > V_th
    spiking_reset: str = "graph"  # graph (reset to v_reset) | soft (subtract V_th) | soft_next | snntorch
    snntorch_reset: str = "subtract"  # spiking_reset="snntorch": reset_mechanism subtract | zero
    reset_delay: bool = True  # spiking_reset="snntorch": snnTorch's reset_delay argument
    if_gain: str = "euler"  # euler: v += dt*r*x | unit: v += r*x every step, whatever dt
    leak: str = "euler"  # euler: 1 - dt/tau per step | exp: exp(-dt/tau) (exact integration)
    cuba_order: str = "nir"  # nir: syn then v (same step) | norse: jump syn, v, decay syn
    multi_spike: bool = False  # Sinabs: floor(U / V_th) spikes per step
    tau_written: str = "tau"  # tau | dt_times_tau (Norse 1.1 writes dt / tau_mem_inv = dt * tau) | auto (by file)
    v_init: str = "v_reset"  # membrane at the start of each observation: v_reset | zero | v_leak
    if_floor: bool = False  # Sinabs from_nir: IF membrane floored at -V_th after the reset (min_v_mem)
    leaky_input: str = "norm"  # norm: (1-a) x enters a leaky membrane | raw: x (Sinabs norm_input=False)
    needs_dt: bool = False  # the framework's dt is an export argument nobody stores: --dt is required
    description: str = ""


CONVENTIONS: dict[str, Convention] = {
    "nir": Convention(
        "nir", None, description="NIR spec, forward Euler at the graph's dt, spike on >= (docs/DESIGN.md)"),
    "dsqn": Convention("dsqn", None, description="graphs written by dsqn-deploy's export-nir"),
    "spikingjelly": Convention(
        "spikingjelly", 1e-4, description="SpikingJelly 2.0: same step as ours; dt 1e-4 unless given"),
    "snntorch": Convention(
        "snntorch", 1e-4, compare=">", spiking_reset="snntorch", v_init="zero",
        description="snnTorch 1.0 Leaky/Synaptic/RLeaky/RSynaptic defaults: subtract reset applied one step "
                    "late, spike on >"),
    "snntorch-zero": Convention(
        "snntorch-zero", 1e-4, compare=">", spiking_reset="snntorch", snntorch_reset="zero", v_init="zero",
        description="snnTorch 1.0 with reset_mechanism='zero': Leaky resets at once, Synaptic/RLeaky/RSynaptic "
                    "drop the next step's charge"),
    "norse": Convention(
        "norse", None, compare=">", if_gain="unit", cuba_order="norse", v_init="v_leak", tau_written="auto",
        needs_dt=True,
        description="Norse: --dt required; tau as dt*tau (NIR files >= 1.0, Norse 1.1) or 1/tau_mem_inv (older "
                    "files), IAF adds its input, LIFCell current jumps then decays"),
    "sinabs": Convention(
        "sinabs", 1.0, spiking_reset="soft", if_gain="unit", leak="exp", multi_spike=True, v_init="zero",
        if_floor=True,
        description="Sinabs 3.1 from_nir: unit steps, exp(-1/tau) leak, subtract reset, multi-spike, IF "
                    "membrane floor -v_th"),
}

#: modifier -> the fields it changes, per convention (``--convention NAME+MOD+MOD``)
MODIFIERS: dict[str, dict[str, dict[str, object]]] = {
    "sinabs": {
        "single-spike": {"multi_spike": False},  # spike_fn=SingleSpike (what Speck runs)
        "no-floor": {"if_floor": False},  # min_v_mem=None, the Sinabs layers' default
        "membrane-reset": {"spiking_reset": "graph"},  # reset_fn=MembraneReset (to v_reset, 0)
        "no-norm-input": {"leaky_input": "raw"},  # LIF/ExpLeak(norm_input=False)
    },
    "snntorch": {"no-delay": {"reset_delay": False}},  # reset_delay=False (RSynaptic ignores it)
    "snntorch-zero": {"no-delay": {"reset_delay": False}},
    "norse": {
        "dt-tau": {"tau_written": "dt_times_tau"},  # Norse 1.1's to_nir
        "tau-inverse": {"tau_written": "tau"},  # older Norse: tau = 1 / tau_mem_inv
    },
}


def snntorch_reset(mechanism: str, reset_delay: bool, synaptic: bool, recurrent: bool) -> str:
    """The :class:`~exporters.plan.ir.NeuronStep` reset that snnTorch 1.0's own step performs, per layer
    class (NIR LIF: ``Leaky``, CubaLIF: ``Synaptic``; with a loop edge closing into it: ``RLeaky`` /
    ``RSynaptic``), for a positive threshold and state starting at zero (docs/NIR.md section 6 cites
    the source lines). Every layer computes ``reset = mem_prev > thr`` from its stored membrane.

    - subtract, ``reset_delay=True``: ``thr * reset`` comes off the next charge: ``soft_next``.
    - subtract, ``reset_delay=False``: the spike test still sees ``U - thr*reset`` and the same-step
      block then subtracts ``thr * (spk - reset)``: ``soft_recheck``. ``RSynaptic``'s block assigns
      to its local arguments (rsynaptic.py 366-375), so it stays ``soft_next``.
    - zero, ``Leaky``: the stored membrane is zeroed before the charge, a same-step reset: ``hard``.
    - zero, ``Synaptic``/``RLeaky``/``RSynaptic``: ``mem - mem*reset`` after the charge, so the step
      after a spike ends at 0 and its charge is lost (the synaptic current is kept): ``zero_next``;
      ``reset_delay=False`` zeroes the membrane in the spike's step instead (``hard``; then the stored
      membrane is 0 and ``reset`` never fires), except in ``RSynaptic`` (its block does nothing).
    """
    if mechanism == "subtract":
        if reset_delay or (synaptic and recurrent):
            return "soft_next"
        return "soft_recheck"
    if not synaptic and not recurrent:
        return "hard"
    if reset_delay or (synaptic and recurrent):
        return "zero_next"
    return "hard"


def convention_names() -> list[str]:
    """Every base name and ``name+modifier`` (for help texts and error messages)."""
    return sorted([*CONVENTIONS, *(f"{c}+{m}" for c, mods in MODIFIERS.items() for m in mods)])


def get_convention(name: str) -> Convention:
    """``NAME`` or ``NAME+MOD+...``; the result's name is the canonical spelling (modifiers sorted)."""
    base, *mods = str(name).split("+")
    check_choice("NIR convention", base, CONVENTIONS)
    cv = CONVENTIONS[base]
    allowed = MODIFIERS.get(base, {})
    changes: dict[str, object] = {}
    for mod in mods:
        if mod not in allowed:
            valid = ", ".join(allowed) if allowed else "none"
            raise UserError(f"unknown modifier {mod!r} for NIR convention {base!r}; valid modifiers: {valid}")
        for key, value in allowed[mod].items():
            if key in changes and changes[key] != value:
                raise UserError(f"NIR convention {name!r}: modifiers {'+'.join(mods)} contradict each other")
            changes[key] = value
    if not mods:
        return cv
    return replace(cv, name="+".join([base, *sorted(set(mods))]), **changes)  # type: ignore[arg-type]


def convention_arg(text: str) -> str:
    """argparse ``type`` for ``--convention``: validated, one ``error:`` line otherwise."""
    return get_convention(text).name
