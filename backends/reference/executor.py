"""The reference backend: runs a NIR graph (via its :class:`~exporters.canonical.Plan`) in torch.

Layer-synchronous like the torch model (no delays): each op is computed for all T steps of
a batch before the next op, synaptic maps on batches of T*N, neuron updates looping over t.
It is the oracle every other backend is compared with (docs/DESIGN.md "Time-step semantics").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import nir
import numpy as np
import torch

from backends.base import Readout, check_batch
from exporters.canonical import SYNAPSES, Op, Plan, build_plan
from exporters.plan.ops import (
    NeuronState,
    apply_synapse,
    neuron_advance,
    neuron_state,
    per_step,
    run_neuron,
    run_neuron_counted,
    spike,
)
from exporters.plan.readout import finish_q, head_q, pushes_mean_through_head, q_and_action, summed, tensor_params
from pipeline.encoding import encode_seeded
from pipeline.errors import UserError

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MEMORY_BUDGET = 512 * 2**20  # bytes of live activations per chunk (auto batch size)


@dataclass
class RunResult:
    """Everything one batch produced, before it becomes a :class:`Readout`."""

    q: torch.Tensor
    tiebreak: torch.Tensor | None
    spikes: dict[str, torch.Tensor]


def _stateless(op: Op, x: torch.Tensor, p: dict[str, Any], synapse=apply_synapse) -> torch.Tensor | None:
    """The value of a stateless op (synapse, ReLU, Threshold) on its summed input ``x``; ``None``
    for a neuron, whose value needs its state. ``synapse``: ``per_step`` on a [T, ...] series."""
    if op.kind in SYNAPSES:
        return synapse(op, x, p)
    if op.kind == "relu":
        return torch.relu(x)
    if op.kind == "threshold":
        return spike(x, p["threshold"], p["compare"], False)
    return None


def _neuron_params(op: Op, dtype: torch.dtype) -> dict[str, Any]:
    step = op.neuron
    assert step is not None
    out: dict[str, Any] = {}
    for k in ("gain", "tau", "v_leak", "v_th", "v_reset", "v_sub", "v_init", "tau_syn", "w_in", "v_floor"):
        v = getattr(step, k)
        out[k] = torch.as_tensor(v, dtype=dtype) if isinstance(v, np.ndarray) else v
    return out


class ReferenceBackend:
    """Build once from a graph; ``run`` batches of preprocessed observations (backends.base)."""

    name = "reference"

    def __init__(self, graph: nir.NIRGraph | Plan, *, dtype: str = "float32", batch_size: int | None = None,
                 convention: str | None = None, time_steps: int | None = None, dt: float | None = None,
                 readout: str | None = None):
        if dtype not in DTYPES:
            raise UserError(f"unknown dtype {dtype!r}; valid choices: {', '.join(DTYPES)}")
        self.plan = graph if isinstance(graph, Plan) else build_plan(
            graph, convention=convention, time_steps=time_steps, dt=dt, readout=readout)
        self.dtype = DTYPES[dtype]
        self.sem = self.plan.semantics
        self.T = self.sem.time_steps
        self.params = {op.name: (_neuron_params(op, self.dtype) if op.neuron is not None
                                 else tensor_params(op, self.dtype)) for op in self.plan.ops}
        self.obs_shape = self.plan.op(self.plan.input).out_shape
        self.pushdown = pushes_mean_through_head(self.plan)
        self.batch_size = batch_size or self._auto_batch()
        self.spiking_ops = [op.name for op in self.plan.ops if op.spiking]

    def _auto_batch(self) -> int:
        width = max(int(np.prod(op.out_shape)) for op in self.plan.ops)
        per_obs = self.T * width * torch.finfo(self.dtype).bits // 8 * 3
        return int(max(1, min(4096, MEMORY_BUDGET // max(per_obs, 1))))

    # ------------------------------------------------------------------ running

    def _input_value(self, obs: torch.Tensor, spikes: torch.Tensor | None) -> torch.Tensor:
        if spikes is not None:
            return spikes
        if self.sem.encoding == "current":
            return obs.unsqueeze(0)  # constant over the T steps
        return encode_seeded(obs, self.T, self.sem.encoding, self.sem.encoding_seed)

    def run_batch(self, obs: torch.Tensor, input_spikes: torch.Tensor | None = None,
                  record: bool = True, traces: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
                  ) -> RunResult:
        """Run ``obs`` ``[N, *obs_shape]`` (already in the working dtype); torch in, torch out.
        ``traces``, when given, receives each neuron op's (output ``[T, N, ...]``, U ``[T, N, ...]``)."""
        if self.plan.recurrent_ops:
            return self._run_stepwise(obs, input_spikes, record, traces)
        T = self.T
        values: dict[str, torch.Tensor] = {}
        final_v: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        src = self.plan.readout_source
        for op in self.plan.ops:
            p = self.params[op.name]
            if op.kind == "input":
                values[op.name] = self._input_value(obs, input_spikes)
                continue
            if op.kind == "output":
                break
            if self.pushdown and op.name == src.name:
                continue
            x = summed(op.inputs, values, T)
            y = _stateless(op, x, p, synapse=per_step)
            if y is not None:
                values[op.name] = y
            elif record and op.spiking and traces is None:  # counted while the spikes are in the cache
                assert op.neuron is not None
                values[op.name], final_v[op.name], counts[op.name] = run_neuron_counted(op.neuron, x, T, p)
                continue
            else:
                assert op.neuron is not None
                u: list[torch.Tensor] | None = [] if traces is not None else None
                values[op.name], final_v[op.name] = run_neuron(op.neuron, x, T, p, membrane=u)
                if traces is not None:
                    traces[op.name] = (values[op.name], torch.stack(u))
            if record and op.spiking:
                s = values[op.name]
                counts[op.name] = (s.expand(T, *s.shape[1:]) if s.shape[0] == 1 else s).sum(dim=0)
        q = head_q(self.plan, values, params=self.params)
        q, tiebreak = finish_q(self.sem, q, final_v.get(src.name), src.name)
        return RunResult(q=q, tiebreak=tiebreak, spikes=counts)

    def _run_stepwise(self, obs: torch.Tensor, input_spikes: torch.Tensor | None, record: bool,
                      traces: dict[str, tuple[torch.Tensor, torch.Tensor]] | None) -> RunResult:
        """A recurrent plan, one step at a time (docs/NIR.md "Recurrence"): every op at step t from its
        inputs at t and its recurrent inputs at t - 1 (at t = 0 their values "before the start",
        :meth:`_before_start`); all state starts afresh for each observation, as in the layer-wise path."""
        T, src = self.T, self.plan.readout_source
        x_in = self._input_value(obs, input_spikes)
        series: dict[str, list[torch.Tensor]] = {}
        membranes: dict[str, list[torch.Tensor]] = {}
        states: dict[str, NeuronState] = {}
        prev = self._before_start(x_in[0])
        for t in range(T):
            now: dict[str, torch.Tensor] = {}
            for op in self.plan.ops:
                p = self.params[op.name]
                if op.kind == "input":
                    now[op.name] = x_in[t if x_in.shape[0] > 1 else 0]
                    continue
                if op.kind == "output":  # a loop's nodes may come after it in plan order
                    continue
                if self.pushdown and op.name == src.name:
                    continue
                x = now[op.inputs[0]]
                for other in op.inputs[1:]:
                    x = x + now[other]
                for late in op.recurrent:  # the loop's value of the previous step
                    x = x + prev[late]
                y = _stateless(op, x, p)
                if y is None:
                    assert op.neuron is not None
                    if op.name not in states:
                        states[op.name] = neuron_state(op.neuron, x, p)
                    u = membranes.setdefault(op.name, []) if traces is not None else None
                    y = neuron_advance(op.neuron, x, states[op.name], p, u)
                now[op.name] = y
                series.setdefault(op.name, []).append(y)
            prev = now
        values = {name: torch.stack(ys) for name, ys in series.items()}
        values[self.plan.input] = x_in
        counts = {name: values[name].sum(dim=0) for name in self.spiking_ops if record and name in values}
        if traces is not None:
            for name, us in membranes.items():
                traces[name] = (values[name], torch.stack(us))
        final_v = {name: st.v for name, st in states.items()}
        q = head_q(self.plan, values, params=self.params)
        q, tiebreak = finish_q(self.sem, q, final_v.get(src.name), src.name)
        return RunResult(q=q, tiebreak=tiebreak, spikes=counts)

    def _before_start(self, x0: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every op's value at step -1, what a loop's closing edge carries into step 0: a zero input,
        each neuron's initial output (no spike; a non-spiking node its initial membrane), stateless
        ops applied to those (a recurrent Affine gives its bias, as snnTorch's ``recurrent(spk=0)``),
        loop edges ignored (nothing precedes step -1)."""
        before: dict[str, torch.Tensor] = {}
        src = self.plan.readout_source
        for op in self.plan.ops:
            p = self.params[op.name]
            if op.kind == "input":
                before[op.name] = torch.zeros_like(x0)
                continue
            if op.kind == "output":
                continue
            if self.pushdown and op.name == src.name:
                continue
            x = before[op.inputs[0]]
            for other in op.inputs[1:]:
                x = x + before[other]
            y = _stateless(op, x, p)
            if y is None:
                assert op.neuron is not None
                y = torch.zeros_like(x) if op.neuron.spiking else neuron_state(op.neuron, x, p).v
            before[op.name] = y
        return before

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """backends.base.Backend.run: ``obs`` ``[N, *obs_shape]`` -> Readout (q float64, actions)."""
        obs = check_batch(obs, self.obs_shape, self.plan.input, self.T, input_spikes)
        timings = {"set_input": 0.0, "simulate": 0.0, "read_out": 0.0}
        qs, acts, spikes = [], [], {k: [] for k in self.spiking_ops}
        with torch.no_grad():
            for lo in range(0, obs.shape[0], self.batch_size):
                t0 = time.perf_counter()
                x = torch.as_tensor(obs[lo:lo + self.batch_size]).to(self.dtype)
                s_in = None
                if input_spikes is not None:
                    s_in = torch.as_tensor(input_spikes[:, lo:lo + self.batch_size]).to(self.dtype)
                t1 = time.perf_counter()
                res = self.run_batch(x, s_in)
                t2 = time.perf_counter()
                q, action = q_and_action(res.q, res.tiebreak)
                qs.append(q)
                acts.append(action)
                for k, v in res.spikes.items():
                    spikes[k].append(v.round().to(torch.int64).numpy())
                t3 = time.perf_counter()
                timings["set_input"] += t1 - t0
                timings["simulate"] += t2 - t1
                timings["read_out"] += t3 - t2
        n = obs.shape[0]
        a = self.sem.n_actions
        q = np.concatenate(qs) if qs else np.zeros((0, a or 0))
        action = np.concatenate(acts) if acts else np.zeros((0,), np.int64)
        spk = {k: (np.concatenate(v) if v else np.zeros((n, *self.plan.op(k).out_shape), np.int64))
               for k, v in spikes.items()}
        return Readout(q=q, action=action, spikes=spk, timings=timings)

    def traces(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Step by step, for one observation: each neuron node's ``spikes`` ``[T, n]`` (for spiking
        nodes; its output otherwise) and membrane ``u`` ``[T, n]`` (before the reset), flattened over
        the node's shape. For plots (``run-backend --plot-raster``), not for speed."""
        obs = check_batch(obs, self.obs_shape, self.plan.input, self.T, input_spikes)[:1]
        found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            s_in = None if input_spikes is None else torch.as_tensor(input_spikes[:, :1]).to(self.dtype)
            self.run_batch(torch.as_tensor(obs).to(self.dtype), s_in, record=False, traces=found)
        out = {}
        for name, (y, u) in found.items():
            op = self.plan.op(name)
            y = y.expand(self.T, *y.shape[1:]) if y.shape[0] == 1 else y
            out[name] = {"spikes" if op.spiking else "output": y[:, 0].reshape(self.T, -1).double().numpy(),
                         "u": u[:, 0].reshape(self.T, -1).double().numpy()}
        return out

    def close(self) -> None:
        """Nothing to release: the reference holds only tensors."""
