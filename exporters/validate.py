"""Checks of a NIR file before and after ``nir.read``: where a graph enters, once, for every backend.

Before parsing (:func:`scan_hdf5`), the HDF5 file itself is walked in a forked child with a time
limit, because HDF5 can loop forever on a corrupt heap (one flipped byte in a string) and Python
cannot interrupt it. The walk refuses what would make the tools read other files or bytes the file
does not hold: external links, soft links, external raw storage, virtual datasets, and more
declared data, objects or nesting than a graph of ours could need. Then every dataset is read once,
so a corrupt chunk or checksum fails here, in the child, not in the middle of a run.

After parsing (:func:`check_graph`), every node parameter must be a finite real number within
float32's range (the reference computes in float32, so a finite float64 weight of 1e300 would
become inf there), every declared shape a short tuple of positive integers of bounded size, and
every metadata entry the code reads the right type and range (:data:`META_RULES`).
"""

from __future__ import annotations

import math
import os
import select
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError

MAX_FILE_BYTES = 1 << 30  # declared (uncompressed) data in one NIR file; an Atari DSQN holds ~15 MB
MAX_OBJECTS = 100_000  # groups + datasets
MAX_DEPTH = 100  # nested groups (a graph inside a graph inside ...)
MAX_ATTRS = 1_000  # HDF5 attributes on one object (NIR writes none)
SCAN_SECONDS = 20.0  # the forked walk (a normal graph takes milliseconds); DSQN_NIR_READ_TIMEOUT overrides
MAX_TIME_STEPS = 100_000  # T: a few thousand at most in any published SNN-RL work
MAX_DT = 1e6  # seconds per step: beyond any simulator; float32 arithmetic breaks down long before
MAX_NEURONS = 1 << 28  # elements of one node's shape
MAX_DIMS = 8
FLOAT32_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------- the HDF5 file


def _walk(path: Path) -> str | None:
    """The HDF5 walk (runs in the child); returns an error message or None."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # OSError, and RuntimeError from HDF5 2.x
        return f"not a readable HDF5/NIR file ({_first_line(exc)})"
    with f:
        declared = 0
        objects = 0
        seen: set[int] = set()
        stack: list[tuple[h5py.Group, str, int]] = [(f, "/", 0)]
        while stack:
            group, where, depth = stack.pop()
            if depth > MAX_DEPTH:
                return f"groups nested deeper than {MAX_DEPTH} levels at {where}"
            if len(group.attrs) > MAX_ATTRS:
                return f"{where} has more than {MAX_ATTRS} HDF5 attributes"
            for key in group.attrs:
                group.attrs[key]
            for name in group:
                objects += 1
                if objects > MAX_OBJECTS:
                    return f"more than {MAX_OBJECTS} HDF5 objects"
                full = f"{where.rstrip('/')}/{name}"
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    return f"{full} is an HDF5 external link (to {link.filename}); NIR files must be self-contained"
                if isinstance(link, h5py.SoftLink):
                    return f"{full} is an HDF5 soft link; NIR files hold no links"
                obj = group.get(name)
                if obj is None:
                    return f"{full} cannot be opened"
                addr = h5py.h5o.get_info(obj.id).addr
                if addr in seen:
                    return f"{full} is a second (hard) link to an object; NIR files hold no links"
                seen.add(addr)
                if isinstance(obj, h5py.Group):
                    stack.append((obj, full, depth + 1))
                    continue
                if not isinstance(obj, h5py.Dataset):
                    return f"{full} is a {type(obj).__name__}, not a group or dataset"
                if obj.is_virtual:
                    return f"{full} is a virtual dataset (its data lives in other files); NIR files must be self-contained"
                if obj.external:
                    return f"{full} keeps its data in external files; NIR files must be self-contained"
                if len(obj.attrs) > MAX_ATTRS:
                    return f"{full} has more than {MAX_ATTRS} HDF5 attributes"
                size = int(np.prod(obj.shape, dtype=np.float64)) if obj.shape else 1
                declared += size * max(obj.dtype.itemsize, 1)
                if declared > MAX_FILE_BYTES:
                    return f"declares more than {MAX_FILE_BYTES >> 30} GiB of data (at {full}); not a graph this tool runs"
                obj[()]  # reads every chunk: corrupt data or checksums fail here
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def scan_seconds() -> float:
    raw = os.environ.get("DSQN_NIR_READ_TIMEOUT")
    if raw is None:
        return SCAN_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < 1e6:
        raise UserError(f"DSQN_NIR_READ_TIMEOUT must be a positive number of seconds, got {raw!r}")
    return value


def scan_hdf5(path: Path, seconds: float | None = None) -> None:
    """Walk ``path`` (see module docstring) in a forked child; a UserError for what it refuses,
    for a walk that raises, and for one that does not finish in ``seconds``."""
    seconds = scan_seconds() if seconds is None else seconds
    if not hasattr(os, "fork"):
        error = _walk_safely(path)
    else:
        error = _in_child(lambda: _walk_safely(path), seconds)
    if error:
        raise UserError(f"{path}: {error}")


def _walk_safely(path: Path) -> str | None:
    try:
        return _walk(path)
    except MemoryError:
        return "its data does not fit in memory"
    except Exception as exc:  # h5py raises OSError, RuntimeError, KeyError, ValueError, TypeError on corrupt files
        return f"not a readable HDF5/NIR file ({type(exc).__name__}: {_first_line(exc)})"


def _in_child(job: Callable[[], str | None], seconds: float) -> str | None:
    """Run ``job`` in a forked child; its message (or None) comes back through a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only the job, then leave without running the parent's exit handlers
        code = 0
        try:
            os.close(read_fd)
            msg = job()
            os.write(write_fd, ("ok" if msg is None else "error:" + msg).encode("utf8", "replace")[:4000])
        except BaseException:  # noqa: BLE001  (nothing may escape a forked child)
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                return f"reading the file did not finish within {seconds:.0f} s (a corrupt HDF5 structure?)"
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(read_fd, 4096)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        _reap(pid)
    text = b"".join(chunks).decode("utf8", "replace")
    if text == "ok":
        return None
    if text.startswith("error:"):
        return text[len("error:"):]
    return "reading the file failed (the reader crashed)"


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------- the parsed graph


