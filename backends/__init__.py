"""Backends: one adapter per target behind backends.base's interface.

``TARGETS`` maps a ``run-backend --target`` name to a factory ``(graph, **options) -> Backend``.
Factories import their simulator lazily, so choosing ``reference`` never imports NEST or
Lava; adapters added later register here (e.g. ``"nest": _nest``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.errors import check_choice


def _reference(graph: Any, **options: Any) -> Any:
    from backends.reference import ReferenceBackend

    return ReferenceBackend(graph, **options)


def _nest(graph: Any, **options: Any) -> Any:
    from backends.nest import NestBackend

    return NestBackend(graph, **options)


def _lava(graph: Any, **options: Any) -> Any:
    from backends.lava.backend import LavaBackend

    return LavaBackend(graph, precision="floating_pt", **options)


def _lava_fixed(graph: Any, **options: Any) -> Any:
    from backends.lava.backend import LavaBackend

    return LavaBackend(graph, precision="fixed_pt", **options)


def _pynn_nest(graph: Any, **options: Any) -> Any:
    from backends.pynn import PyNNNestBackend

    return PyNNNestBackend(graph, **options)


def _pynn_spinnaker(graph: Any, **options: Any) -> Any:
    from backends.pynn import PyNNSpiNNakerBackend

    return PyNNSpiNNakerBackend(graph, **options)


TARGETS: dict[str, Callable[..., Any]] = {
    "reference": _reference,
    "nest": _nest,
    "lava": _lava,
    "lava-fixed": _lava_fixed,
    "pynn-nest": _pynn_nest,
    "pynn-spinnaker": _pynn_spinnaker,
}


def make_backend(target: str, graph: Any, **options: Any) -> Any:
    """Build the backend ``target`` for ``graph`` (a nir.NIRGraph or a canonical Plan)."""
    check_choice("target", target, TARGETS)
    return TARGETS[target](graph, **options)
