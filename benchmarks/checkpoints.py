"""The checkpoint a benchmark reads: the bundled one in examples/, or the one the user names.

A benchmark that needs a trained agent reads it from ``examples/`` (the files a clone has,
examples/README.md) unless a flag names another; a file that is not there is one ``error:``
line naming it and the flag, before any work starts, never a traceback or a silent substitute.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def require_checkpoint(path: str | Path, flag: str) -> Path:
    """``path`` as given if it is a file (else relative to the repository root, where the
    defaults are), or a UserError naming it, the bundled agents' folder and ``flag``, the option
    that chooses another."""
    p = Path(path)
    for candidate in (p, ROOT / p):
        if candidate.is_file():
            return candidate
    raise UserError(f"{p} not found: the bundled agents are in examples/ (examples/README.md); "
                    f"name another checkpoint with {flag}")
