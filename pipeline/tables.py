"""Tables that a reader can still read at 80 columns and in a redirected log.

rich fits a table to the console width (the terminal's, ``COLUMNS``, or 80 when output goes to
a file or pipe) by shrinking columns, and a shrunk cell ends in ``…``: ``cartpole_…`` is no longer
a file name. Here every column folds (wraps) instead of cutting, borders are light so that the
text gets the room, and numbers are kept on one line where they fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def make_table(title: str | None, columns: Sequence[str], *, right: Sequence[str] = (),
               show_header: bool = True) -> Any:
    """A ``rich.table.Table`` with these columns; ``right`` ones are numbers: right-justified and
    never broken (the text columns give up the room first)."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title_justify="left",
              show_header=show_header,
              title_style="bold")
    for c in columns:
        number = c in right
        t.add_column(c, justify="right" if number else "left", overflow="fold", no_wrap=number)
    return t


def console() -> Any:
    """The console the tables are printed on (stdout; its width as rich finds it)."""
    from rich.console import Console

    return Console()
