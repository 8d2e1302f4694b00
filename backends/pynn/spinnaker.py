"""``--target pynn-spinnaker``: the PyNN network on a SpiNNaker machine through sPyNNaker 7.4.

The host side (this module, numpy only) turns the Plan into a description of sPyNNaker
populations and projections — nearest neuron model per population, weights split by sign into
excitatory and inhibitory projections, delays = depth differences — and hands it to a worker
process (:mod:`backends.pynn.spinnaker_worker`) that imports sPyNNaker. The worker runs with
``HOME`` set to the run folder, where the ``.spynnaker.cfg`` written from the SPINNAKER_* /
SPALLOC_* variables lives (:mod:`backends.pynn.spinnaker_config`): sPyNNaker reads its machine
only from that file, holds one simulation per process, and must not touch the user's home.

* **Virtual board** (``SPINNAKER_VIRTUAL=1`` or ``virtual=True``): the worker maps the network
  (partitioning, placement, routing, routing tables, data generation) and reports
  the resources sPyNNaker used — chips, cores, routing entries — then exits; ``run`` refuses.
* **Real machine**: the worker keeps the network loaded; each observation sets the input
  (``i_offset`` of input-fed populations for the ``current`` encoding, spike sources otherwise),
  runs ``T + depth - 1`` steps (one more for spike input), reads the spikes, and resets the machine (``sim.reset()``) so no
  state or spike carries over. Q is computed on the host from the window spikes exactly as for
  pyNN.nest (:mod:`backends.common.readout`).

Timing on SpiNNaker (a spike of step t with delay d arrives at t+d; ``i_offset`` acts from step
0): population k (layout depth k) integrates steps k-1 .. k-2+T, so connections of one depth
step have delay 1, and a population feeding itself through a loop (docs/NIR.md "Recurrence")
has delay 1 onto itself (``NetLayout.loop_delay``; ``sim.reset()`` clears it between observations); biases of deeper layers come from one spike source per window that fires
only in the step before each window step, so a bias never acts outside its window (first-layer
biases join ``i_offset``).

Neuron models (docs/SPINNAKER.md derives the parameters and the expected deviations):
LIF hard reset -> ``IF_curr_delta`` (its closed-form update with ``exp(-dt/tau_m) = 1 - 1/tau``
is docs/DESIGN.md's forward Euler); IF hard reset -> ``IF_trunc_delta`` (non-leaky, but the
membrane is floored at ``v_reset``); non-spiking LI readouts -> ``IF_curr_delta`` with an
unreachable threshold; Threshold nodes -> ``IF_curr_delta`` without memory. sPyNNaker 7.4 has
no subtractive reset and no forward-Euler synaptic filter: soft-reset and CubaLIF nodes are
refused with the node's name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from backends.base import Readout, check_batch, plan_for_env
from backends.common.layout import Drive, NetLayout, layout
from backends.common.readout import Recorded, add_spikes, readout_arrays, spike_counts
from backends.pynn.spinnaker_config import MachineConfig, resolve
from exporters.canonical import Plan
from pipeline.encoding import encode_seeded
from pipeline.errors import UserError

MAX_ROW = 256  # synapses of one presynaptic neuron onto one core (sPyNNaker's static synapse row limit)
MAX_ATOMS = 256  # neurons per core of IF_curr_delta / IF_trunc_delta (sPyNNaker's default)
S1615_MAX = 65535.0  # largest membrane / parameter value sPyNNaker's s16.15 fixed point holds
NEVER = 32767.0  # threshold of a non-spiking readout population (unreachable, representable)
WORKER_TIMEOUT = 3600.0


def check_unit_spikes(s_in: torch.Tensor) -> None:
    """sPyNNaker's spike sources send unit spikes (signed through two sources): a real-valued input
    series (run-backend --input-spikes on a current graph) is one error line, not a rounding."""
    if not bool(torch.all((s_in == 0) | (s_in.abs() == 1))):
        raise UserError("the input series holds values other than 0 and ±1; SpiNNaker's spike sources send "
                        "unit spikes only (run real-valued time-varying input on nest, pynn-nest or lava)")


@dataclass
class SpinPop:
    """One sPyNNaker population: model, parameters (scalars or per-neuron arrays), timing."""

    name: str
    model: str  # IF_curr_delta | IF_trunc_delta
    size: int
    params: dict[str, Any]
    depth: int
    scale: np.ndarray  # factor from the plan's input current to sPyNNaker's weight (per neuron)
    shape: tuple[int, ...]
    record_v: bool = False
    max_summed: tuple[float, float] = (0.0, 0.0)  # largest input per step (excitatory, inhibitory)
    max_atoms: int = MAX_ATOMS  # neurons per core, lowered so that no synaptic row exceeds MAX_ROW
    offset: int = 0  # 1 when the input arrives as spikes (a source's spike lands one step later)

    @property
    def window_start(self) -> int:
        return self.depth - 1 + self.offset


@dataclass
class SpinNet:
    """The whole description the worker builds from (see :func:`describe`)."""

    pops: list[SpinPop]
    projections: list[dict[str, Any]] = field(default_factory=list)  # src, dst, receptor, pre, post, w, delay
    sources: dict[str, list[float]] = field(default_factory=dict)  # spike source name -> spike times (ms)
    input_pops: list[str] = field(default_factory=list)  # populations fed by the observation
    timestep_ms: float = 1.0
    run_steps: int = 1


def _per_neuron(p: Any, n: int) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    return np.full(n, float(a)) if a.ndim == 0 else np.broadcast_to(a, (n,)).astype(np.float64).copy()


def _compact(a: np.ndarray) -> Any:
    return float(a[0]) if a.size and np.all(a == a[0]) else a


def spinnaker_population(name: str, p: Any, ts: float) -> tuple[str, dict[str, Any], np.ndarray]:
    """(model, parameters, input scale) of the nearest sPyNNaker model; UserError naming the node."""
    op = p.op
    n = p.size
    what = f"node {name!r} ({op.nir_type})"
    if op.kind == "threshold":  # stateless: exp(-dt/tau_m) == 0 in s16.15, R = dt
        th = _per_neuron(op.params["threshold"], n)
        if op.params["compare"] == ">":
            th = th + 2.0 ** -15
        tau_m = ts / 20.0
        return "IF_curr_delta", {"tau_m": tau_m, "cm": tau_m / ts, "v_rest": 0.0, "v_reset": 0.0,
                                 "v_thresh": _compact(th), "tau_refrac": 0.0, "i_offset": 0.0}, np.ones(n)
    step = op.neuron
    assert step is not None
    if step.tau_syn is not None:
        raise UserError(f"{what}: sPyNNaker has no neuron with a forward-Euler synaptic filter (CubaLIF); "
                        "its exponential synapses integrate differently")
    if step.multi_spike:
        raise UserError(f"{what}: sPyNNaker neurons emit at most one spike per step (multi-spike neurons)")
    if step.v_floor is not None:
        raise UserError(f"{what}: a membrane floor (Sinabs min_v_mem) has no sPyNNaker form; "
                        "--convention sinabs+no-floor if the model had none")
    if step.spiking and step.reset != "hard":
        raise UserError(f"{what}: soft (subtractive) reset needs a neuron model sPyNNaker 7.4 lacks "
                        "(its IF/LIF models all reset to v_reset); export the network with hard reset or "
                        "run it on nest or pynn-nest")
    gain = _per_neuron(step.gain, n)
    v_init = _per_neuron(step.v_init, n)
    if step.spiking:
        th = _per_neuron(step.v_th, n) + (2.0 ** -15 if step.compare == ">" else 0.0)
        v_reset = _compact(_per_neuron(step.v_reset, n))
    else:
        th = np.full(n, NEVER)
        v_reset = 0.0
    if step.tau is None:
        if not step.spiking:
            raise UserError(f"{what}: a non-spiking integrator (I) must be the readout head, computed on the host")
        # IF_trunc_delta: V += I R with R = tau_m / cm = dt and delta input I = w / dt
        return "IF_trunc_delta", {"tau_m": 1.0, "cm": 1.0 / ts, "v_reset": v_reset, "v_thresh": _compact(th),
                                  "tau_refrac": 0.0, "i_offset": 0.0, "v": _compact(v_init)}, gain
    tau = _per_neuron(step.tau, n)
    if np.any(tau <= 1.0):
        raise UserError(f"{what}: tau of one step or less cannot be a sPyNNaker LIF")
    # exp(-dt / tau_m) = 1 - 1/tau and R = tau_m / cm = dt: V' = V + (w - (V - v_rest)) / tau
    tau_m = -ts / np.log1p(-1.0 / tau)
    if np.any(tau_m > S1615_MAX):
        raise UserError(f"{what}: tau = {float(tau.max()):g} steps is too long for s16.15 fixed point")
    params = {"tau_m": _compact(tau_m), "cm": _compact(tau_m / ts), "v_rest": _compact(_per_neuron(step.v_leak, n)),
              "v_reset": v_reset, "v_thresh": _compact(th), "tau_refrac": 0.0, "i_offset": 0.0,
              "v": _compact(v_init)}
    return "IF_curr_delta", params, gain


def describe(net: NetLayout, ts: float = 1.0, drives: dict[str, Drive] | None = None) -> SpinNet:
    """The sPyNNaker network of ``net`` (host side, no sPyNNaker import); ``drives`` as
    ``net.drives()`` returns them, when the caller has them already."""
    plan = net.plan
    T = plan.semantics.time_steps
    depth = net.depth
    spiking_input = plan.semantics.encoding != "current"
    offset = 1 if spiking_input else 0
    pops = []
    for name, p in net.pops.items():
        model, params, scale = spinnaker_population(name, p, ts)
        if not spiking_input and plan.input in p.sources and p.depth > 1:
            raise UserError(f"node {name!r}: on SpiNNaker the observation's current (i_offset) acts from the first "
                            "step, so it can only feed first-layer populations, not one that also reads deeper layers")
        pops.append(SpinPop(name, model, p.size, params, p.depth, scale, tuple(p.op.out_shape),
                            record_v=name in net.traced, offset=offset))
    net.check_loops("SpiNNaker")
    spin = SpinNet(pops=pops, timestep_ms=ts, run_steps=T + depth - 1 + offset)
    byname = {sp.name: sp for sp in pops}
    for name, drive in (net.drives() if drives is None else drives).items():
        sp_ = byname[name]
        for src, mat in drive.terms.items():
            coo = mat.tocoo()
            w = coo.data * sp_.scale[coo.row]
            if src == plan.input:
                spin.input_pops.append(name)
                if not spiking_input:
                    continue  # i_offset per observation, computed on the host
                for sign, tag in ((1.0, "in_pos"), (-1.0, "in_neg")):  # signed input spikes
                    _add_split(spin, tag, name, coo.col, coo.row, sign * w, sp_.depth)
                continue
            _add_split(spin, src, name, coo.col, coo.row, w, sp_.depth - byname[src].depth)
        for src, mat in drive.late.items():  # a loop's closing edge: one step more than a forward one
            coo = mat.tocoo()
            _add_split(spin, src, name, coo.col, coo.row, coo.data * sp_.scale[coo.row],
                       net.loop_delay(src, name, "SpiNNaker"), late=True)
        if drive.const is not None and np.any(drive.const != 0):
            c = drive.const * sp_.scale
            nz = np.nonzero(c)[0]
            if sp_.window_start == 0:  # input-fed layer: the bias joins i_offset (from step 0)
                sp_.params["i_offset"] = _compact(c / ts)
                continue
            clock = f"bias_w{sp_.window_start}"
            # fires at window steps - 1, arrives (delay 1) during the window only
            spin.sources[clock] = [float(sp_.window_start - 1 + t) * ts for t in range(T)]
            _add_split(spin, clock, name, np.zeros(nz.size, np.int64), nz, c[nz], 1)
    if spiking_input:
        spin.sources.update({"in_pos": [], "in_neg": []})
    fit_rows(spin)
    for p in spin.pops:  # exact worst-case sums set the ring-buffer shifts (no saturation, no guess)
        worst = {"excitatory": np.zeros(p.size), "inhibitory": np.zeros(p.size)}
        for prj in spin.projections:
            if prj["dst"] == p.name:
                worst[prj["receptor"]] += np.bincount(prj["post"], weights=prj["w"], minlength=p.size)
        p.max_summed = (float(worst["excitatory"].max()), float(worst["inhibitory"].max()))
    return spin


def _add_split(spin: SpinNet, src: str, dst: str, pre: np.ndarray, post: np.ndarray, w: np.ndarray,
               delay_steps: int, late: bool = False) -> None:
    """Excitatory and inhibitory projections (sPyNNaker weights are unsigned per receptor).

    Sorted by (pre, post): sPyNNaker 7.4's FromListConnector estimates row lengths by grouping
    the list by source and then target with split points taken from a sorted copy but applied
    to the list as given, so an unsorted list gets wrong (too long) rows.
    """
    order = np.lexsort((post, pre))
    pre, post, w = pre[order], post[order], w[order]
    for receptor, mask in (("excitatory", w > 0), ("inhibitory", w < 0)):
        if np.any(mask):
            spin.projections.append({"src": src, "dst": dst, "receptor": receptor, "pre": pre[mask].astype(np.int64),
                                     "post": post[mask].astype(np.int64), "w": np.abs(w[mask]),
                                     "delay": int(delay_steps), "late": late})


def max_row(pre: np.ndarray, post: np.ndarray, atoms: int) -> int:
    """Longest synaptic row: synapses from one presynaptic neuron onto one core of ``atoms`` neurons."""
    if pre.size == 0:
        return 0
    cores = int(post.max()) // atoms + 1
    return int(np.bincount(pre.astype(np.int64) * cores + post // atoms).max())


def fit_rows(spin: SpinNet) -> None:
    """Lower each population's neurons per core until every incoming row fits in MAX_ROW."""
    byname = {p.name: p for p in spin.pops}
    for prj in spin.projections:
        p = byname[prj["dst"]]
        while p.max_atoms > 1:
            longest = max_row(prj["pre"], prj["post"], p.max_atoms)
            if longest <= MAX_ROW:
                break
            p.max_atoms = max(1, min(p.max_atoms - 1, int(p.max_atoms * MAX_ROW / longest)))


