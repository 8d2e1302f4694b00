"""Read numbers out of a pickle without unpickling it: SB3's ``vecnormalize.pkl``.

SB3 saves ``VecNormalize`` statistics only as a pickle, and unpickling a stranger's file can
run any code. :func:`scan` walks the opcode stream with :func:`pickletools.genops` and keeps a
stack of inert values: strings, numbers, bytes, tuples, lists and dicts are rebuilt as they are;
a global is only its name (:class:`Ref`), a call only a record of what would have been called
with what (:class:`Call`), and ``BUILD`` attaches the state to that record. Nothing is imported
and nothing is called. Two records are then read as data: numpy arrays
(``numpy.core.multiarray._reconstruct`` + the ``(version, shape, dtype, fortran, bytes)`` state)
and dtypes (``numpy.dtype(str)`` + the byte-order state).
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError

MAX_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Ref:
    """A global named by the pickle (``module.name``); never imported."""

    module: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Call:
    """What the pickle would call (``func(*args)``), and the state it would then set on the result."""

    func: Any
    args: tuple
    state: Any = None
    items: list = field(default_factory=list)


class _Mark:
    pass


MARK = _Mark()


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise ValueError("MARK not found")


def scan(data: bytes) -> Any:
    """The pickle's top object as inert data (see the module docstring).

    One loop with a branch per opcode family, on purpose: the reader must see every opcode that is
    allowed in one place, and that everything else (GLOBAL, REDUCE, BUILD, ...) is refused."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            break
        if name == "MARK":
            stack.append(MARK)
        elif name in ("BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8", "BININT", "BININT1",
                      "BININT2", "LONG1", "LONG4", "BINFLOAT", "FLOAT", "INT", "LONG", "STRING",
                      "BINSTRING", "SHORT_BINSTRING"):
            stack.append(arg)
        elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
            stack.append(bytes(arg))
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "TUPLE":
            stack.append(tuple(_pop_mark(stack)))
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "LIST":
            stack.append(list(_pop_mark(stack)))
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "DICT":
            items = _pop_mark(stack)
            stack.append(dict(zip(items[::2], items[1::2])))
        elif name == "EMPTY_SET":
            stack.append([])
        elif name == "APPEND":
            v = stack.pop()
            _append(stack[-1], [v])
        elif name in ("APPENDS", "ADDITEMS"):
            items = _pop_mark(stack)
            _append(stack[-1], items)
        elif name == "SETITEM":
            v, k = stack.pop(), stack.pop()
            _setitems(stack[-1], [k, v])
        elif name == "SETITEMS":
            items = _pop_mark(stack)
            _setitems(stack[-1], items)
        elif name in ("MEMOIZE",):
            memo[len(memo)] = stack[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(Ref(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(Ref(str(module), str(attr)))
        elif name == "REDUCE":
            args, func = stack.pop(), stack.pop()
            stack.append(Call(func, tuple(args) if isinstance(args, tuple) else (args,)))
        elif name in ("NEWOBJ", "NEWOBJ_EX"):
            if name == "NEWOBJ_EX":
                stack.pop()  # kwargs
            args, cls = stack.pop(), stack.pop()
            stack.append(Call(cls, tuple(args) if isinstance(args, tuple) else (args,)))
        elif name == "BUILD":
            state = stack.pop()
            target = stack[-1]
            if isinstance(target, Call):
                target.state = state
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            _pop_mark(stack)
        elif name == "DUP":
            stack.append(stack[-1])
        else:  # PERSID, EXT*, INST, OBJ, FROZENSET, ...: not in the files we read
            raise ValueError(f"unsupported pickle opcode {name}")
    if len(stack) != 1:
        raise ValueError("malformed pickle")
    return stack[0]


def _append(target: Any, items: list[Any]) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, Call):
        target.items.extend(items)


def _setitems(target: Any, items: list[Any]) -> None:
    if isinstance(target, dict):
        for k, v in zip(items[::2], items[1::2]):
            try:
                target[k] = v
            except TypeError:  # an unhashable key (a record): not something we read
                pass


def as_dtype(value: Any) -> np.dtype:
    """``numpy.dtype('f8', False, True)`` with its byte-order state -> the dtype (built from data)."""
    if not (isinstance(value, Call) and isinstance(value.func, Ref) and value.func.name == "dtype"
            and value.func.module == "numpy" and value.args and isinstance(value.args[0], str)):
        raise ValueError("not a numpy dtype record")
    code = value.args[0]
    if not code.isalnum():
        raise ValueError(f"unexpected dtype code {code!r}")
    order = value.state[1] if isinstance(value.state, tuple) and len(value.state) > 1 else "="
    if order not in ("<", ">", "|", "="):
        raise ValueError(f"unexpected byte order {order!r}")
    return np.dtype(code).newbyteorder(order) if order in "<>" else np.dtype(code)


def as_array(value: Any) -> np.ndarray:
    """A numpy array record (``_reconstruct`` + state, or ``_frombuffer``) -> a new array."""
    if not isinstance(value, Call) or not isinstance(value.func, Ref):
        raise ValueError("not a numpy array record")
    fn = value.func
    if fn.module in ("numpy.core.multiarray", "numpy._core.multiarray") and fn.name == "_reconstruct":
        state = value.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise ValueError("numpy array without its state")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(raw, bytes):
            raise ValueError("numpy object arrays are not read")
        arr = np.frombuffer(raw, dtype=as_dtype(dtype)).copy()
        return arr.reshape(tuple(int(s) for s in shape), order="F" if fortran else "C")
    if fn.module in ("numpy.core.numeric", "numpy._core.numeric") and fn.name == "_frombuffer":
        raw, dtype, shape, order = value.args
        return np.frombuffer(bytes(raw), dtype=as_dtype(dtype)).copy().reshape(tuple(shape), order=order)
    raise ValueError(f"not a numpy array record ({fn.path})")


def read_vecnormalize(path: str | Path) -> dict[str, Any]:
    """mean, var, epsilon and clip_obs of an SB3 ``VecNormalize.save`` file, never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"VecNormalize file not found: {path}")
    data = path.read_bytes()
    if len(data) > MAX_BYTES:
        raise UserError(f"{path}: {len(data)} bytes is too large for VecNormalize statistics")
    try:
        top = scan(data)
    except Exception as exc:  # genops raises ValueError and friends on damaged input
        raise UserError(f"{path}: not a readable pickle ({str(exc)[:200]})") from None
    if not (isinstance(top, Call) and isinstance(top.func, Ref) and top.func.name == "VecNormalize"
            and isinstance(top.state, dict)):
        raise UserError(f"{path}: not SB3 VecNormalize statistics")
    state = top.state
    if not state.get("norm_obs", True):
        raise UserError(f"{path}: VecNormalize was made with norm_obs=False: no observation statistics")
    rms = state.get("obs_rms")
    if isinstance(rms, dict) or (isinstance(rms, Call) and not isinstance(rms.state, dict)):
        raise UserError(f"{path}: dict observations in VecNormalize are unsupported")
    try:
        mean = as_array(rms.state["mean"]).astype(np.float64)
        var = as_array(rms.state["var"]).astype(np.float64)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: cannot read obs_rms mean/var ({exc})") from None
    if mean.shape != var.shape or not (np.all(np.isfinite(mean)) and np.all(var >= 0)):
        raise UserError(f"{path}: obs_rms mean/var are malformed")
    eps = state.get("epsilon", 1e-8)
    clip = state.get("clip_obs", 10.0)
    return {"mean": mean, "var": var, "epsilon": float(eps if isinstance(eps, float) else 1e-8),
            "clip_obs": float(clip) if isinstance(clip, (int, float)) else None}
