"""Run a NIR graph in the framework that wrote it (Sinabs, Norse, snnTorch), on inputs from .npy
files, and save the output spike counts: the "framework" column of docs/NIR.md section 7.

The frameworks are not installed in the project's environment (Sinabs pins nir<=1.0.4 and Norse
pulls a torchvision that does not load against the CPU torch here); ``scripts/install.sh``
puts them, without their dependencies, in ``.venv/frameworks``, and ``benchmarks/nir_paper.py``
runs this file with that folder first on ``PYTHONPATH``. It imports nothing of the project, so
what it measures is the framework's own reading of the file.

    PYTHONPATH=.venv/frameworks .venv/bin/python benchmarks/frameworks.py \\
        --framework sinabs --graph cnn_sinabs.nir --obs obs.npy --time-steps 10 --out q.npz

Each observation is held for ``--time-steps`` steps (or, with ``--input-spikes`` [T, N, ...],
step t gets row t), all state starts at the framework's own initial value for each observation,
and the saved ``q`` [N, outputs] is the output layer's spikes summed over the steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

FRAMEWORKS = ("sinabs", "sinabs-single-spike", "sinabs-single-spike-no-floor", "norse", "snntorch")


def step_inputs(obs: np.ndarray, spikes: np.ndarray | None, steps: int) -> torch.Tensor:
    """[T, N, ...] float64 inputs, one row per time step."""
    if spikes is not None:
        return torch.from_numpy(np.asarray(spikes, np.float64))
    return torch.from_numpy(np.asarray(obs, np.float64)).unsqueeze(0).expand(steps, *obs.shape).clone()


def run_sinabs(graph, x: torch.Tensor, variant: str) -> torch.Tensor:
    """Sinabs 3.1's own import (``from_nir``: IAFSqueeze, multi-spike, floor at -v_th); the
    variants swap in ``SingleSpike`` and drop the floor on every IAF layer, as a Sinabs user
    building a Speck model would."""
    import sinabs
    import sinabs.nir

    steps, n = x.shape[:2]
    model = sinabs.nir.from_nir(graph, batch_size=n).double()
    for layer in model.modules():
        if isinstance(layer, sinabs.layers.StatefulLayer) and hasattr(layer, "spike_fn"):
            if "single-spike" in variant:
                layer.spike_fn = sinabs.activation.SingleSpike
            if variant.endswith("no-floor"):
                layer.min_v_mem = None
    # Sinabs' spike functions return float32 whatever the state's dtype; spike counts are small
    # integers, exact in either, so the weighted layers cast their input up to run in float64
    for layer in model.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            layer.register_forward_pre_hook(lambda mod, args: tuple(a.to(mod.weight.dtype) for a in args))
    # Squeeze layers take batch and time folded into one axis, batch-major
    folded = x.transpose(0, 1).reshape(n * steps, *x.shape[2:])
    with torch.no_grad():
        out = model(folded)
    out = out[0] if isinstance(out, tuple) else out  # the graph executor returns (output, state)
    return out.reshape(n, steps, -1).sum(1)


def run_norse(graph, x: torch.Tensor, dt: float) -> torch.Tensor:
    """Norse 1.1's own import (``norse.torch.from_nir(graph, dt=dt)``), stepped with its state."""
    import norse.torch as norse

    model = norse.from_nir(graph, dt=dt).double()
    state, total = None, 0
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = model(x[t], state)
            total = total + out
    return total.reshape(x.shape[1], -1)


