"""Turning values, functions and errors into bytes and back: the only module that pickles.

- Values: pickle protocol 5. Plain data (None, numbers, strings, bytes and small containers
  of them) goes through the C pickler directly (~0.6 us); anything else through cloudpickle
  (~5 us), which also pickles functions, lambdas and classes defined in ``__main__`` by value,
  so a worker never runs a stale or missing definition.
- Large buffers (numpy arrays, bytearrays, memoryviews, top-level bytes of at least
  ``INLINE_LIMIT`` bytes) are taken *out of band* (:func:`serialize`): the runtime writes them
  once into shared memory (``store.py``) and :func:`loads` rebuilds the value on read-only
  views of it, without copying (top-level ``bytes`` are copied once: they own their memory).
- ObjectRefs met while pickling are recorded (``_object_ref.collect_refs``): the runtime keeps
  the objects a stored value contains alive as long as the value.
- Functions and classes: those of importable modules travel by reference (the worker
  imports them), those of ``__main__`` (and ``@remote``-decorated ones, whose module name
  is the wrapper's) by value, as on Ray. By-value code keeps its file name (cloudpickle's
  own reducer blanks it to ``<dynamic-code>``), so tracebacks name the user's file and line.
- Errors: a task's exception travels as a pickled ``RayTaskError`` whose traceback shows the
  user's frames only (no raylite frames), as Ray shows it; when the user's exception cannot
  be pickled, its text travels instead, with a ``RayError`` saying so as the ``cause``, so an
  error is never lost to a second error.
"""

from __future__ import annotations

import functools
import io
import marshal
import os
import pickle
import sys
import traceback
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import cloudpickle

from .._object_ref import ObjectRef, collect_refs
from ..exceptions import RayError, RaySystemError, RayTaskError, TaskCancelledError

__all__ = [
    "INLINE_LIMIT",
    "NO_ITEMS",
    "SerializationError",
    "Serialized",
    "serialize",
    "serialize_result",
    "dumps",
    "dumps_args",
    "put_error",
    "register_serializer",
    "deregister_serializer",
    "dumps_error",
    "dumps_function",
    "load_value",
    "load_values",
    "loads",
    "dumps_plain",
    "loads_args",
]

_PLAIN_SCALARS = frozenset({type(None), bool, int, float, str, bytes, complex})
_FLAT_SCALARS = _PLAIN_SCALARS - {bytes}  # plain at any size: no length to check
_PLAIN_CONTAINERS = frozenset({tuple, list})
_MAX_PLAIN_LEN = 64
INLINE_LIMIT = 64 * 1024  # buffers at least this large go to shared memory


class SerializationError(TypeError):
    """A value could not be pickled; the message names what and why."""


def put_error(exc: SerializationError) -> TypeError:
    """The error of a ``put`` whose value cannot be pickled (the same in every runtime)."""
    return TypeError(
        f"Could not serialize the value passed to put(): {exc}. Pass picklable data: locks, "
        "sockets, open files and the like cannot be pickled; create them where they are used."
    )


def _is_plain(value: Any, depth: int = 3) -> bool:
    """True when ``value`` is builtin data the C pickler handles exactly like cloudpickle."""
    t = type(value)
    if t in _PLAIN_SCALARS:
        return t is not bytes or len(value) < INLINE_LIMIT
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
            data = _dumps(value)
        except Exception as exc:
            raise SerializationError(f"{type(exc).__name__}: {exc}") from exc
    return data, refs


def dumps_plain(value: Any) -> bytes | None:
    """The pickle of ``value`` when it is small builtin data (the fast path for results:
    nothing out of band, no refs inside), else None: use :func:`serialize`."""
    if _is_plain(value):
        return pickle.dumps(value, 5)
    return None


class Serialized(NamedTuple):
    """A pickled value: the pickle stream, its out-of-band buffers, the refs inside it."""

    payload: bytes
    buffers: list[memoryview]  # raw byte views, to be written to shared memory
    contained: list[int]

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers)


def serialize_result(name: str, value: Any) -> Serialized:
    """``serialize`` for what task (or method) ``name`` returned.

    Raises:
        TypeError: the value cannot be pickled; the message names the task and the fix.
    """
    try:
        return serialize(value)
    except SerializationError as exc:
        raise TypeError(
            f"Could not serialize the return value of {name}(): {exc}. "
            "Return picklable data, or build the object inside the caller."
        ) from None


