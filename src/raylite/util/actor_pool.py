"""``ActorPool``: spread calls over a fixed set of actors, one call per actor at a time.

Ray's ``ray.util.ActorPool`` (https://docs.ray.io/en/latest/ray-core/api/doc/ray.util.ActorPool.html),
same names, arguments and behaviour. ``fn(actor, value)`` makes one call and returns its
ObjectRef (or a list of them, for ``num_returns > 1``). The pool lends each value an idle
actor, which stays busy until the caller collects that call's result; a value submitted
while every actor is busy waits in the pool's backlog and goes to the next actor freed::

    submit(fn, v) ──> idle actor?  yes ──> fn(actor, v) ──> {index: _Call}  ──> get_next()
                                   no  ──> backlog [(fn, v)]                     get_next_unordered()
                                             ^                                       │
                                             └──── an actor comes back (result taken) ┘

``get_next`` returns results in submission order, ``get_next_unordered`` as they finish.
A pool is a plain object used by one thread; it starts nothing of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from .._api import get, wait
from .._compat import module_getattr
from .._object_ref import ObjectRef
from ..exceptions import ActorDiedError

__all__ = ["ActorPool"]

V = TypeVar("V")

_TIMEOUT_MSG = "Timed out waiting for result"


@dataclass(frozen=True, slots=True)
class _Call:
    """One call made on a pool actor whose result the caller has not collected yet."""

    index: int  # submission number: get_next returns these in order
    actor: Any
    result: Any  # what fn returned: an ObjectRef, or a list of them (num_returns > 1)
    marker: ObjectRef  # the ref whose readiness says the call is done


def _marker_of(result: Any) -> ObjectRef:
    """The ref that tells when a call is done: all results of one call are stored together,
    so its first one stands for all of them."""
    first = result[0] if isinstance(result, (list, tuple)) and result else result
    if not isinstance(first, ObjectRef):
        raise TypeError(
            "ActorPool: fn(actor, value) must return the call's ObjectRef (for example "
            f"'lambda a, v: a.method.remote(v)'), got {type(result).__name__} {result!r}."
        )
    return first


class ActorPool:
    """Runs calls on a fixed pool of actors, each actor busy with one call at a time.

    Args:
        actors: the actor handles to use (any objects ``fn`` knows how to call).

    Example:
        >>> @raylite.remote
        ... class Actor:
        ...     def double(self, v):
        ...         return 2 * v
        >>> pool = ActorPool([Actor.remote(), Actor.remote()])
        >>> list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))
        [2, 4, 6, 8]
    """

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle_actors: list[Any] = list(actors)
        self._calls: dict[int, _Call] = {}  # {index: call}, in submission order
        # (fn, value) submitted while no actor was idle; Ray's name, which Ray's own tests
        # (test_actor_pool.py::test_push) read
        self._pending_submits: deque[tuple[Callable[[Any, Any], Any], Any]] = deque()
        self._next_task_index = 0  # the index the next call made gets
        self._next_return_index = 0  # the index get_next returns next

    def __repr__(self) -> str:
        return (
            f"ActorPool(idle={len(self._idle_actors)}, busy={len(self._calls)}, "
            f"backlog={len(self._pending_submits)})"
        )

    def map(self, fn: Callable[[Any, V], Any], values: Iterable[V]) -> Iterator[Any]:
        """Applies ``fn`` to every value on the pool's actors; yields results in order.

        Results of earlier ``submit`` calls not collected yet are discarded first (their
        calls still run), as in Ray. Every value is submitted before this returns; iterate
        the result to collect them.

        Args:
            fn: ``fn(actor, value)`` makes one call and returns its ObjectRef. The actor
                is busy until that ref's value is collected.
            values: the values, one call each.

        Returns:
            An iterator over the results, in the order of ``values``.

        Raises:
            (while iterating) the error of a call that failed, as ``get`` raises it.
        """
        self._discard_uncollected()
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable[[Any, V], Any], values: Iterable[V]) -> Iterator[Any]:
        """As :meth:`map`, but yields each result as soon as its call finishes.

        Returns:
            An iterator over the results, in the order the calls finish.
        """
        self._discard_uncollected()
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def submit(self, fn: Callable[[Any, V], Any], value: V) -> None:
        """Schedules ``fn(actor, value)`` on an idle actor, or once one is free.

        Collect the result with :meth:`get_next` or :meth:`get_next_unordered`.
        """
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        try:
            result = fn(actor, value)
            marker = _marker_of(result)
        except BaseException:
            self._idle_actors.append(actor)  # fn failed: the actor is still free
            raise
        self._calls[self._next_task_index] = _Call(self._next_task_index, actor, result, marker)
        self._next_task_index += 1

    def has_next(self) -> bool:
        """Whether any submitted call's result has not been collected yet."""
        return bool(self._calls)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Returns the result of the next call in submission order, waiting for it.

        Args:
            timeout: seconds to wait at most; ``None`` waits as long as it takes.
            ignore_if_timedout: on timeout, give that call up (its result is never
                returned, its actor goes back to the pool) instead of leaving it to be
                asked for again.

        Returns:
            The call's value (a list of values if ``fn`` returned a list of refs).

        Raises:
            StopIteration: no call is pending.
            ValueError: called after :meth:`get_next_unordered` took the later results.
            TimeoutError: the result was not ready within ``timeout``.
            The call's own error, as ``raylite.get`` raises it.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        call = self._calls[self._next_return_index]
        if timeout is not None:
            ready, _ = wait([call.marker], timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise TimeoutError(_TIMEOUT_MSG)
                self._take(call)
                self._return_actor(call.actor)
                raise TimeoutError(f"{_TIMEOUT_MSG}. The task {call.result} has been ignored.")
        self._take(call)
        return self._result_of(call)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """Returns the result of whichever pending call finishes first.

        Args:
            timeout: seconds to wait at most; ``None`` waits as long as it takes.
            ignore_if_timedout: on timeout, give up the oldest pending call (its result is
                never returned, its actor goes back to the pool).

        Returns:
            The call's value (a list of values if ``fn`` returned a list of refs).

        Raises:
            StopIteration: no call is pending.
            TimeoutError: no result was ready within ``timeout``.
            The call's own error, as ``raylite.get`` raises it.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        by_marker = {call.marker: call for call in self._calls.values()}
        ready, _ = wait(list(by_marker), num_returns=1, timeout=timeout)
        if not ready:
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MSG)
            oldest = next(iter(self._calls.values()))
            self._take(oldest)
            self._return_actor(oldest.actor)
            raise TimeoutError(f"{_TIMEOUT_MSG}. The task {oldest.result} has been ignored.")
        call = by_marker[ready[0]]
        self._take(call)
        return self._result_of(call)

    def has_free(self) -> bool:
        """Whether an actor is idle and no submitted value is waiting for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any:
        """Removes an idle actor from the pool and returns it; ``None`` if none is free."""
        if self.has_free():
            return self._idle_actors.pop()
        return None

    def push(self, actor: Any) -> None:
        """Adds ``actor`` to the pool as idle (it takes a waiting value at once, if any).

        Raises:
            ValueError: the actor is in the pool already.
        """
        busy = [call.actor for call in self._calls.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)

    def _take(self, call: _Call) -> None:
        """Forgets ``call``: its result is being returned (or given up)."""
        del self._calls[call.index]
        self._next_return_index = max(self._next_return_index, call.index + 1)

    def _result_of(self, call: _Call) -> Any:
        """The call's value; its actor goes back to the pool unless the call found it dead."""
        alive = True
        try:
            return get(call.result)
        except ActorDiedError:
            alive = False
            raise
        finally:
            self._return_actor(call.actor, alive)

    def _return_actor(self, actor: Any, alive: bool = True) -> None:
        if alive:
            self._idle_actors.append(actor)
        if self._pending_submits and self._idle_actors:
            self.submit(*self._pending_submits.popleft())

    def _discard_uncollected(self) -> None:
        """Gives up every call whose result was not collected, without waiting for them:
        their actors go back to the pool, where their next calls queue behind them."""
        while self._calls:
            call = next(iter(self._calls.values()))
            self._take(call)
            self._return_actor(call.actor)


__getattr__ = module_getattr(__name__)  # a Ray name raylite lacks: an error that says so
