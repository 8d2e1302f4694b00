"""Checkpoints: plain dicts, weights_only loading, one clear error for every bad file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint import FORMAT_VERSION, Checkpoint, load_checkpoint, save_checkpoint
from pipeline.errors import UserError
from pipeline.models import build_model
from pipeline.spec import ModelSpec, NeuronParams, Preprocessing

EVAL = [sys.executable, "-m", "pipeline.evaluate", "--episodes", "1", "--no-progress"]


class Evil:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def make_ckpt() -> Checkpoint:
    spec = ModelSpec(kind="dsqn", arch="mlp", obs_shape=(4,), n_actions=2, hidden=(8,),
                     neuron=NeuronParams(), time_steps=4).validate()
    model = build_model(spec)
    return Checkpoint(spec=spec, state_dict=model.state_dict(), env_id="CartPole-v1",
                      preprocessing=Preprocessing(), provenance={"seed": 3, "command": "test"})


def test_roundtrip_is_plain_and_weights_only(tmp_path: Path):
    ckpt = make_ckpt()
    path = tmp_path / "m.pt"
    save_checkpoint(ckpt, path)
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION and raw["model_kind"] == "dsqn"
    assert {"spec", "state_dict", "env_id", "preprocessing", "provenance"} <= set(raw)
    back = load_checkpoint(path)
    assert back.spec == ckpt.spec and back.env_id == "CartPole-v1" and back.provenance["seed"] == 3
    x = torch.randn(3, 4)
    assert torch.equal(back.build()(x), ckpt.build()(x))


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.pt"
    save_checkpoint(make_ckpt(), good)
    data = torch.load(good, weights_only=True)
    cases = {}
    cases["missing"] = (tmp_path / "nope.pt", "not found")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:200])
    cases["corrupt"] = (corrupt, "corrupt")
    text = tmp_path / "text.pt"
    text.write_text("hello")
    cases["text"] = (text, "corrupt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    cases["foreign"] = (foreign, "not a dsqn-deploy checkpoint")
    future = tmp_path / "future.pt"
    torch.save({**data, "format_version": FORMAT_VERSION + 1}, future)
    cases["future"] = (future, "newer")
    evil = tmp_path / "evil.pt"
    torch.save({"format": "dsqn-deploy/checkpoint", "x": Evil()}, evil)
    cases["pickle"] = (evil, "not a safe")
    wrong = tmp_path / "wrong.pt"
    torch.save({**data, "state_dict": {"layers.0.0.weight": torch.zeros(3, 3)}}, wrong)
    cases["weights"] = (wrong, "do not match")
    return cases


@pytest.mark.parametrize("case", ["missing", "corrupt", "text", "foreign", "future", "pickle", "weights"])
def test_bad_checkpoints_get_one_clear_error(tmp_path: Path, case: str):
    path, needle = bad_files(tmp_path)[case]
    with pytest.raises(UserError, match=needle):
        load_checkpoint(path).build()


def test_bad_checkpoint_cli_is_one_line_nonzero(tmp_path: Path):
    path, _ = bad_files(tmp_path)["pickle"]
    proc = subprocess.run([*EVAL, str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr
    assert "pwned" not in proc.stdout


def test_evaluate_threads_option(tmp_path: Path, capfd):
    from pipeline.evaluate import main as evaluate

    path = tmp_path / "m.pt"
    save_checkpoint(make_ckpt(), path)
    assert evaluate([*EVAL[3:], "--threads", "0", str(path)]) == 2  # in this process; below, a real one
    assert capfd.readouterr().err.strip() == "error: --threads must be >= 1, got 0"
    out = tmp_path / "r.json"
    proc = subprocess.run([*EVAL, "--threads", "2", "--json", str(out), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())[0]["episodes"] == 1
