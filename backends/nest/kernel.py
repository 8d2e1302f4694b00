"""The NEST kernel: a quiet lazy import, one network per process, and the fast status calls.

NEST holds one network per process (its kernel is global), so building a second
:class:`~backends.nest.NestBackend` resets the kernel and retires the first one; running a
retired backend is a clear error instead of silently running someone else's network.

The three per-observation status calls go to PyNEST's low-level ``nestkernel_api``: the
public ``NodeCollection.set``/``SynapseCollection.set`` first fetch the complete status of
an element (for a spike recorder, all its events) and query ``local`` for every node, an
order of magnitude slower per node and per recorder clear (docs/NEST.md section 3).
"""

from __future__ import annotations

import os
import weakref
from types import ModuleType
from typing import Any

from pipeline.errors import UserError

_active: weakref.ref | None = None


def import_nest() -> ModuleType:
    """``import nest`` without its banner, errors only."""
    os.environ.setdefault("PYNEST_QUIET", "1")
    try:
        import nest
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise UserError(f"the NEST backend needs the nest-simulator package (pip install -c constraints.txt "
                        f"nest-simulator): {exc}") from None
    level = getattr(nest, "VerbosityLevel", None)
    if level is not None:
        nest.verbosity = level.ERROR
    return nest


def claim(owner: Any) -> ModuleType:
    """Reset the kernel for ``owner``'s network; the previous owner can no longer run."""
    global _active
    nest = import_nest()
    previous = _active() if _active is not None else None
    if previous is not None and previous is not owner:
        previous._retire()
    nest.ResetKernel()
    _active = weakref.ref(owner)
    return nest


def release(owner: Any) -> None:
    """Reset the kernel if ``owner`` still holds it."""
    global _active
    if _active is not None and _active() is owner:
        import_nest().ResetKernel()
        _active = None


def set_nodes(nodes: Any, params: list[dict[str, Any]]) -> None:
    """Status of every node (one dict: the same for all; else one dict per node)."""
    from nest import nestkernel_api

    nestkernel_api.llapi_set_nc_status(nodes._datum, params)


def set_weights(conns: Any, weights: list[float]) -> None:
    from nest import nestkernel_api

    nestkernel_api.llapi_set_connection_status(conns._datum, [{"weight": w} for w in weights])


def events(recorder: Any) -> dict[str, Any]:
    from nest import nestkernel_api

    return nestkernel_api.llapi_get_nc_status(recorder._datum, "events")


def clear_events(recorder: Any) -> None:
    set_nodes(recorder, [{"n_events": 0}])
