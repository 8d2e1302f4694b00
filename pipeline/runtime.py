"""Process-wide runtime settings for fast batch-1 inference on CPU: torch's thread count and
glibc's handling of freed memory.

A spiking forward allocates a few megabytes of fresh buffers per layer (spike trains of T
steps, the next layer's input currents) and frees them again at once. glibc serves blocks
over its mmap threshold with fresh ``mmap`` pages and hands them back on ``free``, so every
forward pays a page fault per 4 KiB touched (a large share of a batch-1 forward; the README's
"Models" section gives the figure). Raising the thresholds makes glibc keep and reuse
those blocks, the same effect PyTorch's CPU performance guide gets from jemalloc or
tcmalloc, at the price of the process keeping its peak heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from pipeline.errors import UserError

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 256 * 2**20
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc reuse freed blocks up to 256 MiB instead of unmapping them.

    Returns whether the setting is in effect (False off glibc, e.g. macOS, or if
    ``mallopt`` refused). Idempotent; the numerical results do not depend on it.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold is capped at 32 MiB on 64-bit glibc
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES) == 1 and ok
    _applied = ok
    return ok


def set_torch_threads(threads: int) -> None:
    """``--threads`` of the console scripts: torch's intra-op threads, validated. A batch-1 step
    gains little from a second thread, and on a busy machine threads that wait on each other
    made one Pong DSQN step 60x slower (95 ms instead of 1.5 ms)."""
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """``--device`` of train-agent and evaluate-agent: ``auto`` is CUDA where torch sees a GPU,
    else the CPU; asking for ``cuda`` without one is a user error, not a silent CPU run."""
    if name not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    import torch

    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise UserError("--device cuda: torch sees no CUDA device here (this torch build or machine has none); "
                        "use --device cpu or auto")
    return "cuda" if name == "cuda" or (name == "auto" and cuda) else "cpu"


def default_torch_threads(cpu_count: int | None, env_processes: int = 0) -> int:
    """Torch threads for training when ``--threads`` is not given: half the cores, less the cores
    that environment subprocesses keep busy, at least one. A learner that takes every core fights
    its own environment workers and anything else on the machine (see docs/ATARI_TRAINING.md)."""
    cores = cpu_count or 1
    return max(1, cores // 2 - env_processes // 2)