def check_shape(where: str, shape: Any) -> tuple[int, ...]:
    """A declared shape: at most MAX_DIMS positive integers, at most MAX_NEURONS elements."""
    arr = np.asarray(shape)
    if arr.dtype.kind not in "iuf" or arr.ndim > 1:
        raise UserError(f"{where}: shape {shape!r} is not a list of integers")
    values = arr.reshape(-1).tolist()
    if len(values) > MAX_DIMS:
        raise UserError(f"{where}: shape has {len(values)} dimensions, more than {MAX_DIMS}")
    if any(not math.isfinite(v) or v != int(v) or v < 1 for v in values):
        raise UserError(f"{where}: shape {tuple(values)} must hold positive integers")
    dims = tuple(int(v) for v in values)
    if math.prod(dims) > MAX_NEURONS:
        raise UserError(f"{where}: shape {dims} has {math.prod(dims):,} elements, more than {MAX_NEURONS:,}")
    return dims


def check_param(where: str, value: Any) -> None:
    """A node parameter: real numbers, finite, within float32's range."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        raise UserError(f"{where} is complex; parameters must be real numbers")
    if arr.dtype.kind not in "biuf":
        raise UserError(f"{where} is not numeric (dtype {arr.dtype})")
    if arr.size and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise UserError(f"{where} is not finite")
        big = float(np.max(np.abs(arr)))
        if big > FLOAT32_MAX:
            raise UserError(f"{where} holds {big:.3g}, beyond float32's range ({FLOAT32_MAX:.3g})")
    elif arr.size and arr.dtype.kind in "iu" and float(np.max(np.abs(arr.astype(np.float64)))) > FLOAT32_MAX:
        raise UserError(f"{where} is beyond float32's range")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) or (
        isinstance(v, (float, np.floating)) and math.isfinite(v) and v == int(v))


def _real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _int_in(lo: int, hi: int) -> Callable[[Any], str | None]:
    def rule(v: Any) -> str | None:
        if not _is_int(v):
            return f"must be an integer, got {v!r}"
        return None if lo <= int(v) <= hi else f"must lie in [{lo}, {hi}], got {int(v)}"
    return rule


def _real_where(test: Callable[[float], bool], what: str) -> Callable[[Any], str | None]:
    def rule(v: Any) -> str | None:
        if not _real(v):
            return f"must be a finite number, got {v!r}"
        return None if test(float(v)) else f"must be {what}, got {v!r}"
    return rule


def _text(choices: tuple[str, ...] | None = None) -> Callable[[Any], str | None]:
    def rule(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"must be a string, got {v!r}"
        if choices is not None and v not in choices:
            return f"must be one of {', '.join(choices)}, got {v!r}"
        return None
    return rule


def _finite_numbers(v: Any) -> str | None:
    arr = np.asarray(v) if not isinstance(v, list) else np.asarray(v, dtype=object)
    if arr.dtype.kind not in "iuf" or arr.ndim > 1 or arr.size == 0:
        return f"must be one or more finite numbers, got {v!r}"
    return None if np.all(np.isfinite(arr.astype(np.float64))) else "must be finite"


def _nonzero_numbers(v: Any) -> str | None:
    err = _finite_numbers(v)
    if err is None and np.any(np.asarray(v, dtype=np.float64) == 0):
        return "must not be zero"
    return err


def meta_rules() -> dict[str, Callable[[Any], str | None]]:
    """Type and range of every metadata entry the code reads (absent entries keep their defaults)."""
    from exporters.metadata import FORMAT_VERSION, READOUT_REDUCE, REDUCTIONS
    from pipeline.spec import ENCODINGS

    return {
        "format": _text(),
        "format_version": _int_in(1, FORMAT_VERSION),
        "time_steps": _int_in(1, MAX_TIME_STEPS),
        "dt": _real_where(lambda x: 0 < x <= MAX_DT, f"positive and at most {MAX_DT:g} (seconds)"),
        "n_actions": _int_in(1, MAX_NEURONS),
        "encoding_seed": _int_in(0, 2**63 - 1),
        "input_encoding": _text(tuple(ENCODINGS)),
        "readout": _text(tuple(READOUT_REDUCE)),
        "readout_reduce": _text(tuple(REDUCTIONS)),
        "readout_divisor": _real_where(lambda x: x != 0, "non-zero"),
        "readout_membrane_divisor": _real_where(lambda x: True, "a number"),
        "readout_offset": _real_where(lambda x: True, "a number"),
        "readout_tiebreak": _text(("none", "membrane")),
        "threshold": _text((">=", ">")),
        "extensions": _text(),
        "env_id": _text(),
        "preprocessing_offset": _finite_numbers,
        "preprocessing_scale": _nonzero_numbers,
        "provenance_conversion_output_scale": _finite_numbers,
        "provenance_conversion_time_steps": _int_in(1, MAX_TIME_STEPS),
        "provenance_conversion_v_init": _real_where(lambda x: True, "a number"),
        "provenance_conversion_v_th": _real_where(lambda x: x > 0, "positive"),
        "provenance_conversion_readout": _text(),
        "provenance_conversion_reset": _text(),
    }


def check_metadata(meta: Mapping[str, Any], where: str = "graph metadata") -> None:
    from exporters.metadata import read_metadata

    plain = read_metadata(meta)
    for key, rule in meta_rules().items():
        if key in plain:
            value = plain[key]
            if isinstance(value, np.ndarray) and value.size == 1 and key not in (
                    "preprocessing_offset", "preprocessing_scale", "provenance_conversion_output_scale"):
                value = value.reshape(-1)[0].item()
            err = rule(value)
            if err:
                raise UserError(f"{where} {key!r} {err}")


def check_graph(graph: Any, where: str = "", depth: int = 0) -> None:
    """Every node's parameters and declared shapes, and the metadata (see module docstring)."""
    import nir

    if depth > MAX_DEPTH:
        raise UserError(f"graphs nested deeper than {MAX_DEPTH} levels")
    check_metadata(graph.metadata or {}, f"{where}graph metadata" if not where else f"metadata of {where[:-1]!r}")
    for name, node in graph.nodes.items():
        label = f"node {where}{name!r} ({type(node).__name__})"
        if isinstance(node, nir.NIRGraph):
            check_graph(node, f"{where}{name}.", depth + 1)
            continue
        for attr in ("input_type", "output_type"):
            types = getattr(node, attr, None)
            if isinstance(types, Mapping):
                for port, shape in types.items():
                    if shape is not None and np.size(shape):
                        check_shape(f"{label} {attr} {port!r}", shape)
        for attr, value in vars(node).items():
            if attr in ("input_type", "output_type", "metadata") or value is None:
                continue
            if isinstance(value, (np.ndarray, list, tuple, int, float, complex, np.generic)) \
                    or type(value).__name__ == "Tensor":
                check_param(f"{label} parameter {attr!r}", value)
        if isinstance(node, nir.Input) and not where:
            _check_preprocessing(graph.metadata or {}, node, label)
        if getattr(node, "metadata", None):
            role = node.metadata.get("dsqn_role")
            if role is not None and not isinstance(role, (str, bytes, np.ndarray)):
                raise UserError(f"{label}: metadata 'dsqn_role' must be a string")


def _check_preprocessing(meta: Mapping[str, Any], node: Any, label: str) -> None:
    """Per-feature offset/scale must broadcast against the observation's last axis."""
    from exporters.metadata import read_metadata

    shape = (getattr(node, "input_type", None) or {}).get("input")
    if shape is None or not np.size(shape):
        return
    features = int(np.asarray(shape).reshape(-1)[-1])
    plain = read_metadata(meta)
    for key in ("preprocessing_offset", "preprocessing_scale"):
        if key in plain:
            size = int(np.size(plain[key]))
            if size not in (1, features):
                raise UserError(f"graph metadata {key!r} has {size} values; {label} has {features} features "
                                "(one value or one per feature)")
