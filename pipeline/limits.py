"""How much memory this process may still allocate: the smallest of what the host has free, what
its cgroup (container) allows and what its address-space rlimit (``ulimit -v``) leaves.

Estimates checked against host memory alone pass under a container or ``ulimit`` cap and then die
in the middle of a build with ``MemoryError``; every check before a large allocation uses this.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2) means no limit


def host_available() -> int:
    """MemAvailable (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def cgroup_available(root: Path = CGROUP) -> int | None:
    """Bytes left below the cgroup's memory limit (v2 memory.max, or v1 limit_in_bytes); None: no limit."""
    limit, used = _read_int(root / "memory.max"), _read_int(root / "memory.current")
    if limit is None:
        limit, used = _read_int(root / "memory" / "memory.limit_in_bytes"), _read_int(
            root / "memory" / "memory.usage_in_bytes")
        if limit is not None and limit >= 1 << 60:  # v1 writes a huge number for "no limit"
            limit = None
    if limit is None:
        return None
    return max(limit - (used or 0), 0)


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rlimit_available() -> int | None:
    """Address space left below RLIMIT_AS / RLIMIT_DATA (soft limits); None: unlimited."""
    left = []
    for which in (resource.RLIMIT_AS, getattr(resource, "RLIMIT_DATA", None)):
        if which is None:
            continue
        soft, _ = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY:
            left.append(max(soft - _vm_size(), 0))
    return min(left) if left else None


def available_memory() -> int:
    """The smallest of host, cgroup and rlimit headroom, in bytes."""
    limits = [host_available(), cgroup_available(), rlimit_available()]
    return min(v for v in limits if v is not None)
