"""The wrapper every console script's ``main`` runs through: a :class:`~pipeline.errors.UserError`
becomes one ``error: <cause>`` line on stderr and exit 2, Ctrl-C becomes ``interrupted`` and
exit 130, and the process gets its runtime settings (:func:`pipeline.runtime.keep_freed_memory`).

It lives apart from :mod:`pipeline.errors` so that the error vocabulary imports nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from pipeline.errors import UserError
from pipeline.runtime import keep_freed_memory


def cli_entry(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv)`` so that UserError becomes one line on stderr and exit code 2.

    It also applies :func:`pipeline.runtime.keep_freed_memory` (faster batch-1 spiking
    forwards), since every console script comes through here.
    """

    def wrapped(argv: list[str] | None = None) -> int:
        keep_freed_memory()
        try:
            code = main(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        return int(code or 0)

    wrapped.__name__ = main.__name__
    wrapped.__doc__ = main.__doc__
    return wrapped
