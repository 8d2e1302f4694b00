"""GraphMeta: the one reader of a graph's environment-facing metadata (env, actions,
preprocessing, conversion units), on our graphs and on a graph without our metadata."""

from __future__ import annotations

import numpy as np

from exporters.metadata import GraphMeta as ReExported
from exporters.to_nir import model_to_nir
from exporters.zoo import make_checkpoint
from pipeline.graph_meta import ConversionUnits, GraphMeta
from pipeline.policy import dqn_to_graph_units


def test_our_graph() -> None:
    graph = model_to_nir(make_checkpoint("liu", arch="nature_cnn", obs_shape=(4, 36, 36), n_actions=4,
                                         time_steps=3, seed=1))
    meta = GraphMeta.read(graph.metadata)
    assert ReExported is GraphMeta
    assert meta.env_id == "ALE/Pong-v5" and meta.n_actions == 4
    assert meta.preprocessing.offset == (0.0,) and meta.preprocessing.scale == (1.0 / 255.0,)
    assert meta.conversion is None and dqn_to_graph_units(graph.metadata) is None


def test_graph_without_our_metadata() -> None:
    meta = GraphMeta.read({})
    assert meta == GraphMeta() and meta.env_id is None and meta.n_actions is None
    assert meta.preprocessing.offset == (0.0,) and meta.preprocessing.scale == (1.0,)


def test_conversion_units_invert_the_dqn_scale() -> None:
    keys = {"provenance_conversion_output_scale": np.array([2.0]), "provenance_conversion_time_steps": 10,
            "provenance_conversion_v_init": 0.5, "provenance_conversion_readout": "robust_rate"}
    conv = GraphMeta.read(keys).conversion
    assert conv == ConversionUnits(output_scale=2.0, time_steps=10.0, v_init=0.5)
    q = np.array([[1.0, -3.0]])
    assert np.array_equal(dqn_to_graph_units(keys)(q), q / 2.0 + 0.5 / 10.0)
    count = GraphMeta.read({**keys, "provenance_conversion_readout": "spike_count"}).conversion.dqn_to_graph()
    assert np.array_equal(count(q), q / 2.0 * 10.0)