def save_description(spin: SpinNet, folder: Path) -> None:
    """``net.json`` (structure, scalar parameters) and ``net.npz`` (arrays) for the worker."""
    arrays: dict[str, np.ndarray] = {}
    pops = []
    for p in spin.pops:
        params = {}
        for k, v in p.params.items():
            if isinstance(v, np.ndarray):
                key = f"pop/{p.name}/{k}"
                arrays[key] = v
                params[k] = {"array": key}
            else:
                params[k] = float(v)
        pops.append({"name": p.name, "model": p.model, "size": p.size, "shape": list(p.shape), "params": params,
                     "record_v": p.record_v, "max_atoms": p.max_atoms, "max_summed": list(p.max_summed)})
    prjs = []
    for i, prj in enumerate(spin.projections):
        for k in ("pre", "post", "w"):
            arrays[f"prj/{i}/{k}"] = prj[k]
        prjs.append({"src": prj["src"], "dst": prj["dst"], "receptor": prj["receptor"], "delay": prj["delay"],
                     "n": int(prj["pre"].size)})
    n_in = {"in_pos": 0, "in_neg": 0}
    meta = {"pops": pops, "projections": prjs, "sources": spin.sources, "timestep_ms": spin.timestep_ms,
            "run_steps": spin.run_steps, "input_pops": spin.input_pops, "n_in": n_in}
    (folder / "net.json").write_text(json.dumps(meta))
    np.savez(folder / "net.npz", **arrays)


