"""One error type for user mistakes, and the wrapper that turns it into one line and exit 2.

Every console script runs its ``main`` through :func:`cli_entry`, so a missing file, a bad
choice or a corrupt checkpoint prints ``error: <cause>`` and exits non-zero, with no traceback.
Programming errors still raise normally: they are bugs, and the traceback is what we want then.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable


class UserError(Exception):
    """A mistake in the user's input (file, option, environment); the message names the cause."""


def choice_error(what: str, value: object, valid: Iterable[object]) -> UserError:
    """Build the standard 'unknown X' error that lists the valid choices."""
    listed = ", ".join(str(v) for v in valid)
    return UserError(f"unknown {what} {value!r}; valid choices: {listed}")


def check_choice(what: str, value: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    if value not in valid:
        raise choice_error(what, value, valid)
    return value


def cli_entry(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv)`` so that UserError becomes one line on stderr and exit code 2.

    It also applies :func:`pipeline.runtime.keep_freed_memory` (faster batch-1 spiking
    forwards), since every console script comes through here.
    """

    def wrapped(argv: list[str] | None = None) -> int:
        from pipeline.runtime import keep_freed_memory

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
