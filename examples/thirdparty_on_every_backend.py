"""A graph exported by another framework (SpikingJelly, snnTorch, Norse, Sinabs) on every target
installed here, each against the float64 reference and against the framework's own output spikes.

    python examples/thirdparty_on_every_backend.py                       # SpikingJelly's export
    python examples/thirdparty_on_every_backend.py --framework snntorch

The graphs and what each framework computed on 64 inputs are in tests/fixtures/thirdparty/ (written
by tests/fixtures/make_thirdparty.py with the frameworks themselves). For your own export pass
``--graph my.nir --convention spikingjelly --time-steps T --inputs x.npy``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import dsqn_deploy as dd

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "thirdparty"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", default="spikingjelly", choices=("spikingjelly", "snntorch", "norse", "sinabs"))
    ap.add_argument("--graph", type=Path, help="your own NIR export (default: the framework's fixture)")
    ap.add_argument("--convention", help="the exporter's conventions (default: the fixture's, e.g. sinabs+no-floor)")
    ap.add_argument("--dt", type=float, help="the dt the graph was exported at (default: the fixture's; Norse needs it)")
    ap.add_argument("--time-steps", type=int, help="T (default: the fixture's)")
    ap.add_argument("--inputs", type=Path, help="inputs [N, *shape] .npy (default: the fixture's)")
    ap.add_argument("-n", type=int, default=64, help="inputs to run (the first n)")
    args = ap.parse_args(argv)

    fixture = np.load(FIXTURES / f"{args.framework}.npz")
    graph = args.graph or FIXTURES / f"{args.framework}.nir"
    inputs = (np.load(args.inputs) if args.inputs else fixture["inputs"])[: args.n]
    own = None if args.inputs or args.graph else fixture["counts"][: args.n]  # the framework's output spikes
    fixture_dt = float(fixture["dt"]) if "dt" in fixture.files else float("nan")
    options = {"convention": args.convention or str(fixture["convention"]),
               "time_steps": args.time_steps or int(fixture["time_steps"]),
               "dt": args.dt if args.dt is not None else (None if np.isnan(fixture_dt) else fixture_dt)}

    ref = dd.run_open_loop(graph, inputs, target="reference", dtype="float64", **options)
    print(f"{graph.name} ({options['convention']}, T {options['time_steps']}), {len(inputs)} inputs")
    print(f"{'target':<16}{'actions = ref':>14}{'max |dQ|':>11}{'spikes = ref':>14}{'= framework':>13}")
    for target in dd.targets():
        if target not in dd.targets(runnable=True):
            print(f"{target:<16}  not run here (simulator not installed or a machine needed)")
            continue
        try:
            r = ref if target == "reference" else dd.run_open_loop(graph, inputs, target=target, **options)
        except dd.UserError as exc:  # a target that cannot express the graph says which node and why
            print(f"{target:<16}  refused: {exc}")
            continue
        same_spikes = all(np.array_equal(r.spikes[k], ref.spikes[k]) for k in ref.spikes)
        out = r.spikes[list(r.spikes)[-1]].reshape(len(inputs), -1)  # the output layer's counts
        framework = "-" if own is None else f"{100 * np.mean(np.all(out == own, axis=1)):.0f} %"
        print(f"{target:<16}{100 * np.mean(r.action == ref.action):>13.1f}%{np.abs(r.q - ref.q).max():>11.3g}"
              f"{'yes' if same_spikes else 'no':>14}{framework:>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
