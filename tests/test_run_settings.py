"""Settings that change results are recorded: ``run-backend``'s backend options (lava-fixed's
``--weight-bits`` and ``--state-scale``, the reference's ``--dtype``, ...) go into the results
header, the JSON summary and the plot title, and ``--resume`` refuses a run whose options differ."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest

from backends.cli import main as run_backend
from backends.cli import recorded_options
from backends.lava.modes import DEFAULT_STATE_SCALE, STATE_SCALES
from exporters.nirio import write_graph
from exporters.to_nir import model_to_nir
from exporters.zoo import make_checkpoint
from pipeline.bridge import LoopSettings, read_results

pytestmark = pytest.mark.timeout(240)


def graph(tmp_path: Path) -> Path:
    path = tmp_path / "m.nir"
    write_graph(model_to_nir(make_checkpoint("liu", seed=1, hidden=(16, 16), time_steps=8)), path)
    return path


def loop(g: Path, res: Path, *extra: str) -> int:
    return run_backend([str(g), "--env", "CartPole-v1", "--results", str(res), "--no-progress",
                        "--max-steps", "5", *extra])


def test_recorded_options_fill_defaults_and_drop_speed_settings() -> None:
    default = {"state_scale": DEFAULT_STATE_SCALE}
    assert recorded_options("lava-fixed", {"batch_size": 16, "convention": None}) == {"weight_bits": 8,
                                                                                      **default}
    assert recorded_options("lava-fixed", {"weight_bits": 16, "time_steps": 4}) == {
        "time_steps": 4, "weight_bits": 16, **default}
    assert recorded_options("nest", {"threads": 2}) == {}


def test_options_reach_header_json_and_title_and_resume_refuses_a_change(tmp_path: Path, capsys) -> None:
    g, res = graph(tmp_path), tmp_path / "r.jsonl"
    with mock.patch("pipeline.bridge.plot_results") as plot:
        assert loop(g, res, "--target", "reference", "--compare", "reference", "--episodes", "1",
                    "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "p.png")) == 0
    header, _ = read_results(res)
    assert header["settings"]["backend_options"] == {"dtype": "float32"}
    assert header["settings"]["compare_options"] == {"dtype": "float32"}  # reference vs reference
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["backend_options"] == {"dtype": "float32"}
    assert "(dtype=float32)" in plot.call_args[0][2]
    capsys.readouterr()
    assert loop(g, res, "--target", "reference", "--compare", "reference", "--episodes", "2", "--resume",
                "--dtype", "float64") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "settings differ (backend_options: {'dtype': 'float32'} -> {'dtype': 'float64'}" \
        in err[0]
    # the same options (a speed setting aside) resume
    assert loop(g, res, "--target", "reference", "--compare", "reference", "--episodes", "2", "--resume",
                "--batch-size", "3") == 0
    assert len(read_results(res)[1]) == 2


def test_a_header_without_options_is_not_resumed_blindly(tmp_path: Path, capsys) -> None:
    g, res = graph(tmp_path), tmp_path / "r.jsonl"
    assert loop(g, res, "--target", "reference", "--episodes", "1") == 0
    lines = res.read_text().splitlines()
    head = json.loads(lines[0])
    del head["settings"]["backend_options"], head["settings"]["compare_options"]  # as written before
    res.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    assert loop(g, res, "--target", "reference", "--episodes", "2", "--resume") == 2
    assert "backend_options: None -> {'dtype': 'float32'}" in capsys.readouterr().err


def test_a_16_bit_lava_fixed_run_and_its_resumption_without_the_flag_record_different_options() -> None:
    # the scenario of a user resuming a --weight-bits 16 run without the flag: the two runs'
    # recorded options differ, so open_results refuses (the mechanism is exercised end to end on
    # the reference target above, without starting Lava)
    from backends.cli import backend_options, parse_args

    with_flag = parse_args(["g.nir", "--target", "lava-fixed", "--env", "CartPole-v1", "--weight-bits", "16"])
    without = parse_args(["g.nir", "--target", "lava-fixed", "--env", "CartPole-v1"])
    a = recorded_options("lava-fixed", backend_options("lava-fixed", with_flag))
    b = recorded_options("lava-fixed", backend_options("lava-fixed", without))
    default = {"state_scale": DEFAULT_STATE_SCALE}
    assert a == {"weight_bits": 16, **default} and b == {"weight_bits": 8, **default}


@pytest.mark.parametrize("scale", STATE_SCALES)
def test_a_lava_fixed_state_scale_is_recorded_and_its_resumption_with_the_other_differs(scale: str) -> None:
    # --state-scale changes lava-fixed's integers: it is recorded (giving the default records the
    # same as leaving it out), and a resumption under the other scale records different options
    from backends.cli import backend_options, parse_args

    base = ["g.nir", "--target", "lava-fixed", "--env", "CartPole-v1"]
    given = recorded_options("lava-fixed",
                             backend_options("lava-fixed", parse_args([*base, "--state-scale", scale])))
    plain = recorded_options("lava-fixed", backend_options("lava-fixed", parse_args(base)))
    other = next(s for s in STATE_SCALES if s != scale)
    flipped = recorded_options("lava-fixed", backend_options("lava-fixed",
                                                              parse_args([*base, "--state-scale", other])))
    assert given == {"state_scale": scale, "weight_bits": 8} and flipped != given
    assert (plain == given) == (scale == DEFAULT_STATE_SCALE)
    settings = LoopSettings(env_id="CartPole-v1", target="lava-fixed", graph="g.nir", graph_sha256="0",
                            backend_options=given)
    assert f"state_scale={scale}" in settings.describe_options()  # the plot title


def test_a_header_from_before_the_state_scale_resumes_only_at_the_value_it_ran_with() -> None:
    # lava-fixed results written before --state-scale existed record {"weight_bits": 8}: they ran
    # with one unit per layer, so "layer" resumes them as themselves and "neuron" is a change
    from backends.cli import legacy_options

    old = {"weight_bits": 8}
    assert legacy_options({"state_scale": "layer", "weight_bits": 8}, old, "lava-fixed") == old
    assert legacy_options({"state_scale": "neuron", "weight_bits": 8}, old, "lava-fixed") == {
        "state_scale": "neuron", "weight_bits": 8}
    assert legacy_options({"state_scale": "layer", "weight_bits": 16}, old, "lava-fixed")["weight_bits"] == 16
    assert legacy_options({"dtype": "float32"}, {}, "reference") == {"dtype": "float32"}  # no legacy option
    assert legacy_options({"state_scale": "layer", "weight_bits": 8}, None, "lava-fixed") == {
        "state_scale": "layer", "weight_bits": 8}  # no header: the command's options


def test_resuming_a_legacy_header_end_to_end(tmp_path: Path, capsys) -> None:
    # the whole --resume path with a legacy option, on the reference (no simulator to start): its
    # --dtype posing as an option added after the header was written
    from dataclasses import replace

    import backends.cli as cli

    g, res = graph(tmp_path), tmp_path / "r.jsonl"
    assert loop(g, res, "--target", "reference", "--episodes", "1") == 0
    lines = res.read_text().splitlines()
    head = json.loads(lines[0])
    head["settings"]["backend_options"] = {}  # as written before the option was recorded
    res.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    legacy = {**cli.TARGETS, "reference": replace(cli.TARGETS["reference"], legacy={"dtype": "float32"})}
    with mock.patch.object(cli, "TARGETS", legacy):
        capsys.readouterr()
        assert loop(g, res, "--target", "reference", "--episodes", "2", "--resume", "--dtype", "float64") == 2
        assert "backend_options: {} -> {'dtype': 'float64'}" in capsys.readouterr().err
        assert loop(g, res, "--target", "reference", "--episodes", "2", "--resume") == 0
    header, episodes = read_results(res)
    assert header["settings"]["backend_options"] == {} and len(episodes) == 2
