"""Acceptance check of the reference executor: export every model kind to NIR, run
the torch model and the reference on the same observations, print max |dQ|, action agreement
and timings.

    .venv/bin/python benchmarks/check_reference.py                     # 10,000 CartPole + 200 Atari
    .venv/bin/python benchmarks/check_reference.py --n-cartpole 500 --n-atari 10 --kinds liu hahn
    .venv/bin/python benchmarks/check_reference.py --checkpoint examples/cartpole_dsqn.pt

The models are the zoo's (exporters/zoo.py: random weights scaled so every layer spikes) plus
any trained CartPole checkpoints given (``--checkpoint``; the bundled ones are in examples/).
Both sides see the same batches (``--batch``) and, for the poisson/regular encodings, the same
input spikes. Each graph goes through nir.write/nir.read
first, so the file is what is checked. Exit status 1 if any kind misses the acceptance
(identical actions, max |dQ| <= 1e-5).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.reference import ReferenceBackend  # noqa: E402
from benchmarks.checkpoints import require_checkpoint  # noqa: E402
from exporters.nirio import read_graph, write_graph  # noqa: E402
from exporters.to_nir import model_to_nir  # noqa: E402
from exporters.zoo import KINDS, atari_obs, cartpole_obs, make_checkpoint  # noqa: E402
from pipeline.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from pipeline.cli import cli_entry  # noqa: E402
from pipeline.encoding import encode  # noqa: E402
from pipeline.models import greedy_action  # noqa: E402

TOL = 1e-5


def check(name: str, ckpt: Checkpoint, obs: torch.Tensor, batch: int, workdir: Path) -> dict:
    path = workdir / f"{name}.nir"
    write_graph(model_to_nir(ckpt), path)
    backend = ReferenceBackend(read_graph(path), batch_size=batch)
    model = ckpt.build()
    spec = ckpt.spec
    qs_t, acts_t, qs_r, acts_r = [], [], [], []
    t_torch = t_ref = 0.0
    with torch.no_grad():
        for i, lo in enumerate(range(0, obs.shape[0], batch)):
            x = obs[lo:lo + batch]
            t0 = time.perf_counter()
            s_in = None
            if spec.spiking:
                q, _, tb = model.run(x, torch.Generator().manual_seed(1000 + i))
                if spec.encoding != "current":
                    s_in = encode(x, spec.time_steps, spec.encoding, torch.Generator().manual_seed(1000 + i)).numpy()
            else:
                q, tb = model(x), None
            t1 = time.perf_counter()
            qs_t.append(q.double().numpy())
            acts_t.append(greedy_action(q, tb).numpy())
            r = backend.run(x.numpy(), s_in)
            t_ref += sum(r.timings.values())
            t_torch += t1 - t0
            qs_r.append(r.q)
            acts_r.append(r.action)
    qt, qr = np.concatenate(qs_t), np.concatenate(qs_r)
    at, ar = np.concatenate(acts_t), np.concatenate(acts_r)
    dq = float(np.abs(qt - qr).max())
    agree = float((at == ar).mean())
    return {"model": name, "kind": spec.kind, "variant": spec.variant, "readout": spec.readout if spec.spiking else "q",
            "encoding": spec.encoding, "T": spec.time_steps if spec.spiking else 1, "n": int(obs.shape[0]),
            "max_abs_dq": dq, "agreement": agree, "ok": bool(dq <= TOL and agree == 1.0),
            "torch_s": t_torch, "reference_s": t_ref}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cartpole", type=int, default=10_000)
    ap.add_argument("--n-atari", type=int, default=200)
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--checkpoint", nargs="*", default=[], type=Path,
                    help="trained CartPole checkpoints to check too (e.g. examples/cartpole_dsqn.pt)")
    ap.add_argument("--atari-time-steps", type=int, help="T for the Atari models (default: the zoo's 8, "
                    "or the preset's own T)")
    ap.add_argument("--batch-cartpole", type=int, default=10_000)
    ap.add_argument("--batch-atari", type=int, default=25)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    args.checkpoint = [require_checkpoint(p, "--checkpoint") for p in args.checkpoint]
    torch.set_grad_enabled(False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jobs = []
        if args.n_cartpole:
            for kind in args.kinds:
                jobs.append((f"cartpole/{kind}", lambda k=kind: make_checkpoint(k, seed=11),
                             lambda: cartpole_obs(args.n_cartpole, seed=1), args.batch_cartpole))
            for path in args.checkpoint:
                jobs.append((f"ckpt/{path.stem}", lambda p=path: load_checkpoint(p),
                             lambda: cartpole_obs(args.n_cartpole, seed=1), args.batch_cartpole))
        if args.n_atari:
            for kind in args.kinds:
                jobs.append((f"atari/{kind}", lambda k=kind: make_checkpoint(k, "nature_cnn", (4, 84, 84), 6, seed=12,
                                                               time_steps=args.atari_time_steps),
                             lambda: atari_obs(args.n_atari, seed=2), args.batch_atari))
        for name, make, data, batch in jobs:
            ckpt = make()
            row = check(name.replace("/", "_"), ckpt, data(), batch, work)
            row["model"] = name
            rows.append(row)
            print(f"{name:<32} T={row['T']:<3} n={row['n']:<6} max|dQ|={row['max_abs_dq']:.3g}  "
                  f"agreement={row['agreement']:.4f}  torch {row['torch_s']:.1f}s  reference {row['reference_s']:.1f}s"
                  f"  {'ok' if row['ok'] else 'FAIL'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    bad = [r["model"] for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} within max|dQ| <= {TOL} with identical actions"
          + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(cli_entry(main)())
