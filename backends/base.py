"""The one interface every backend implements (reference, NEST, PyNN, Lava), and the helpers
adapters share to meet it.

The contract itself (``Backend``, ``Readout``, ``check_batch``, ``greedy_action``) lives in
:mod:`pipeline.backend_api`, below the closed loop that consumes it, and is re-exported here.
What needs a Plan stays here: :func:`plan_for_env` and :func:`spiking_populations`.
"""

from __future__ import annotations

import numpy as np

from pipeline.backend_api import Backend, Readout, check_batch, greedy_action
from pipeline.errors import UserError

__all__ = ["Backend", "Readout", "check_batch", "greedy_action", "plan_for_env", "refuse_recurrence",
           "refuse_loop_start", "refuse_resets", "spiking_populations"]

#: resets (exporters.plan.ir.NeuronStep) that only some targets run, in words for the error line
SNNTORCH_RESETS = {
    "zero_next": "snnTorch's zero reset that drops the charge of the step after a spike (Synaptic, RLeaky, "
                 "RSynaptic)",
    "soft_recheck": "snnTorch's reset_delay=False subtraction (its spike test also subtracts the delayed reset "
                    "while the membrane stays above threshold)",
}


def plan_for_env(graph, *, time_steps: int | None = None, dt: float | None = None, readout: str | None = None,
                 convention: str | None = None, obs_shape: tuple[int, ...] | None = None,
                 n_actions: int | None = None):
    """The canonical Plan of ``graph`` (a nir.NIRGraph or a Plan) with its input shape and output
    size, checked against the environment's ``obs_shape`` / ``n_actions`` when given.

    Returns ``(plan, obs_shape, n_out)``; a mismatch is a UserError naming the graph's node.
    """
    from exporters.canonical import Plan, build_plan

    plan = graph if isinstance(graph, Plan) else build_plan(
        graph, convention=convention, time_steps=time_steps, dt=dt, readout=readout)
    graph_shape = tuple(plan.op(plan.input).out_shape)
    n_out = int(np.prod(plan.op(plan.output).out_shape))
    if obs_shape is not None and tuple(obs_shape) != graph_shape:
        raise UserError(f"the graph's Input node {plan.input!r} expects observations of shape "
                        f"{graph_shape}, the environment gives {tuple(obs_shape)}")
    if n_actions is not None and int(n_actions) != n_out:
        raise UserError(f"the graph's Output node {plan.output!r} has {n_out} values, the "
                        f"environment has {n_actions} actions")
    return plan, graph_shape, n_out


def refuse_recurrence(plan, target: str) -> None:
    """One UserError naming the first node that receives a loop's previous-step value, for a
    target that runs feed-forward graphs only."""
    for op in plan.recurrent_ops:
        raise UserError(f"node {op.name!r} ({op.nir_type}): it receives {', '.join(map(repr, op.recurrent))} one "
                        f"step late (a recurrent loop); {target} runs feed-forward graphs only (the reference "
                        "runs recurrent ones)")


def refuse_resets(plan, target: str, supported: tuple[str, ...] = ("hard", "soft", "soft_next")) -> None:
    """One UserError naming the first spiking node whose reset ``target`` has no exact form for."""
    for op in plan.ops:
        st = op.neuron
        if st is not None and st.spiking and st.reset not in supported:
            what = SNNTORCH_RESETS.get(st.reset, f"reset {st.reset!r}")
            runs = ("the reference, Lava (lava, lava-fixed), NEST and PyNN-NEST run it" if st.reset in SNNTORCH_RESETS
                    else "the reference and Lava (lava, lava-fixed) run it")
            raise UserError(f"node {op.name!r} ({op.nir_type}): {what} has no form on {target}; {runs}")


def refuse_loop_start(src, dst: str, target: str) -> None:
    """A loop's source must be zero before the first step on a target whose populations send nothing
    outside their window: a spiking neuron is; a non-spiking one at a non-zero initial membrane, or
    a Threshold at or below 0 (it fires on a zero input), holds a value there that the reference
    carries into step 0 (docs/NIR.md "Recurrence"): one UserError naming the node."""
    if src.kind == "threshold":
        th = np.asarray(src.params["threshold"], dtype=np.float64)
        fires = np.any(0.0 >= th) if src.params["compare"] == ">=" else np.any(0.0 > th)
        if fires:
            raise UserError(f"node {dst!r}: its loop source {src.name!r} (Threshold at or below 0) fires before the "
                            f"first step, which {target} cannot send into the loop")
    elif src.neuron is not None and not src.neuron.spiking and np.any(np.asarray(src.neuron.v_init) != 0):
        raise UserError(f"node {dst!r}: its loop source {src.name!r} starts at a non-zero membrane, which {target} "
                        "cannot send into the loop before the first step")


def spiking_populations(plan, target: str, recurrent: bool = False) -> list:
    """The plan's neuron and threshold ops, for a spike-passing simulator named ``target``;
    a ReLU (a DQN), a recurrent loop (unless the target lays loops out: ``recurrent``) or a graph
    without neurons is a UserError naming the node or the target."""
    if not recurrent:
        refuse_recurrence(plan, target)
    for op in plan.ops:
        if op.kind == "relu":
            raise UserError(f"node {op.name!r}: ReLU (a DQN) has no spiking form on {target}; convert the DQN "
                            "(convert-dqn) or run it on the reference")
    pop_ops = [op for op in plan.ops if op.kind in ("neuron", "threshold")]
    if not pop_ops:
        raise UserError(f"the graph has no neuron node: nothing for {target} to simulate")
    return pop_ops
