"""Checks of what enters from the command line and from array files, shared by every command.

Each check raises a :class:`UserError` (one ``error:`` line, exit 2) naming the option and the
value. Output paths are checked before any work starts, so that a long run never ends with a
result that cannot be written.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError

MAX_SEED = 2**31 - 1  # SB3 and numpy legacy seeding take 32-bit seeds; train-agent adds offsets
MAX_ARRAY_BYTES = 8 << 30  # an observation file larger than this is not one we made
# what matplotlib's Agg canvas writes (savefig picks the format from the suffix)
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp", "pgf", "raw",
                "rgba")


def package_version() -> str:
    """The installed dsqn-deploy version; a source tree that was never installed says so instead
    of failing, since ``--version`` must work wherever ``--help`` does."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dsqn-deploy")
    except PackageNotFoundError:
        return "unknown (not installed)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error format: a bad option is one ``error:`` line, exit 2
    (not argparse's usage block), and ``--version`` printing ``<prog> <version>`` on every
    console script."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                          help="print the program's name and dsqn-deploy version, then exit")

    def error(self, message: str):  # type: ignore[override]
        raise UserError(message.replace("\n", " "))


def check_int(option: str, value: int | None, lo: int, hi: int | None = None) -> None:
    if value is None:
        return
    if value < lo or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise UserError(f"{option} must be {span}, got {value}")


def check_real(option: str, value: float | None, *, lo: float | None = None, hi: float | None = None,
               positive: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise UserError(f"{option} must be a finite number, got {value}")
    if positive and not value > 0:
        raise UserError(f"{option} must be positive, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise UserError(f"{option} must lie in [{lo}, {hi}], got {value}")


def check_seed(option: str, value: int | None) -> None:
    check_int(option, value, 0, MAX_SEED)


def check_output(option: str, path: str | os.PathLike | None, *, suffixes: tuple[str, ...] | None = None) -> None:
    """``path`` can be written: not a directory, its folder exists or can be made, and a file can be
    created there (tried with a temporary file, which catches /proc, read-only mounts, full disks)."""
    if path is None:
        return
    path = Path(path)
    if suffixes is not None and path.suffix.lower().lstrip(".") not in suffixes:
        raise UserError(f"{option} {path}: the file name must end in "
                        f"{' or '.join('.' + s for s in suffixes[:6])}{' ...' if len(suffixes) > 6 else ''}")
    if path.is_dir() or path.name in ("", ".", ".."):
        raise UserError(f"{option} {path} is a directory; name a file")
    if path.exists() and not path.is_file():
        raise UserError(f"{option} {path} is not a regular file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".dsqn-write-check-"):
            pass
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is read-only")
    except OSError as exc:
        raise UserError(f"{option} {path} cannot be written ({exc.strerror or exc})") from None


def load_npy(path: Path, what: str) -> np.ndarray:
    """A numeric ``.npy`` array, its header checked against the file size before anything is read
    (a header may declare 10^10 rows), no pickles, real values only."""
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError, MemoryError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable .npy array ({first[:120]})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise UserError(f"{path}: expected a numeric .npy array (real numbers), got {getattr(arr, 'dtype', 'npz')}")
    if arr.nbytes > MAX_ARRAY_BYTES:
        raise UserError(f"{path}: {arr.nbytes / 2**30:.1f} GiB of {what}, more than {MAX_ARRAY_BYTES >> 30} GiB")
    if arr.size == 0:
        raise UserError(f"{path}: the {what} array is empty (shape {arr.shape})")
    return np.array(arr)


def check_observations(obs: Any, where: str = "observations") -> None:
    """Observations every backend refuses alike: NaN or infinite, or beyond float32's range."""
    arr = np.asarray(obs)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise UserError(f"{where} contain NaN or infinite values")
    if arr.size and arr.dtype.kind in "iuf":
        big = float(np.max(np.abs(arr.astype(np.float64, copy=False))))
        if big > float(np.finfo(np.float32).max):
            raise UserError(f"{where} hold {big:.3g}, beyond float32's range")


def check_q(q: Any, who: str) -> None:
    """Q-values must be finite: a NaN or inf Q picks an arbitrary action with exit 0 otherwise."""
    arr = np.asarray(q)
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise UserError(f"{who} produced {bad} non-finite Q-value(s) (NaN or inf): the graph's values overflow "
                        "or are not numbers; check its weights, offsets and inputs")
