"""Conventions of the frameworks that write NIR graphs, normalised on read.

A NIR graph carries no ``dt``, and each exporter leaves out part of what its own simulator
does (snnTorch writes a hard-reset LIF for a subtract-reset neuron, Norse an IF with r=1 for
an integrator that adds its input without dt, Sinabs a leak that it integrates exactly). A
:class:`Convention` names those differences so :mod:`exporters.plan.build` can turn any
graph into the discrete step of docs/DESIGN.md. docs/NIR.md has the table with the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import check_choice


@dataclass(frozen=True)
class Convention:
    name: str
    dt: float | None  # the framework's step when the graph carries none (None: ours / --dt)
    compare: str = ">="  # spike test: U >= V_th or U > V_th
    spiking_reset: str = "graph"  # graph (reset to v_reset) | soft (subtract V_th) | soft_next
    if_gain: str = "euler"  # euler: v += dt*r*x | unit: v += r*x every step, whatever dt
    leak: str = "euler"  # euler: 1 - dt/tau per step | exp: exp(-dt/tau) (exact integration)
    cuba_order: str = "nir"  # nir: syn then v (same step) | norse: jump syn, v, decay syn
    multi_spike: bool = False  # Sinabs: floor(U / V_th) spikes per step
    tau_written: str = "tau"  # tau | dt_times_tau (Norse 1.1 writes dt / tau_mem_inv = dt * tau)
    v_init: str = "v_reset"  # membrane at the start of each observation: v_reset | zero | v_leak
    description: str = ""


CONVENTIONS: dict[str, Convention] = {
    "nir": Convention(
        "nir", None, description="NIR spec, forward Euler at the graph's dt, spike on >= (docs/DESIGN.md)"),
    "dsqn": Convention("dsqn", None, description="graphs written by dsqn-deploy's export-nir"),
    "spikingjelly": Convention(
        "spikingjelly", 1e-4, description="SpikingJelly 2.0: same step as ours; dt 1e-4 unless given"),
    "snntorch": Convention(
        "snntorch", 1e-4, compare=">", spiking_reset="soft_next",
        v_init="zero",
        description="snnTorch 1.0 Leaky/Synaptic defaults: subtract reset applied one step late, spike on >"),
    "snntorch-zero": Convention(
        "snntorch-zero", 1e-4, compare=">", v_init="zero", description="snnTorch with reset_mechanism='zero'"),
    "norse": Convention(
        "norse", 1e-3, compare=">", if_gain="unit", cuba_order="norse", v_init="v_leak", tau_written="dt_times_tau",
        description="Norse 1.1: dt 1e-3, tau written as dt*tau, IAF adds its input, LIFCell current jumps then decays"),
    "sinabs": Convention(
        "sinabs", 1.0, spiking_reset="soft", if_gain="unit", leak="exp", multi_spike=True, v_init="zero",
        description="Sinabs 3.1: unit steps, exp(-1/tau) leak, subtract reset, multi-spike"),
}


def get_convention(name: str) -> Convention:
    check_choice("NIR convention", name, CONVENTIONS)
    return CONVENTIONS[name]
