"""The Lava processes of the backend and their PyLoihiProcessModels (floating_pt, fixed_pt).

Lava's own LIF spikes on ``v > vth``, resets hard to 0, has no soft reset, no LI readout and
no per-observation reset (``LIFReset`` resets u and v to 0 only), and its Dense/Sparse
bit-accurate models use Loihi 1's weight convention; so the backend brings two processes:

* :class:`Population` — one layer of neurons (any docs/DESIGN.md neuron step, a Threshold op, or a
  readout integrator). It keeps its own observation clock: with period ``P`` and delay ``d``
  it resets its state on window step ``d`` (a built-in periodic reset, no ``Var.set``),
  integrates on steps ``[d, d + T)``, sends zeros outside, counts its spikes, tracks the
  readout statistic, and at the window's last step sends one *record* (counts, statistic,
  final membrane) to the host through an external pipe — one message per observation instead
  of a ``Var.get`` per element (docs/LAVA.md, section 2). A host-fed layer reads its input
  current for the next observation from its own external ``host_in`` pipe at window step 0.
* :class:`SynapseMap` — a sparse synaptic map (Lava's Sparse semantics: it sends at step t the
  product of what it received at t-1). The float model sums the weight columns of the
  spiking inputs; the fixed model does the same on 8-bit mantissas and applies the map's
  exponent (backends.lava.quantize). With weight splitting (``weight_bits=16``) a map is two
  SynapseMap processes (``src->dst`` and ``src->dst/lo``, each with its own mantissas and
  exponent) from the same source into the same ``a_in`` port, which sums them.

The float population model performs docs/DESIGN.md's arithmetic literally in float64, operation
for operation as ``exporters/plan/ops.py`` does. Run configurations pick the model by tag
(``floating_pt`` / ``fixed_pt``); the backend passes the choice explicitly per process
instance (see backends.lava.backend).
"""

from __future__ import annotations

from backends.lava.compat import ensure_lava_importable

ensure_lava_importable()

from collections import deque  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from backends.lava.quantize import STATE_MAX, decay, shift  # noqa: E402


class Population(AbstractProcess):
    """A layer of neurons with a built-in per-observation schedule (module docstring).

    Parameters (all passed on to the models as proc_params): ``n``; ``kind`` (neuron,
    threshold, identity); ``period`` P (0: free-running, never resets nor records), ``delay``
    d, ``T``; ``record_len`` and ``buffer`` (records kept in the pipe); ``payload_len``
    (0: not host-fed; n: constant current; T*n: one current per step); and the arithmetic
    parameters of the chosen precision (``params``).
    """

    def __init__(self, *, n: int, kind: str, period: int, delay: int, T: int, record_len: int,
                 payload_len: int, buffer: int, params: dict[str, Any], name: str | None = None) -> None:
        super().__init__(n=n, kind=kind, period=period, delay=delay, T=T, record_len=record_len,
                         payload_len=payload_len, params=params, name=name)
        self.a_in = InPort(shape=(n,))
        self.s_out = OutPort(shape=(n,))
        self.host_in = InPort(shape=(max(payload_len, 1),))
        if payload_len:
            self.host_in.flag_external_pipe(buffer_size=buffer)
        self.rec_out = OutPort(shape=(max(record_len, 1),))
        if record_len and period:
            self.rec_out.flag_external_pipe(buffer_size=buffer)
        self.v = Var(shape=(n,), init=0)
        self.counts = Var(shape=(n,), init=0)


