"""Which NEST 3.10 models can run a loop into a CubaLIF's synaptic current (docs/NEST.md section 5).

    PYTHONPATH=. .venv/bin/python benchmarks/nest_models.py

A CubaLIF's step in NIR order is ``U[t] = d V[t-1] + c a I[t-1] + c b x[t]`` (``I`` its synaptic
current, ``I[t] = a I[t-1] + b x[t]``, ``c = gain/tau``): an input reaches the membrane in its own
step and then through the decaying current. In a loop the population's own spike of step t is
part of ``x[t+1]``, and NEST delivers a spike one step after it is sent at the earliest, so the
model must charge a spike into its current *and* into its membrane in the step it arrives: a
"same-step current". ``iaf_psc_exp_multisynapse`` charges V a step later (the population then
sits one step deeper than its inputs and the loop would need a delay of zero).

Part 1 probes every installed neuron model: one spike of weight w (and 2w) on each receptor it
takes, against an identical neuron without input, at dt = 0.1 ms. It prints when the spike first
moves V_m (``same step`` / ``next step``), whether the response then only decays with the membrane
(``delta``) or has a current's tail (``current``), and whether it is linear in w (deviation from
``r(2w) = 2 r(w)`` in units of the rounding of V). Part 2 shows the resets of the one model with a
linear same-step current (gif_psc_exp), which decide the graphs it can run, and checks the tricks
for the rest: a receptor whose tau_syn makes its propagator underflow, a delay below one step, a
finer resolution, and the nearest layout NEST can build for a hard-reset loop (one step late)
against the float64 reference executor.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.nest.kernel import import_nest  # noqa: E402

H = 0.1  # ms
STEPS = 40
SPIKE_AT = 1.0  # ms: the generator's spike; with delay H it arrives at step 11

NO_MEMBRANE = "no V_m driven by spikes (rate, binary, parrot, astrocyte or device-like node)"


def multisynapse_params(defaults: dict) -> dict | None:
    """One receptor (port 1) for a *_multisynapse model, or None for another model."""
    if isinstance(defaults.get("tau_syn"), tuple):
        params = {"tau_syn": [2.0]}
        if isinstance(defaults.get("E_rev"), tuple):
            params["E_rev"] = [0.0]
        return params
    if isinstance(defaults.get("tau_rise"), tuple):  # aeif_cond_beta_multisynapse
        return {"tau_rise": [1.0], "tau_decay": [2.0], "E_rev": [0.0]}
    return None


def receptors(defaults: dict) -> list[int]:
    named = defaults.get("receptor_types")
    if isinstance(named, dict) and named:
        return sorted(set(named.values()))
    return [1] if multisynapse_params(defaults) is not None else [0, 1]


def response(nest, model: str, params: dict, receptor: int, w: float) -> tuple[np.ndarray | str, float]:
    """(V_m(t) of a neuron that receives one spike of weight ``w`` minus that of one that receives
    none (same model and parameters), per step, or the reason NEST gave for refusing; max |V_m|)."""
    nest.ResetKernel()
    nest.resolution = H
    try:
        pair = nest.Create(model, 2, params=params) if params else nest.Create(model, 2)
        gen = nest.Create("spike_generator", params={"spike_times": [SPIKE_AT], "precise_times": False})
        syn = {"weight": w, "delay": H}
        if receptor:
            syn["receptor_type"] = receptor
        nest.Connect(gen, pair[0], syn_spec=syn)
        mm = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": H, "time_in_steps": True})
        nest.Connect(mm, pair)
        nest.Simulate(STEPS * H)
    except Exception as exc:  # NEST's kernel errors have no common importable type
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}", math.nan
    ev = mm.get("events")
    senders, times, v = (np.asarray(ev[k]) for k in ("senders", "times", "V_m"))
    ids = pair.tolist()
    a = v[senders == ids[0]][np.argsort(times[senders == ids[0]])]
    b = v[senders == ids[1]][np.argsort(times[senders == ids[1]])]
    return a - b, float(np.max(np.abs(b)))


def classify(r1: np.ndarray, r2: np.ndarray, arrival: int, v: float) -> tuple[str, float]:
    """(when the spike first moves V_m and how it then evolves, the deviation from linearity
    ``max |r(2w) - 2 r(w)|`` in units of ``eps * |V|``)."""
    moved = np.nonzero(r1 != 0)[0]
    if moved.size == 0:
        return "no effect", math.nan
    first = int(moved[0])
    lead = first - arrival
    when = {0: "same step", 1: "next step"}.get(lead, f"{lead:+d} steps")
    tail = r1[first:first + 6]
    ratios = tail[1:] / tail[:-1]
    shape = "delta" if np.all(np.abs(ratios - ratios[0]) < 1e-9 * abs(ratios[0])) else "current"
    dev = float(np.max(np.abs(r2 - 2 * r1)) / (np.finfo(float).eps * max(abs(v), 1.0)))
    return f"{when} {shape}", dev


def probe_models(nest) -> tuple[list[tuple[str, str]], list[str]]:
    """Part 1: every neuron model, every receptor; returns the rows and the models with a linear
    same-step current."""
    ref = response(nest, "iaf_psc_delta", {}, 0, 1.0)
    assert not isinstance(ref[0], str)
    arrival = int(np.nonzero(ref[0] != 0)[0][0])  # the step a delta synapse moves V_m
    rows, qualify = [], []
    for model in sorted(nest.node_models):
        defaults = nest.GetDefaults(model)
        if defaults.get("element_type") != "neuron":
            continue
        if "V_m" not in defaults:
            rows.append((model, NO_MEMBRANE))
            continue
        params = multisynapse_params(defaults) or {}
        cells = []
        for rc in receptors(defaults):
            w = 1.0
            r1 = response(nest, model, params, rc, w)
            if isinstance(r1[0], str):
                cells.append(f"port {rc}: refused ({r1[0]})")
                continue
            r2 = response(nest, model, params, rc, 2 * w)
            what, dev = classify(r1[0], r2[0], arrival, r1[1])
            linear = dev < 64
            cells.append(f"port {rc}: {what}, " + ("linear" if linear else f"nonlinear ({dev:.0e} eps|V|)"))
            if linear and what == "same step current":
                qualify.append(model)
        rows.append((model, "; ".join(cells)))
    return rows, qualify


def gif_resets(nest) -> list[str]:
    """gif_psc_exp made deterministic (backends.nest.neurons.gif_spec) and driven over its threshold
    by one strong spike: its V around the spike for t_ref = 0 and t_ref = one step."""
    from backends.nest.neurons import GIF_DELTA_V, GIF_LAMBDA_0

    out = []
    for t_ref in (0.0, H):
        nest.ResetKernel()
        nest.resolution = H
        n = nest.Create("gif_psc_exp", params={"E_L": 0.0, "V_m": 0.0, "V_reset": 0.0, "g_L": 1.0, "C_m": 2.0,
                                               "V_T_star": 1.0, "Delta_V": GIF_DELTA_V, "lambda_0": GIF_LAMBDA_0,
                                               "t_ref": t_ref, "tau_syn_ex": 0.2, "tau_syn_in": 0.2})
        gen = nest.Create("spike_generator", params={"spike_times": [SPIKE_AT], "precise_times": False})
        nest.Connect(gen, n, syn_spec={"weight": 60.0, "delay": H})
        mm = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": H, "time_in_steps": True})
        rec = nest.Create("spike_recorder", params={"time_in_steps": True})
        nest.Connect(mm, n)
        nest.Connect(n, rec)
        nest.Simulate(2.0)
        ev = mm.get("events")
        v = np.asarray(ev["V_m"])[np.argsort(ev["times"])]
        spikes = np.asarray(rec.get("events")["times"], dtype=int).tolist()
        at = spikes[0] - 1 if spikes else int(np.argmax(v))
        trace = " ".join(f"{x:.3f}" for x in v[at - 1:at + 4])
        out.append(f"t_ref {t_ref:g} ms: spikes at steps {spikes}; V from the step before the first: {trace}")
    return out


def underflow_receptor(nest) -> str:
    """A receptor of iaf_psc_exp_multisynapse whose tau_syn makes P11 = exp(-h/tau_syn) underflow to 0:
    the spike still reaches V_m only a step after it arrives (a one-step-late delta)."""
    params = {"tau_syn": [2.0, H / 2000.0]}
    ref = response(nest, "iaf_psc_delta", {}, 0, 1.0)[0]
    arrival = int(np.nonzero(ref != 0)[0][0])
    got = []
    for rc in (1, 2):
        r1, v = response(nest, "iaf_psc_exp_multisynapse", params, rc, 1.0)
        r2, _ = response(nest, "iaf_psc_exp_multisynapse", params, rc, 2.0)
        what, _ = classify(r1, r2, arrival, v)
        got.append(f"tau_syn {params['tau_syn'][rc - 1]:g} ms: {what}")
    return "; ".join(got)


def short_delay(nest) -> str:
    nest.ResetKernel()
    nest.resolution = H
    a = nest.Create("iaf_psc_delta", 2)
    try:
        nest.Connect(a[0], a[1], syn_spec={"delay": H / 2})
    except Exception as exc:
        return f"refused: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return f"rounded to {nest.GetConnections(a[0]).delay} ms, one step"


def finer_resolution(m: int, samples: int = 2000) -> str:
    """m NEST steps per graph step: the membrane is multiplied by P22(h/m) m times, the graph by
    d = 1 - 1/tau once. Count the taus (1.25 .. 100 by 0.25) for which some double p makes
    ``p * (p * ... V)`` equal ``d * V`` for every sampled V."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=samples) * rng.choice([1e-3, 1.0, 1e3], size=samples)
    exact = 0
    taus = np.arange(1.25, 100.01, 0.25)
    for tau in taus:
        d = 1.0 - 1.0 / tau
        p0 = d ** (1.0 / m)
        cands = [p0]
        for _ in range(4):
            cands += [math.nextafter(cands[-1], 2.0)]
        lo = p0
        for _ in range(4):
            lo = math.nextafter(lo, 0.0)
            cands.append(lo)
        for p in cands:
            x = v.copy()
            for _ in range(m):
                x = p * x
            if np.array_equal(x, d * v):
                exact += 1
                break
    return f"{exact} of {taus.size} taus exact over {samples} membrane values"