def serialize(value: Any) -> Serialized:
    """Pickles ``value``, leaving buffers of ``INLINE_LIMIT`` bytes or more out of band.

    Raises:
        SerializationError: ``value`` (or something inside it) cannot be pickled.
    """
    if _is_plain(value):
        return Serialized(pickle.dumps(value, 5), [], [])
    if type(value) is bytes:
        value = _LargeBytes(value)
    buffers: list[memoryview] = []

    def out_of_band(buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes < INLINE_LIMIT:
            return True  # in band
        buffers.append(raw)
        return False

    with collect_refs() as refs:
        out = io.BytesIO()
        try:
            _Pickler(out, 5, buffer_callback=out_of_band).dump(value)
        except Exception as exc:
            raise SerializationError(f"{type(exc).__name__}: {exc}") from exc
    return Serialized(out.getvalue(), buffers, refs)


# {class: (serializer, deserializer)}, as Ray's ``register_serializer``: this process only
# (Ray's too); the deserializer travels with each value, so any process can read it.
_CUSTOM: dict[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {}


def register_serializer(
    cls: type, serializer: Callable[[Any], Any], deserializer: Callable[[Any], Any]
) -> None:
    """Pickles instances of exactly ``cls`` as ``deserializer(serializer(obj))``."""
    _CUSTOM[cls] = (serializer, deserializer)


def deregister_serializer(cls: type) -> None:
    """Undoes :func:`register_serializer` (nothing happens if there is none)."""
    _CUSTOM.pop(cls, None)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, plus zero-copy memoryviews (plain pickle refuses them), code that keeps
    its file name, and the serializers registered with :func:`register_serializer`."""

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if _CUSTOM and t in _CUSTOM:
            serializer, deserializer = _CUSTOM[t]
            return deserializer, (serializer(obj),)
        if t is types.CodeType:
            # marshal keeps every field (the file name too) and nested code; both ends run
            # the same interpreter (workers are forked from the driver).
            return marshal.loads, (marshal.dumps(obj),)
        if t is memoryview:
            data = pickle.PickleBuffer(obj) if obj.c_contiguous else obj.tobytes()
            return _rebuild_memoryview, (data, obj.format, obj.shape)
        if t.__name__ == "ndarray" and t.__module__ == "numpy" and not obj.dtype.hasobject:
            return _reduce_ndarray(obj)
        return super().reducer_override(obj)


def _reduce_ndarray(array: Any) -> Any:
    """numpy's protocol-5 reduction where numpy uses it (contiguous arrays: zero-copy).

    As in Ray, a contiguous array comes back read-only whatever its size: a big one views
    shared memory, and a small one's in-band buffer is pickled read-only (so as ``bytes``).

    Elsewhere (non-contiguous arrays, datetimes) numpy falls back to a legacy path that
    loses a non-native byte order ('>f8' comes back as float64), so the bytes (one
    contiguous copy, out of band when big) and the exact dtype travel here instead.
    """
    reduced = array.__reduce_ex__(5)
    if getattr(reduced[0], "__name__", "") == "_frombuffer":
        buffer, *rest = reduced[1]
        return reduced[0], (pickle.PickleBuffer(memoryview(buffer).toreadonly()), *rest)
    np = sys.modules["numpy"]
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    raw = np.asarray(array, order=order).reshape(-1, order=order).view(np.uint8)
    return _rebuild_ndarray, (pickle.PickleBuffer(raw), array.dtype, array.shape, order)


def _rebuild_ndarray(data: Any, dtype: Any, shape: tuple[int, ...], order: str) -> Any:
    np = sys.modules["numpy"]  # imported already: unpickling ``dtype`` needed it
    array = np.frombuffer(data, dtype=np.uint8).view(dtype).reshape(shape, order=order)
    # Ray pickles these arrays in band, so they come back writable: so do they here (a big
    # one's shared-memory view is copied once).
    return array if array.flags.writeable else array.copy(order=order)


def _rebuild_memoryview(data: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    view = memoryview(data)
    if view.format == fmt and view.shape == shape:
        return view
    try:
        return view.cast("B").cast(fmt, shape)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return view.cast("B")  # a format cast() cannot express: the raw bytes


class _LargeBytes:
    """Carries a big top-level ``bytes`` out of band (pickle keeps ``bytes`` in band)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> Any:
        return (bytes, (pickle.PickleBuffer(self.data),))


def _dumps(value: Any) -> bytes:
    """``cloudpickle.dumps(value, 5)`` through :class:`_Pickler`."""
    out = io.BytesIO()
    _Pickler(out, 5).dump(value)
    return out.getvalue()


def loads(data: bytes, buffers: list[memoryview] | None = None) -> Any:
    """Unpickles what :func:`dumps`, :func:`serialize` or :func:`dumps_function` produced."""
    return pickle.loads(data, buffers=buffers)


def dumps_function(fn: Any) -> bytes:
    """Pickles a function or class (by value where it lives in ``__main__``).

    Raises:
        SerializationError: it cannot be pickled.
        ValueError: its pickle is over Ray's limit (``FUNCTION_SIZE_ERROR_THRESHOLD``).
    """
    try:
        data = _dumps(fn)
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise SerializationError(
            f"cannot pickle {name!r} to ship it to worker processes: {type(exc).__name__}: "
            f"{exc}. Functions must not capture locks, sockets, open files or similar; "
            "create those inside the function instead."
        ) from exc
    _check_function_size(fn, len(data))
    return data


FUNCTION_SIZE_WARN_THRESHOLD = 10**7  # Ray's limits, in bytes of pickle
_FUNCTION_SIZE_ERROR_THRESHOLD = 10**8


def _check_function_size(fn: Any, size: int) -> None:
    """Ray's check of a function's or class's pickle: a warning over 10 MB, an error (Ray's
    ``ValueError`` and words) over ``FUNCTION_SIZE_ERROR_THRESHOLD`` (default 100 MB, and
    the same environment variable as Ray's)."""
    limit = int(os.environ.get("FUNCTION_SIZE_ERROR_THRESHOLD", _FUNCTION_SIZE_ERROR_THRESHOLD))
    if size <= FUNCTION_SIZE_WARN_THRESHOLD and size < limit:
        return
    if isinstance(fn, type):
        kind, name = "actor", fn.__name__
    else:
        kind = "remote function"
        name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    mib = 1024 * 1024
    advice = (
        "Check that its definition is not implicitly capturing a large array or other object "
        "in scope. Tip: use ray.put() to put large objects in the Ray object store."
    )
    if size >= limit:
        raise ValueError(
            f"The {kind} {name} is too large ({size // mib} MiB > "
            f"FUNCTION_SIZE_ERROR_THRESHOLD={limit // mib} MiB). {advice}"
        )
    warnings.warn(f"The {kind} {name} is very large ({size // mib} MiB). {advice}", stacklevel=4)


def dumps_error(function_name: str, exc: BaseException, pid: int) -> bytes:
    """Pickles the ``RayTaskError`` for ``exc`` raised by ``function_name``.

    Where ``exc`` cannot be pickled (or not rebuilt), the error keeps its traceback text and
    its ``cause`` is a ``RayError`` that says so, as on Ray.
    """
    tb = _format_user_traceback(exc)
    try:
        data = _dumps(RayTaskError(function_name, tb, exc, pid))
        pickle.loads(data)  # many exception classes pickle but cannot be rebuilt
        return data
    except Exception as pickling_error:
        cls = type(exc)
        cause = RayError(
            f"The exception {cls.__module__}.{cls.__qualname__} raised by {function_name}() "
            f"could not be sent to the caller: {type(pickling_error).__name__}: "
            f"{pickling_error}. To get the exception object itself, make it picklable (no "
            "locks, sockets or open files in its attributes; an __init__ that accepts the "
            f"args it passes to Exception.__init__). Its traceback:\n{tb}"
        )
        return _dumps(RayTaskError(function_name, tb, cause, pid))


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _format_user_traceback(exc: BaseException) -> str:
    """``exc``'s traceback as Ray shows a task's: the user's frames only, no header.

    raylite's own frames (the worker loop, ``get`` inside a task) are left out of each
    exception of the chain; an exception raised inside raylite itself keeps them all.
    """
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    pending = [te]
    while pending:
        one = pending.pop()
        user = [f for f in one.stack if not f.filename.startswith(_PACKAGE_DIR)]
        if user:
            one.stack = traceback.StackSummary.from_list(user)
        chained = [one.__cause__, one.__context__, *(getattr(one, "exceptions", None) or ())]
        pending.extend(e for e in chained if e is not None)
    lines = list(te.format())
    if lines and lines[0].startswith("Traceback (most recent call last):"):
        del lines[0]  # Ray's RayTaskError text starts with the first frame
    return "".join(lines)


def dumps_cancelled(task_id: int) -> bytes:
    """Pickles the ``TaskCancelledError`` of task ``task_id`` (cancelled before or while
    it ran)."""
    return dumps(TaskCancelledError(f"{task_id:056x}"))[0]


def dumps_args(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Serialized, list[int | str], list[int]]:
    """Pickles a task's arguments, leaving out the top-level ObjectRefs.

    Top-level refs are resolved before the task runs (Ray's semantics), so they travel as
    dependencies instead: ``dep_positions[i]`` (an index or a keyword) gets the value of
    ``dep_ids[i]``. Refs nested in containers stay refs (``contained``).

    Returns:
        ``(serialized, dep_positions, dep_ids)``; the payload is ``b""`` for no arguments.
    """
    # Fast path (most calls: numbers and strings, no refs): one C pickle call, no walk of
    # the values (measured 1.5 us against 6.9 us for split_refs + serialize). Its empty
    # lists are the shared NO_ITEMS: a task keeps three of them while it is pending.
    flat = _FLAT_SCALARS
    none = NO_ITEMS
    for a in args:
        if type(a) not in flat:
            break
    else:
        if not kwargs:
            if not args:
                return _NO_ARGS, none, none
            return Serialized(pickle.dumps((args, kwargs), 5), none, none), none, none
        if all(type(v) in flat for v in kwargs.values()):
            return Serialized(pickle.dumps((args, kwargs), 5), none, none), none, none
    args, kwargs, positions, dep_ids = split_refs(args, kwargs)
    if not args and not kwargs:
        return _NO_ARGS, positions, dep_ids
    return serialize((args, kwargs)), positions, dep_ids


def split_refs(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], list[int | str], list[int]]:
    """Takes the top-level ObjectRefs out of a call's arguments (without pickling).

    Returns:
        ``(args, kwargs, dep_positions, dep_ids)``: copies with ``None`` where a ref was
        (the originals are untouched), and where each ref's value goes.
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
    return args, kwargs, positions, dep_ids


# An empty list shared by every call that has nothing to put in it (buffers, refs, their
# places; objects.wire_call's values and fds), as _NO_ARGS's: never changed (nothing
# appends to a call's lists once made). Not
# a new list per call: a pending task kept three, each one more object for the cyclic
# collector to count; it ran every ~65 tasks in a burst of tiny ones, for ~30% of the
# driver's CPU, as in-flight tasks' objects filled its youngest generation.
NO_ITEMS: list[Any] = []
_NO_ARGS = Serialized(b"", NO_ITEMS, NO_ITEMS)


def loads_args(
    payload: bytes,
    positions: Sequence[Any],
    values: list[Any],
    buffers: list[memoryview] | None = None,
) -> tuple[Sequence[Any], dict[str, Any]]:
    """Rebuilds ``(args, kwargs)`` from :func:`dumps_args`' payload and resolved values."""
    if payload:
        args_t, kwargs = pickle.loads(payload, buffers=buffers)
        if not positions:  # no refs were taken out: the pickled pair is the call's
            return args_t, kwargs
        return place_values(args_t, kwargs, positions, values)
    if not positions:
        return (), {}
    return place_values((), {}, positions, values)


def place_values(
    args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], positions: Sequence[Any],
    values: list[Any],
) -> tuple[list[Any], dict[str, Any]]:  # fmt: skip
    """Puts resolved ref values back where :func:`split_refs` took the refs out."""
    args = list(args)
    if positions:
        kwargs = dict(kwargs)
    for pos, value in zip(positions, values, strict=True):
        if type(pos) is int:
            args[pos] = value
        else:
            kwargs[pos] = value
    return args, kwargs


