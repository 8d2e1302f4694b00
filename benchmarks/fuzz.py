"""Fuzz the console scripts with bad NIR files, checkpoints and command lines (seeded).

    python benchmarks/fuzz.py --cases 600 --seed 0 --out out/fuzz      # the full set
    python benchmarks/fuzz.py --cases 120 --seed 0                     # what tests/test_fuzz.py runs

Every case is one console script's ``main(argv)`` run in a forked child (the modules are imported
once), with stdout/stderr in files, an address-space cap and a time limit. An outcome is

* ``clean``: exit 2 and exactly one stderr line, starting ``error:``;
* ``ok``: exit 0 (for ``run-backend --out``, the written Q-values are also checked: a non-finite Q
  with exit 0 is ``nonfinite_q``);
* ``traceback``, ``hang`` (killed at the time limit), ``crash`` (a signal), ``other``.

The contract: no traceback, no hang, no crash, no non-finite Q with exit 0, and every case marked
``reject`` ends ``clean``. Cases marked ``either`` (a flipped byte may land in unused space) may
also end ``ok``. Run against another checkout with ``PYTHONPATH=<checkout>`` to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOOD_CKPT = ROOT / "examples" / "cartpole_dsqn.pt"
LIMIT_S = 60.0
MEMORY_CAP = 8 << 30


@dataclass
class Case:
    name: str
    script: str  # inspect-nir, run-backend, export-nir, evaluate-agent, train-agent, convert-dqn
    argv: list[str]
    expect: str  # reject | accept | either
    note: str = ""


@dataclass
class Outcome:
    case: Case
    kind: str
    rc: int | None
    seconds: float
    stderr_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- inputs


def entry_points() -> dict[str, Any]:
    """The console scripts' ``main`` functions, from whatever checkout is on sys.path."""
    from backends.cli import main as run_backend
    from exporters.cli import main as export_nir
    from pipeline.convert import main as convert_dqn
    from pipeline.evaluate import main as evaluate_agent
    from pipeline.train import main as train_agent

    try:
        from backends.inspect_cli import main as inspect_nir  # after the floors move
    except ImportError:
        from backends.inspect_cli import main as inspect_nir
    return {"inspect-nir": inspect_nir, "run-backend": run_backend, "export-nir": export_nir,
            "evaluate-agent": evaluate_agent, "train-agent": train_agent, "convert-dqn": convert_dqn}


def base_files(work: Path) -> dict[str, Path]:
    """The good graph, observations and checkpoint every mutation starts from."""
    work.mkdir(parents=True, exist_ok=True)
    good = work / "good.nir"
    if not good.exists():
        pid = os.fork()
        if pid == 0:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 1)
            os._exit(entry_points()["export-nir"]([str(GOOD_CKPT), "-o", str(good)]) or 0)
        os.waitpid(pid, 0)
    rng = np.random.default_rng(0)
    obs = (rng.standard_normal((8, 4)) * [1.0, 0.5, 0.1, 0.5]).astype(np.float32)
    np.save(work / "obs.npy", obs)
    return {"good": good, "obs": work / "obs.npy", "ckpt": GOOD_CKPT}


def _h5_edit(src: Path, dst: Path, edit) -> None:
    import h5py

    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f, dst.parent)


def _set_dataset(path: str, value: Any):
    def edit(f, _):
        if path in f:
            del f[path]
        f[path] = value
    return edit