def run_snntorch(graph, x: torch.Tensor, reset: str, reset_delay: bool = False) -> torch.Tensor:
    """snnTorch 1.0's own neurons for a chain ``Linear -> LIF|CubaLIF [-> w_rec loop] -> ...`` as
    snnTorch exports ``Leaky`` / ``RLeaky`` / ``Synaptic`` / ``RSynaptic``: ``alpha = 1 - dt/tau_syn``,
    ``beta = 1 - dt/tau_mem`` at its export dt 1e-4; ``reset_delay`` False by default (the NIR
    paper's "noDelay" nets).

    snnTorch's ``import_from_nir`` cannot read a recurrent graph with nirtorch 2.6
    (``AttributeError: 'GraphModule' object has no attribute 'items'``), so the layers are built
    here from the file's arrays and run by snnTorch's own neuron classes. The reset mechanism and
    ``reset_delay`` are not in the file (``reset``: ``subtract`` or ``zero``).
    """
    import nir
    import snntorch as snn

    dt = 1e-4
    nodes, edges = graph.nodes, graph.edges
    nxt = {}
    for src, dst in edges:
        nxt.setdefault(src, []).append(dst)
    layers, node = [], nxt["input"][0]
    while node != "output":
        w = nodes[node]
        assert isinstance(w, (nir.Linear, nir.Affine)), f"expected Linear/Affine at {node}"
        lin = torch.nn.Linear(w.weight.shape[1], w.weight.shape[0], bias=isinstance(w, nir.Affine)).double()
        lin.weight.data = torch.from_numpy(np.asarray(w.weight, np.float64))
        if isinstance(w, nir.Affine):
            lin.bias.data = torch.from_numpy(np.asarray(w.bias, np.float64))
        (neuron_name,) = nxt[node]
        c = nodes[neuron_name]
        assert isinstance(c, (nir.CubaLIF, nir.LIF)), f"expected LIF or CubaLIF at {neuron_name}"
        synaptic = isinstance(c, nir.CubaLIF)
        beta = torch.from_numpy(1 - dt / np.asarray(c.tau_mem if synaptic else c.tau, np.float64))
        thr = float(np.asarray(c.v_threshold).flat[0])
        kw = dict(beta=beta, threshold=thr, reset_mechanism=reset, reset_delay=reset_delay)
        if synaptic:
            kw["alpha"] = torch.from_numpy(1 - dt / np.asarray(c.tau_syn, np.float64))
        rec = [d for d in nxt[neuron_name] if d in nxt and nxt[d] == [neuron_name]]
        if rec:
            wr = nodes[rec[0]]
            cls = snn.RSynaptic if synaptic else snn.RLeaky
            neuron = cls(all_to_all=True, linear_features=len(beta), **kw).double()
            neuron.recurrent.weight.data = torch.from_numpy(np.asarray(wr.weight, np.float64))
            # snnTorch's recurrent nn.Linear has a bias; an exported Linear (no bias) means zero
            bias = wr.bias if isinstance(wr, nir.Affine) else np.zeros(len(beta))
            neuron.recurrent.bias.data = torch.from_numpy(np.asarray(bias, np.float64))
        else:
            neuron = (snn.Synaptic if synaptic else snn.Leaky)(**kw).double()
        layers.append((lin, neuron, bool(rec), synaptic))
        onward = [d for d in nxt[neuron_name] if d not in rec]
        node = onward[0]
    n = x.shape[1]
    state = [None] * len(layers)
    total = 0
    with torch.no_grad():
        for t in range(x.shape[0]):
            h = x[t]
            for i, (lin, neuron, recurrent, synaptic) in enumerate(layers):
                cur = lin(h)
                if state[i] is None:  # snnTorch's own initial state: zeros of the layer's shape
                    state[i] = tuple(torch.zeros_like(cur) for _ in range(int(recurrent) + int(synaptic) + 1))
                out = neuron(cur, *state[i])
                # snnTorch's spike function returns float32 spikes (0 or 1: exact in float64)
                out = tuple(o.to(torch.float64) for o in out)
                # outputs (spk, [syn,] mem); the state arguments are ([spk,] [syn,] mem)
                state[i] = out if recurrent else out[1:]
                h = out[0]
            total = total + h
    return total.reshape(n, -1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", choices=FRAMEWORKS, required=True)
    ap.add_argument("--graph", type=Path, required=True)
    ap.add_argument("--obs", type=Path, required=True, help="[N, ...] observations (.npy)")
    ap.add_argument("--input-spikes", type=Path, help="[T, N, ...] inputs per step (.npy)")
    ap.add_argument("--time-steps", type=int, required=True)
    ap.add_argument("--dt", type=float, default=1e-4, help="Norse's from_nir dt")
    ap.add_argument("--reset", choices=("subtract", "zero"), help="snnTorch reset mechanism")
    ap.add_argument("--reset-delay", action="store_true", help="snnTorch reset_delay=True (its default; "
                    "without this flag reset_delay=False, as in the NIR paper's nets)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    # float64 throughout: some framework layers create their state at the default dtype
    torch.set_default_dtype(torch.float64)
    import nir

    graph = nir.read(str(args.graph))
    obs = np.load(args.obs)
    spikes = np.load(args.input_spikes) if args.input_spikes else None
    x = step_inputs(obs, spikes, args.time_steps)
    if args.framework.startswith("sinabs"):
        q = run_sinabs(graph, x, args.framework)
    elif args.framework == "norse":
        q = run_norse(graph, x, args.dt)
    else:
        if args.reset is None:
            ap.error("--framework snntorch needs --reset (the file does not say)")
        q = run_snntorch(graph, x, args.reset, args.reset_delay)
    np.savez(args.out, q=q.numpy().astype(np.float64))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