def load_value(
    payload: bytes, is_error: bool, buffers: list[memoryview] | None = None,
    describe: Callable[[], str] | None = None,
) -> Any:  # fmt: skip
    """The stored value, or raises the stored error (a task error as both of its types).

    Raises:
        RaySystemError: the value cannot be unpickled here (as Ray raises it); the message
            names the value (``describe()``, e.g. "the result of f()") and the cause.
    """
    try:
        value = pickle.loads(payload, buffers=buffers)
    except Exception as exc:
        raise _load_error(exc, describe() if describe is not None else "a stored value") from exc
    if not is_error:
        return value
    if isinstance(value, RayTaskError):
        raise value.as_instanceof_cause()
    raise value


def load_values(
    items: list[tuple[bytes, bool, list[memoryview] | None]], oids: list[int],
    describe: Callable[[int], str],
) -> list[Any]:  # fmt: skip
    """:func:`load_value` of each of ``items`` (the values of ``oids``), in order; the first
    error found is raised (``describe(oid)`` names a value that cannot be unpickled).

    The loop is ``get``'s: a value that is no error is unpickled without another call.
    """
    out = []
    loads = pickle.loads
    for (payload, is_error, buffers), oid in zip(items, oids, strict=True):
        if is_error:
            load_value(payload, True, buffers, functools.partial(describe, oid))  # raises
        try:
            out.append(loads(payload, buffers=buffers))
        except Exception as exc:
            raise _load_error(exc, describe(oid)) from exc
    return out


def _load_error(exc: Exception, what: str) -> RaySystemError:
    """The error of a stored value (``what``) that cannot be unpickled here (as Ray's)."""
    return RaySystemError(
        f"System error: could not deserialize {what} in this process: "
        f"{type(exc).__name__}: {exc}. Its class must be importable here and rebuild "
        "from its pickle (check its __reduce__/__setstate__ and the modules it needs)."
    )