def nir_mutations(good: Path, folder: Path, rng: random.Random, n: int) -> list[tuple[Path, str, str]]:
    """``n`` bad NIR files: (path, expectation, note)."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    with h5py.File(good, "r") as f:
        datasets: list[str] = []
        f.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
    meta = [d for d in datasets if d.startswith("node/metadata/")]
    params = [d for d in datasets if "/nodes/" in d and d.rsplit("/", 1)[-1] in (
        "weight", "bias", "tau", "r", "v_threshold", "v_leak", "v_reset")]
    shapes = [d for d in datasets if d.endswith("/shape") or d.rsplit("/", 1)[-1] in ("input", "output")]

    def bytes_case(i: int, what: str, content: bytes, expect: str) -> tuple[Path, str, str]:
        p = folder / f"{i:04d}_{what}.nir"
        p.write_bytes(content)
        return p, expect, what

    def h5_case(i: int, what: str, edit, expect: str = "reject") -> tuple[Path, str, str]:
        p = folder / f"{i:04d}_{what}.nir"
        _h5_edit(good, p, edit)
        return p, expect, what

    weird_values: list[Any] = [np.nan, np.inf, -np.inf, 1e300, -1e39, 2.5, -1, 0, 2**62, "x", b"\xff\xfe",
                               np.array([1.0, 2.0, 3.0]), np.array([], dtype=np.float64), 1 + 2j,
                               np.array(["a", "b"], dtype=object), 4_294_967_312]
    out: list[tuple[Path, str, str]] = []
    kinds = ["flip", "flip_head", "truncate", "zero_range", "not_hdf5", "meta", "param", "shape", "hdf5_feature"]
    for i in range(n):
        kind = kinds[i % len(kinds)] if i < len(kinds) * 2 else rng.choice(kinds)
        if kind == "flip":
            b = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(len(b))
                b[pos] ^= 1 << rng.randrange(8)
            out.append(bytes_case(i, "flip", bytes(b), "either"))
        elif kind == "flip_head":
            b = bytearray(data)
            pos = rng.randrange(min(len(b), 6000))
            b[pos] ^= 0xFF
            out.append(bytes_case(i, "flip_head", bytes(b), "either"))
        elif kind == "truncate":
            out.append(bytes_case(i, "truncate", data[: rng.randrange(len(data))], "reject"))
        elif kind == "zero_range":
            b = bytearray(data)
            lo = rng.randrange(len(b))
            hi = min(len(b), lo + rng.randint(8, 512))
            b[lo:hi] = bytes(hi - lo)
            out.append(bytes_case(i, "zero_range", bytes(b), "either"))
        elif kind == "not_hdf5":
            content = rng.choice([b"", b"hello", b"\x89HDF\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(200)),
                                  json.dumps({"nodes": []}).encode(), bytes(1000), GOOD_CKPT.read_bytes()[:5000]])
            out.append(bytes_case(i, "not_hdf5", content, "reject"))
        elif kind == "meta":
            key = rng.choice(meta + ["node/metadata/time_steps", "node/metadata/readout_offset",
                                     "node/metadata/n_actions", "node/metadata/dt", "node/metadata/readout_divisor",
                                     "node/metadata/readout_reduce", "node/metadata/format_version"])
            value = rng.choice(weird_values)
            out.append(h5_case(i, "meta", _set_dataset(key, value), "either"))
        elif kind == "param":
            key = rng.choice(params)
            value = rng.choice(weird_values)

            def edit(f, _, key=key, value=value):
                arr = np.array(f[key][()])
                if isinstance(value, (float, int, complex)) and not isinstance(value, bool) and arr.size:
                    arr = arr.astype(np.complex128 if isinstance(value, complex) else np.float64)
                    arr.reshape(-1)[rng.randrange(arr.size)] = value
                    value = arr
                del f[key]
                f[key] = value
            out.append(h5_case(i, "param", edit, "either"))
        elif kind == "shape":
            key = rng.choice(shapes) if shapes else "node/nodes/input/shape"
            value = rng.choice([np.array([-4]), np.array([0]), np.array([10**9]), np.array([10**5, 10**5]),
                                np.array([2**62]), np.array([2**40, 2**40]), np.ones(64, dtype=np.int64),
                                np.array([4.5]), np.array(["4"], dtype=object)])
            out.append(h5_case(i, "shape", _set_dataset(key, value), "reject"))
        else:
            out.append(h5_case(i, "hdf5_feature", rng.choice(_HDF5_FEATURES)))
    return out


def _ext_link(f, folder):
    other = folder / "other_ext.h5"
    with __import__("h5py").File(other, "w") as o:
        o["w"] = np.ones((16, 4))
    if "node/nodes/l0_fc/weight" in f:
        del f["node/nodes/l0_fc/weight"]
    f["node/nodes/l0_fc/weight"] = __import__("h5py").ExternalLink(str(other), "w")


def _ext_storage(f, folder):
    secret = folder / "secret.txt"
    secret.write_bytes(b"SECRET-TOKEN-123".ljust(4096, b"x"))
    f.create_dataset("node/metadata/notes", shape=(64,), dtype="S16", external=[(str(secret), 0, 1024)])


def _vds_missing(f, folder):
    h5py = __import__("h5py")
    layout = h5py.VirtualLayout(shape=(16,), dtype="<f8")
    layout[...] = h5py.VirtualSource(str(folder / "missing.h5"), "w", shape=(16,))
    f.create_virtual_dataset("node/metadata/vds", layout, fillvalue=0.0)


def _soft_link(f, folder):
    f["node/metadata/alias"] = __import__("h5py").SoftLink("/node/metadata/time_steps")


def _bomb(f, folder):
    f.create_dataset("node/metadata/pad", shape=(2**29,), dtype="<f8", chunks=(2**16,))


_HDF5_FEATURES = [_ext_link, _ext_storage, _vds_missing, _soft_link, _bomb]


def checkpoint_mutations(folder: Path, rng: random.Random, n: int) -> list[tuple[Path, str, str]]:
    """Bad checkpoints: wrong field types and values, code-execution payloads."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    good = torch.load(GOOD_CKPT, weights_only=True)
    out: list[tuple[Path, str, str]] = []
    weird: list[Any] = ["x", -1, 0, 2.5, None, [], {}, 10**10, float("nan"), ["a"]]
    for i in range(n):
        d = folder / f"{i:04d}"
        d.mkdir(exist_ok=True)
        path = d / "model.pt"
        choice = rng.randrange(5)
        if choice == 0:  # a payload: must never run
            marker = d / "PWNED"
            torch.save({"format": good.get("format"), "x": _Payload(str(marker))}, path)
            out.append((path, "reject", f"payload marker={marker}"))
            continue
        ck = {k: (dict(v) if isinstance(v, dict) else v) for k, v in good.items()}
        if choice == 1:
            ck[rng.choice(["spec", "preprocessing", "provenance", "state_dict", "env_id", "format_version"])] = \
                rng.choice(weird)
        elif choice == 2:
            spec = dict(ck["spec"])
            spec[rng.choice(list(spec))] = rng.choice(weird)
            ck["spec"] = spec
        elif choice == 3:
            sd = dict(ck["state_dict"])
            key = rng.choice(list(sd))
            t = sd[key].clone().double()
            t.view(-1)[0] = rng.choice([float("nan"), float("inf"), 1e300])
            sd[key] = t
            ck["state_dict"] = sd
        else:
            pre = dict(ck.get("preprocessing") or {})
            pre[rng.choice(["offset", "scale"])] = rng.choice(weird + [[0.0, 0.0, 0.0]])
            ck["preprocessing"] = pre
        try:
            torch.save(ck, path)
        except Exception:  # an unstorable value: store a string instead
            torch.save({**good, "spec": "dsqn"}, path)
        out.append((path, "either", f"checkpoint variant {choice}"))
    return out


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def cli_cases(files: dict[str, Path], work: Path, rng: random.Random, n: int) -> list[Case]:
    good, obs, ckpt = str(files["good"]), str(files["obs"]), str(files["ckpt"])
    rb = ["run-backend", good, "--inputs", obs]
    np.save(work / "obs_nan.npy", np.full((4, 4), np.nan, dtype=np.float32))
    np.save(work / "obs_big.npy", np.full((4, 4), 1e39, dtype=np.float64))
    np.save(work / "obs_empty.npy", np.zeros((0, 4), dtype=np.float32))
    np.save(work / "obs_str.npy", np.array(["a", "b"]))
    with open(work / "obs_bomb.npy", "wb") as fh:  # header declares 10^10 rows
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000, 4), }"
        fh.write(b"\x93NUMPY\x01\x00" + len(header.ljust(118) + "\n").to_bytes(2, "little")
                 + (header.ljust(118) + "\n").encode())
    out_ok = str(work / "cli_out.npz")
    table: list[tuple[list[str], str]] = [
        ([*rb, "--out", "/proc/x.npz"], "reject"),
        ([*rb, "--out", f"{good}/x.npz"], "reject"),
        ([*rb, "--out", str(work)], "reject"),
        ([*rb, "--out", str(work / "noext")], "reject"),
        ([*rb, "--out", out_ok, "--json", "/proc/x.json"], "reject"),
        (["run-backend", good, "--inputs", str(work / "obs_nan.npy"), "--out", out_ok], "reject"),
        (["run-backend", good, "--inputs", str(work / "obs_big.npy"), "--out", out_ok], "reject"),
        (["run-backend", good, "--inputs", str(work / "obs_empty.npy"), "--out", out_ok], "reject"),
        (["run-backend", good, "--inputs", str(work / "obs_str.npy"), "--out", out_ok], "reject"),
        (["run-backend", good, "--inputs", str(work / "obs_bomb.npy"), "--out", out_ok], "reject"),
        ([*rb, "--out", out_ok, "--readout", "nosuch"], "reject"),
        ([*rb, "--out", out_ok, "--convention", "nosuch"], "reject"),
        ([*rb, "--out", out_ok, "--time-steps", "0"], "reject"),
        ([*rb, "--out", out_ok, "--time-steps", "4294967312"], "reject"),
        ([*rb, "--out", out_ok, "--dt", "nan"], "reject"),
        ([*rb, "--out", out_ok, "--dt", "inf"], "reject"),
        ([*rb, "--out", out_ok, "--threads", "0"], "reject"),
        ([*rb, "--out", out_ok, "--batch-size", "0"], "reject"),
        ([*rb, "--out", out_ok, "--target", "nosuch"], "reject"),
        (["run-backend", good, "--env", "CartPole-v1", "--seed", "-1", "--episodes", "1",
          "--results", str(work / "r_seed.jsonl")], "reject"),
        (["run-backend", good, "--env", "CartPole-v1", "--episodes", "1", "--results", "/proc/r.jsonl"], "reject"),
        (["run-backend", good, "--env", "CartPole-v1", "--episodes", "1", "--results", str(work / "r_plot.jsonl"),
          "--plot", str(work / "x.nosuchformat")], "reject"),
        (["run-backend", good, "--env", "CartPole-v1", "--episodes", "1", "--max-steps", "0",
          "--results", str(work / "r_ms.jsonl")], "reject"),
        (["run-backend", good, "--env", "CartPole-v1", "--episodes", "1", "--epsilon", "nan",
          "--results", str(work / "r_eps.jsonl")], "reject"),
        (["inspect-nir", good, "--inputs", str(work / "obs_nan.npy")], "reject"),
        (["inspect-nir", good, "--time-steps", "-3"], "reject"),
        (["inspect-nir", good, "--rate", "nan"], "reject"),
        (["evaluate-agent", ckpt, "--episodes", "1", "--seed", "-1"], "reject"),
        (["evaluate-agent", ckpt, "--episodes", "1", "--max-steps", "0"], "reject"),
        (["evaluate-agent", ckpt, "--episodes", "1", "--json", "/proc/x.json"], "reject"),
        (["evaluate-agent", ckpt, "--episodes", "1", "--json", str(work / "nodir" / "x" / "..")], "reject"),
        (["evaluate-agent", ckpt, str(work / "missing.pt"), "--episodes", "1"], "reject"),
        (["export-nir", ckpt, "-o", str(work)], "reject"),
        (["export-nir", ckpt, "-o", "/proc/x.nir"], "reject"),
        (["export-nir", ckpt, "-o", f"{good}/x.nir"], "reject"),
        (["export-nir", ckpt, "-o", str(work / "e.nir"), "--dt", "inf"], "reject"),
        (["export-nir", ckpt, "-o", str(work / "e.nir"), "--json", "/proc/x.json"], "reject"),
        (["train-agent", "--env", "CartPole-v1", "--steps", "0", "-o", str(work / "t0" / "m.pt")], "reject"),
        (["train-agent", "--env", "CartPole-v1", "--steps", "-5", "-o", str(work / "t1" / "m.pt")], "reject"),
        (["train-agent", "--env", "CartPole-v1", "--hp", "learning_rate=nan", "-o", str(work / "t2" / "m.pt")],
         "reject"),
        (["train-agent", "--env", "CartPole-v1", "--hp", "gamma=2", "-o", str(work / "t3" / "m.pt")], "reject"),
        (["train-agent", "--env", "CartPole-v1", "--hidden", "-4", "-o", str(work / "t4" / "m.pt")], "reject"),
        (["train-agent", "--env", "CartPole-v1", "--hidden", "0", "-o", str(work / "t5" / "m.pt")], "reject"),
        (["train-agent", "--env", "CartPole-v1", "--hidden", "2000000000", "-o", str(work / "t6" / "m.pt")],
         "reject"),
        (["train-agent", "--env", "CartPole-v1", "--seed", "-1", "-o", str(work / "t7" / "m.pt")], "reject"),
        (["train-agent", "--env", "CartPole-v1", "-o", "/proc/x/m.pt"], "reject"),
        (["train-agent", "--env", "CartPole-v1", "-o", f"{good}/m.pt"], "reject"),
        (["train-agent", "--env", "CartPole-v1", "--resume", "-o", str(work / "t8" / "m.pt")], "reject"),
        (["convert-dqn", ckpt, "-o", "/proc/x/snn.pt"], "reject"),
        (["convert-dqn", ckpt, "-o", ckpt], "reject"),
    ]
    rng.shuffle(table)
    cases = []
    for i, (argv, expect) in enumerate(table[:n]):
        cases.append(Case(f"cli_{i:03d}", argv[0], argv[1:], expect))
    return cases


