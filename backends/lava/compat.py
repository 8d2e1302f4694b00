"""Make ``lava-nc`` 0.10.0 importable on Python >= 3.11, without touching installed files.

Call :func:`ensure_lava_importable` before the first ``import lava...`` anywhere in the
process (the Lava backend should do so at its top; tests call it first). It is idempotent;
on Python < 3.11 it patches nothing. It handles two things, both at import time only:
the dataclass defaults below (Python >= 3.11), and Lava's ``set_start_method('fork')``
(any Python; last section).

What breaks
-----------
``lava/magma/compiler/var_model.py`` (lava-nc 0.10.0, which declares ``Requires-Python
<3.11``) defines::

    @dataclass
    class ByteEncoder:          # eq=True, frozen=False  ->  __hash__ = None
        base: int = 0
        len: int = 0
        ptr: int = 0

    @dataclass
    class CoreEncoder:
        x: ByteEncoder = ByteEncoder()      # likewise ChipEncoder (x, y, z)
        y: ByteEncoder = ByteEncoder()      # and AxonEncoder (hi, lo):
        p: ByteEncoder = ByteEncoder()      # 8 fields in all

Up to 3.10 ``dataclasses`` rejected only ``list``/``dict``/``set`` defaults. Since 3.11 it
rejects any default whose *class is unhashable* (unhashability as a proxy for mutability,
see "Changed in version 3.11" under "Mutable default values" in the dataclasses docs). A
non-frozen dataclass with ``eq=True`` has ``__hash__ = None``, so defining ``CoreEncoder``
raises ``ValueError: mutable default <class '...ByteEncoder'> for field x is not allowed:
use default_factory``. ``var_model`` is imported by the compiler, the process models and
the runtime, so *every* Lava import that matters fails.

The fix
-------
While (and only while) ``lava.magma.compiler.var_model`` is being imported, the module
attribute ``dataclasses.dataclass`` is replaced by a thin wrapper. For classes whose
``__module__`` is ``lava.magma.compiler.var_model`` it turns each class-level default that
is an *instance of an unhashable dataclass* into ``field(default_factory=...)`` returning a
deep copy of that default, then calls the real ``dataclass``. Every other class (in that
module or any module imported meanwhile) goes straight to the real decorator. Afterwards
``dataclasses.dataclass`` is restored, and the modules imported during the patch that bound
the wrapper by ``from dataclasses import dataclass`` get the real decorator back.

Why this is safe
----------------
* Narrow: 8 fields of 3 classes change (``FIXED_FIELDS`` records them; the smoke test checks
  the count); all other dataclasses are built by the unmodified decorator.
* Same values: a fresh instance still gets a ``ByteEncoder`` equal to the old default
  (``__eq__``/``__repr__`` unchanged). The only differences: instances no longer *share* one
  ``ByteEncoder`` object (sharing was the aliasing bug the 3.11 check exists to stop), and the
  class attribute ``CoreEncoder.x`` is gone (dataclasses removes class attributes of
  ``default_factory`` fields). Nothing in lava-nc 0.10.0 reads those: the encoders describe
  Loihi-hardware spike I/O (``NcSpikeIOVarModel``, used by the proprietary lava-loihi), not
  the CPU simulator (``Loihi2SimCfg``) this project runs.
* Self-limiting: a Lava release that already uses ``default_factory`` has no such defaults,
  so nothing is rewritten; on Python < 3.11 nothing is patched at all. Installed files are
  never edited.

Lava's start method (any Python version)
----------------------------------------
``lava.magma.runtime.message_infrastructure.multiprocessing`` (imported by
``lava.magma.core.process.process``, i.e. with every process class) calls
``multiprocessing.set_start_method('fork')`` *without* ``force`` at import time. That raises
``RuntimeError: context has already been set`` if anything in the process had already fixed
the start method, even to ``'fork'``: ``set_start_method``, or merely
``multiprocessing.get_start_method()``, which fixes the default. :func:`ensure_lava_importable`
imports that module up front. When the method is already ``'fork'`` (Linux's default up to
Python 3.13, which is what an earlier ``get_start_method()`` fixes), Lava's call would change
nothing, so ``multiprocessing.set_start_method`` skips that one call during this import and is
restored afterwards. Any other method is reported with an explanation: Lava needs ``fork``.
Once Lava is imported, ``fork`` is the start method of the whole process (it also matters to
the fix above: Lava's worker processes are forked, so they inherit the patched ``var_model``;
under ``spawn`` they would re-import it unpatched).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import multiprocessing
import sys
import threading
from types import ModuleType

#: lava-nc release this shim was written and checked against.
LAVA_VERSION = "0.10.0"

_VAR_MODEL = "lava.magma.compiler.var_model"
_MP_INFRA = "lava.magma.runtime.message_infrastructure.multiprocessing"
_lock = threading.Lock()

#: ``"Class.field"`` names whose default this shim turned into a ``default_factory``
#: (empty on Python < 3.11 or once Lava fixes it upstream; 8 entries for lava-nc 0.10.0).
FIXED_FIELDS: list[str] = []


def _needs_factory(value: object) -> bool:
    """True for the defaults Python 3.11's dataclasses reject and that we may copy safely:
    instances (not classes) of a dataclass whose class is unhashable."""
    return (
        dataclasses.is_dataclass(value)
        and not isinstance(value, type)
        and type(value).__hash__ is None
    )


def _defuse_unhashable_defaults(cls: type) -> None:
    annotations = cls.__dict__.get("__annotations__", {})
    for name, annotation in annotations.items():
        # ClassVar / InitVar pseudo-fields are not checked by dataclasses: leave them alone.
        if "ClassVar" in str(annotation) or "InitVar" in str(annotation):
            continue
        value = cls.__dict__.get(name, dataclasses.MISSING)
        if value is dataclasses.MISSING or isinstance(value, dataclasses.Field):
            continue
        if _needs_factory(value):
            setattr(cls, name, dataclasses.field(default_factory=functools.partial(copy.deepcopy, value)))
            FIXED_FIELDS.append(f"{cls.__qualname__}.{name}")


def _import_var_model_patched() -> None:
    real_dataclass = dataclasses.dataclass
    FIXED_FIELDS.clear()

    def dataclass(cls=None, /, **kwargs):  # same call forms as dataclasses.dataclass
        if cls is None:
            return lambda c: dataclass(c, **kwargs)
        if getattr(cls, "__module__", None) == _VAR_MODEL:
            _defuse_unhashable_defaults(cls)
        return real_dataclass(cls, **kwargs)

    before = set(sys.modules)
    dataclasses.dataclass = dataclass
    try:
        __import__(_VAR_MODEL)
    finally:
        dataclasses.dataclass = real_dataclass
        # Modules imported meanwhile that did `from dataclasses import dataclass` hold the
        # wrapper; give them the real decorator so nothing outlives the import.
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            if isinstance(module, ModuleType) and getattr(module, "dataclass", None) is dataclass:
                module.dataclass = real_dataclass


def _import_message_infrastructure() -> None:
    """Import Lava's multiprocessing layer now, so that its ``set_start_method('fork')``
    is dealt with here rather than deep inside the first process-class import."""
    real_set_start_method = multiprocessing.set_start_method
    already_fork = multiprocessing.get_start_method(allow_none=True) == "fork"

    def set_start_method(method, force=False):
        if already_fork and method == "fork":  # what Lava asks for is in force already
            return None
        return real_set_start_method(method, force=force)

    multiprocessing.set_start_method = set_start_method
    try:
        __import__(_MP_INFRA)
    except RuntimeError as exc:
        if "context has already been set" not in str(exc):
            raise
        raise RuntimeError(
            "Lava cannot be imported: its message infrastructure calls "
            "multiprocessing.set_start_method('fork') at import time, and this process had "
            f"already fixed it to {multiprocessing.get_start_method(allow_none=True)!r}. Call "
            "ensure_lava_importable() before anything chooses another start method."
        ) from exc
    finally:
        multiprocessing.set_start_method = real_set_start_method


def ensure_lava_importable() -> str:
    """Apply the fixes above (once) and return the installed lava-nc version.

    Raises ``ImportError`` with the install hint when lava-nc is missing, and
    ``RuntimeError`` when the process already uses a start method other than ``fork``.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        lava_version = version("lava-nc")
    except PackageNotFoundError as exc:
        raise ImportError(
            "lava-nc is not installed: run `bash scripts/install.sh` (EXTRAS must include "
            "'lava' or 'all'), which installs lava-nc==0.10.0 on Python 3.11"
        ) from exc
    with _lock:
        if sys.version_info >= (3, 11) and _VAR_MODEL not in sys.modules:
            _import_var_model_patched()
        if _MP_INFRA not in sys.modules:
            _import_message_infrastructure()
    return lava_version
