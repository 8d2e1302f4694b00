"""Which SpiNNaker machine to use, from environment variables, written as sPyNNaker's cfg file.

sPyNNaker reads its machine from ``~/.spynnaker.cfg`` (and refuses to start, after writing a
template there, when that file is missing). ``run-backend --target pynn-spinnaker`` and the
Docker image's entrypoint (``docker/entrypoint.sh``) both turn these variables into that file:

==========================  =================================================================
``SPINNAKER_MACHINE``       host name or IP address of a directly connected board
``SPINNAKER_BOARD_VERSION`` board version for ``SPINNAKER_MACHINE`` / a virtual board
                            (3: 4-chip SpiNN-3, 5: 48-chip SpiNN-5; default 5)
``SPALLOC_SERVER``          URL (http/https) of a spalloc server that allocates boards
``SPALLOC_USER``            user name for the spalloc server (optional)
``SPALLOC_PORT``            port of a classic spalloc server (optional)
``SPALLOC_MACHINE``         machine name when the server has several (optional)
``SPALLOC_GROUP``           accounting group (optional)
``SPINNAKER_VIRTUAL``       ``1``: a virtual board — map only, run nothing (CI, this machine)
``SPINNAKER_WIDTH/HEIGHT``  chips of a virtual machine (default: one board of the version)
``SPINNAKER_TIME_SCALE``    slow the machine down by this factor (cfg ``time_scale_factor``)
==========================  =================================================================

Without any of them, an existing user cfg that names a machine is used as it is.
"""

from __future__ import annotations

import argparse
import configparser
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cli import cli_entry
from pipeline.errors import UserError

MISSING = ("no SpiNNaker machine is configured: set SPINNAKER_MACHINE=<board host or IP> (and "
           "SPINNAKER_BOARD_VERSION, default 5), or SPALLOC_SERVER=<url> (and SPALLOC_USER), or "
           "SPINNAKER_VIRTUAL=1 to map onto a virtual board without running")
TRUE = ("1", "true", "yes", "on")
# what each variable may hold before it is written into the cfg (no newlines, sections, comments
# or interpolation: a crafted value must not add lines to sPyNNaker's configuration)
HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,252})|\[?[0-9A-Fa-f:.]{2,45}\]?"
PATTERNS = {
    "SPINNAKER_MACHINE": (HOST, "a host name or IP address"),
    "SPALLOC_SERVER": (rf"(?:https?://)?(?:{HOST})(?::[0-9]{{1,5}})?(?:/[A-Za-z0-9._~/\-]*)?",
                       "a URL (http[s]://host[:port][/path]) or a host name"),
    "SPALLOC_USER": (r"[A-Za-z0-9._@+\-]{1,128}", "a user name (letters, digits, . _ @ + -)"),
    "SPALLOC_MACHINE": (r"[A-Za-z0-9._\-]{1,128}", "a machine name (letters, digits, . _ -)"),
    "SPALLOC_GROUP": (r"[A-Za-z0-9._\-]{1,128}", "a group name (letters, digits, . _ -)"),
    "SPINNAKER_TIME_SCALE": (r"[0-9]{1,6}(?:\.[0-9]{1,6})?", "a positive number"),
}


def _checked(env: Mapping[str, str], name: str) -> str:
    """The variable's value if it has the form PATTERNS names; one error line otherwise."""
    import re

    raw = env.get(name, "")
    value = raw.strip()
    if not value:
        return ""
    pattern, what = PATTERNS[name]
    if not re.fullmatch(pattern, value):
        raise UserError(f"{name} must be {what}, got {raw[:80]!r}")
    if name == "SPINNAKER_TIME_SCALE" and not float(value) > 0:
        raise UserError(f"{name} must be a positive number, got {raw[:80]!r}")
    return value


@dataclass
class MachineConfig:
    """What sPyNNaker's ``[Machine]`` section will say, and where it came from."""

    kind: str  # virtual | board | spalloc | user-cfg
    machine: dict[str, str] = field(default_factory=dict)
    source: str = "environment"

    @property
    def virtual(self) -> bool:
        return self.kind == "virtual"

    def cfg_text(self, report_dir: str | None = None) -> str:
        """The cfg file (``[Machine]``, plus ``[Reports]`` when a report folder is given)."""
        cp = configparser.ConfigParser()
        cp.optionxform = str  # sPyNNaker's option names are case sensitive in its docs
        cp["Machine"] = dict(self.machine)
        if report_dir is not None:
            cp["Reports"] = {"default_report_file_path": report_dir, "write_partitioner_reports": "True",
                             "write_application_graph_placer_report": "True",
                             "write_router_summary_report": "True", "write_provenance": "True",
                             "max_reports_kept": "3"}
        lines = ["# written by dsqn-deploy (backends/pynn/spinnaker_config.py) from SPINNAKER_*/SPALLOC_* variables"]
        for section in cp.sections():
            lines.append(f"[{section}]")
            lines += [f"{k} = {v}" for k, v in cp[section].items()]
            lines.append("")
        return "\n".join(lines)


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise UserError(f"{name} must be positive, got {value}")
    return value


