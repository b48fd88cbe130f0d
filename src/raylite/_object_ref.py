"""ObjectRef: a handle to a value that exists (or will exist) in the object store.

An ObjectRef is a small int id plus the runtime that owns the value. Its lifetime drives the
value's: each live ObjectRef counts one reference in its runtime (``_RefOwner.add_ref`` when
made, ``release`` when garbage collected), and the runtime frees the value when no
reference, pending task or stored object needs it any more.

Pickling an ObjectRef (inside a task argument, a returned value or a ``put``) records its id
in the pickler's context (:func:`collect_refs`), so the runtime knows which objects a stored
value contains and keeps them alive with it. Unpickling binds the ref to the runtime of the
process that unpickles it.

Generator tasks: ``num_returns="streaming"`` (a generator function's default) gives an
:class:`ObjectRefGenerator`, whose ``next()`` returns each yielded value's ObjectRef as the
task yields it; ``num_returns="dynamic"`` gives one ref whose value, once the task is done,
is a :class:`DynamicObjectRefGenerator` of them all. The runtime that owns the task keeps
the stream (``_StreamOwner``): the refs not taken yet, and the cursor.

Refs of another runtime: on a Ray cluster the refs users get are Ray's own ``ray.ObjectRef``
(so Ray's APIs, Ray's argument resolution and ``ray.get`` inside tasks work on them). That
runtime registers its ref class here (:func:`register_foreign_refs`), which makes
``isinstance(ref, raylite.ObjectRef)`` true for them too, and :func:`owner_of` says which
runtime holds a ref's value whatever its class.
"""

from __future__ import annotations

import abc
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from traceback import format_exc
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "DynamicObjectRefGenerator",
    "ObjectRef",
    "ObjectRefGenerator",
    "collect_refs",
    "owner_of",
    "register_foreign_generators",
    "register_foreign_refs",
]

_log = logging.getLogger(__name__)


class _RefOwner(Protocol):
    """What an ObjectRef needs from the runtime that owns its value."""

    def add_ref(self, oid: int) -> None: ...

    def release(self, oid: int) -> None: ...

    def future(self, oid: int) -> concurrent.futures.Future[Any]: ...


class _StreamOwner(Protocol):
    """What an ObjectRefGenerator needs from the runtime that runs its task. ``gen_id`` is
    the id of the generator's ref (the task's completion)."""

    def stream_next(self, gen_id: int) -> ObjectRef | None:
        """Blocks until the next ref, or None at the end."""
        ...

    def stream_future(self, gen_id: int) -> concurrent.futures.Future[ObjectRef | None]:
        """The next ref (None at the end) as a future; cancelling it gives its turn back."""
        ...

    def stream_status(self, gen_id: int) -> tuple[bool, bool]:
        """``(next_ready, exhausted)``: whether ``next`` would not block, whether it ends."""
        ...


_pickling = threading.local()


@contextmanager
def collect_refs() -> Iterator[list[int]]:
    """Collects the ids of ObjectRefs pickled in this thread inside the ``with`` block."""
    outer = getattr(_pickling, "refs", None)
    refs: list[int] = []
    _pickling.refs = refs
    try:
        yield refs
    finally:
        _pickling.refs = outer


# Set by the runtime module of this process: returns the owner for refs being unpickled.
_unpickle_owner: Callable[[], _RefOwner | None] = lambda: None  # noqa: E731


def set_unpickle_owner(fn: Callable[[], _RefOwner | None]) -> None:
    """Tells ObjectRef where refs unpickled in this process belong."""
    global _unpickle_owner
    _unpickle_owner = fn


def _rebuild(oid: int) -> ObjectRef:
    owner = _unpickle_owner()
    if owner is not None:
        owner.add_ref(oid)
    return ObjectRef(oid, owner)


# Other runtimes' ref classes: [(is_ref_class, owner)]. ``is_ref_class(cls)`` tells one of
# them (without importing that runtime's package); ``owner()`` is the runtime that holds such
# refs' values now, or None.
_foreign: list[tuple[Callable[[type], bool], Callable[[], object | None]]] = []