def nearest_layout(n_obs: int) -> str:
    """A hard-reset recurrent CubaLIF (the test zoo's ``recurrent_cuba``, what NEST still refuses)
    with its loop laid out one step late (delay 1 into iaf_psc_exp_multisynapse at lag 1), against
    the float64 reference on the same inputs."""
    from backends.common.layout import NetLayout
    from backends.nest import NestBackend
    from backends.reference import ReferenceBackend
    from exporters.zoo import recurrent_cuba_graph, cartpole_obs

    graph = recurrent_cuba_graph(hidden=(24, 24), time_steps=16, gain=6.0)
    obs = cartpole_obs(n_obs, seed=3).numpy()
    ref = ReferenceBackend(graph, dtype="float64").run(obs)
    original = NetLayout.loop_delay

    def one_step_late(self, src, dst, target):  # what NEST can build: the shortest delay, 1
        p, q = self.pops[dst], self.pops[src]
        return max(1, p.input_depth - q.depth + 1)

    NetLayout.loop_delay = one_step_late
    try:
        backend = NestBackend(graph)
        try:
            got = backend.run(obs)
        finally:
            backend.close()
    finally:
        NetLayout.loop_delay = original
    same = np.mean([all(np.array_equal(got.spikes[k][i], ref.spikes[k][i]) for k in ref.spikes)
                    for i in range(n_obs)])
    moved = {k: int(np.abs(got.spikes[k] - ref.spikes[k]).sum()) for k in ref.spikes}
    return (f"{n_obs} observations, T = 16: action agreement {np.mean(got.action == ref.action):.3f}, "
            f"identical spike counts in every layer {same:.0%}, spikes moved per layer {moved} "
            f"(reference: { {k: int(v.sum()) for k, v in ref.spikes.items()} })")


