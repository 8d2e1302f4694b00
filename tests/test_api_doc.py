"""docs/API.md's examples run as written, and the public API is what ``__all__`` says."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import dsqn_deploy

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "API.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_public_name_exists_and_is_documented() -> None:
    text = DOC.read_text()
    for name in dsqn_deploy.__all__:
        assert hasattr(dsqn_deploy, name), name
        if callable(getattr(dsqn_deploy, name)) and not isinstance(getattr(dsqn_deploy, name), type):
            assert f"`{name}(" in text, f"{name} is public but docs/API.md does not show it"
            assert getattr(dsqn_deploy, name).__doc__, f"{name} has no docstring"
    public = {n for n in vars(dsqn_deploy) if not n.startswith("_")}
    undeclared = public - set(dsqn_deploy.__all__) - {"annotations", "io", "json", "os", "tempfile", "Mapping",
                                                      "redirect_stdout", "Path", "TYPE_CHECKING", "Any",
                                                      "package_version", "PathLike"}
    assert not undeclared, f"public-looking names outside __all__: {sorted(undeclared)}"


def test_import_loads_no_heavy_library() -> None:
    code = ("import sys, dsqn_deploy; print(' '.join(m for m in ('torch', 'nest', 'lava', 'gymnasium', "
            "'stable_baselines3', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


@pytest.mark.slow
def test_examples_in_the_doc_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(blocks()) >= 4
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYNEST_QUIET", "1")
    namespace: dict = {}
    out = io.StringIO()
    with redirect_stdout(out):
        for i, code in enumerate(blocks()):
            exec(compile(code, f"docs/API.md block {i + 1}", "exec"), namespace)
    text = out.getvalue()
    assert "dsqn (128, 128) 16" in text and "converted 20" in text
    assert "error: checkpoint not found" in text or "error: " in text
    assert (tmp_path / "obs.npy").is_file() and (tmp_path / "run.jsonl").is_file()
    assert namespace["recorded"].shape[1:] == (4,) and len(namespace["episodes"]) == 2
