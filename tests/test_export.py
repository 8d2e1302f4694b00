"""export-nir: every model kind becomes a type-checked NIR 1.0.8 graph with our metadata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest

from exporters.cli import main as export_main
from exporters.nirio import read_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import KINDS, make_checkpoint
from pipeline.checkpoint import save_checkpoint

REQUIRED_META = ("dt", "time_steps", "discretization", "threshold", "input_encoding", "readout", "n_actions",
                 "obs_shape", "model_kind", "model_variant", "preprocessing_offset", "preprocessing_scale",
                 "readout_reduce", "env_id")


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_round_trips_through_nir_read(kind: str, tmp_path: Path) -> None:
    ckpt = make_checkpoint(kind, hidden=(16, 8))
    path = tmp_path / "m.pt"
    save_checkpoint(ckpt, path)
    out = tmp_path / "m.nir"
    assert export_main([str(path), "-o", str(out)]) == 0
    graph = nir.read(out)  # type-checks
    meta = graph.metadata
    for key in REQUIRED_META:
        assert key in meta, key
    assert float(meta["dt"]) == 1e-4
    assert meta["threshold"] == ">=" and meta["discretization"] == "forward_euler"
    assert int(meta["time_steps"]) == (ckpt.spec.time_steps if ckpt.spec.spiking else 1)
    assert meta["source_sha256"] and meta["model_kind"] == ckpt.spec.kind
    assert list(np.asarray(graph.nodes["input"].input_type["input"])) == [4]


def test_affine_conv_flatten_and_neuron_parameters_are_ours(tmp_path: Path) -> None:
    ckpt = make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=3, time_steps=4)
    model = ckpt.build()
    g = model_to_nir(ckpt, dt=1e-3)
    conv0 = g.nodes["l0_conv"]
    assert np.array_equal(conv0.weight, model.layers[0][0].weight.detach().numpy())
    assert np.array_equal(conv0.bias, model.layers[0][0].bias.detach().numpy())
    assert tuple(conv0.stride) == (4, 4) and conv0.weight.shape[:2] == (32, 4)
    flat = g.nodes["l3_flatten"]
    assert flat.start_dim == 0 and flat.end_dim == -1  # batch-free, unlike torch's start_dim=1
    assert list(flat.output_type["output"]) == [64]
    head = g.nodes["head"]
    assert np.array_equal(head.bias, model.head.bias.detach().numpy())  # not left random
    lif = g.nodes["l0_lif"]
    assert np.allclose(lif.tau, 2 * 1e-3) and np.all(lif.r == 1) and np.all(lif.v_threshold == 1)
    assert np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0)


def test_soft_reset_is_a_tagged_standard_subgraph() -> None:
    g = model_to_nir(make_checkpoint("hahn", hidden=(8,)))
    assert isinstance(g.nodes["l0_soma"], nir.I) and np.allclose(g.nodes["l0_soma"].r, 1e4)
    assert isinstance(g.nodes["l0_spike"], nir.Threshold)
    assert isinstance(g.nodes["l0_reset"], nir.Scale) and np.all(g.nodes["l0_reset"].scale == -1.0)
    assert ("l0_reset", "l0_soma") in g.edges and ("l0_spike", "l0_reset") in g.edges
    assert all(g.nodes[n].metadata["dsqn_role"] == "soft_reset" for n in ("l0_soma", "l0_spike", "l0_reset"))
    # voltage readout of an IF output: the head's current is summed over T (+ V_r)
    assert g.metadata["readout_reduce"] == "sum" and ("head", "output") in g.edges


def test_membrane_readout_is_an_li_node_and_chen_has_no_bias() -> None:
    g = model_to_nir(make_checkpoint("chen", hidden=(8,)))
    assert isinstance(g.nodes["out_li"], nir.LI) and np.allclose(g.nodes["out_li"].tau, 2e-4)
    assert isinstance(g.nodes["head"], nir.Linear) and isinstance(g.nodes["l0_fc"], nir.Linear)
    assert g.metadata["readout_reduce"] == "max"


def test_dqn_declares_the_relu_extension() -> None:
    g = model_to_nir(make_checkpoint("dqn", hidden=(8,)))
    assert g.metadata["extensions"] == "relu"
    assert g.nodes["l0_relu"].metadata["dsqn_role"] == "relu"


def test_export_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = subprocess.run([sys.executable, "-c", "from exporters.cli import main; raise SystemExit(main())",
                        str(bad), "-o", str(tmp_path / "x.nir")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.nir").exists()


def test_written_file_reads_back_with_metadata_types(tmp_path: Path) -> None:
    ckpt = make_checkpoint("tan_converted", hidden=(8,))
    g = model_to_nir(ckpt)
    from exporters.nirio import write_graph

    write_graph(g, tmp_path / "t.nir")
    back = read_graph(tmp_path / "t.nir")
    assert set(back.nodes) == set(g.nodes) and sorted(back.edges) == sorted(g.edges)
    assert np.array_equal(back.metadata["obs_shape"], [4])
    assert float(back.metadata["readout_divisor"]) == 20.0
    for name, node in g.nodes.items():
        for attr in ("weight", "bias", "tau", "r", "threshold", "scale"):
            if hasattr(node, attr):
                assert np.array_equal(getattr(back.nodes[name], attr), getattr(node, attr)), (name, attr)


def test_a_graph_the_readers_refuse_is_never_written(tmp_path):
    """write_graph(read_back=True) (export-nir) reads the file back before it takes the output's
    place: a refused graph leaves neither a new file nor a damaged old one behind."""
    import nir
    import numpy as np

    from exporters.nirio import read_graph, write_graph
    from pipeline.errors import UserError

    nodes = {"in": nir.Input(np.array([2])), "fc": nir.Linear(np.eye(2, dtype=np.float32)),
             "out": nir.Output(np.array([2]))}
    good = nir.NIRGraph(nodes=nodes, edges=[("in", "fc"), ("fc", "out")], metadata={"time_steps": 4, "dt": 1e-3})
    bad = nir.NIRGraph(nodes=nodes, edges=[("in", "fc"), ("fc", "out")], metadata={"time_steps": 4, "dt": 1e300})
    path = tmp_path / "g.nir"
    assert write_graph(good, path, read_back=True) is not None
    before = path.read_bytes()
    with pytest.raises(UserError, match=r"g\.nir: not written, the graph would be refused when read \(graph metadata 'dt'"):
        write_graph(bad, path, read_back=True)
    assert path.read_bytes() == before and not (tmp_path / "g.nir.tmp").exists()
    assert read_graph(path).metadata["dt"] == 1e-3
    with pytest.raises(UserError):
        write_graph(bad, tmp_path / "new.nir", read_back=True)
    assert not (tmp_path / "new.nir").exists()
