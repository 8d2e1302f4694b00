"""Backends: one adapter per target behind backends.base's interface, and the registry of targets.

Each :class:`Target` carries everything code outside the target's folder needs to know about it:
its factory, the ``run-backend`` options it takes, whether it is a ``--target`` choice or a
benchmark-only variant, its column in the benchmark matrix, the packages it needs and how close
to the float64 reference it is promised to be. ``run-backend``, ``inspect-nir``, the benchmarks
and the tests read targets from here, so a new simulator is one folder plus one entry in
``REGISTRY`` (docs/ADDING_A_TARGET.md).

Factories import their simulator lazily, so choosing ``reference`` never imports NEST, PyNN or
Lava.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.base import Backend
from backends.lava.modes import DEFAULT_STATE_SCALE
from pipeline.errors import check_choice


@dataclass(frozen=True)
class Tolerance:
    """How far a target may be from the float64 reference on the test zoo.

    ``spikes``: total |spike-count difference| over all nodes as a fraction of the reference's
    total spikes; ``agreement``: fraction of equal actions; ``q_rel``: max |dQ| / max |Q|.
    The default is the float targets' promise: equal spike counts, equal actions, Q to 1e-6.
    """

    spikes: float = 0.0
    agreement: float = 1.0
    q_rel: float = 1e-6

    @property
    def exact(self) -> bool:
        return self.spikes == 0.0 and self.agreement == 1.0


@dataclass(frozen=True)
class Report:
    """A target's hardware-mapping report for ``inspect-nir --target NAME``: ``module`` defines
    ``report(plan) -> dict`` (a JSON-able summary) and ``print_report(info)`` (tables)."""

    module: str
    title: str


@dataclass(frozen=True)
class Target:
    """One entry of the registry.

    name:          the ``--target`` name (or the benchmark column, for a hidden entry).
    factory:       ``(graph, **options) -> Backend``; imports the simulator when called.
    cli_options:   ``run-backend`` options (argparse dests) handed to the factory when given.
    preset:        keyword arguments fixed by this entry (a variant of another target).
    defaults:      what the adapter assumes for a result-changing option that is not given (so
                   that giving the default records the same options with the results).
    compare_options: defaults when this target is the ``--compare`` side of another target.
    legacy:        result-changing options added after results headers began to record options,
                   with the value every run before them used: a header without one of them that
                   matches the command at that value is the same run (``run-backend --resume``).
    hidden:        not a ``--target`` choice: a benchmark matrix column only.
    bench_column:  position of its column in the benchmark agreement matrix (None: no column).
    bench_options: options the benchmark matrix builds it with.
    requires:      top-level modules it imports; the tests skip the target without them.
    hardware:      the machine it needs beyond this computer ("" for a software simulator).
    tolerance:     the promised distance to the float64 reference (tests/test_backend_conformance.py).
    refuses:       test-zoo kinds (exporters.zoo.KINDS, GRAPH_KINDS) it refuses with one UserError naming the node.
    test_kinds:    the zoo kinds the conformance test runs on it (empty: every kind); a target whose
                   every build starts processes (Lava) names a subset that covers its neuron models.
    report:        an extra mapping report for ``inspect-nir --target``.
    copies:        ``run-backend --envs N`` builds N copies of the network side by side (the
                   factory takes ``copies=N``): one simulation window per batch, not N (docs/SCALING.md §1).
    """

    name: str
    factory: Callable[..., Backend]
    cli_options: tuple[str, ...] = ()
    preset: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    compare_options: Mapping[str, Any] = field(default_factory=dict)
    legacy: Mapping[str, Any] = field(default_factory=dict)
    hidden: bool = False
    bench_column: int | None = None
    bench_options: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    hardware: str = ""
    tolerance: Tolerance = Tolerance()
    refuses: tuple[str, ...] = ()
    test_kinds: tuple[str, ...] = ()
    report: Report | None = None
    copies: bool = False

    def build(self, graph: Any, **options: Any) -> Backend:
        """The backend for ``graph`` (a nir.NIRGraph or a canonical Plan); the preset wins."""
        return self.factory(graph, **{**options, **self.preset})


def _reference(graph: Any, **options: Any) -> Backend:
    from backends.reference import ReferenceBackend

    return ReferenceBackend(graph, **options)


def _nest(graph: Any, **options: Any) -> Backend:
    from backends.nest import NestBackend

    return NestBackend(graph, **options)


def _lava(graph: Any, **options: Any) -> Backend:
    from backends.lava.backend import LavaBackend

    return LavaBackend(graph, **options)


def _pynn_nest(graph: Any, **options: Any) -> Backend:
    from backends.pynn import PyNNNestBackend

    return PyNNNestBackend(graph, **options)


def _pynn_spinnaker(graph: Any, **options: Any) -> Backend:
    from backends.pynn import PyNNSpiNNakerBackend

    return PyNNSpiNNakerBackend(graph, **options)


def _spinnaker_fixedpoint(graph: Any, **options: Any) -> Backend:
    from backends.pynn.fixedpoint import FixedPointSpiNNaker

    return FixedPointSpiNNaker(graph, **options)


# The fixed-point targets' promises (tests/test_backend_conformance.py holds them to it): Lava's
# 8-bit weights move up to 2 % of the spikes; weight splitting and sPyNNaker's s16.15 about 1 %.
LAVA_8BIT = Tolerance(spikes=0.02, agreement=0.9, q_rel=0.5)
FINE_FIXED = Tolerance(spikes=0.01, agreement=0.9, q_rel=0.2)
SOFT_RESET = ("hahn", "tan_converted", "converted_spike_count", "lif_soft_rate")  # zoo kinds (exporters.zoo)
# (the bit-exact integer-model tests in test_lava_backend_fixed.py cover every neuron model)
# LIF hard reset + rate, IF soft reset + voltage, CubaLIF (a NIR graph kind); a DQN refused
FIXED_TEST_KINDS = ("dqn", "liu", "hahn", "cubalif")
# 8-bit weights move 3-7 % of the spikes of the recurrent zoo nets (the error re-enters through the
# loop; benchmarks/fixed_loops.py, docs/LAVA.md); weight splitting stays within its 1 %
W16_TEST_KINDS = (*FIXED_TEST_KINDS, "recurrent_cuba")
NO_CUBA = ("cubalif",)  # sPyNNaker's exponential synapses are not the forward-Euler current filter
NO_DEEP_INPUT = ("skip",)  # on SpiNNaker the observation's current (i_offset) can feed first-layer populations only
# NEST charges a CubaLIF's membrane from the previous step's current: a loop into that current
# would need less than one step (docs/NIR.md section 5); SpiNNaker has no CubaLIF at all (NO_CUBA)
NO_CUBA_LOOP = ("recurrent_cuba",)

# In ``run-backend --target`` order (the help and the error list show visible entries in this order).
REGISTRY: dict[str, Target] = {t.name: t for t in (
    Target("reference", _reference, cli_options=("dtype", "batch_size"), defaults={"dtype": "float32"},
           compare_options={"dtype": "float64"}, bench_column=0),
    Target("nest", _nest, cli_options=("threads",), bench_column=1, bench_options={"threads": 1},
           requires=("nest",), refuses=("dqn", *NO_CUBA_LOOP)),
    Target("lava", _lava, cli_options=("batch_size",), preset={"precision": "floating_pt"}, bench_column=3,
           requires=("lava",), refuses=("dqn",), report=Report("backends.lava.report", "Lava / Loihi 2"),
           copies=True),
    Target("lava-fixed", _lava, cli_options=("batch_size", "weight_bits", "state_scale"),
           defaults={"weight_bits": 8, "state_scale": DEFAULT_STATE_SCALE},
           legacy={"state_scale": "layer"},  # results headers of runs before --state-scale
           preset={"precision": "fixed_pt"}, copies=True,
           bench_column=4, requires=("lava",), tolerance=LAVA_8BIT, refuses=("dqn",), test_kinds=FIXED_TEST_KINDS),
    Target("pynn-nest", _pynn_nest, cli_options=("threads",), bench_column=2, bench_options={"threads": 1},
           requires=("nest", "pyNN"), refuses=("dqn", *NO_CUBA_LOOP)),
    Target("pynn-spinnaker", _pynn_spinnaker, requires=("pyNN", "spynnaker"),
           hardware="a SpiNNaker machine (hw_tests/ run it there)",
           refuses=("dqn", *SOFT_RESET, *NO_CUBA, *NO_DEEP_INPUT, *NO_CUBA_LOOP)),
    # benchmark matrix columns that are not run-backend targets
    Target("lava-fixed-w16", _lava, preset={"precision": "fixed_pt", "weight_bits": 16}, hidden=True,
           bench_column=5, requires=("lava",), tolerance=FINE_FIXED, refuses=("dqn",), test_kinds=W16_TEST_KINDS),
    Target("spinnaker-fixedpoint", _spinnaker_fixedpoint, hidden=True, bench_column=6, tolerance=FINE_FIXED,
           refuses=("dqn", *SOFT_RESET, *NO_CUBA, *NO_DEEP_INPUT, *NO_CUBA_LOOP)),
)}

# What ``run-backend --target`` accepts.
TARGETS: dict[str, Target] = {name: t for name, t in REGISTRY.items() if not t.hidden}

# The benchmark agreement matrix's columns, in table order.
BENCH_COLUMNS: tuple[str, ...] = tuple(sorted((n for n, t in REGISTRY.items() if t.bench_column is not None),
                                              key=lambda n: REGISTRY[n].bench_column))


def make_backend(target: str, graph: Any, **options: Any) -> Backend:
    """Build the ``run-backend`` target ``target`` for ``graph`` (a nir.NIRGraph or a canonical Plan)."""
    check_choice("target", target, TARGETS)
    return TARGETS[target].build(graph, **options)
