"""One error type for user mistakes, and the standard "unknown choice" message.

Every console script runs its ``main`` through :func:`pipeline.cli.cli_entry`, so a missing
file, a bad choice or a corrupt checkpoint prints ``error: <cause>`` and exits 2, with no
traceback. Programming errors still raise normally: they are bugs, and the traceback is what we
want then. This module imports nothing of the project, so every other module may use it.
"""

from __future__ import annotations

from collections.abc import Iterable


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


def __getattr__(name: str) -> object:
    """``pipeline.errors.cli_entry`` still works: it moved to :mod:`pipeline.cli`."""
    if name == "cli_entry":
        from pipeline.cli import cli_entry

        return cli_entry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
