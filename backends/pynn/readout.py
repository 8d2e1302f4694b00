"""Moved to :mod:`backends.common.readout`; kept as an alias."""

from backends.common.readout import Recorded, q_values  # noqa: F401
