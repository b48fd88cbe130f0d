"""Turning values, functions and errors into bytes and back: the only module that pickles.

- Values: pickle protocol 5. Plain data (None, numbers, strings, bytes and small containers
  of them) goes through the C pickler directly (~0.6 us); anything else through cloudpickle
  (~5 us), which also pickles functions, lambdas and classes defined in ``__main__`` by value,
  so a worker never runs a stale or missing definition.
- ObjectRefs met while pickling are recorded (``_object_ref.collect_refs``): the runtime keeps
  the objects a stored value contains alive as long as the value.
- Errors: a task's exception travels as a pickled ``RayTaskError``; when the user's exception
  cannot be pickled, its text travels instead, so an error is never lost to a second error.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

import cloudpickle

from .._object_ref import ObjectRef, collect_refs
from ..exceptions import RayTaskError

__all__ = [
    "SerializationError",
    "dumps",
    "dumps_args",
    "dumps_error",
    "dumps_function",
    "load_value",
    "loads",
    "loads_args",
]

_PLAIN_SCALARS = frozenset({type(None), bool, int, float, str, bytes, complex})
_PLAIN_CONTAINERS = frozenset({tuple, list})
_MAX_PLAIN_LEN = 64


class SerializationError(TypeError):
    """A value could not be pickled; the message names what and why."""


def _is_plain(value: Any, depth: int = 3) -> bool:
    """True when ``value`` is builtin data the C pickler handles exactly like cloudpickle."""
    t = type(value)
    if t in _PLAIN_SCALARS:
        return True
    if depth == 0:
        return False
    if t in _PLAIN_CONTAINERS:
        return len(value) <= _MAX_PLAIN_LEN and all(_is_plain(v, depth - 1) for v in value)
    if t is dict:
        return len(value) <= _MAX_PLAIN_LEN and all(
            type(k) in _PLAIN_SCALARS and _is_plain(v, depth - 1) for k, v in value.items()
        )
    return False


def dumps(value: Any) -> tuple[bytes, list[int]]:
    """Pickles ``value``.

    Returns:
        The bytes, and the ids of the ObjectRefs found inside ``value``.

    Raises:
        SerializationError: ``value`` (or something inside it) cannot be pickled.
    """
    if _is_plain(value):
        return pickle.dumps(value, 5), []
    with collect_refs() as refs:
        try:
            data = cloudpickle.dumps(value, 5)
        except Exception as exc:
            raise SerializationError(f"{type(exc).__name__}: {exc}") from exc
    return data, refs


def loads(data: bytes) -> Any:
    """Unpickles what :func:`dumps` (or :func:`dumps_function`) produced."""
    return pickle.loads(data)


def dumps_function(fn: Any) -> bytes:
    """Pickles a function or class (by value where it lives in ``__main__``)."""
    try:
        return cloudpickle.dumps(fn, 5)
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise SerializationError(
            f"cannot pickle {name!r} to ship it to worker processes: {type(exc).__name__}: "
            f"{exc}. Functions must not capture locks, sockets, open files or similar; "
            "create those inside the function instead."
        ) from exc


def dumps_error(function_name: str, exc: BaseException, pid: int) -> bytes:
    """Pickles the ``RayTaskError`` for ``exc`` raised by ``function_name``."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data = cloudpickle.dumps(RayTaskError(function_name, tb, exc, pid), 5)
        pickle.loads(data)  # many exception classes pickle but cannot be rebuilt
        return data
    except Exception:
        # Keep the text (the traceback names the class and message), drop the object.
        return cloudpickle.dumps(RayTaskError(function_name, tb, None, pid), 5)


def dumps_args(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bytes, list[int | str], list[int], list[int]]:
    """Pickles a task's arguments, leaving out the top-level ObjectRefs.

    Top-level refs are resolved before the task runs (Ray's semantics), so they travel as
    dependencies instead: ``dep_positions[i]`` (an index or a keyword) gets the value of
    ``dep_ids[i]``. Refs nested in containers stay refs (``contained``).

    Returns:
        ``(payload, dep_positions, dep_ids, contained)``; ``payload`` is ``b""`` for no
        arguments at all.
    """
    positions: list[int | str] = []
    dep_ids: list[int] = []
    if any(type(a) is ObjectRef for a in args):
        listed = list(args)
        for i, a in enumerate(listed):
            if type(a) is ObjectRef:
                positions.append(i)
                dep_ids.append(a._id)
                listed[i] = None
        args = tuple(listed)
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        kwargs = dict(kwargs)
        for k, v in kwargs.items():
            if type(v) is ObjectRef:
                positions.append(k)
                dep_ids.append(v._id)
                kwargs[k] = None
    if not args and not kwargs:
        return b"", positions, dep_ids, []
    payload, contained = dumps((args, kwargs))
    return payload, positions, dep_ids, contained


def loads_args(
    payload: bytes, positions: list[Any], values: list[Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Rebuilds ``(args, kwargs)`` from :func:`dumps_args`' payload and resolved values."""
    if payload:
        args_t, kwargs = pickle.loads(payload)
        args = list(args_t)
    else:
        args, kwargs = [], {}
    for pos, value in zip(positions, values, strict=True):
        if type(pos) is int:
            args[pos] = value
        else:
            kwargs[pos] = value
    return args, kwargs


def load_value(payload: bytes, is_error: bool) -> Any:
    """The stored value, or raises the stored error (a task error as both of its types)."""
    value = pickle.loads(payload)
    if not is_error:
        return value
    if isinstance(value, RayTaskError):
        raise value.as_instanceof_cause()
    raise value
