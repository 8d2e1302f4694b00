"""Memory headroom: host, cgroup and rlimit, the smallest wins."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from pipeline import limits


def test_cgroup_v2_and_v1_limits(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("268435456\n")
    assert limits.cgroup_available(tmp_path) == 768 * 2**20
    (tmp_path / "memory.max").write_text("max\n")
    assert limits.cgroup_available(tmp_path) is None
    (tmp_path / "memory.max").unlink()
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(2**30))
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text(str(2**29))
    assert limits.cgroup_available(tmp_path) == 2**29


def test_an_address_space_cap_lowers_the_headroom() -> None:
    """Under ``ulimit -v`` (checked in a child, so this process keeps its limits)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        cap = limits._vm_size() + 512 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
        os.write(write, str(limits.available_memory()).encode())
        os._exit(0)
    os.close(write)
    got = int(os.read(read, 100).decode())
    os.waitpid(pid, 0)
    assert 0 < got <= 512 * 2**20
    assert limits.available_memory() >= min(got, limits.host_available())
