"""What ``Pool``'s asynchronous methods return: ``AsyncResult`` and the ``imap`` iterators.

::

    raylite's thread (no callbacks) ─┐
    pool manager thread ─────────────┴─ _set_chunk(index, ok, value) ─> result ─ get()/next() ─> user
                                        _set_length(chunks)  (imap)     (own lock + event/condition)

Two threads deliver: raylite's, for results that run no user code (``direct``: one thread
hop less between a worker's reply and ``get``), and the pool's manager thread, for results
with callbacks and for failures it decides (terminate). Each result guards its state with
its own lock; user threads only read. A result's callbacks run on the manager thread, before
``ready()`` turns true, as ``multiprocessing``'s do on its result handler thread: a callback
should return quickly, or it holds up the pool's other results.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing import TimeoutError
from typing import Any

__all__ = ["AsyncResult", "IMapIterator", "IMapUnorderedIterator", "RemoteTraceback"]

_log = logging.getLogger(__name__)


class RemoteTraceback(Exception):
    """The worker-side traceback of a task's exception, set as that exception's ``__cause__``
    (as ``multiprocessing.pool`` does), so the traceback printed in the driver shows where
    in the worker it was raised."""

    __module__ = "raylite.util.multiprocessing"

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _run_callback(callback: Callable[[Any], object] | None, value: Any) -> None:
    if callback is None:
        return
    try:
        callback(value)
    except Exception:  # the pool goes on; the user sees the traceback on stderr
        _log.exception("raylite Pool: a result callback raised; the pool goes on without it")


class AsyncResult:
    """The result of ``apply_async``, ``map_async`` or ``starmap_async``.

    ``get`` returns the value or raises the task's exception, ``wait`` waits without either,
    ``ready`` and ``successful`` say where it stands; as ``multiprocessing.pool.AsyncResult``.
    """

    __module__ = "raylite.util.multiprocessing"

    def __init__(
        self,
        *,
        chunks: int,
        single: bool,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        keep_alive: object,
    ) -> None:
        """Args:
        chunks: how many chunk outcomes make the result (0: done at once, ``[]``).
        single: the result is the one value of its one chunk (``apply``), not a list.
        callback: called with the value once every chunk succeeded.
        error_callback: called with the exception of the first chunk that failed.
        keep_alive: held until the result is ready (the ``Pool``, as ``multiprocessing``
            does, so ``Pool(2).map_async(...)`` alone is not garbage collected mid-way).
        """
        self._event = threading.Event()
        self._lock = threading.Lock()  # the manager and raylite's thread both deliver
        self.direct = callback is None and error_callback is None  # no user code to run
        self._parts: list[list[Any]] = [[] for _ in range(chunks)]  # [chunk's values]
        self._remaining = chunks
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._keep_alive: object = keep_alive
        self._success = False
        self._value: Any = None
        if chunks == 0:
            self._finish(True, [])

    def _set_chunk(self, index: int, ok: bool, value: Any) -> None:
        with self._lock:
            if self._remaining <= 0:  # decided already (done, or an earlier chunk failed)
                return
            if ok:
                self._parts[index] = value
                self._remaining -= 1
                if self._remaining:
                    return
                parts, self._parts = self._parts, []
                value = parts[0][0] if self._single else list(itertools.chain(*parts))
            else:
                self._remaining = 0
        self._finish(ok, value)

    def _finish(self, ok: bool, value: Any) -> None:
        self._success, self._value = ok, value
        _run_callback(self._callback if ok else self._error_callback, value)
        self._keep_alive = None
        self._event.set()

    def ready(self) -> bool:
        """True once the result is in (a value or an exception)."""
        return self._event.is_set()

    def successful(self) -> bool:
        """True if the call(s) returned without raising.

        Raises:
            ValueError: the result is not ready yet.
        """
        if not self._event.is_set():
            raise ValueError(f"{self!r} not ready: call wait() or get() first")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Waits until the result is ready, or ``timeout`` seconds."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The value, once ready.

        Raises:
            multiprocessing.TimeoutError: not ready within ``timeout`` seconds.
            Exception: the exception a task raised (its ``__cause__`` carries the worker's
                traceback), or why the pool could not run it.
        """
        if not self._event.wait(timeout):
            raise TimeoutError(f"the pool's result was not ready within {timeout} s")
        if self._success:
            return self._value
        raise self._value

    def __repr__(self) -> str:
        state = "pending" if not self.ready() else ("ok" if self._success else "failed")
        return f"<raylite.util.multiprocessing.AsyncResult {state}>"


class IMapIterator:
    """What ``imap`` returns: the results in the iterable's order, as they come in."""

    __module__ = "raylite.util.multiprocessing"
    _ordered = True
    direct = True  # delivery runs no user code

    def __init__(self, *, keep_alive: object) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[tuple[bool, Any]] = deque()  # ready to yield: (ok, value)
        self._early: dict[int, tuple[bool, Any]] = {}  # {chunk index: outcome} (ordered)
        self._next_chunk = 0  # the next chunk whose items go to _items (ordered)
        self._chunks_in = 0  # chunks moved to _items so far
        self._length: int | None = None  # total chunks, once the iterable is exhausted
        self._keep_alive: object = keep_alive

    def _set_chunk(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if not self._ordered:
                self._push(ok, value)
            else:
                self._early[index] = (ok, value)
                while self._next_chunk in self._early:
                    self._push(*self._early.pop(self._next_chunk))
                    self._next_chunk += 1
            self._cond.notify_all()

    def _push(self, ok: bool, value: Any) -> None:
        # A chunk that failed yields its exception once, in place of its values.
        self._items.extend(((True, v) for v in value) if ok else ((False, value),))
        self._chunks_in += 1
        if self._chunks_in == self._length:
            self._keep_alive = None

    def _set_length(self, chunks: int) -> None:
        with self._cond:
            self._length = chunks
            if self._chunks_in == chunks:
                self._keep_alive = None
            self._cond.notify_all()

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next result.

        Raises:
            StopIteration: no results left.
            multiprocessing.TimeoutError: none came within ``timeout`` seconds.
            Exception: the exception this position's task raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._length is not None and self._chunks_in == self._length:
                    raise StopIteration
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no result from the pool within {timeout} s")
                self._cond.wait(left)
            ok, value = self._items.popleft()
        if ok:
            return value
        raise value

    __next__ = next


class IMapUnorderedIterator(IMapIterator):
    """What ``imap_unordered`` returns: the results in the order they finish."""

    __module__ = "raylite.util.multiprocessing"
    _ordered = False