def from_env(env: Mapping[str, str] | None = None, *, virtual: bool | None = None) -> MachineConfig | None:
    """The machine the variables describe (``virtual`` overrides SPINNAKER_VIRTUAL); None if none."""
    env = os.environ if env is None else env
    version = _int(env, "SPINNAKER_BOARD_VERSION", None)
    if version is not None and version not in (3, 5):
        raise UserError(f"SPINNAKER_BOARD_VERSION must be 3 (SpiNN-3) or 5 (SpiNN-5), got {version}")
    scale = _checked(env, "SPINNAKER_TIME_SCALE")
    extra = {"time_scale_factor": scale} if scale else {}
    if virtual is None:
        virtual = env.get("SPINNAKER_VIRTUAL", "").strip().lower() in TRUE
    if virtual:
        machine = {"virtual_board": "True", "version": str(version or 5)}
        width, height = _int(env, "SPINNAKER_WIDTH"), _int(env, "SPINNAKER_HEIGHT")
        if (width is None) != (height is None):
            raise UserError("set both SPINNAKER_WIDTH and SPINNAKER_HEIGHT (chips of the virtual machine), or neither")
        if width is not None:
            machine.update(width=str(width), height=str(height))
        return MachineConfig("virtual", machine)
    host = _checked(env, "SPINNAKER_MACHINE")
    server = _checked(env, "SPALLOC_SERVER")
    if host and server:
        raise UserError("set either SPINNAKER_MACHINE (a board) or SPALLOC_SERVER (an allocation server), not both")
    if host:
        return MachineConfig("board", {"machine_name": host, "version": str(version or 5), **extra})
    if server:
        machine = {"spalloc_server": server, **extra}
        for var, key in (("SPALLOC_USER", "spalloc_user"), ("SPALLOC_PORT", "spalloc_port"),
                         ("SPALLOC_MACHINE", "spalloc_machine"), ("SPALLOC_GROUP", "spalloc_group")):
            value = _int(env, var) if var == "SPALLOC_PORT" else _checked(env, var)
            if value:
                machine[key] = str(value)
        if "spalloc_port" in machine and not int(machine["spalloc_port"]) <= 65535:
            raise UserError(f"SPALLOC_PORT must be a port number (1-65535), got {machine['spalloc_port']}")
        return MachineConfig("spalloc", machine)
    return None


def user_cfg_paths(home: str | Path | None = None) -> list[Path]:
    """Where sPyNNaker looks for the user cfg (site and user config dirs, then the home folder)."""
    home = Path(home if home is not None else os.path.expanduser("~"))
    paths = []
    try:
        import appdirs  # sPyNNaker's own dependency; same lookup as spinn_utilities.config_holder

        paths += [Path(appdirs.site_config_dir()) / ".spynnaker.cfg",
                  Path(appdirs.user_config_dir()) / ".spynnaker.cfg"]
    except ImportError:
        pass
    return paths + [home / ".spynnaker.cfg"]


def from_user_cfg(home: str | Path | None = None) -> MachineConfig | None:
    """An existing user cfg that names a machine (board, spalloc server or virtual board)."""
    for path in user_cfg_paths(home):
        if not path.is_file():
            continue
        cp = configparser.ConfigParser(strict=False)
        try:
            cp.read(path)
        except configparser.Error as exc:
            raise UserError(f"{path}: not a readable cfg file ({str(exc).splitlines()[0][:120]})") from None
        if not cp.has_section("Machine"):
            continue
        m = {k: v for k, v in cp["Machine"].items() if v.strip() and v.strip() != "None"}
        if m.get("virtual_board", "").lower() in TRUE:
            return MachineConfig("virtual", m, source=str(path))
        if "machine_name" in m or "machinename" in m:
            return MachineConfig("board", m, source=str(path))
        if "spalloc_server" in m:
            return MachineConfig("spalloc", m, source=str(path))
    return None


def resolve(env: Mapping[str, str] | None = None, *, virtual: bool | None = None,
            home: str | Path | None = None) -> MachineConfig:
    """The machine for ``--target pynn-spinnaker``: the variables, else a user cfg; else UserError."""
    cfg = from_env(env, virtual=virtual)
    if cfg is None:
        cfg = from_user_cfg(home)
    if cfg is None:
        raise UserError(MISSING)
    return cfg


def write_user_cfg(path: Path, env: Mapping[str, str] | None = None) -> MachineConfig | None:
    """Write ``path`` from the variables (the Docker entrypoint); None (nothing written) without any."""
    cfg = from_env(env)
    if cfg is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cfg.cfg_text() + "\n")
    return cfg


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """``python -m backends.pynn.spinnaker_config --write ~/.spynnaker.cfg`` (docker/entrypoint.sh)."""
    ap = argparse.ArgumentParser(prog="spinnaker-config", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", type=Path, required=True, help="cfg file to write (usually ~/.spynnaker.cfg)")
    args = ap.parse_args(argv)
    cfg = write_user_cfg(args.write)
    if cfg is None:
        if args.write.is_file():
            print(f"spinnaker: no SPINNAKER_*/SPALLOC_* variables set; keeping {args.write}", file=sys.stderr)
        else:
            print(f"spinnaker: no SPINNAKER_*/SPALLOC_* variables set and no {args.write}; "
                  f"--target pynn-spinnaker will ask for them", file=sys.stderr)
        return 0
    print(f"spinnaker: wrote {args.write} ({cfg.kind}: "
          f"{', '.join(f'{k}={v}' for k, v in cfg.machine.items())})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
