"""``LavaBackend``: a NIR graph on Lava's CPU simulator of Loihi 2 (``Loihi2SimCfg``).

``--target lava`` runs the ``floating_pt`` process models (float64, equal to the reference:
same spike counts, Q within rounding), ``--target lava-fixed`` the ``fixed_pt`` ones on the
quantised network of backends.lava.quantize (``weight_bits=16``: weight splitting, every map
as two 8-bit synapse sets; ``run-backend --target lava-fixed --weight-bits 16``).

The network is compiled once; the runtime stays alive across ``run`` calls. Per observation
the host computes the first layer's input current (backends.lava.lowering), sends it through
the host-fed populations' input pipes, runs ``P = T + depth`` steps with ``RunSteps`` (the
populations reset themselves at the start of their windows), then receives one record per
recording population from its output pipe. No ``Var.get``/``Var.set`` in the loop. Batches
(``run-backend --inputs``) are sent ``batch_size`` observations per ``RunSteps(P * batch)``.

``copies=N`` (``run-backend --envs N``) builds N copies of the network side by side: every
population N times as wide, every synapse map block-diagonal (the copies share no synapse),
every parameter repeated, the fixed-point network quantised once for one copy and repeated (a
block-diagonal map's exponent is one copy's). A batch of up to N observations then runs as one
observation window: the host computes each observation's input current with the same code,
copy j's neurons get observation j's current (a batch of fewer than N pads the rest with
zeros), and each copy's part of the wide records is cut out and read by the same readout as a
batch of N one-copy records. Lava's cost is per step and per process, not per neuron, so this
is much faster than N windows back to back (docs/SCALING.md §1); every neuron computes what it
computes in one copy, in the same order, so the results are bit for bit the one-copy run's.

Lava forks one OS process per Lava process and its ``stop()`` blocks for ever once a process
model has raised (tests/test_lava_install.py); :func:`stop_or_kill` stops with a time limit
and kills the runtime's processes when it hangs. ``close()`` (also run at interpreter exit
for a backend nobody closed) always leaves no child process behind.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import nir
import numpy as np
import scipy.sparse as sp
import torch

from backends.base import Readout, check_batch
from backends.lava.lowering import Layout, Population, lower
from backends.lava.modes import DEFAULT_STATE_SCALE, check_state_scale
from backends.lava.quantize import BIAS_SOURCE, FixedPop, check_weight_bits, quantize_layout
from exporters.canonical import Plan, build_plan
from exporters.plan.ops import per_step
from exporters.plan.readout import finish_q, q_and_action, summed, tensor_params
from pipeline.encoding import SERIES, encode_seeded
from pipeline.errors import UserError, check_choice
from pipeline.graph_meta import GraphMeta

PRECISIONS = {"floating_pt": "lava", "fixed_pt": "lava-fixed"}
PIPE_BYTES = 256 * 2**20  # shared memory allowed for one chunk of input currents
CLASSIC_INPUT_BOUND = 4.0  # assumed |x| bound of a real-valued, unscaled classic-control observation


def default_input_bound(plan: Plan) -> float:
    """Largest |input| the fixed-point ranges are sized for: 1 for spike encodings; for Atari
    pixels (0..255) after the graph's preprocessing; else :data:`CLASSIC_INPUT_BOUND`. An input
    beyond it can saturate the first layer's state (counted in ``LavaBackend.saturated``)."""
    if plan.semantics.encoding not in ("current", SERIES):  # a given series may be real-valued
        return 1.0
    meta = GraphMeta.read(plan.metadata)
    if (meta.env_id or "").startswith("ALE/"):
        off = np.abs(np.asarray(meta.preprocessing.offset, dtype=np.float64))
        scale = np.abs(np.asarray(meta.preprocessing.scale, dtype=np.float64))
        return float(np.max((255.0 + off) * scale))
    return CLASSIC_INPUT_BOUND