class BiasSource(AbstractProcess):
    """One always-on neuron (quantize.BIAS_SOURCE): a spike on every Lava step, never reset.
    Its synapses carry the bias residuals of weight splitting (fixed point only)."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.s_out = OutPort(shape=(1,))


class SynapseMap(AbstractProcess):
    """A sparse synaptic map ``[n_out, n_in]`` (proc_params: ``matrix`` csc, ``graded``; fixed
    point: ``matrix`` holds mantissas and ``exp`` the shared exponent)."""

    def __init__(self, *, n_in: int, n_out: int, matrix: sp.csc_matrix, graded: bool, exp: int = 0,
                 extra_delay: int = 0, name: str | None = None) -> None:
        super().__init__(n_in=n_in, n_out=n_out, matrix=matrix, graded=graded, exp=exp,
                         extra_delay=extra_delay, name=name)
        self.s_in = InPort(shape=(n_in,))
        self.a_out = OutPort(shape=(n_out,))


# ---------------------------------------------------------------- population models


class _PopulationBase(PyLoihiProcessModel):
    """The schedule and the records; subclasses implement ``reset`` and ``step``."""

    record_dtype = np.float64

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        pp = proc_params
        self.n: int = pp["n"]
        self.kind: str = pp["kind"]
        self.P: int = pp["period"]
        self.d: int = pp["delay"]
        self.T: int = pp["T"]
        self.payload_len: int = pp["payload_len"]
        self.record_len: int = pp["record_len"]
        self.p: dict[str, Any] = pp["params"]
        self.spiking: bool = self.p["spiking"]
        self.reduce: str | None = self.p["reduce"]
        self.membrane: bool = self.p["membrane"]
        self.host_series = self.payload_len > self.n
        self.host_value: np.ndarray | None = None
        self.stat: np.ndarray | None = None
        self.t = -1
        self.saturated = 0

    def _valid_step(self) -> int:
        """The reference step (0-based) this Lava step computes, or -1 outside the window."""
        if self.P == 0:  # free-running (benchmark baseline): always on, read the input once
            if self.payload_len and self.host_value is None:
                self.host_value = self.host_in.csp_ports[0].recv()
            return min(self.time_step - 1, self.T - 1) if self.host_series else 0
        k = (self.time_step - 1) % self.P
        if k == 0 and self.payload_len:
            self.host_value = self.host_in.csp_ports[0].recv()
        if k < self.d or k >= self.d + self.T:
            return -1
        return k - self.d

    def _host_current(self, t: int) -> np.ndarray | None:
        if not self.payload_len:
            return None
        assert self.host_value is not None
        if self.host_series:
            return self.host_value[t * self.n:(t + 1) * self.n]
        return self.host_value

    def run_spk(self) -> None:
        x = self.a_in.recv()
        t = self._valid_step()
        if t < 0:
            self.s_out.send(self.zeros)
            return
        if t == 0 and (self.P or self.time_step == 1):
            self.reset()
            self.counts = np.zeros(self.n, dtype=self.counts_dtype)
            self.stat = None
            self.saturated = 0
        out, y = self.step(x, self._host_current(t))
        if self.spiking:
            self.counts = self.counts + out
        if self.reduce is not None:
            self.track(y, t)
        self.s_out.send(out)
        if self.P and t == self.T - 1 and self.record_len:
            self.rec_out.send(self.make_record())

    def track(self, y: np.ndarray, t: int) -> None:
        """The readout statistic of the output series, as exporters.plan.ops.reduce_time computes it."""
        if t == 0 or self.stat is None:
            self.stat = y.copy()
        elif self.reduce in ("sum", "mean"):
            self.stat = self.stat + y
        elif self.reduce == "max":
            self.stat = np.maximum(self.stat, y)
        else:  # last
            self.stat = y.copy()

    def make_record(self) -> np.ndarray:
        parts = []
        if self.spiking:
            parts.append(self.counts)
        if self.reduce is not None:
            parts.append(self.stat)
            if self.membrane:
                parts.append(self.v)
        parts.append(np.array([self.saturated]))
        rec = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])
        assert rec.size == self.record_len, (rec.size, self.record_len)
        return rec


@implements(proc=Population, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPopulationFloat(_PopulationBase):
    """docs/DESIGN.md's step in float64, literally (mirrors exporters/plan/ops.py::run_neuron)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    host_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    counts: np.ndarray = LavaPyType(np.ndarray, float)
    counts_dtype = np.float64

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.zeros = np.zeros(self.n)
        p = self.p
        self.bias = p.get("bias")
        self.unit_gain = isinstance(p.get("gain"), float) and p["gain"] == 1.0
        self.unit_w = isinstance(p.get("w_in"), float) and p["w_in"] == 1.0
        self.syn: np.ndarray | None = None
        self.s_prev: np.ndarray | None = None

    def reset(self) -> None:
        p = self.p
        if self.kind == "neuron":
            v_init = p["v_init"]
            self.v = (np.full(self.n, v_init) if isinstance(v_init, float)
                      else np.array(v_init, dtype=np.float64))
            self.syn = np.zeros(self.n) if p["tau_syn"] is not None else None
            self.s_prev = None

    def step(self, a_in: np.ndarray, host: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        x = a_in if host is None else (host if not self.connected else host + a_in)
        if self.bias is not None:
            x = x + self.bias
        p = self.p
        if self.kind == "identity":
            return x, x
        if self.kind == "threshold":
            s = _spike(x, p["threshold"], p["compare"], False)
            return s, s
        drive = x
        syn = self.syn
        if syn is not None:
            xin = x if self.unit_w else p["w_in"] * x
            if p["syn_order"] == "nir":
                syn = syn + (xin - syn) / p["tau_syn"]
            else:
                syn = syn + xin
            drive = syn
        if not self.unit_gain:
            drive = p["gain"] * drive
        v, tau = self.v, p["tau"]
        u = v + drive if tau is None else v + (drive - (v - p["v_leak"])) / tau
        if syn is not None and p["syn_order"] != "nir":
            syn = syn - syn / p["tau_syn"]
        self.syn = syn
        if p["reset"] == "soft_next" and self.s_prev is not None:
            u = u - p["v_sub"] * self.s_prev
        elif p["reset"] == "zero_next" and self.s_prev is not None:  # the charge after a spike is dropped
            u = np.where(self.s_prev > 0, p["v_reset"], u)
        if not self.spiking:
            self.v = u
            return u, u
        if p["reset"] == "soft_recheck":  # snnTorch reset_delay=False (exporters.plan.ops.neuron_advance)
            r = _spike(v, p["v_th"], p["compare"], False)
            u = u - p["v_sub"] * r
            s = _spike(u, p["v_th"], p["compare"], p["multi_spike"])
            self.v = u - p["v_sub"] * (s - r)
            if p.get("v_floor") is not None:
                self.v = np.maximum(self.v - p["v_floor"], 0.0) + p["v_floor"]
            return s, s
        s = _spike(u, p["v_th"], p["compare"], p["multi_spike"])
        if p["reset"] == "hard" and p["multi_spike"]:  # several spikes still reset once
            self.v = np.where(s > 0, p["v_reset"], u)
        elif p["reset"] == "hard":
            self.v = u * (1 - s) + p["v_reset"] * s
        elif p["reset"] == "soft":
            self.v = u - p["v_sub"] * s
        else:
            self.v, self.s_prev = u, s
        if p.get("v_floor") is not None:  # Sinabs' min_v_mem, as Sinabs writes it
            self.v = np.maximum(self.v - p["v_floor"], 0.0) + p["v_floor"]
        return s, s

    @property
    def connected(self) -> bool:
        return bool(self.a_in.csp_ports)


def _spike(u: np.ndarray, v_th: Any, compare: str, multi: bool) -> np.ndarray:
    """exporters.plan.ops.spike in numpy (same float64 operations)."""
    if multi:
        return np.where(u > 0, np.trunc(u / v_th), 0.0)
    return (u >= v_th).astype(np.float64) if compare == ">=" else (u > v_th).astype(np.float64)


@implements(proc=Population, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyPopulationFixed(_PopulationBase):
    """Integer neuron step on the 24-bit state grid of backends.lava.quantize:
    ``U = (V (4096 - dv) >> 12) + I + bias`` (no decay for IF), saturating at ±(2**23 - 1);
    CubaLIF first filters ``I + bias`` as ``syn = (syn (4096 - du) >> 12) + I + bias`` and charges
    ``syn + bias_v``;
    ``S = U >= th``; hard ``V = S ? v_reset : U``, soft ``V = U - v_sub S``; soft_next, zero_next and
    soft_recheck as in exporters.plan.ir.NeuronStep. Multi-spike (Sinabs): ``S = U > 0 ? U // th : 0``,
    sent as one graded spike whose payload is the count (quantize.COUNT_MAX), the resets as above
    (a hard reset resets once); then Sinabs' floor ``V = max(V, v_floor)``."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    host_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    rec_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    counts_dtype = np.int64

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.zeros = np.zeros(self.n, dtype=np.int64)
        p = self.p
        self.bias = p["bias"].astype(np.int64)
        self.s_prev: np.ndarray | None = None
        self.syn: np.ndarray | None = None

    def reset(self) -> None:
        if self.kind == "neuron":
            self.v = self.p["v_init"].astype(np.int64).copy()
            self.s_prev = None
            if self.p.get("du") is not None:
                self.syn = np.zeros(self.n, dtype=np.int64)

    def _saturate(self, u: np.ndarray) -> np.ndarray:
        over = np.abs(u) > STATE_MAX
        if over.any():
            self.saturated += int(over.sum())
            u = np.clip(u, -STATE_MAX, STATE_MAX)
        return u

    def step(self, a_in: np.ndarray, host: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        x = a_in.astype(np.int64) + self.bias
        if host is not None:
            x = x + host.astype(np.int64)
        p = self.p
        if self.kind == "identity":
            return x, x
        if self.kind == "threshold":
            x = self._saturate(x)
            s = (x >= p["threshold"]) if p["compare"] == ">=" else (x > p["threshold"])
            s = s.astype(np.int64)
            return s, s
        if self.syn is not None:  # CubaLIF (Loihi's CUBA compartment): the current, then the membrane
            self.syn = self._saturate(decay(self.syn, p["du"]) + x)
            x = self.syn + p["bias_v"]
        u = self.v if p["dv"] is None else decay(self.v, p["dv"])
        u = u + x
        if p["reset"] == "soft_next" and self.s_prev is not None:
            u = u - p["v_sub"] * self.s_prev
        elif p["reset"] == "zero_next" and self.s_prev is not None:  # the charge after a spike is dropped
            u = np.where(self.s_prev > 0, p["v_reset"], u)
        u = self._saturate(u)
        if not self.spiking:
            self.v = u
            return u, u
        if p["reset"] == "soft_recheck":  # snnTorch reset_delay=False: the delayed reset, then its correction
            r = ((self.v >= p["v_th"]) if p["compare"] == ">=" else (self.v > p["v_th"])).astype(np.int64)
            u = self._saturate(u - p["v_sub"] * r)
        if p["multi_spike"]:  # Sinabs: floor(U / th) spikes, one graded spike carrying the count
            s = np.where(u > 0, u // p["v_th"], 0).astype(np.int64)
        else:
            s = ((u >= p["v_th"]) if p["compare"] == ">=" else (u > p["v_th"])).astype(np.int64)
        if p["reset"] == "soft_recheck":
            self.v = self._saturate(u - p["v_sub"] * (s - r))
        elif p["reset"] == "hard":
            self.v = np.where(s > 0, p["v_reset"], u)
        elif p["reset"] == "soft":
            self.v = self._saturate(u - p["v_sub"] * s)
        else:
            self.v, self.s_prev = u, s
        if p.get("v_floor") is not None:  # Sinabs' min_v_mem: relu(v - m) + m is max(v, m) on integers
            self.v = np.maximum(self.v, p["v_floor"])
        return s, s


@implements(proc=BiasSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyBiasSourceFixed(PyLoihiProcessModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.spike = np.ones(1, dtype=np.int64)

    def run_spk(self) -> None:
        self.s_out.send(self.spike)


# ---------------------------------------------------------------- synapse models


class _SynapseBase(PyLoihiProcessModel):
    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.w: sp.csc_matrix = proc_params["matrix"]
        self.graded: bool = proc_params["graded"]
        self.exp: int = proc_params["exp"]
        self.buf = np.zeros(proc_params["n_out"], dtype=self.dtype)
        self.silent = self.buf.copy()
        # extra_delay > 0: the map's results wait this many more steps (a shorter branch of a DAG)
        self.waiting = deque(self.silent for _ in range(proc_params.get("extra_delay", 0)))

    def accumulate(self, s: np.ndarray) -> np.ndarray:
        if self.graded:
            return self.w @ s if s.any() else self.silent
        idx = np.flatnonzero(s)
        if idx.size == 0:
            return self.silent
        if idx.size == s.size and np.all(s == 1):
            return np.asarray(self.w.sum(axis=1)).reshape(-1)
        sel = self.w[:, idx]
        if not np.all(s[idx] == 1):  # signed or multi-spikes: weight each column by its value
            sel = sel @ sp.diags(s[idx].astype(self.dtype))
        return np.asarray(sel.sum(axis=1)).reshape(-1)

    def run_spk(self) -> None:
        # Lava's connection semantics: send what arrived one step earlier (no combinational loops)
        self.a_out.send(self.buf)
        self.buf = self.finish(self.accumulate(self.s_in.recv()))
        if self.waiting:
            self.waiting.append(self.buf)
            self.buf = self.waiting.popleft()


@implements(proc=SynapseMap, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySynapseMapFloat(_SynapseBase):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    dtype = np.float64

    def finish(self, acc: np.ndarray) -> np.ndarray:
        return acc


@implements(proc=SynapseMap, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySynapseMapFixed(_SynapseBase):
    """Integer accumulation of 8-bit mantissas, then the map's exponent: ``(sum mant s) * 2**e``."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    dtype = np.int64

    def finish(self, acc: np.ndarray) -> np.ndarray:
        return shift(acc, self.exp)


MODELS = {
    "floating_pt": {Population: PyPopulationFloat, SynapseMap: PySynapseMapFloat},
    "fixed_pt": {Population: PyPopulationFixed, SynapseMap: PySynapseMapFixed, BiasSource: PyBiasSourceFixed},
}