def make_cases(seed: int, n: int, work: Path) -> list[Case]:
    """About 60 % NIR files (each through inspect-nir and the reference), 15 % checkpoints, the rest CLI."""
    rng = random.Random(seed)
    files = base_files(work)
    n_cli = min(max(n // 4, 10), 50)
    n_ckpt = max(n // 10, 4)
    n_nir = max((n - n_cli - n_ckpt) // 2, 1)
    cases: list[Case] = []
    for path, expect, note in nir_mutations(files["good"], work / "nir", rng, n_nir):
        cases.append(Case(f"{path.stem}_inspect", "inspect-nir", [str(path), "--json"], expect, note))
        cases.append(Case(f"{path.stem}_reference", "run-backend",
                          [str(path), "--inputs", str(files["obs"]), "--out", str(path.with_suffix(".q.npz"))],
                          expect, note))
    for path, expect, note in checkpoint_mutations(work / "ckpt", rng, n_ckpt):
        cases.append(Case(f"ckpt_{path.parent.name}_export", "export-nir",
                          [str(path), "-o", str(path.with_suffix(".nir"))], expect, note))
    cases += cli_cases(files, work, rng, n_cli)
    return cases


# ---------------------------------------------------------------- running


def _child(case: Case, main, folder: Path) -> None:
    """In the forked child: redirect, cap memory, run, exit with main's code."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    out = os.open(folder / f"{case.name}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(folder / f"{case.name}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    os.environ.setdefault("DSQN_NIR_READ_TIMEOUT", "20")
    code = 1
    try:
        sys.argv = [case.script, *case.argv]
        code = int(main(list(case.argv)) or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001  (a traceback: exactly what the contract forbids)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def classify(case: Case, rc: int | None, killed: bool, folder: Path) -> Outcome:
    err = (folder / f"{case.name}.err").read_text(errors="replace") if (folder / f"{case.name}.err").exists() else ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    extra: dict[str, Any] = {}
    if killed:
        kind = "hang"
    elif rc is not None and rc < 0:
        kind = "crash"
    elif "Traceback (most recent call last)" in err:
        kind = "traceback"
    elif rc == 2 and len(lines) == 1 and lines[0].startswith("error:"):
        kind = "clean"
    elif rc == 0:
        kind = "ok"
        if case.script == "run-backend" and "--out" in case.argv:
            q_path = Path(case.argv[case.argv.index("--out") + 1])
            try:
                with np.load(q_path) as z:
                    q = z["q"]
                if not np.all(np.isfinite(q)):
                    kind = "nonfinite_q"
            except Exception:  # noqa: BLE001
                pass
    else:
        kind = "other"
    if "marker=" in case.note and Path(case.note.split("marker=")[1]).exists():
        kind = "code_ran"
    return Outcome(case, kind, rc, 0.0, "\n".join(lines[-3:])[-600:], extra)


def run_cases(cases: list[Case], folder: Path, limit_s: float = LIMIT_S, parallel: int = 2) -> list[Outcome]:
    mains = entry_points()
    folder.mkdir(parents=True, exist_ok=True)
    pending = list(cases)
    running: dict[int, tuple[Case, float]] = {}
    results: list[Outcome] = []
    while pending or running:
        while pending and len(running) < parallel:
            case = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(case, mains[case.script], folder)
            running[pid] = (case, time.perf_counter())
        time.sleep(0.02)
        for pid, (case, t0) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            killed = False
            if not done and time.perf_counter() - t0 > limit_s:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                done, status, killed = pid, -9, True
            if done:
                del running[pid]
                rc = None if killed else (os.waitstatus_to_exitcode(status))
                outcome = classify(case, rc, killed, folder)
                outcome.seconds = round(time.perf_counter() - t0, 2)
                results.append(outcome)
    return results


VIOLATIONS = ("traceback", "hang", "crash", "nonfinite_q", "code_ran", "other")


def violations(results: list[Outcome]) -> list[Outcome]:
    """Outcomes that break the contract (module docstring)."""
    bad = [r for r in results if r.kind in VIOLATIONS]
    bad += [r for r in results if r.case.expect == "reject" and r.kind == "ok"]
    return bad


def report(results: list[Outcome]) -> dict[str, Any]:
    by_kind = Counter(r.kind for r in results)
    by_script: dict[str, dict[str, int]] = {}
    for r in results:
        by_script.setdefault(r.case.script, Counter())[r.kind] += 1  # type: ignore[index]
    accepted_invalid = sum(1 for r in results if r.case.expect == "reject" and r.kind == "ok")
    return {"cases": len(results), "outcomes": dict(by_kind), "accepted_invalid": accepted_invalid,
            "violations": len(violations(results)),
            "by_script": {k: dict(v) for k, v in by_script.items()},
            "max_seconds": max((r.seconds for r in results), default=0.0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("out/fuzz"))
    ap.add_argument("--limit", type=float, default=LIMIT_S, help="seconds before a case counts as a hang")
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    cases = make_cases(args.seed, args.cases, args.out / "work")
    t0 = time.perf_counter()
    results = run_cases(cases, args.out / "logs", args.limit, args.parallel)
    summary = {**report(results), "seed": args.seed, "wall_s": round(time.perf_counter() - t0, 1)}
    (args.out / "results.jsonl").write_text("".join(
        json.dumps({**asdict(r.case), "kind": r.kind, "rc": r.rc, "seconds": r.seconds, "stderr": r.stderr_tail})
        + "\n" for r in results))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for r in violations(results)[:40]:
        print(f"VIOLATION {r.kind:12s} {r.case.script} {' '.join(r.case.argv)[:150]} :: {r.stderr_tail[-200:]!r}")
    return 0 if not violations(results) else 1


if __name__ == "__main__":
    sys.path.insert(0, os.environ.get("FUZZ_CHECKOUT", str(ROOT)))
    raise SystemExit(main())
