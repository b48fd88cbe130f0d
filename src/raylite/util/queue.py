"""``Queue``: a first-in, first-out queue shared by the driver, tasks and actors.

Ray's ``ray.util.queue`` (https://docs.ray.io/en/latest/ray-core/api/doc/ray.util.queue.Queue.html),
same names, arguments and behaviour. The items live in one async actor, ``_QueueActor``,
holding an ``asyncio.Queue``; a ``Queue`` object is only that actor's handle (and its
``maxsize``), so it pickles small and works wherever it is passed::

    callers (driver, tasks, actors)                _QueueActor (async: one event loop)
    -------------------------------                ------------------------------------
    q.put(x, timeout=t)      ── put(x, t) ──────>  asyncio.Queue(maxsize): only this
    q.get(timeout=t)         ── get(t) ─────────>  loop reads or writes it
    q.put_nowait_batch(xs)   ── ..._batch(xs) ──>
                             <── value | _Refused ── (each call's ObjectRef)

Only the actor's event loop touches the ``asyncio.Queue``. A blocking ``put`` or ``get``
waits *in the actor* (an ``await``, bounded by its ``timeout``) while the caller waits on
the call's ObjectRef, so a blocked caller holds no thread of the actor: up to 1000 callers
(an async actor's default ``max_concurrency``, as in Ray) may block at once. A refusal
(full, empty, timed out) comes back as a ``_Refused`` value rather than a remote
exception, which would carry a traceback across processes; the caller raises ``Full`` or
``Empty`` from it.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import _api
from .._compat import module_getattr

__all__ = ["Empty", "Full", "Queue"]


class Empty(queue.Empty):
    """Raised by ``get`` on an empty Queue: at once without blocking, else on timeout."""


class Full(queue.Full):
    """Raised by ``put`` on a full Queue: at once without blocking, else on timeout."""


@dataclass(frozen=True, slots=True)
class _Refused:
    """What the queue actor returns instead of raising: why the operation did not happen."""

    reason: str


class _QueueActor:
    """The actor holding the items. Its sync methods run on its event loop too, so no two
    methods ever touch the queue at once."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    def put_nowait(self, item: Any) -> _Refused | None:
        if self.queue.full():
            return _Refused(f"the queue is full ({self.maxsize} items)")
        self.queue.put_nowait(item)
        return None

    def get_nowait(self) -> Any:
        if self.queue.empty():
            return _Refused("the queue is empty")
        return self.queue.get_nowait()

    async def put(self, item: Any, timeout: float | None) -> _Refused | None:
        if not self.queue.full():  # no wait: keeps FIFO order with put_nowait calls
            self.queue.put_nowait(item)
            return None
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            return _Refused(f"the queue stayed full ({self.maxsize} items) for {timeout} s")
        return None

    async def get(self, timeout: float | None) -> Any:
        if not self.queue.empty():  # no wait: a zero timeout still takes a ready item
            return self.queue.get_nowait()
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return _Refused(f"the queue stayed empty for {timeout} s")

    def put_nowait_batch(self, items: list[Any]) -> _Refused | None:
        if self.maxsize > 0 and len(items) + self.qsize() > self.maxsize:
            return _Refused(
                f"Cannot add {len(items)} items to queue of size {self.qsize()} and maxsize "
                f"{self.maxsize}."
            )
        for item in items:
            self.queue.put_nowait(item)
        return None

    def get_nowait_batch(self, num_items: int) -> list[Any] | _Refused:
        if num_items > self.qsize():
            return _Refused(f"Cannot get {num_items} items from queue of size {self.qsize()}.")
        return [self.queue.get_nowait() for _ in range(num_items)]

    def close(self) -> None:
        """Answers once every call sent before it has started: the graceful shutdown."""


_QueueActorClass: Any = _api.remote(_QueueActor)


def _check_seconds(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name!r} must be a non-negative number or None, got {value!r}.")


def _accepted(result: Any, error: type[Exception]) -> Any:
    """``result`` if the actor did the operation; raises ``error`` if it refused."""
    if isinstance(result, _Refused):
        raise error(result.reason)
    return result