def fresh_cost(paper: Path, n_obs: int) -> str:
    """Time per observation of the NIR paper's zero-reset Braille net on NEST, which runs its RSynaptic
    layer on gif_psc_exp and so builds a fresh network for every observation."""
    import time

    from backends.nest import NestBackend
    from exporters.canonical import build_plan
    from exporters.nirio import read_graph
    from exporters.plan.semantics import with_input_series

    path = paper / "braille_noDelay_bias_zero.nir"
    if not path.is_file():
        return f"skipped: {path} not found (--paper)"
    plan = with_input_series(build_plan(read_graph(path), convention="snntorch-zero+no-delay", time_steps=64))
    spikes = (np.random.default_rng(0).random((64, n_obs, 12)) < 0.1).astype(np.float32)
    backend = NestBackend(plan)
    try:
        t0 = time.perf_counter()
        got = backend.run(np.zeros((n_obs, 12), np.float32), spikes)
        wall = time.perf_counter() - t0
    finally:
        backend.close()
    per = {k: f"{v / n_obs * 1e3:.1f}" for k, v in got.timings.items()}
    return (f"{n_obs} observations, T = 64, fresh network: {wall / n_obs * 1e3:.1f} ms per observation "
            f"(ms: {per}; 'simulate' includes the rebuild)")


