"""Progress of a long loop: a tqdm bar, or, when bars are off (``--no-progress``, a log file), one
plain line on stderr every so often, so that a run of hours still says how far it is.

The interval is 60 s, or ``DSQN_PROGRESS_SECONDS`` from the environment (0: a line per update).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

DEFAULT_SECONDS = 60.0


def interval() -> float:
    """Seconds between plain progress lines (``DSQN_PROGRESS_SECONDS``, default 60)."""
    text = os.environ.get("DSQN_PROGRESS_SECONDS", "")
    try:
        value = float(text) if text else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS
    return value if value >= 0 else DEFAULT_SECONDS


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``update(n, **figures)`` after each unit of work; ``close()`` at the end. With ``bar`` a tqdm
    bar (figures as its postfix); without, a line ``desc: 3/10 ep (0:42 elapsed, ~1:38 left; ret=500)``
    at most every :func:`interval` seconds."""

    def __init__(self, total: int | None, desc: str, unit: str, bar: bool, initial: int = 0,
                 stream: TextIO | None = None, every: float | None = None) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.stream = stream if stream is not None else sys.stderr
        self.every = interval() if every is None else every
        self.start = self.last = time.monotonic()
        self.initial = initial
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc)

    def update(self, n: int = 1, **figures: Any) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if figures:
                self.bar.set_postfix(**figures)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(self.line(now, figures), file=self.stream, flush=True)

    def line(self, now: float, figures: dict[str, Any]) -> str:
        elapsed = now - self.start
        parts = [f"{_clock(elapsed)} elapsed"]
        ran = self.done - self.initial
        if self.total and ran > 0 and self.done < self.total:
            parts.append(f"~{_clock(elapsed / ran * (self.total - self.done))} left")
        of = f"/{self.total}" if self.total else ""
        extra = "; " + ", ".join(f"{k}={v}" for k, v in figures.items()) if figures else ""
        return f"{self.desc}: {self.done}{of} {self.unit} ({', '.join(parts)}{extra})"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
