"""Input encodings of docs/DESIGN.md: how one (preprocessed) observation becomes layer 0's input.

``current`` presents the real-valued observation at every step (the first layer then sees a
constant current, so its synaptic map is computed once). ``poisson`` and ``regular`` turn each
value x into a spike train with rate |x| (clipped to [0, 1]) and the sign of x, so negative
observations (CartPole velocities) produce negative input spikes instead of being lost.
Spike trains are made here, once, and handed to every backend, so all of them see the same
spikes for the same observation and seed.
"""

from __future__ import annotations

import torch

from pipeline.errors import UserError, check_choice
from pipeline.spec import ENCODINGS

# A network built for a caller-given input series [T, N, ...] (run-backend --input-spikes on a
# ``current`` graph: event data, time-varying observations); there is nothing to encode.
SERIES = "series"


def encode(
    x: torch.Tensor, time_steps: int, encoding: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Encode ``x`` ``[B, ...]`` as ``[T, B, ...]`` (a stride-0 view for ``current``)."""
    if encoding == SERIES:
        raise UserError("this network was built for a time-varying input: pass the input series [T, N, ...] "
                        "(--input-spikes) with every batch")
    check_choice("input encoding", encoding, ENCODINGS)
    if encoding == "current":
        return x.unsqueeze(0).expand(time_steps, *x.shape)
    rate = x.abs().clamp(max=1.0)
    sign = torch.sign(x)
    if encoding == "poisson":
        u = torch.rand((time_steps, *x.shape), generator=generator, dtype=torch.float64)
        return ((u < rate.to(torch.float64)).to(x.dtype)) * sign
    # regular: a spike at step t (1-based) when floor(t r) increases, i.e. evenly spaced at rate r
    t = torch.arange(1, time_steps + 1, dtype=torch.float64).view(-1, *([1] * x.dim()))
    r = rate.to(torch.float64).unsqueeze(0)
    spikes = torch.floor(t * r + 1e-9) - torch.floor((t - 1) * r + 1e-9)
    return spikes.to(x.dtype) * sign


def encode_seeded(x: torch.Tensor, time_steps: int, encoding: str, seed: int) -> torch.Tensor:
    """:func:`encode` with a fresh generator seeded by ``seed``: what a backend does when it gets no
    input trains (the graph's ``encoding_seed``), and what the closed loop does per step, so the
    same (x, seed) gives the same spikes everywhere."""
    return encode(x, time_steps, encoding, torch.Generator().manual_seed(seed))
