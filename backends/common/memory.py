"""How much memory a build may use, and what a NEST network costs per synapse and neuron.

A network that does not fit is refused from its shapes, before anything is built, with a
clear error instead of the OOM killer. The byte costs are NEST 3.10's, measured (docs/NEST.md,
``benchmarks/bench_nest.py`` reports the real peak); the direct NEST backend and PyNN on NEST
build the same network, so both use them.
"""

from __future__ import annotations

MEMORY_FRACTION = 0.85  # of the available memory a build may take

BYTES_PER_SYNAPSE = 72  # static_synapse after Connect, plus what the first Simulate adds
BYTES_PER_NEURON = 2048
BYTES_PER_RECORDED_NEURON = 32 * 1024  # NEST's connector for a neuron's device connections
BUILD_BYTES_PER_SYNAPSE = 48  # host arrays while building: COO indices, weights, CSR copies

# Lava 0.10 (one OS process per population and per synapse map; docs/LAVA.md): the resident
# memory summed over those processes grew by 0.70 GB per million LIF neurons at 1M and 0.84 GB
# at 4M (peak RSS over the process tree, one observation); rounded up, with the synapse maps'
# CSC arrays (value + index, in the map's process and in the parent) and Lava's start-up.
LAVA_BYTES_PER_NEURON = 1024
LAVA_BYTES_PER_SYNAPSE = 48
LAVA_BASE_BYTES = 512 * 2**20


def available_memory() -> int:
    """Bytes the build may use: the least of MemAvailable, the cgroup's and the rlimit's headroom
    (pipeline.limits), so a container or ``ulimit -v`` cap is respected."""
    from pipeline.limits import available_memory as headroom

    return headroom()


def fits(need: int, available: int) -> bool:
    """Whether ``need`` bytes stay within :data:`MEMORY_FRACTION` of ``available``."""
    return need <= MEMORY_FRACTION * available


def gib(n: float) -> str:
    """Bytes as GiB with one decimal, for error lines."""
    return f"{n / 2.0**30:.1f} GiB"
