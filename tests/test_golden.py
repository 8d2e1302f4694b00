"""Golden outputs that a refactoring must leave unchanged: the ``--help`` text of the console
scripts, open-loop readouts (``run-backend --inputs ... --out readouts.npz``) of a few zoo kinds on
every local target, and the deterministic fields of two closed-loop runs (a target comparison with
spike-encoded inputs, and a converted graph compared with its DQN checkpoint).

Readouts are compared bit for bit (``q`` float64 bytes, ``action``, ``spikes/<node>``), also on
the fixed-point target. The goldens live in ``tests/golden/``; after a deliberate change of
behaviour, rewrite them with::

    PYTHONPATH=$PWD python tests/test_golden.py --write            # all
    PYTHONPATH=$PWD python tests/test_golden.py --write help       # or: readouts, loop

and say in the commit why they changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import sys
import tomllib
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
HELP_COLUMNS = "100"  # argparse wraps to the terminal: fix the width

# zoo kind -> gain at which every layer spikes (IF nets need less)
KINDS = {"liu": 8.0, "chen": 8.0, "spike_count": 8.0, "tan_converted": 3.0, "poisson": 8.0}
# target -> module that must import for it to run here
TARGETS = {"reference": None, "nest": "nest", "pynn-nest": "pyNN", "lava": "lava", "lava-fixed": "lava"}
N_OBS = 6


# ---------------------------------------------------------------- --help


def help_text(script: str) -> str:
    module, func = SCRIPTS[script].split(":")
    main = getattr(importlib.import_module(module), func)
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    buf = io.StringIO()
    try:
        with redirect_stdout(buf), pytest.raises(SystemExit) as exc:
            main(["--help"])
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    assert exc.value.code == 0
    return buf.getvalue()


def test_the_console_scripts() -> None:
    assert sorted(SCRIPTS) == sorted(["train-agent", "evaluate-agent", "export-nir", "run-backend",
                                      "inspect-nir", "convert-dqn", "finetune-fixed", "import-agent",
                                      "train-classifier"])


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_text_unchanged(script: str) -> None:
    want = (GOLDEN / "help" / f"{script}.txt").read_text()
    assert help_text(script) == want


# ---------------------------------------------------------------- open-loop readouts


def available(target: str) -> bool:
    module = TARGETS[target]
    if module is None:
        return True
    os.environ.setdefault("PYNEST_QUIET", "1")
    if target.startswith("lava"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            version("lava-nc")
        except PackageNotFoundError:
            return False
        return True
    return importlib.util.find_spec(module) is not None


def zoo_files(kind: str, where: Path) -> tuple[Path, Path]:
    from exporters.nirio import write_graph
    from exporters.to_nir import model_to_nir
    from exporters.zoo import cartpole_obs, make_checkpoint

    graph, obs = where / f"{kind}.nir", where / "obs.npy"
    if not graph.exists():
        write_graph(model_to_nir(make_checkpoint(kind, seed=1, hidden=(24, 24), time_steps=8,
                                                 gain=KINDS[kind])), graph)
    np.save(obs, cartpole_obs(N_OBS, seed=3).numpy())
    return graph, obs


def readouts(kind: str, target: str, where: Path) -> dict[str, np.ndarray]:
    from backends.cli import main as run_backend

    graph, obs = zoo_files(kind, where)
    out = where / f"{kind}.{target}.npz"
    with redirect_stdout(io.StringIO()):
        assert run_backend([str(graph), "--target", target, "--inputs", str(obs), "--out", str(out)]) == 0
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def assert_bit_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for k, w in want.items():
        g = got[k]
        assert g.dtype == w.dtype and g.shape == w.shape, k
        assert g.tobytes() == w.tobytes(), f"{k} differs: max |diff| {np.abs(g - w).max()}"


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_readouts_unchanged(kind: str, target: str, tmp_path: Path) -> None:
    if not available(target):
        pytest.skip(f"{target}: simulator not installed")
    with np.load(GOLDEN / "readouts" / f"{kind}.{target}.npz") as data:
        want = {k: data[k] for k in data.files}
    assert_bit_equal(readouts(kind, target, tmp_path), want)


# ---------------------------------------------------------------- closed loop

# fields of an episode record that do not depend on the clock
LOOP_FIELDS = ("episode", "env_seed", "return", "length", "random_actions", "spikes_per_step", "agreement",
               "q_abs_err", "q_abs_err_mean", "q_rel_err", "disagreements")


def converted_dqn(where: Path) -> tuple[Path, Path]:
    """A random CartPole DQN and its conversion (T 40, a short calibration) as a NIR graph."""
    import torch

    from exporters.nirio import write_graph
    from exporters.to_nir import model_to_nir
    from pipeline.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from pipeline.convert import convert, make_parser
    from pipeline.models import build_model
    from pipeline.spec import ModelSpec, Preprocessing

    spec = ModelSpec(kind="dqn", arch="mlp", obs_shape=(4,), n_actions=2, hidden=(16, 16)).validate()
    torch.manual_seed(3)
    dqn = Checkpoint(spec=spec, state_dict=build_model(spec).state_dict(), env_id="CartPole-v1",
                     preprocessing=Preprocessing(offset=(0.1,), scale=(0.5,)))
    dqn_pt, snn_pt, nir_path = where / "dqn.pt", where / "snn.pt", where / "snn.nir"
    save_checkpoint(dqn, dqn_pt)
    with redirect_stdout(io.StringIO()):
        convert(make_parser().parse_args([str(dqn_pt), "-o", str(snn_pt), "-T", "40", "--calib-steps", "60",
                                          "--eval-obs", "0", "--v-init", "0.5", "--no-progress"]))
    write_graph(model_to_nir(load_checkpoint(snn_pt)), nir_path)
    return nir_path, dqn_pt


def loop_records(case: str, where: Path) -> list[dict]:
    from backends.cli import main as run_backend
    from pipeline.bridge import read_results

    if case == "poisson-vs-reference64":
        graph, _ = zoo_files("poisson", where)
        extra = ["--compare", "reference", "--dtype", "float64", "--epsilon", "0.1", "--max-steps", "25"]
    else:  # converted graph against its DQN: own preprocessing, Q in the graph's units
        graph, dqn_pt = converted_dqn(where)
        extra = ["--compare", str(dqn_pt), "--max-steps", "25"]
    res = where / f"{case}.jsonl"
    with redirect_stdout(io.StringIO()):
        assert run_backend([str(graph), "--target", "reference", "--env", "CartPole-v1", "--episodes", "2",
                            "--seed", "5", "--results", str(res), "--no-progress", *extra]) == 0
    return [{k: r[k] for k in LOOP_FIELDS if k in r} for r in read_results(res)[1]]


LOOP_CASES = ["poisson-vs-reference64", "converted-vs-dqn"]


@pytest.mark.parametrize("case", LOOP_CASES)
def test_closed_loop_unchanged(case: str, tmp_path: Path) -> None:
    want = json.loads((GOLDEN / "loop" / f"{case}.json").read_text())
    assert loop_records(case, tmp_path) == want


# ---------------------------------------------------------------- rewriting the goldens


def write(what: list[str]) -> None:
    import tempfile

    if "help" in what:
        (GOLDEN / "help").mkdir(parents=True, exist_ok=True)
        for script in SCRIPTS:
            (GOLDEN / "help" / f"{script}.txt").write_text(help_text(script))
    if "readouts" in what:
        (GOLDEN / "readouts").mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            for target in TARGETS:
                if not available(target):
                    print(f"skipped {target}: not installed", file=sys.stderr)
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    np.savez_compressed(GOLDEN / "readouts" / f"{kind}.{target}.npz",
                                        **readouts(kind, target, Path(tmp)))
    if "loop" in what:
        (GOLDEN / "loop").mkdir(parents=True, exist_ok=True)
        for case in LOOP_CASES:
            with tempfile.TemporaryDirectory() as tmp:
                records = loop_records(case, Path(tmp))
            (GOLDEN / "loop" / f"{case}.json").write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "--write":
        raise SystemExit("usage: PYTHONPATH=$PWD python tests/test_golden.py --write "
                         "[help] [readouts] [loop]")
    write(args[1:] or ["help", "readouts", "loop"])