def stop_or_kill(runtime_owner: Any, timeout: float = 15.0) -> bool:
    """Stop the Lava runtime of ``runtime_owner`` (a process); kill its OS processes if ``stop()``
    has not returned after ``timeout`` s, or raised. Returns whether ``stop()`` returned by itself.

    A runtime that was created but never run (an error before the first observation) is killed
    at once: Lava 0.10's ``stop()`` then joins processes still waiting for their first command,
    which blocks until they are killed and then raises in its thread (``OSError: handle is
    closed``)."""
    runtime = getattr(runtime_owner, "runtime", None)
    if runtime is None:
        return True
    infra = runtime._messaging_infrastructure
    actors = list(getattr(infra, "actors", []))
    if getattr(runtime, "_is_started", True):
        failed: list[BaseException] = []

        def stop() -> None:
            try:
                runtime_owner.stop()
            except Exception as exc:  # noqa: BLE001 - reported by killing below, never a traceback
                failed.append(exc)

        stopper = threading.Thread(target=stop, name="lava-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if not stopper.is_alive() and not failed:
            return True
    for actor in actors:
        try:
            actor.kill()
            try:
                actor.join(5)
            except TypeError:  # Lava's SystemProcess.join() takes no timeout; killed, it returns
                actor.join()
        except (ValueError, AssertionError, OSError):  # already joined and closed
            pass
    if getattr(infra, "smm", None) is not None:
        try:
            infra.smm.shutdown()
        except Exception:  # noqa: BLE001 - best effort after a hang
            pass
    return False


def actor_errors(runtime_owner: Any) -> list[str]:
    """Tracebacks the Lava process models raised (Lava only logs them at INFO)."""
    runtime = getattr(runtime_owner, "runtime", None)
    if runtime is None:
        return []
    out = []
    for actor in getattr(runtime._messaging_infrastructure, "actors", []):
        exc = getattr(actor, "exception", None)
        if exc:
            out.append(str(exc[1]).strip())
    return out


class _Runtime:
    """Owns the Lava processes; a finalizer stops them if the backend is dropped unclosed."""

    def __init__(self) -> None:
        self.anchor: Any = None
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.anchor is not None:
            stop_or_kill(self.anchor)


def _flat_param(v: Any, shape: tuple[int, ...]) -> Any:
    """A neuron parameter for a flat population: floats stay floats (same arithmetic as the
    reference's Python scalars), arrays are broadcast to the layer and flattened."""
    if isinstance(v, np.ndarray):
        return np.broadcast_to(v.astype(np.float64), shape).reshape(-1).copy()
    return v


def _repeat_params(params: dict[str, Any], n: int, copies: int) -> dict[str, Any]:
    """A population's parameters for ``copies`` copies side by side: every per-neuron array
    (``n`` values) repeated, copy-major; scalars and settings as they are."""
    if copies == 1:
        return params
    out = {}
    for k, v in params.items():
        if isinstance(v, np.ndarray) and v.size == n and n > 1:
            v = np.tile(v.reshape(-1), copies)
        elif isinstance(v, np.ndarray) and v.size != 1:
            raise AssertionError(f"parameter {k} has {v.size} values for {n} neurons")
        out[k] = v
    return out


class LavaBackend:
    """backends.base.Backend on Lava (``precision`` floating_pt or fixed_pt); see the module docstring.

    Fixed point only: ``weight_bits=16`` splits every synapse map (the host-fed one too unless
    ``host_weights="float"``) into two 8-bit synapse sets, a 16-bit weight
    (backends.lava.quantize, "Weight splitting"); the default 8 is one set per map.
    ``state_scale="neuron"`` gives each spiking neuron its own state unit where that rounds its
    weights more finely, ``"layer"`` one unit per population (backends.lava.quantize,
    "Per-neuron state units"; ``run-backend --state-scale``).
    """

    def __init__(self, graph: nir.NIRGraph | Plan, *, precision: str = "floating_pt",
                 convention: str | None = None, time_steps: int | None = None, dt: float | None = None,
                 readout: str | None = None,
                 batch_size: int | None = None, input_bound: float | None = None, host_weights: str = "8bit",
                 weight_bits: int = 8, copies: int = 1,
                 state_scale: str = DEFAULT_STATE_SCALE):
        check_choice("Lava precision", precision, PRECISIONS)
        self.weight_bits = check_weight_bits(weight_bits)
        if self.weight_bits != 8 and precision != "fixed_pt":
            raise UserError(f"weight_bits={weight_bits} applies to the fixed-point target (lava-fixed) only")
        self.state_scale = check_state_scale(state_scale)
        self.precision = precision
        self.name = PRECISIONS[precision]
        self.fixed = precision == "fixed_pt"
        self.plan = graph if isinstance(graph, Plan) else build_plan(
            graph, convention=convention, time_steps=time_steps, dt=dt, readout=readout)
        self.sem = self.plan.semantics
        self.T = self.sem.time_steps
        self.obs_shape = self.plan.op(self.plan.input).out_shape
        self.layout: Layout = lower(self.plan, fixed_point=self.fixed)
        self.period = self.layout.period
        if input_bound is not None and not input_bound > 0:
            raise UserError(f"input bound must be positive, got {input_bound}")
        self.input_bound = input_bound or default_input_bound(self.plan)
        self.quant: dict[str, FixedPop] | None = (
            quantize_layout(self.layout, self.input_bound, host_weights, self.weight_bits, self.state_scale)
            if self.fixed else None)
        self.by_name = {op.name: op for op in self.plan.ops}
        self.host_params = {name: tensor_params(self.by_name[name])
                            for name in self.layout.host_ops if self.by_name[name].kind != "input"}
        self.host_pops = [p for p in self.layout.pops.values() if p.host]
        self.series = self.sem.encoding != "current"
        if batch_size is not None and batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        if not isinstance(copies, int) or copies < 1:
            raise UserError(f"copies must be an integer >= 1, got {copies}")
        self.copies = copies
        per_obs = sum(self._payload_len(p) for p in self.host_pops) * 8
        self.batch = max(1, min(batch_size or 16, PIPE_BYTES // max(per_obs, 1)))
        # copies: wide observations (``copies`` observations each) per RunSteps, as many
        # observations in all as batch_size allows, at least one wide observation
        self.wide_batch = max(1, min(self.batch // copies, PIPE_BYTES // max(copies * per_obs, 1)))
        #: how a batch runs, for the run's log and JSON (docs/SCALING.md §1)
        self.batch_path = (f"{copies} copies of the network, one window per {copies} observations"
                           if copies > 1 else "one window per observation, back to back")
        self.spiking_ops = [op.name for op in self.plan.ops if op.spiking]
        self.saturated: dict[str, int] = {name: 0 for name in self.layout.pops}
        self.build_s = 0.0
        try:
            self._check_memory(per_obs)
        except UserError:
            if self.copies == 1:
                raise
            self._check_memory_one_copy(per_obs)  # a speed choice: the batch runs back to back
            self.batch_path = f"one window per observation, back to back ({copies} copies would not fit in memory)"
        self._rt = _Runtime()
        self._finalizer = weakref.finalize(self, _Runtime.close, self._rt)
        self._broken = False
        self._build()

    # ------------------------------------------------------------------ building

    def _check_memory(self, per_obs: int) -> None:
        """Refuse, from the layout's sizes, a network whose Lava processes would not fit in the
        memory this process may use (cgroup and rlimit included), before any process starts."""
        from backends.common.memory import (LAVA_BASE_BYTES, LAVA_BYTES_PER_NEURON, LAVA_BYTES_PER_SYNAPSE,
                                            available_memory, fits, gib)

        neurons = self.copies * sum(p.n for p in self.layout.pops.values())
        synapses = self.copies * sum(c.matrix.nnz for c in self.layout.conns if c.matrix is not None)
        sets = self.weight_bits // 8 if self.fixed else 1
        need = (neurons * LAVA_BYTES_PER_NEURON + sets * synapses * LAVA_BYTES_PER_SYNAPSE
                + 2 * max(self.batch, self.wide_batch * self.copies) * per_obs + LAVA_BASE_BYTES)
        available = available_memory()
        if not fits(need, available):
            raise UserError(f"the network does not fit in memory on {self.name}: it needs about {gib(need)} "
                            f"({neurons:,} neurons, {synapses:,} synapses), {gib(available)} are available")

    def _check_memory_one_copy(self, per_obs: int) -> None:
        self.copies, self.wide_batch = 1, 1
        self._check_memory(per_obs)

    def _payload_len(self, pop: Population, copies: int = 1) -> int:
        if not pop.host:
            return 0
        return copies * pop.n * (self.T if self.series else 1)

    def _record_len(self, pop: Population, copies: int = 1) -> int:
        n = copies * pop.n
        return (n if pop.spiking else 0) + ((2 * n if pop.has_membrane else n) if pop.readout else 0) + 1

    def _pop_params(self, pop: Population) -> dict[str, Any]:
        p: dict[str, Any] = {"spiking": pop.spiking, "reduce": pop.readout,
                             "membrane": pop.has_membrane and pop.readout is not None}
        if self.fixed:
            assert self.quant is not None
            fq = self.quant[pop.name]
            p.update(bias=fq.bias, threshold=fq.threshold, v_th=fq.threshold, dv=fq.dv, v_reset=fq.v_reset,
                     v_sub=fq.v_sub, v_init=fq.v_init, compare=pop.compare, du=fq.du, bias_v=fq.bias_v,
                     v_floor=fq.v_floor, multi_spike=pop.step is not None and pop.step.multi_spike,
                     reset=pop.step.reset if pop.step is not None else "hard")
            if pop.step is not None:
                p["compare"] = pop.step.compare
            return p
        p["bias"] = pop.bias
        if pop.kind == "threshold":
            p.update(threshold=_flat_param(pop.threshold, pop.shape), compare=pop.compare)
        if pop.step is not None:
            st = pop.step
            for k in ("gain", "tau", "v_leak", "v_th", "v_reset", "v_sub", "v_init", "tau_syn", "w_in", "v_floor"):
                v = getattr(st, k)
                p[k] = None if v is None else _flat_param(v, pop.shape)
            p.update(reset=st.reset, compare=st.compare, multi_spike=st.multi_spike, syn_order=st.syn_order)
        return p

    def _window_period(self) -> int:
        """Steps of one observation window the populations count (0: no windows, free running)."""
        return self.period

    def _build(self) -> None:
        from backends.lava.processes import MODELS, Population as PopProc, SynapseMap
        from lava.magma.core.run_configs import Loihi2SimCfg

        t0 = time.perf_counter()
        lay = self.layout
        procs: dict[str, Any] = {}
        C = self.copies
        for name, pop in lay.pops.items():
            rec = self._record_len(pop, C)
            procs[name] = PopProc(n=C * pop.n, kind=pop.kind, period=self._window_period(),
                                  delay=pop.delay, T=self.T, record_len=rec,
                                  payload_len=self._payload_len(pop, C),
                                  buffer=self.wide_batch if C > 1 else self.batch,
                                  params=_repeat_params(self._pop_params(pop), pop.n, C), name=name)
        synapses = []
        for conn in lay.conns:
            src, dst = procs[conn.src], procs[conn.dst]
            if conn.matrix is None:
                src.s_out.connect(dst.a_in)
                continue
            sets: list[tuple[Any, int, str]]
            if self.fixed:
                assert self.quant is not None
                fmap = self.quant[conn.dst].maps[conn.src]
                sets = [(sp.csc_matrix(fmap.mant, dtype=np.int64), fmap.exp, "")]
                if fmap.lo is not None:  # weight splitting: a second synapse set into the same port
                    sets.append((sp.csc_matrix(fmap.lo, dtype=np.int64), fmap.exp_lo, "/lo"))
            else:
                sets = [(sp.csc_matrix(conn.matrix, dtype=np.float64), 0, "")]
            if C > 1:  # the copies share no synapse: one block per copy
                sets = [(sp.block_diag([m] * C, format="csc", dtype=m.dtype), exp, tag) for m, exp, tag in sets]
            for matrix, exp, tag in sets:
                syn = SynapseMap(n_in=C * lay.pops[conn.src].n, n_out=C * lay.pops[conn.dst].n, matrix=matrix,
                                 graded=conn.graded, exp=exp, extra_delay=conn.extra, name=f"{conn.src}->{conn.dst}{tag}")
                src.s_out.connect(syn.s_in)
                syn.a_out.connect(dst.a_in)  # Lava sums every connection into an InPort
                synapses.append(syn)
        if self.fixed:
            synapses += self._bias_residual_synapses(procs)
        self.procs = procs
        self.synapses = synapses
        models = MODELS[self.precision]
        # Each process instance is mapped to its model explicitly: Lava's own lookup would
        # re-execute every module next to the process class (compiler_graphs._find_proc_models)
        # for every instance. The models carry the same floating_pt / fixed_pt tags.
        mapping = {proc: models[type(proc)] for proc in [*procs.values(), *synapses]}
        self.run_cfg = Loihi2SimCfg(select_tag=self.precision, exception_proc_model_map=mapping)
        self.anchor = next(iter(procs.values()))
        self._rt.anchor = self.anchor
        try:
            self.anchor.create_runtime(run_cfg=self.run_cfg)
        except BaseException:
            self.close()
            raise
        self.build_s = time.perf_counter() - t0

    def _bias_residual_synapses(self, procs: dict[str, Any]) -> list[Any]:
        """weight_bits=16: one always-on neuron whose synapses (exponent 0) add each population's
        bias residual every step (quantize.FixedPop.bias_res; host-fed populations get it from
        the host instead). It never resets, so its spikes, one Lava step late, reach every window."""
        from backends.lava.processes import BiasSource, SynapseMap

        assert self.quant is not None
        targets = [name for name, fp in self.quant.items()
                   if fp.bias_res is not None and not self.layout.pops[name].host]
        if not targets:
            return []
        source = procs[BIAS_SOURCE] = BiasSource(name=BIAS_SOURCE)
        out = []
        for name in targets:
            res = np.tile(self.quant[name].bias_res.reshape(-1), self.copies)
            syn = SynapseMap(n_in=1, n_out=res.size, matrix=sp.csc_matrix(res.reshape(-1, 1).astype(np.int64)),
                             graded=False, exp=0, name=f"{BIAS_SOURCE}->{name}")
            source.s_out.connect(syn.s_in)
            syn.a_out.connect(procs[name].a_in)
            out.append(syn)
        return out

    # ------------------------------------------------------------------ input currents

    def _host_values(self, obs: np.ndarray, spikes: np.ndarray | None) -> dict[str, np.ndarray]:
        """Payload per host-fed population for a chunk: ``[B, payload_len]`` (float64)."""
        B = obs.shape[0]
        if spikes is None:
            x = torch.as_tensor(obs, dtype=torch.float64)
            value = x.unsqueeze(0)  # [1, B, ...]: constant over the T steps
        else:
            value = torch.as_tensor(spikes, dtype=torch.float64)  # [T, B, ...]
        out: dict[str, np.ndarray] = {}
        if self.fixed:
            for pop in self.host_pops:
                fmap = self.quant[pop.name].maps["<host>"]  # type: ignore[index]
                flat = value.reshape(value.shape[0] * B, -1).numpy()
                # real-valued inputs: graded, rounded to the state grid (both sets when split)
                acc = fmap.host_current(flat.T).T
                cur = np.round(acc).reshape(value.shape[0], B, pop.n)
                res = self.quant[pop.name].bias_res  # type: ignore[index]
                if res is not None:  # weight_bits=16: the host adds the bias residual
                    cur = cur + res
                out[pop.name] = self._payload(cur, B)
            return out
        values: dict[str, torch.Tensor] = {self.plan.input: value}
        T = self.T
        for name in self.layout.host_ops:
            op = self.by_name[name]
            if op.kind == "input":
                continue
            values[name] = per_step(op, summed(op.inputs, values, T), self.host_params[name])
        for pop in self.host_pops:
            cur = summed(pop.host, values, T)
            cur = cur.reshape(cur.shape[0], B, pop.n).numpy()
            out[pop.name] = self._payload(cur, B)
        return out

    def _payload(self, cur: np.ndarray, B: int) -> np.ndarray:
        """``[T' , B, n]`` -> ``[B, payload_len]`` (t-major within an observation)."""
        if self.series and cur.shape[0] == 1:
            cur = np.broadcast_to(cur, (self.T, *cur.shape[1:]))
        return np.ascontiguousarray(np.transpose(cur, (1, 0, 2)).reshape(B, -1))

    # ------------------------------------------------------------------ running

    def _run_steps(self, steps: int) -> None:
        from lava.magma.core.run_conditions import RunSteps

        try:
            self.anchor.run(condition=RunSteps(num_steps=steps), run_cfg=self.run_cfg)
        except Exception as exc:
            causes = actor_errors(self.anchor)
            self._broken = True
            self.close()
            detail = "\n".join(causes) if causes else repr(exc)
            raise RuntimeError(f"a Lava process model failed; the runtime was stopped:\n{detail}") from exc

    def _recv(self, port: Any, timeout: float = 30.0) -> np.ndarray:
        """Receive one record. The sender has written it when ``run`` returns, but the pipe's
        receiving thread registers it asynchronously: poll briefly rather than block for ever."""
        deadline = time.monotonic() + timeout
        while not port.probe():
            if time.monotonic() > deadline:
                self._broken = True
                self.close()
                raise RuntimeError("a Lava population sent no record for a finished observation")
            time.sleep(2e-4)
        return port.recv()

    def _check(self, obs: np.ndarray, input_spikes: np.ndarray | None) -> np.ndarray:
        if self._broken or self._rt.closed:
            raise RuntimeError("this Lava backend was closed (or its runtime failed); build a new one")
        # everything a user can get wrong is refused here, before anything reaches a Lava pipe:
        # a pipe refuses a wrong-sized row with an AssertionError that leaves the runtime stuck
        if input_spikes is not None and not self.series:
            raise UserError("input spikes were given, but the graph's input encoding is 'current'")
        obs = check_batch(obs, self.obs_shape, self.plan.input, self.T, input_spikes)
        if not np.all(np.isfinite(obs)):
            raise UserError("observations contain NaN or infinite values")
        return obs

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """backends.base.Backend.run: ``obs`` ``[N, *obs_shape]`` -> Readout (q float64, actions)."""
        obs = self._check(obs, input_spikes)
        N = obs.shape[0]
        if N == 0:
            a = int(np.prod(self.plan.op(self.plan.output).out_shape))
            spk = {k: np.zeros((0, *self.by_name[k].out_shape), np.int64) for k in self.spiking_ops}
            return Readout(q=np.zeros((0, a)), action=np.zeros(0, np.int64), spikes=spk,
                           timings={"set_input": 0.0, "simulate": 0.0, "read_out": 0.0})
        if self.series and input_spikes is None:  # as the reference: one seeded stream per call
            input_spikes = encode_seeded(torch.as_tensor(obs), self.T, self.sem.encoding,
                                         self.sem.encoding_seed).numpy()
        timings = {"set_input": 0.0, "simulate": 0.0, "read_out": 0.0}
        records: dict[str, list[np.ndarray]] = {name: [] for name in self.layout.pops}
        if self.copies > 1:
            self._run_copies(obs, input_spikes, timings, records)
        else:
            self._run_back_to_back(obs, input_spikes, timings, records)
        t3 = time.perf_counter()
        readout = self._readout({k: np.stack(v) for k, v in records.items()}, N)
        timings["read_out"] += time.perf_counter() - t3
        readout.timings = timings
        return readout

    def _run_back_to_back(self, obs: np.ndarray, input_spikes: np.ndarray | None, timings: dict[str, float],
                          records: dict[str, list[np.ndarray]]) -> None:
        """``run`` on the one-copy network: one window per observation, ``batch`` per RunSteps."""
        N = obs.shape[0]
        for lo in range(0, N, self.batch):
            t0 = time.perf_counter()
            hi = min(N, lo + self.batch)
            spikes = input_spikes[:, lo:hi] if input_spikes is not None else None
            payloads = self._host_values(obs[lo:hi], spikes)
            for pop in self.host_pops:
                port = self.procs[pop.name].host_in.external_pipe_csp_send_port
                for row in payloads[pop.name]:
                    port.send(row)
            t1 = time.perf_counter()
            self._run_steps(self.period * (hi - lo))
            t2 = time.perf_counter()
            for name in self.layout.pops:
                port = self.procs[name].rec_out.external_pipe_csp_recv_port
                for _ in range(hi - lo):
                    records[name].append(self._recv(port))
            t3 = time.perf_counter()
            timings["set_input"] += t1 - t0
            timings["simulate"] += t2 - t1
            timings["read_out"] += t3 - t2

    def _run_copies(self, obs: np.ndarray, input_spikes: np.ndarray | None, timings: dict[str, float],
                    records: dict[str, list[np.ndarray]]) -> None:
        """``run`` on the N-copy network: ``copies`` observations per window (the last window of a
        batch padded with zero input), ``wide_batch`` windows per RunSteps; appends one one-copy
        record per observation to ``records``, as the back-to-back path does."""
        C, N = self.copies, obs.shape[0]
        for lo in range(0, N, C * self.wide_batch):
            t0 = time.perf_counter()
            hi = min(N, lo + C * self.wide_batch)
            B = hi - lo
            G = -(-B // C)  # wide observations (windows)
            spikes = input_spikes[:, lo:hi] if input_spikes is not None else None
            payloads = self._host_values(obs[lo:hi], spikes)  # the one-copy code, [B, steps * n]
            for pop in self.host_pops:
                rows = payloads[pop.name].reshape(B, -1, pop.n)  # [B, steps, n]
                wide = np.zeros((G * C, *rows.shape[1:]), dtype=rows.dtype)
                wide[:B] = rows
                # observation g*C + j -> copy j of window g; t-major within a window
                wide = np.ascontiguousarray(wide.reshape(G, C, -1, pop.n).transpose(0, 2, 1, 3)).reshape(G, -1)
                port = self.procs[pop.name].host_in.external_pipe_csp_send_port
                for row in wide:
                    port.send(row)
            t1 = time.perf_counter()
            self._run_steps(self.period * G)
            t2 = time.perf_counter()
            for name, pop in self.layout.pops.items():
                port = self.procs[name].rec_out.external_pipe_csp_recv_port
                for g in range(G):
                    for j, rec in enumerate(self._split_record(pop, self._recv(port))):
                        if g * C + j < B:
                            records[name].append(rec)
            t3 = time.perf_counter()
            timings["set_input"] += t1 - t0
            timings["simulate"] += t2 - t1
            timings["read_out"] += t3 - t2

    def _split_record(self, pop: Population, rec: np.ndarray) -> list[np.ndarray]:
        """A wide population's record -> the ``copies`` one-copy records (make_record's layout:
        counts, statistic, membrane, each copy-major, then the saturation count, given to copy 0:
        a wide population counts its copies' saturations together)."""
        C, n = self.copies, pop.n
        parts = []  # each [C, n]
        i = 0
        if pop.spiking:
            parts.append(rec[i:i + C * n].reshape(C, n))
            i += C * n
        if pop.readout is not None:
            for _ in range(2 if pop.has_membrane else 1):
                parts.append(rec[i:i + C * n].reshape(C, n))
                i += C * n
        assert i + 1 == rec.size, (i, rec.size)
        return [np.concatenate([*(p[j] for p in parts), rec[-1:] if j == 0 else np.zeros(1)]) for j in range(C)]

    def _readout(self, rec: dict[str, np.ndarray], N: int) -> Readout:
        """Q-values from the records, mirroring backends.reference.executor.run_batch."""
        sem, lay = self.sem, self.layout
        spikes: dict[str, np.ndarray] = {}
        stat = membrane = None
        for name, pop in lay.pops.items():
            r = rec[name]
            n, i = pop.n, 0
            if pop.spiking:
                spikes[name] = np.rint(r[:, :n]).astype(np.int64).reshape(N, *pop.shape)
                i = n
            if pop.readout is not None:
                stat = r[:, i:i + n]
                if pop.has_membrane:
                    membrane = r[:, i + n:i + 2 * n]
            self.saturated[name] += int(r[:, -1].sum()) if N else 0
        assert stat is not None
        rp = lay.pops[lay.readout_pop]
        if self.fixed:
            fq = self.quant[rp.name]  # type: ignore[index]
            q_unit = fq.q if fq.unit is None else fq.unit
            if not rp.spiking:
                stat = stat * q_unit
            if membrane is not None:
                membrane = membrane * q_unit
        # the window's reduction was done on the chip (sum, max or last; mean = sum / T here)
        y = stat / self.T if sem.reduce == "mean" else stat
        q = y / sem.divisor if sem.divisor != 1.0 else y
        q, tiebreak = finish_q(sem, torch.as_tensor(np.asarray(q, dtype=np.float64).reshape(N, -1)),
                               None if membrane is None else torch.as_tensor(membrane), rp.name)
        q, action = q_and_action(q, tiebreak)
        for name in self.spiking_ops:
            spikes.setdefault(name, np.zeros((N, *self.by_name[name].out_shape), np.int64))
        return Readout(q=q, action=action, spikes={k: spikes[k] for k in self.spiking_ops})

    def close(self) -> None:
        """Stop the runtime (killing its processes if ``stop()`` hangs); idempotent."""
        self._rt.close()
