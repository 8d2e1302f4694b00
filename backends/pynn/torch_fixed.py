"""The sPyNNaker s16.15 emulation (backends.pynn.fixedpoint) batched in torch, bit for bit.

:class:`backends.pynn.fixedpoint.FixedPointSpiNNaker` runs one observation at a time in numpy.
This class keeps everything it prepares (the network ``describe()`` builds, the chip-side
constants, the 16-bit weights and ring-buffer shifts per receptor) and runs a whole batch
in int64 torch: per receptor, the 16-bit sums of one step (a population's own loop included,
from its spikes of the step before) are saturated at 0xFFFF and shifted by the ring-buffer shift; LIF ``alpha = I R + V_rest``, ``V = alpha - exp_TC (alpha - V)``
with ``MULT_ROUND_NEAREST_ACCUM``; IF_trunc ``V = max(I R + V, V_reset)``; spike on
``V >= V_th``, then ``V = V_reset``. The readout is the emulation's own
(:func:`backends.pynn.readout.q_values`). Integers throughout, so no gradients: fine-tuning
targets lava-fixed (backends.finetune_fixed).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from backends.base import Readout
from backends.pynn.fixedpoint import FRAC, ONE, FixedPointSpiNNaker, s1615
from backends.pynn.spinnaker import check_unit_spikes
from backends.pynn.readout import Recorded, q_values
from pipeline.encoding import encode_seeded
from pipeline.errors import UserError


def mult_round_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """fixedpoint.mult_round on int64 tensors."""
    return (a * b + (1 << (FRAC - 1))) >> FRAC


class SpiNNakerFixedTorch(FixedPointSpiNNaker):
    """backends.base.Backend: FixedPointSpiNNaker's arithmetic on a batch (same results)."""

    name = "spinnaker-fixedpoint-torch"

    def _prepare(self) -> None:
        super()._prepare()
        sizes = {p.name: p.size for p in self.spin.pops}
        for p in self.spin.pops:
            st = self.state[p.name]
            st["dense"] = {}
            for rec, (s, enc) in st["recv"].items():
                mats, late = [], []
                for src, pre, post, w, is_late in enc:
                    if src.startswith("bias_w"):
                        const = np.bincount(post, weights=w, minlength=p.size).astype(np.int64)
                        mats.append((src, None, torch.as_tensor(const)))
                        continue
                    n_pre = sizes.get(src, int(pre.max()) + 1 if pre.size else 0)
                    m = np.zeros((p.size, n_pre), np.float64)
                    np.add.at(m, (post, pre), w.astype(np.float64))
                    (late if is_late else mats).append((src, torch.as_tensor(m), None))
                st["dense"][rec] = (s, mats, late)  # late: the population's own loop, one step late
            for k in ("R", "exp_tc", "v_rest", "v_reset", "v_th", "v_init", "i_offset"):
                if k in st:
                    st[k + "_t"] = torch.as_tensor(np.asarray(st[k], dtype=np.int64))

    def _inputs_t(self, name: str, trains: dict[str, torch.Tensor], B: int) -> dict[str, torch.Tensor]:
        """Each receptor's ring-buffer sums ``[T, B, n]`` (not yet saturated), loops left out."""
        T = self.T
        st = self.state[name]
        n = st["v_init_t"].numel()
        sums = {}
        for rec, (s, mats, _) in st["dense"].items():
            acc = torch.zeros(T, B, n, dtype=torch.int64)
            for src, m, const in mats:
                if m is None:
                    acc = acc + const
                    continue
                # spikes 0/1 times 16-bit weights: the float64 sums are exact integers
                acc = acc + (trains[src] @ m.T).to(torch.int64)
            sums[rec] = acc
        return sums

    def _synaptic_t(self, name: str, sums: dict[str, torch.Tensor], t: int, own: torch.Tensor | None) -> torch.Tensor:
        """Step ``t``: the sums plus the loop's spikes of step t-1 (``own``), saturated and shifted."""
        total = None
        for rec, (s, _, late) in self.state[name]["dense"].items():
            acc = sums[rec][t]
            if own is not None:
                for _, m, _ in late:
                    acc = acc + (own @ m.T).to(torch.int64)
            acc = acc.clamp(max=0xFFFF)  # 16-bit ring buffer saturation
            part = (acc << s) if rec == "excitatory" else -(acc << s)
            total = part if total is None else total + part
        assert total is not None
        return total

    def run(self, obs: np.ndarray, input_spikes: np.ndarray | None = None) -> Readout:
        """backends.base.Backend.run: the fixed-point network on ``[N, *obs_shape]``, batched."""
        obs = np.asarray(obs)
        if obs.ndim == len(self.obs_shape):
            obs = obs[None]
        if tuple(obs.shape[1:]) != tuple(self.obs_shape):
            raise UserError(f"observations have shape {tuple(obs.shape[1:])}, expected {tuple(self.obs_shape)}")
        N, T = obs.shape[0], self.T
        x = torch.as_tensor(obs).to(torch.float64)
        s_in = None
        if self.sem.encoding != "current":
            s_in = (torch.as_tensor(np.asarray(input_spikes)).to(torch.float64) if input_spikes is not None
                    else encode_seeded(x, T, self.sem.encoding, self.sem.encoding_seed))
            check_unit_spikes(s_in)
        t0 = time.perf_counter()
        trains: dict[str, torch.Tensor] = {}
        if s_in is not None:
            flat = s_in.reshape(T, N, -1)
            trains["in_pos"], trains["in_neg"] = (flat > 0).double(), (flat < 0).double()
        flat_obs = obs.reshape(N, -1).astype(np.float64)
        recs = [Recorded(counts={}) for _ in range(N)]
        for p in self.spin.pops:
            st = self.state[p.name]
            sums = self._inputs_t(p.name, trains, N)
            i_off = st["i_offset_t"].expand(N, -1)
            if p.name in self.spin.input_pops and s_in is None:
                d = self.drives[p.name]
                # per observation, with the emulation's own numpy calls (same float rounding)
                rows = [d.terms[self.plan.input] @ xi + (d.const if d.const is not None else 0.0) for xi in flat_obs]
                i_off = torch.as_tensor(np.stack([s1615(r * p.scale / self.spin.timestep_ms) for r in rows]))
            v = st["v_init_t"].expand(N, -1).clone()
            spikes = torch.zeros(T, N, p.size, dtype=torch.float64)
            trace = torch.zeros(T, N, p.size, dtype=torch.float64)
            for t in range(T):
                total = self._synaptic_t(p.name, sums, t, spikes[t - 1] if t else None) + i_off
                if st["model"] == "IF_curr_delta":
                    alpha = mult_round_t(total, st["R_t"]) + st["v_rest_t"]
                    v = alpha - mult_round_t(st["exp_tc_t"], alpha - v)
                else:
                    v = torch.maximum(mult_round_t(total, st["R_t"]) + v, st["v_reset_t"])
                fired = v >= st["v_th_t"]
                v = torch.where(fired, st["v_reset_t"].expand_as(v), v)
                spikes[t] = fired.double()
                trace[t] = v.double() / ONE
            trains[p.name] = spikes
            lay = self.net.pops[p.name]
            for i, r in enumerate(recs):
                if lay.spiking:
                    r.counts[p.name] = spikes[:, i].sum(dim=0).numpy().astype(np.int64)
                    r.trains[p.name] = spikes[:, i].numpy()
                if p.record_v:
                    r.traces[p.name] = trace[:, i].numpy()
                    r.final_v[p.name] = trace[-1, i].numpy()
        t1 = time.perf_counter()
        spk = {pl.op.name: np.stack([r.counts[pl.op.name] for r in recs]).reshape(N, *pl.op.out_shape)
               for pl in self.net.spiking}
        q, action = q_values(self.net, recs, x, s_in)
        return Readout(q=q, action=action, spikes=spk,
                       timings={"set_input": 0.0, "simulate": t1 - t0, "read_out": time.perf_counter() - t1})
