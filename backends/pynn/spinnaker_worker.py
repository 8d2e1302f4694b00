"""The sPyNNaker side of ``--target pynn-spinnaker``: build, map, and (on a machine) run.

Started by :class:`backends.pynn.spinnaker.PyNNSpiNNakerBackend` as
``python -m backends.pynn.spinnaker_worker RUN_DIR [--map-only]`` with ``HOME`` = RUN_DIR/home
(whose ``.spynnaker.cfg`` names the machine) and the current folder RUN_DIR (sPyNNaker's reports
go there). It reads ``net.json``/``net.npz`` (see ``spinnaker.save_description``) and talks JSON
lines on stdout/stdin; everything sPyNNaker prints goes to stderr (the backend's worker.log).

* ``--map-only`` (virtual board): ``sim.run`` maps the network without running it; the reply
  carries the resources sPyNNaker's mapping used, read from its data view after mapping:
  chips and cores of the placements (application cores: this network's populations and spike
  sources), routing entries before and after compression, per-population core counts.
* otherwise: reply ``ready``, then per ``{"cmd": "run", "input": ..., "output": ...}``: set the
  input, ``sim.run`` (the first run maps and loads), write spikes/membranes, ``sim.reset()``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np


def _reply_stream() -> TextIO:
    """Keep the real stdout for replies; send every library print to stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def build(sim: Any, folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Populations, spike sources and projections from the description; returns them by name."""
    meta = json.loads((folder / "net.json").read_text())
    arrays = np.load(folder / "net.npz")
    ts = float(meta["timestep_ms"])
    sim.setup(timestep=ts, min_delay=ts)
    models = {"IF_curr_delta": sim.IF_curr_delta, "IF_trunc_delta": sim.extra_models.IFTruncDelta}
    pops: dict[str, Any] = {}
    for p in meta["pops"]:
        params = {k: (arrays[v["array"]] if isinstance(v, dict) else v) for k, v in p["params"].items()}
        init_v = params.pop("v", None)
        # the exact largest summed input per receptor sets the ring-buffer shifts (sPyNNaker's default
        # is a statistical guess that can saturate or waste precision)
        summed = [max(w, 2.0 ** -15) for w in p["max_summed"]]
        pop = sim.Population(p["size"], models[p["model"]](**params), label=p["name"],
                             additional_parameters={"max_expected_summed_weight": summed})
        if p["max_atoms"] < 256:  # keeps every synaptic row within sPyNNaker's 256 synapses
            pop.set_max_atoms_per_core(int(p["max_atoms"]))
        if init_v is not None:
            pop.initialize(v=init_v)
        pops[p["name"]] = pop
    n_in = max([int(arrays[f"prj/{i}/pre"].max()) + 1 for i, prj in enumerate(meta["projections"])
                if prj["src"] in ("in_pos", "in_neg") and prj["n"]] or [1])
    sources: dict[str, Any] = {}
    for name, times in meta["sources"].items():
        size = n_in if name in ("in_pos", "in_neg") else 1
        sources[name] = sim.Population(size, sim.SpikeSourceArray(spike_times=[list(times)] * size), label=name)
    projections = {}
    for i, prj in enumerate(meta["projections"]):
        if not prj["n"]:
            continue
        pre, post, w = (arrays[f"prj/{i}/{k}"] for k in ("pre", "post", "w"))
        conn = np.column_stack([pre.astype(np.float64), post.astype(np.float64), w,
                                np.full(pre.size, prj["delay"] * ts)])
        src = pops.get(prj["src"]) or sources[prj["src"]]
        projections[f"{prj['src']}->{prj['dst']}:{prj['receptor']}"] = sim.Projection(
            src, pops[prj["dst"]], sim.FromListConnector(conn), receptor_type=prj["receptor"],
            label=f"{prj['src']}->{prj['dst']}:{prj['receptor']}")
    for p in meta["pops"]:
        pops[p["name"]].record(["spikes", "v"] if p["record_v"] else ["spikes"])
    return meta, pops, sources


def resources(labels: set[str], map_seconds: float) -> dict[str, Any]:
    """Chips, cores and routing entries of the mapping, from sPyNNaker's data view."""
    from spynnaker.pyNN.data import SpynnakerDataView as view

    placements = list(view.iterate_placemements())
    per_pop: dict[str, int] = {}
    app = []
    for pl in placements:
        vertex = pl.vertex.app_vertex
        label = getattr(vertex, "label", None) if vertex is not None else None
        if label in labels:
            app.append(pl)
            per_pop[label] = per_pop.get(label, 0) + 1
    res: dict[str, Any] = {
        "chips": len({(pl.x, pl.y) for pl in app}),  # chips holding this network's cores
        "cores": len(app),  # this network's populations and spike sources
        "cores_with_system": len(placements),  # + sPyNNaker's monitor/gatherer cores on every chip
        "chips_with_system": len({(pl.x, pl.y) for pl in placements}),
        "cores_per_population": per_pop,
        "machine_chips": view.get_machine().n_chips,
        "map_seconds": map_seconds,
    }
    try:
        res["routing_entries"] = int(view.get_uncompressed().get_total_number_of_entries())
        res["routing_tables"] = len(view.get_uncompressed().routing_tables)
    except Exception as exc:  # sPyNNaker raises its own exception types when a stage was skipped
        res["routing_entries"] = f"unavailable: {exc}"
    try:
        res["routing_entries_precompressed"] = int(view.get_precompressed().get_total_number_of_entries())
    except Exception as exc:
        res["routing_entries_precompressed"] = f"unavailable: {type(exc).__name__}"
    return res


def _core_shape(n: int) -> tuple[int, int]:
    """Largest square core tile that divides an n x n population and holds at most 256 neurons."""
    d = max(k for k in range(1, min(n, 16) + 1) if n % k == 0)
    return d, d


def conv_check(sim: Any, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Map one ConvolutionConnector per case on the (virtual) board, then compare what sPyNNaker
    holds (kernel as encoded in 16 bits, padding, strides, post shape) with torch's conv2d."""
    from backends.pynn.convolution import check, connector_args

    sim.setup(timestep=1.0)
    built = []
    for i, case in enumerate(cases):
        n, w = int(case["in"]), np.asarray(case["weight"], dtype=np.float64)
        stride, pad = tuple(case["stride"]), tuple(case["padding"])
        args = connector_args(w, stride, pad)
        out = (n + 2 * pad[0] - w.shape[0]) // stride[0] + 1
        pre = sim.Population(n * n, sim.SpikeSourceArray(spike_times=[]), label=f"pre{i}", structure=sim.Grid2D())
        post = sim.Population(out * out, sim.IF_curr_exp(), label=f"post{i}", structure=sim.Grid2D())
        pre.set_max_atoms_per_core(_core_shape(n))  # 2-D populations need 2-D core sizes
        post.set_max_atoms_per_core(_core_shape(out))
        conn = sim.ConvolutionConnector(args.kernel, padding=args.padding, strides=stride)
        prj = sim.Projection(pre, post, conn, sim.Convolution())
        built.append((case, w, stride, pad, n, out, prj))
    t0 = time.perf_counter()
    sim.run(1.0)
    seconds = time.perf_counter() - t0
    results = []
    for case, w, stride, pad, n, out, prj in built:
        connector = prj._synapse_information.connector
        edge = prj._projection_edge
        post_vertex = edge.post_vertex
        scales = post_vertex.get_weight_scales(post_vertex.get_ring_buffer_shifts())
        shorts = connector.get_local_only_data(edge, 1, 0, 0).view(np.uint16)
        kernel_hw = (int(shorts[1]), int(shorts[0]))  # written as (columns, rows)
        padding = (int(shorts[3]), int(shorts[2]))
        encoded = connector.get_encoded_kernel_weights(edge, scales).astype(np.float64).reshape(kernel_hw)
        pos = post_vertex.get_synapse_id_by_target("excitatory")
        neg = post_vertex.get_synapse_id_by_target("inhibitory")
        kernel = np.where(encoded >= 0, encoded / scales[pos], encoded / scales[neg])
        res = check(w, stride, pad, (n, n), kernel=kernel, post_shape=tuple(post_vertex.atoms_shape),
                    args_padding=padding)
        res["weight_quantum"] = float(1.0 / min(scales[pos], scales[neg]))
        res["map_seconds"] = seconds
        results.append(res)
    sim.end()
    return results


Reply = Callable[..., None]


def map_only(sim: Any, meta: dict[str, Any], labels: set[str], reply: Reply) -> None:
    """Map the network without running it (virtual board) and reply with the resources it took."""
    t0 = time.perf_counter()
    sim.run(int(meta["run_steps"]) * float(meta["timestep_ms"]))
    res = resources(labels, time.perf_counter() - t0)
    sim.end()
    reply(ok=True, resources=res)


def set_input(data: Any, pops: dict[str, Any], sources: dict[str, Any]) -> None:
    """One observation's host currents (``i_offset/POP``) and input spike trains (``spikes/in_*``)."""
    for key in data.files:
        kind, name = key.split("/", 1)[0], key.split("/", 1)[1]
        if kind == "i_offset":
            pops[name].set(i_offset=data[key])
    for tag in ("in_pos", "in_neg"):
        if f"spikes/{tag}/neuron" in data.files:
            ids, t = data[f"spikes/{tag}/neuron"], data[f"spikes/{tag}/time"]
            times = [sorted(t[ids == j].tolist()) for j in range(sources[tag].size)]
            sources[tag].set(spike_times=times)


def recorded(meta: dict[str, Any], pops: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every population's spikes (neuron, time ms) and, where recorded, its membrane per step."""
    steps, ts = int(meta["run_steps"]), float(meta["timestep_ms"])
    arrays = {}
    for p in meta["pops"]:
        pop = pops[p["name"]]
        spikes = pop.spinnaker_get_data("spikes")  # [[neuron, time ms], ...]
        arrays[f"spikes/{p['name']}/neuron"] = spikes[:, 0].astype(np.int64)
        arrays[f"spikes/{p['name']}/time"] = spikes[:, 1].astype(np.float64)
        if p["record_v"]:
            v = pop.spinnaker_get_data("v")  # [[neuron, time ms, value], ...]
            trace = np.full((steps, p["size"]), np.nan)
            trace[np.rint(v[:, 1] / ts).astype(np.int64), v[:, 0].astype(np.int64)] = v[:, 2]
            arrays[f"v/{p['name']}"] = trace
    return arrays


def serve(sim: Any, meta: dict[str, Any], pops: dict[str, Any], sources: dict[str, Any], labels: set[str],
          reply: Reply, requests: TextIO) -> None:
    """Reply ``ready``, then run one observation per ``run`` request until ``close`` or end of input."""
    steps, ts = int(meta["run_steps"]), float(meta["timestep_ms"])
    reply(ok=True, ready=True)
    mapped = False
    for line in requests:
        msg = json.loads(line)
        if msg.get("cmd") == "close":
            break
        with np.load(msg["input"]) as data:
            set_input(data, pops, sources)
        t0 = time.perf_counter()
        sim.run(steps * ts)
        extra: dict[str, Any] = {}
        if not mapped:
            extra["resources"] = resources(labels, time.perf_counter() - t0)
            mapped = True
        np.savez(msg["output"], **recorded(meta, pops))
        sim.reset()  # state back to the initial values, time to 0: nothing carries over
        reply(ok=True, output=msg["output"], **extra)
    sim.end()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    folder = Path([a for a in args if not a.startswith("--")][0]).resolve()
    out = _reply_stream()

    def reply(**msg: Any) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    try:
        import pyNN.spiNNaker as sim
    except ImportError as exc:
        reply(error=f"sPyNNaker is not installed for {sys.executable} (pip install -c constraints.txt "
                    f"'dsqn-deploy[spinnaker]', or set SPINNAKER_PYTHON): {exc}")
        return 2
    try:
        if "--conv-check" in args:
            cases = json.loads((folder / "conv_check.json").read_text())
            reply(ok=True, conv=conv_check(sim, cases))
            return 0
        meta, pops, sources = build(sim, folder)
        labels = set(pops) | set(sources)
        if "--map-only" in args:
            map_only(sim, meta, labels, reply)
        else:
            serve(sim, meta, pops, sources, labels, reply, sys.stdin)
        return 0
    except Exception as exc:  # report sPyNNaker's own error types as one line to the host
        import traceback

        traceback.print_exc()
        reply(error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ''}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
