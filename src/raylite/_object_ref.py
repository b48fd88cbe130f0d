"""ObjectRef: a handle to a value that exists (or will exist) in the object store.

An ObjectRef is a small int id plus the runtime that owns the value. Its lifetime drives the
value's: each live ObjectRef counts one reference in its runtime (``_RefOwner.add_ref`` when
made, ``release`` when garbage collected), and the runtime frees the value when no
reference, pending task or stored object needs it any more.

Pickling an ObjectRef (inside a task argument, a returned value or a ``put``) records its id
in the pickler's context (:func:`collect_refs`), so the runtime knows which objects a stored
value contains and keeps them alive with it. Unpickling binds the ref to the runtime of the
process that unpickles it.

Refs of another runtime: on a Ray cluster the refs users get are Ray's own ``ray.ObjectRef``
(so Ray's APIs, Ray's argument resolution and ``ray.get`` inside tasks work on them). That
runtime registers its ref class here (:func:`register_foreign_refs`), which makes
``isinstance(ref, raylite.ObjectRef)`` true for them too, and :func:`owner_of` says which
runtime holds a ref's value whatever its class.
"""

from __future__ import annotations

import abc
import concurrent.futures
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

__all__ = ["ObjectRef", "collect_refs", "owner_of", "register_foreign_refs"]


class _RefOwner(Protocol):
    """What an ObjectRef needs from the runtime that owns its value."""

    def add_ref(self, oid: int) -> None: ...

    def release(self, oid: int) -> None: ...

    def future(self, oid: int) -> concurrent.futures.Future[Any]: ...


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
