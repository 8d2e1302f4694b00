"""Moved to :mod:`backends.common.layout` (NEST uses it too); kept as an alias."""

from backends.common.layout import Drive, NetLayout, PopLayout, layout  # noqa: F401