def floor_order(nest) -> str:
    """eprop_iaf (V_th 1, V_min -1, no leak) on inputs that cross the floor and the threshold: where
    NEST clamps at V_min (docs/NEST.md section 1, Sinabs' membrane floor)."""
    nest.ResetKernel()
    nest.resolution = 1.0
    n = nest.Create("eprop_iaf", params={"E_L": 0.0, "V_m": 0.0, "V_th": 1.0, "V_min": -1.0, "t_ref": 0.0,
                                         "C_m": 1.0, "tau_m": 1e300, "c_reg": 0.0})
    ins = [-3.0, 2.5, -0.2, 3.7, -5.0, 0.6]
    g = nest.Create("spike_generator", params={"spike_times": [float(i + 1) for i in range(len(ins))],
                                               "spike_weights": ins})
    nest.Connect(g, n, syn_spec={"delay": 1.0})
    mm = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": 1.0})
    sr = nest.Create("spike_recorder")
    nest.Connect(mm, n)
    nest.Connect(n, sr)
    nest.Simulate(float(len(ins) + 2))
    v = [f"{x:g}" for x in mm.events["V_m"][1:len(ins) + 1]]
    spiked = [int(t) - 1 for t in sr.events["times"]]
    return f"inputs {ins}: V after each step {v}, spikes on inputs no. {spiked} (1-based)"


def parrot_multiplicity(nest) -> str:
    """Three spikes in one step into a parrot_neuron, on to an integrator with weight 0.3: the
    multi-spike relay (docs/NEST.md section 6)."""
    nest.ResetKernel()
    nest.resolution = 1.0
    g = nest.Create("spike_generator", 3, params={"spike_times": [2.0]})
    par = nest.Create("parrot_neuron")
    n = nest.Create("iaf_psc_delta", params={"E_L": 0.0, "V_m": 0.0, "V_th": 100.0, "V_reset": 0.0,
                                             "tau_m": 1e300, "C_m": 1.0, "t_ref": 0.0})
    nest.Connect(g, par, syn_spec={"delay": 1.0, "weight": 1.0})
    nest.Connect(par, n, syn_spec={"delay": 1.0, "weight": 0.3})
    sr = nest.Create("spike_recorder")
    nest.Connect(par, sr)
    mm = nest.Create("multimeter", params={"record_from": ["V_m"], "interval": 1.0})
    nest.Connect(mm, n)
    nest.Simulate(6.0)
    return (f"parrot events at {list(sr.events['times'])} ms (one per spike), target V {list(mm.events['V_m'])} "
            f"(3 x 0.3 = {3 * 0.3!r}: the weight times the multiplicity, in one step)")