class Queue:
    """A first-in, first-out queue held by an actor, usable from the driver, tasks and
    actors (pass it as an argument); like ``asyncio.Queue``, with sync and async methods.

    Args:
        maxsize: the most items it holds; ``0`` (or less) for no limit.
        actor_options: options of the queue's actor, as ``.options(...)`` takes them
            (``{"name": "jobs"}``, ``{"num_cpus": 1}``, ...).

    Example:
        >>> q = Queue(maxsize=100)
        >>> @raylite.remote
        ... def produce(q, n):
        ...     for i in range(n):
        ...         q.put(i)
        >>> done = produce.remote(q, 3)
        >>> [q.get(timeout=10) for _ in range(3)]
        [0, 1, 2]

    Raises:
        TypeError: ``maxsize`` is not an int.
        ValueError: a bad actor option.
    """

    # The actor class holding the items; a subclass may extend it (Ray's test helper
    # BatchQueue, in raylite._private.test_utils, adds get_batch).
    _actor_class: Any = _QueueActorClass

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(
                f"Queue(maxsize=...) must be an int (0 for no limit), got "
                f"{type(maxsize).__name__} {maxsize!r}."
            )
        self.maxsize = maxsize
        self.actor: Any = self._actor_class.options(**(actor_options or {})).remote(maxsize)

    def __reduce__(self) -> Any:
        return (_attach, (type(self), self.actor, self.maxsize))

    def __repr__(self) -> str:
        return f"Queue(maxsize={self.maxsize}, actor={self.actor!r})"

    def __len__(self) -> int:
        return self.size()

    def _handle(self) -> Any:
        if self.actor is None:
            raise RuntimeError(
                "This Queue was shut down (Queue.shutdown()), so its items are gone: "
                "create a new Queue."
            )
        return self.actor

    def size(self) -> int:
        """The number of items in the queue now."""
        n: int = _api.get(self._handle().qsize.remote())
        return n

    def qsize(self) -> int:
        """The number of items in the queue now (same as :meth:`size`)."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue holds no item now."""
        return bool(_api.get(self._handle().empty.remote()))

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items now."""
        return bool(_api.get(self._handle().full.remote()))

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Adds ``item`` at the end of the queue.

        Args:
            item: any picklable value (an ObjectRef is resolved to its value, as for
                every top-level argument of a call).
            block: wait for room if the queue is full; else raise ``Full`` at once.
            timeout: with ``block``, seconds to wait for room at most (``None``: no limit).

        Raises:
            Full: the queue is full (and stayed full for ``timeout`` seconds).
            ValueError: a negative ``timeout``.
        """
        _accepted(_api.get(self._put_ref(item, block, timeout)), Full)

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """As :meth:`put`, awaited instead of blocking (for async actors and coroutines)."""
        _accepted(await self._put_ref(item, block, timeout), Full)

    def _put_ref(self, item: Any, block: bool, timeout: float | None) -> Any:
        actor = self._handle()
        if not block:
            return actor.put_nowait.remote(item)
        _check_seconds("timeout", timeout)
        return actor.put.remote(item, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Removes and returns the item at the front of the queue.

        Args:
            block: wait for an item if the queue is empty; else raise ``Empty`` at once.
            timeout: with ``block``, seconds to wait for an item at most (``None``: no
                limit).

        Returns:
            The oldest item.

        Raises:
            Empty: the queue is empty (and stayed empty for ``timeout`` seconds).
            ValueError: a negative ``timeout``.
        """
        return _accepted(_api.get(self._get_ref(block, timeout)), Empty)

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """As :meth:`get`, awaited instead of blocking (for async actors and coroutines)."""
        return _accepted(await self._get_ref(block, timeout), Empty)

    def _get_ref(self, block: bool, timeout: float | None) -> Any:
        actor = self._handle()
        if not block:
            return actor.get_nowait.remote()
        _check_seconds("timeout", timeout)
        return actor.get.remote(timeout)

    def put_nowait(self, item: Any) -> None:
        """Same as ``put(item, block=False)``.

        Raises:
            Full: the queue is full.
        """
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        """Same as ``get(block=False)``.

        Raises:
            Empty: the queue is empty.
        """
        return self.get(block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Adds all ``items``, in order, in one call to the actor; or none of them.

        Raises:
            Full: they do not all fit in the queue now.
            TypeError: ``items`` is not iterable.
        """
        if not isinstance(items, Iterable):
            raise TypeError(
                f"Queue.put_nowait_batch(items) needs an iterable of items, got "
                f"{type(items).__name__} {items!r}."
            )
        _accepted(_api.get(self._handle().put_nowait_batch.remote(list(items))), Full)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Removes and returns the ``num_items`` oldest items, in one call; or none.

        Returns:
            The items, oldest first.

        Raises:
            Empty: the queue holds fewer than ``num_items`` items now.
            TypeError, ValueError: ``num_items`` is not an int >= 0.
        """
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError(
                f"Queue.get_nowait_batch(num_items) needs an int, got "
                f"{type(num_items).__name__} {num_items!r}."
            )
        if num_items < 0:
            raise ValueError(
                f"Queue.get_nowait_batch(num_items) needs num_items >= 0, got {num_items}."
            )
        ref = self._handle().get_nowait_batch.remote(num_items)
        items: list[Any] = _accepted(_api.get(ref), Empty)
        return items

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Ends the queue's actor (its items are lost) and frees what it holds.

        Args:
            force: kill the actor at once. Otherwise it first gets ``grace_period_s``
                seconds to take the calls already sent to it.
            grace_period_s: without ``force``, how long to wait before killing it.

        Calls still waiting in the actor (a blocked ``get``) then fail with
        ``ActorDiedError``; calls on this Queue afterwards raise ``RuntimeError``.
        Repeating it does nothing.
        """
        if not force:
            _check_seconds("grace_period_s", grace_period_s)
        actor, self.actor = self.actor, None
        if actor is None:
            return
        if not force:
            _api.wait([actor.close.remote()], timeout=grace_period_s)
        _api.kill(actor, no_restart=True)


def _attach(cls: type[Queue], actor: Any, maxsize: int) -> Queue:
    """A Queue (of class ``cls``) on an existing queue actor: how a pickled one comes back."""
    q = cls.__new__(cls)
    q.maxsize = maxsize
    q.actor = actor
    return q


__getattr__ = module_getattr(__name__)  # a Ray name raylite lacks: an error that says so
