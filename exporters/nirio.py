"""Reading and writing NIR files, with one-line errors for files that are not usable.

``nir.read`` raises whatever h5py or its own asserts raise on a bad file, and does not look
at the file's NIR version at all; here every failure becomes a :class:`UserError` naming the
file and the cause, and a file from a newer NIR is refused before its nodes are parsed.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import nir

from exporters.validate import check_graph, scan_hdf5
from pipeline.errors import UserError


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


def file_version(path: Path) -> str:
    """The NIR version a file says it was written with."""
    try:
        with h5py.File(path, "r") as f:
            if "node" not in f:
                raise UserError(f"{path}: not a NIR file (HDF5 without a 'node' group)")
            if "version" not in f:
                raise UserError(f"{path}: not a NIR file (no 'version' entry)")
            raw = f["version"][()]
    except (OSError, RuntimeError) as exc:  # HDF5 2.x raises RuntimeError for some corrupt files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable HDF5/NIR file ({first[:160]})") from None
    return raw.decode("utf8", "replace") if isinstance(raw, bytes) else str(raw)


def refuse_checkpoints(path: Path) -> None:
    """A model.pt or an SB3 zip where a NIR file belongs is a common slip: say what the file is and
    the command that makes a graph of it, rather than "not a readable HDF5 file"."""
    import zipfile

    from pipeline.checkpoint import is_sb3_zip

    if not zipfile.is_zipfile(path):  # HDF5 files are not zips; torch and SB3 files are
        return
    if is_sb3_zip(path):
        raise UserError(f"{path}: a Stable-Baselines3 zip, not a NIR graph; import it (import-agent {path} -o "
                        "model.pt), then export it (export-nir model.pt -o model.nir)")
    with zipfile.ZipFile(path) as zf:
        if any(n.endswith("data.pkl") for n in zf.namelist()):
            raise UserError(f"{path}: a torch checkpoint (model.pt), not a NIR graph; export it first: "
                            f"export-nir {path} -o model.nir")
    raise UserError(f"{path}: a zip archive, not a NIR graph (NIR files are HDF5)")


def read_graph(path: str | os.PathLike) -> nir.NIRGraph:
    """Read and type-check a NIR file; refuse files from a newer NIR than the installed one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NIR file not found: {path}")
    refuse_checkpoints(path)
    scan_hdf5(path)  # no links, external or virtual data, bombs or endless HDF5 loops
    version = file_version(path)
    if not _version_tuple(version):
        raise UserError(f"{path}: malformed NIR version {version!r}")
    if _version_tuple(version) > _version_tuple(nir.version):
        raise UserError(
            f"{path}: written by NIR {version}, newer than the installed nir {nir.version}; "
            "upgrade nir (and dsqn-deploy) to read it"
        )
    try:
        try:
            graph = nir.read(path)
        except ValueError as exc:
            if "type mismatch" not in str(exc):
                raise
            # nirtorch 2.x exporters (Norse, Sinabs) keep the sample's batch dimension in the
            # Input node; exporters.plan.build drops it, and checks every shape itself
            graph = nir.read(path, type_check=False)
    except UserError:
        raise
    except Exception as exc:  # nir.read raises ValueError, KeyError, AssertionError, TypeError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: corrupt or unsupported NIR graph ({type(exc).__name__}: {first[:200]})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise UserError(f"{path}: the file holds a single {type(graph).__name__} node, not a NIR graph")
    try:
        check_graph(graph)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    setattr(graph, FILE_VERSION_ATTR, version)  # not a dataclass field: nir.write ignores it
    return graph


FILE_VERSION_ATTR = "_dsqn_file_version"


def graph_file_version(graph: nir.NIRGraph) -> tuple[int, ...] | None:
    """The NIR version of the file ``graph`` was read from (None: built in memory). Older writers
    differ in what they store (Norse before NIR 1.0 wrote tau as 1/tau_mem_inv, Norse 1.1 dt*tau)."""
    version = getattr(graph, FILE_VERSION_ATTR, None)
    return _version_tuple(version) if version else None


def write_graph(graph: nir.NIRGraph, path: str | os.PathLike, read_back: bool = False) -> nir.NIRGraph | None:
    """Write atomically, so an interrupted export never leaves a half-written graph. With
    ``read_back`` the written file is read with :func:`read_graph` (every check a reader makes)
    before it takes ``path``'s place, and returned: a graph the readers would refuse never lands."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        nir.write(tmp, graph)
        try:
            back = read_graph(tmp) if read_back else None
        except UserError as exc:
            reason = str(exc).removeprefix(f"{tmp}: ")
            raise UserError(f"{path}: not written, the graph would be refused when read ({reason})") from None
        os.replace(tmp, path)
        return back
    finally:
        if tmp.exists():
            tmp.unlink()