def multi_spike_cost(paper: Path, n_obs: int) -> str:
    """cnn_sinabs.nir as Sinabs imports it (--convention sinabs: multi-spike with the floor) on NEST
    against the float64 reference: copies per neuron, synapses, build and run time."""
    import time

    from backends.nest import NestBackend
    from backends.reference import ReferenceBackend
    from exporters.nirio import read_graph

    path = paper / "cnn_sinabs.nir"
    if not path.is_file():
        return f"skipped: {path} not found (--paper)"
    graph = read_graph(path)
    obs = (np.random.default_rng(0).random((n_obs, 2, 34, 34)) < 0.05).astype(np.float64)
    ref = ReferenceBackend(graph, convention="sinabs", time_steps=10, dtype="float64").run(obs)
    t0 = time.perf_counter()
    backend = NestBackend(graph, convention="sinabs", time_steps=10)
    try:
        t1 = time.perf_counter()
        got = backend.run(obs)
        t2 = time.perf_counter()
        copies, synapses = dict(backend.copies), backend.n_synapses
    finally:
        backend.close()
    same = all(np.array_equal(ref.spikes[k], got.spikes[k]) for k in ref.spikes)
    return (f"{n_obs} observations (binary, 5 % on, seed 0), T = 10: copies per layer {copies}, "
            f"{synapses:,} synapses at the end, build {t1 - t0:.1f} s, run {t2 - t1:.1f} s (the rebuilds with "
            f"more copies included); equal counts in every layer: {same}, max |dQ| "
            f"{float(np.abs(ref.q - got.q).max()):g}, spikes {sum(int(v.sum()) for v in got.spikes.values()):,}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--observations", type=int, default=16, help="observations for the nearest-layout check")
    ap.add_argument("--paper", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "nir-paper",
                    help="the NIR paper's graphs (../shared/nir-paper), for the cost of a fresh network")
    ap.add_argument("--multi-spike", type=int, default=0, metavar="N",
                    help="also run cnn_sinabs.nir multi-spike on N observations (minutes)")
    args = ap.parse_args(argv)
    nest = import_nest()
    print(f"NEST {nest.__version__}, resolution {H} ms; a spike of weight w and 2w, delay {H} ms, per receptor\n")
    rows, qualify = probe_models(nest)
    width = max(len(m) for m, _ in rows)
    for model, what in rows:
        print(f"{model:<{width}}  {what}")
    print(f"\nmodels with a linear same-step current: {', '.join(qualify) or 'none'} "
          "(gif_pop_psc_exp, if listed, simulates a population's rate, not its neurons)\n")
    print("gif_psc_exp's reset (deterministic, threshold 1, one spike of weight 60 at step 11):")
    for line in gif_resets(nest):
        print(f"  {line}")
    print("\nfor a CubaLIF with a hard reset (what gif_psc_exp cannot), the tricks:")
    print(f"  iaf_psc_exp_multisynapse, a receptor with P11 underflowing to 0: {underflow_receptor(nest)}")
    print(f"  a delay below one step (the loop at lag 1 needs 0): {short_delay(nest)}")
    for m in (2, 4):
        print(f"  resolution h/{m}, {m} NEST steps per graph step (membrane decay only): {finer_resolution(m)}")
    print(f"  the nearest layout (loop one step late) vs the float64 reference: {nearest_layout(args.observations)}")
    print(f"\ncost of gif_psc_exp's fresh network per observation (braille_noDelay_bias_zero.nir): "
          f"{fresh_cost(args.paper, args.observations)}")
    print(f"\neprop_iaf's V_min (Sinabs' membrane floor): {floor_order(nest)}")
    print(f"parrot_neuron as the multi-spike relay: {parrot_multiplicity(nest)}")
    if args.multi_spike:
        print(f"cnn_sinabs.nir, --convention sinabs, on NEST: {multi_spike_cost(args.paper, args.multi_spike)}")


if __name__ == "__main__":
    main()
