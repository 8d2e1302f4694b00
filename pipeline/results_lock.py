"""One writer per closed-loop results file: an exclusive ``flock`` held for the whole run.

Two ``run-backend --resume`` runs on one ``--results`` file would both append every episode (the
file then holds each episode twice); the second run now stops at once with one line naming the
file. The lock belongs to the open file, so it goes away with the process, also when killed.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import UserError


@contextmanager
def results_lock(path: Path) -> Iterator[None]:
    """Hold ``path`` (created empty if missing) exclusively, or refuse if another run holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise UserError(f"--results {path} cannot be opened ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{path} is being written by another run right now; wait for it to finish "
                            "or choose another --results file") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
