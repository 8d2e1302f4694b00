"""The reference backend: our own NIR executor in torch, the oracle for every other backend."""

from backends.reference.executor import ReferenceBackend

__all__ = ["ReferenceBackend"]