def register_foreign_refs(
    is_ref_class: Callable[[type], bool], owner: Callable[[], object | None]
) -> None:
    """Makes another runtime's ref class count as an ObjectRef (``isinstance``, ``owner_of``).

    Args:
        is_ref_class: true for that runtime's ref classes (and their subclasses).
        owner: the runtime that holds the values of such refs now, or None if none does.
    """
    _foreign.append((is_ref_class, owner))


def _foreign_owner(cls: type) -> Callable[[], object | None] | None:
    for is_ref_class, owner in _foreign:
        if is_ref_class(cls):
            return owner
    return None


def owner_of(ref: ObjectRef) -> object | None:
    """The runtime holding ``ref``'s value, or None when no running one does."""
    if type(ref) is ObjectRef:
        return ref._owner
    owner = _foreign_owner(type(ref))
    return None if owner is None else owner()


class ObjectRef(metaclass=abc.ABCMeta):  # noqa: B024 (an ABC for its virtual subclasses)
    """A reference to a (possibly future) value in the object store.

    Hashable and comparable by id; ``await ref`` and ``ref.future()`` wait for the value.
    Made by ``f.remote()``, ``actor.method.remote()`` and ``put``; never build one yourself.
    On a Ray cluster these are Ray's own refs, which are instances of this class too.
    """

    __slots__ = ("_id", "_owner", "__weakref__")
    __module__ = "raylite"

    def __init__(self, oid: int, owner: _RefOwner | None) -> None:
        # The caller has already counted this reference in ``owner``.
        self._id = oid
        self._owner = owner

    @classmethod
    def __subclasshook__(cls, subclass: type) -> Any:
        # ABCMeta caches the answer per class, so this runs once per class, not per check.
        if cls is ObjectRef and _foreign_owner(subclass) is not None:
            return True
        return NotImplemented

    def __del__(self) -> None:
        owner = self._owner
        if owner is not None:
            try:
                owner.release(self._id)
            except Exception:  # interpreter shutdown: the runtime may be half torn down
                pass

    def __reduce__(self) -> Any:
        refs = getattr(_pickling, "refs", None)
        if refs is not None:
            refs.append(self._id)
        return (_rebuild, (self._id,))

    def __copy__(self) -> ObjectRef:
        return _rebuild_in(self._owner, self._id)

    def __deepcopy__(self, memo: dict[int, Any]) -> ObjectRef:
        return _rebuild_in(self._owner, self._id)

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        return type(other) is ObjectRef and other._id == self._id

    def __repr__(self) -> str:
        return f"ObjectRef({self.hex()})"

    def binary(self) -> bytes:
        """The id as 28 bytes (Ray's id size)."""
        return self._id.to_bytes(28, "big")

    def hex(self) -> str:
        """The id as 56 hex digits."""
        return self.binary().hex()

    def is_nil(self) -> bool:
        return self._id == 0

    def future(self) -> concurrent.futures.Future[Any]:
        """A ``concurrent.futures.Future`` that resolves to the value (or raises its error)."""
        if self._owner is None:
            raise _unbound_error(self)
        return self._owner.future(self._id)

    def _on_completed(self, callback: Callable[[Any], None]) -> None:
        """Calls ``callback(value)`` once the value is ready, on a thread of raylite's (at
        once if it is ready already); the value is the task's error (an exception object)
        if it failed. As Ray's ``ObjectRef._on_completed``: the callback is held until it
        has run, then dropped; an exception it raises is logged, not propagated.
        """
        held = [callback]

        def done(future: concurrent.futures.Future[Any]) -> None:
            run = held.pop()
            try:
                value = future.result()
            except BaseException as exc:  # the task's error is the value handed on
                value = exc
            try:
                run(value)
            except Exception:
                # The text only: a record holding the traceback would keep the callback
                # (its frame's function) alive as long as a log handler keeps the record.
                _log.error("The _on_completed callback of %r raised:\n%s", self, format_exc())

        self.future().add_done_callback(done)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.as_future().__await__()

    def as_future(self) -> asyncio.Future[Any]:
        """An ``asyncio.Future`` on the running loop that resolves to the value."""
        import asyncio  # imported here: it costs ~50 ms, and most programs never await

        return asyncio.wrap_future(self.future())