class PyNNSpiNNakerBackend:
    """Build a Plan for SpiNNaker; on a virtual board map it and report resources, else run it."""

    name = "pynn-spinnaker"

    def __init__(self, graph: nir.NIRGraph | Plan, *, time_steps: int | None = None, dt: float | None = None,
                 readout: str | None = None, convention: str | None = None, obs_shape: tuple[int, ...] | None = None,
                 n_actions: int | None = None, virtual: bool | None = None, workdir: str | Path | None = None,
                 python: str | None = None, timeout: float = WORKER_TIMEOUT):
        self.machine: MachineConfig = resolve(virtual=virtual)  # before any work: a clear error first
        self.plan, self.obs_shape, self.n_out = plan_for_env(
            graph, time_steps=time_steps, dt=dt, readout=readout, convention=convention, obs_shape=obs_shape,
            n_actions=n_actions)
        self.sem = self.plan.semantics
        self.T = self.sem.time_steps
        self.net = layout(self.plan, "SpiNNaker", loops=True)
        self.drives = self.net.drives()
        self.spin = describe(self.net, drives=self.drives)  # 1 ms steps: SpiNNaker's real-time default
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="dsqn-spinnaker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        (home / ".spynnaker.cfg").write_text(self.machine.cfg_text(report_dir=str(self.workdir / "reports")) + "\n")
        save_description(self.spin, self.workdir)
        self.python = python or os.environ.get("SPINNAKER_PYTHON") or sys.executable
        self.timeout = timeout
        self.resources: dict[str, Any] = {}
        self._proc: subprocess.Popen | None = None
        t0 = time.perf_counter()
        self._start()
        self.build_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------ the worker

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HOME"] = str(self.workdir / "home")
        env.pop("XDG_CONFIG_HOME", None)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def _start(self) -> None:
        cmd = [self.python, "-m", "backends.pynn.spinnaker_worker", str(self.workdir)]
        if self.machine.virtual:
            cmd.append("--map-only")
        log = open(self.workdir / "worker.log", "w")
        try:
            self._proc = subprocess.Popen(cmd, cwd=self.workdir, env=self._env(), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log, text=True)
        except OSError as exc:
            raise UserError(f"cannot start the sPyNNaker worker with {self.python}: {exc}") from None
        reply = self._reply()
        self.resources = reply.get("resources", {})
        if self.machine.virtual:
            self._proc.wait(timeout=60)
            self._proc = None
            (self.workdir / "resources.json").write_text(json.dumps(self.resources, indent=2) + "\n")
            print(f"pynn-spinnaker: virtual board, mapping only: {describe_resources(self.resources)}",
                  file=sys.stderr)

    def _reply(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=60)
            tail = (self.workdir / "worker.log").read_text(errors="replace").strip().splitlines()[-12:]
            raise UserError("the sPyNNaker worker stopped (exit code "
                            f"{self._proc.returncode}); last lines of {self.workdir / 'worker.log'}:\n  "
                            + "\n  ".join(tail))
        reply = json.loads(line)
        if reply.get("error"):
            raise UserError(f"sPyNNaker: {reply['error']}")
        return reply

    def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(msg) + "\n")
        self._proc.stdin.flush()
        return self._reply()

    # ------------------------------------------------------------------ running (real machine)

    def _input_file(self, i: int, obs: np.ndarray, s_in: np.ndarray | None) -> Path:
        """The observation's input: i_offset of the input-fed populations, or spike times."""
        arrays: dict[str, np.ndarray] = {}
        ts = self.spin.timestep_ms
        if s_in is None:
            x = obs.reshape(-1).astype(np.float64)
            for name in self.spin.input_pops:
                p = next(sp for sp in self.spin.pops if sp.name == name)
                d = self.drives[name]
                cur = d.terms[self.plan.input] @ x + (d.const if d.const is not None else 0.0)
                arrays[f"i_offset/{name}"] = cur * p.scale / ts
        else:
            flat = s_in.reshape(self.T, -1)
            for tag, mask in (("in_pos", flat > 0), ("in_neg", flat < 0)):
                t_idx, n_idx = np.nonzero(mask)
                arrays[f"spikes/{tag}/neuron"] = n_idx.astype(np.int64)
                arrays[f"spikes/{tag}/time"] = t_idx.astype(np.float64) * ts
        path = self.workdir / f"in_{i % 2}.npz"
        np.savez(path, **arrays)
        return path

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """backends.base.Backend.run on the machine: one run + reset per observation."""
        if self.machine.virtual:
            raise UserError("a virtual SpiNNaker board only maps the network (resources in .resources); set "
                            "SPINNAKER_MACHINE or SPALLOC_SERVER to run it")
        if self._proc is None:
            raise UserError("this SpiNNaker backend was closed; build it again")
        obs = check_batch(obs, self.obs_shape, self.plan.input, self.T, input_spikes)
        n = obs.shape[0]
        x = torch.as_tensor(obs).to(torch.float64)
        s_in = None
        if self.sem.encoding != "current":
            s_in = (torch.as_tensor(np.asarray(input_spikes)).to(torch.float64) if input_spikes is not None
                    else encode_seeded(x, self.T, self.sem.encoding, self.sem.encoding_seed))
            check_unit_spikes(s_in)
        timings = {"set_input": 0.0, "simulate": 0.0, "read_out": 0.0}
        recs = []
        for i in range(n):
            t0 = time.perf_counter()
            path = self._input_file(i, obs[i], None if s_in is None else s_in[:, i].numpy())
            t1 = time.perf_counter()
            reply = self._request({"cmd": "run", "input": str(path), "output": str(self.workdir / "out.npz")})
            t2 = time.perf_counter()
            recs.append(self._recorded(Path(reply["output"])))
            timings["set_input"] += t1 - t0
            timings["simulate"] += t2 - t1
            timings["read_out"] += time.perf_counter() - t2
        q, action = readout_arrays(self.net, recs, x, s_in, self.n_out)
        return Readout(q=q, action=action, spikes=spike_counts(self.net, recs), timings=timings)

    def _recorded(self, path: Path) -> Recorded:
        """Window spikes (times in steps from the run's start) and membranes from the worker's file."""
        T = self.T
        rec = Recorded(counts={})
        with np.load(path) as data:
            for p in self.spin.pops:
                lay = self.net.pops[p.name]
                if lay.spiking:
                    ids = data[f"spikes/{p.name}/neuron"].astype(np.int64)
                    t = np.rint(data[f"spikes/{p.name}/time"] / self.spin.timestep_ms).astype(np.int64) - p.window_start
                    ok = (t >= 0) & (t < T)
                    add_spikes(rec, p.name, ids[ok], t[ok], p.size, T, train=True)
                if p.record_v:
                    v = data[f"v/{p.name}"]  # [steps, n]
                    trace = v[p.window_start:p.window_start + T]
                    rec.traces[p.name] = trace
                    rec.final_v[p.name] = trace[-1]
        return rec

    def close(self) -> None:
        """Stop the worker (it ends the sPyNNaker simulation) and remove a temporary run folder."""
        if self._proc is not None:
            try:
                self._request({"cmd": "close"})
            except (UserError, OSError, ValueError):
                pass
            try:
                self._proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._own_dir and os.environ.get("DSQN_KEEP_SPINNAKER_DIR", "") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)


def describe_resources(res: dict[str, Any]) -> str:
    """One line for tables: chips, cores, routing entries, mapping time."""
    if not res:
        return "-"
    system = res.get("cores_with_system", 0) - res.get("cores", 0)
    return (f"{res.get('chips', '?')} chips, {res.get('cores', '?')} cores (+{system} system), "
            f"{res.get('routing_entries', '?')} routing entries, mapped in {res.get('map_seconds', math.nan):.1f} s")