def _rebuild_in(owner: _RefOwner | None, oid: int) -> ObjectRef:
    if owner is not None:
        owner.add_ref(oid)
    return ObjectRef(oid, owner)


def _unbound_error(ref: ObjectRef) -> Exception:
    from .exceptions import RaySystemError

    return RaySystemError(
        f"{ref!r} belongs to no running raylite session (it was made before the last "
        "shutdown() or unpickled outside raylite). Recreate it after raylite.init()."
    )


# Other runtimes' generator classes: each function tells one of them (Ray's, without
# importing ray), so that isinstance(gen, ObjectRefGenerator) holds for those too.
_foreign_generators: list[Callable[[type], bool]] = []


def register_foreign_generators(is_generator_class: Callable[[type], bool]) -> None:
    """Makes another runtime's ref generators instances of :class:`ObjectRefGenerator`."""
    _foreign_generators.append(is_generator_class)


class ObjectRefGenerator(metaclass=abc.ABCMeta):  # noqa: B024 (an ABC for virtual subclasses)
    """The ObjectRefs of a generator task's values, in order, as the task yields them.

    Returned by ``f.remote()`` for a generator function (``num_returns="streaming"``, the
    default) and by generator actor methods. ``next(gen)`` blocks until the task yields
    its next value and returns that value's ObjectRef; ``async for ref in gen`` does the
    same without blocking the event loop. If the task raises after k yields, the first k
    refs hold their values, the next one raises the error at ``get``, and iteration ends.

    Example:
        >>> @raylite.remote
        ... def count(n):
        ...     for i in range(n):
        ...         yield i
        >>> [raylite.get(ref) for ref in count.remote(3)]
        [0, 1, 2]
    """

    __module__ = "raylite"

    def __init__(self, generator_ref: ObjectRef, owner: _StreamOwner) -> None:
        # The task's completion ref: while it lives, so does the stream of refs not taken.
        self._generator_ref = generator_ref
        self._owner = owner

    @classmethod
    def __subclasshook__(cls, subclass: type) -> Any:
        # ABCMeta caches the answer per class, so this runs once per class, not per check.
        if cls is ObjectRefGenerator and any(is_gen(subclass) for is_gen in _foreign_generators):
            return True
        return NotImplemented

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        ref = self._owner.stream_next(self._generator_ref._id)
        if ref is None:
            raise StopIteration
        return ref

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        import asyncio  # imported here: it costs ~50 ms, and most programs never await

        ref = await asyncio.wrap_future(self._owner.stream_future(self._generator_ref._id))
        if ref is None:
            raise StopAsyncIteration
        return ref

    def completed(self) -> ObjectRef:
        """A ref that is ready once the task has finished (its ``get`` raises the task's
        error, if it failed)."""
        return self._generator_ref

    def is_finished(self) -> bool:
        """Whether every ref has been taken and the task is done (``next`` would stop)."""
        return self._owner.stream_status(self._generator_ref._id)[1]

    def next_ready(self) -> bool:
        """Whether ``next`` would return at once (a ref is waiting, or the stream ended)."""
        return self._owner.stream_status(self._generator_ref._id)[0]

    def __reduce__(self) -> Any:
        raise TypeError(
            "An ObjectRefGenerator cannot be pickled or passed to a task or actor: iterate "
            "it where it was made and pass the ObjectRefs it gives."
        )

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._generator_ref.hex()})"


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task: the ObjectRefs of every value it
    yielded, in order (iterate it, or ``len()``). If the task raised after k yields, there
    are k + 1 refs and the last one raises the error at ``get``."""

    __module__ = "raylite"

    def __init__(self, refs: list[ObjectRef]) -> None:
        self._refs = list(refs)

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __reduce__(self) -> Any:
        return (DynamicObjectRefGenerator, (self._refs,))

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"
