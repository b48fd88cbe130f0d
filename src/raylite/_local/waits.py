"""User threads waiting on the driver's objects and streams: ``get``, ``wait``, futures.

::

    user thread                                  whoever stores an object (lock held)
    -----------                                  ------------------------------------
    get()/wait() ── _wait_for(): a Waiter on     ObjectTable.store() ──> Waiter.hit():
      the objects not ready (a section) ──┐        the last one needed releases the event
      _block(): acquire its event ────────┴────< (or the timeout: then ``fired``, so a
      then read the values (a section)             late hit releases nothing)
    ref.future() ── a Waiter whose hit queues resolve() ──> the I/O thread runs it unlocked
      (DriverLock.after_unlock): unpickles the value, sets the future
    next(gen) / gen.__anext__() ── StreamTable.claim(): a future of the next ref
    wait([gen, ...]) ── StreamTable.watch() + Waiters: woken on any change, looks again

The runtime owns one ``Waits`` and hands it the parts it reads (its lock, the object and
stream tables, the thread runner); sections follow the runtime's rule (``with lock:``, then
``settle()``; see locking.py). Blocking calls refuse to run where they would wait forever:
inside a section, or on the I/O thread, which is what would answer them.
"""

from __future__ import annotations

import concurrent.futures
import errno
import time
from collections.abc import Callable
from typing import Any

from .._object_ref import ObjectRef, ObjectRefGenerator
from ..exceptions import GetTimeoutError, ObjectLostError
from . import serialization as ser
from .locking import DriverLock
from .objects import ObjectTable, Waiter, lost
from .protocol import open_files_limit_reached
from .streams import StreamTable
from .threads import ThreadRunner

__all__ = ["Waits"]


class Waits:
    """``get``, ``wait``, ``ObjectRef.future`` and generator streams for the driver's threads.

    Args:
        guard: the runtime's lock and its queues.
        settle: applies what was queued without the lock (first thing in every section).
        check_alive: raises RaySystemError once the runtime is shut down or broken.
        objs: the object table (values, waiters).
        streams: the generator tasks' streams.
        threads: the thread executor, told when one of its tasks waits (see there).
        flush: sends the queued dispatches, so that the work waited for gets going.
        on_io_thread: whether the caller is the runtime's I/O thread.
        describe: an object's description for an error that names it (the state API's).
        release: drops a hold on an object (``ObjectRef.__del__``'s path).
    """

    def __init__(
        self, *, guard: DriverLock, settle: Callable[[], None], check_alive: Callable[[], None],
        objs: ObjectTable, streams: StreamTable, threads: ThreadRunner, flush: Callable[[], None],
        on_io_thread: Callable[[], bool], describe: Callable[[int], str],
        release: Callable[[int], None],
    ) -> None:  # fmt: skip
        self._guard = guard
        self._lock = guard.lock
        self._settle = settle
        self._check_alive = check_alive
        self._objs = objs
        self._streams = streams
        self._threads = threads
        self._flush = flush
        self._on_io_thread = on_io_thread
        self._describe = describe
        self._release = release

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        """The values of ``refs``, once all are ready (``raylite.get``); GetTimeoutError
        after ``timeout`` seconds."""
        self._refuse_blocking("get()")
        waiter = self._wait_for([r._id for r in refs], None, timeout)
        if waiter is not None and not self._block(waiter, timeout):
            raise GetTimeoutError(
                f"Get timed out: some object(s) not ready after {timeout} s. Use a longer "
                "timeout, or raylite.wait() to take the ones that are ready."
            )
        with self._lock:
            try:
                readable = [self._objs.readable(r._id) for r in refs]
            except OSError as exc:  # mapping a segment takes a file descriptor
                if exc.errno == errno.EMFILE:
                    exc = OSError(exc.errno, f"Cannot map them: {open_files_limit_reached()}")
                raise exc from None
        return ser.load_values(readable, [r._id for r in refs], self._describe)

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        """``(ready, not ready)``: the first ``num_returns`` of ``refs`` (or generators) to be
        ready, or those ready after ``timeout`` seconds (``raylite.wait``)."""
        self._refuse_blocking("wait()")
        if any(type(r) is ObjectRefGenerator for r in refs):
            return self._wait_with_generators(refs, num_returns, timeout)
        waiter = self._wait_for([r._id for r in refs], num_returns, timeout)
        if waiter is not None:
            self._block(waiter, timeout)
        with self._lock:
            ready = [r for r in refs if self._objs[r._id].payload is not None]
        done = ready[:num_returns]
        taken = {r._id for r in done}
        return done, [r for r in refs if r._id not in taken]

    def _wait_with_generators(
        self, items: list[Any], num_returns: int, timeout: float | None
    ) -> tuple[list[Any], list[Any]]:
        """``wait`` over refs and ObjectRefGenerators: a generator is ready once its next
        ref is there or it has ended (Ray's rule). Wakes on any change and looks again."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waiter = Waiter(1)
            assert waiter.event is not None
            with self._lock:
                self._check_alive()
                ready = [x for x in items if self._ready_now(x)]
                timed_out = deadline is not None and time.monotonic() >= deadline
                if len(ready) >= num_returns or timed_out:
                    break
                for x in items:
                    if type(x) is ObjectRefGenerator:
                        self._streams.watch(x.completed()._id, waiter.hit)
                    elif self._objs[x._id].payload is None:
                        self._objs.add_waiter([self._objs[x._id]], waiter)
                self._flush()
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            waiter.event.acquire(timeout=-1 if left is None else left)
            with self._lock:
                waiter.fired = True  # a late hit must not release anything
        done = ready[:num_returns]
        return done, [x for x in items if not any(x is d for d in done)]

    def _ready_now(self, item: Any) -> bool:
        """Whether a ref's value, or an ObjectRefGenerator's next ref, is there (lock held).

        Raises:
            ObjectLostError: a ref's object is gone.
        """
        if type(item) is ObjectRefGenerator:
            return self._streams.status(item.completed()._id)[0]
        entry = self._objs.get(item._id)
        if entry is None:
            raise lost(item._id)
        return entry.payload is not None

    def _wait_for(
        self, oids: list[int], num_returns: int | None, timeout: float | None
    ) -> Waiter | None:
        """Registers a waiter for ``num_returns`` of ``oids`` (all if ``None``) unless that
        many are ready already; flushes queued dispatches so the work gets going."""
        with self._lock:
            self._settle()
            self._check_alive()
            pending = []
            pending_ids = []
            unique = dict.fromkeys(oids)
            for oid in unique:
                entry = self._objs.get(oid)
                if entry is None:
                    raise lost(oid)
                if entry.payload is None:
                    pending.append(entry)
                    pending_ids.append(oid)
            ready = len(unique) - len(pending)
            need = len(pending) if num_returns is None else num_returns - ready
            if need <= 0:
                return None
            waiter = Waiter(need)
            self._objs.add_waiter(pending, waiter)
            self._threads.note_wait(pending_ids, timeout)  # a thread task waiting: see there
            self._flush()
            return waiter

    def _refuse_blocking(self, what: str) -> None:
        """Raises where a blocking call would wait forever: inside a section, or on the
        I/O thread (a future's done-callback), which is what would answer it."""
        self._guard.refuse_here(what)
        if self._on_io_thread():
            raise RuntimeError(
                f"{what} was called on raylite's I/O thread (from a callback of "
                "ObjectRef.future(), most likely), which is the thread that would answer it: "
                "it would wait forever. Call it from another thread, or chain futures instead."
            )

    def _block(self, waiter: Waiter, timeout: float | None) -> bool:
        assert waiter.event is not None
        try:
            if waiter.event.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
                return True
            with self._lock:
                waiter.fired = True  # a late hit must not release anything
                return False
        finally:
            self._threads.done_waiting()

    def future(self, oid: int) -> concurrent.futures.Future[Any]:
        """A future of object ``oid``'s value (``ObjectRef.future``), resolved on the I/O
        thread; it holds the object until then."""
        self._guard.refuse_here("ObjectRef.future()")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def resolve() -> None:  # lock not held: unpickling and the future's callbacks run
            if not fut.set_running_or_notify_cancel():  # cancelled (a timed-out await)
                return
            with self._lock:
                entry = self._objs.get(oid)
                ready = entry is not None and entry.payload is not None
                readable = self._objs.readable(oid) if ready else None
            try:
                if readable is None:
                    raise ObjectLostError(f"{oid:056x}", "It was freed before it was read.")
                value = ser.load_value(*readable)
            except BaseException as exc:  # the task's error, or the value cannot be read
                fut.set_exception(exc)
                return
            fut.set_result(value)

        with self._lock:
            self._settle()
            self._check_alive()
            entry = self._objs.get(oid)
            ready = entry is None or entry.payload is not None
            if entry is not None and not ready:
                self._objs.hold([oid])  # the future keeps the object alive until it resolves
                if entry.waiters is None:
                    entry.waiters = []
                entry.waiters.append(Waiter(1, lambda: self._guard.after_unlock(resolve)))
                fut.add_done_callback(lambda _: self._release(oid))
            self._flush()
        if ready:
            resolve()
        return fut

    def stream_next(self, gen_oid: int) -> ObjectRef | None:
        """The next ref of generator ``gen_oid``'s stream, once there; None at its end."""
        self._refuse_blocking("next() on an ObjectRefGenerator")
        claim = self.stream_future(gen_oid)
        try:
            return claim.result()
        except BaseException:  # interrupted (Ctrl-C): give the turn back
            claim.cancel()
            raise

    def stream_future(self, gen_oid: int) -> concurrent.futures.Future[ObjectRef | None]:
        """The next ref (None at the end) as a future; cancelling it gives its turn back."""
        with self._lock:
            self._settle()
            self._check_alive()
            claim = self._streams.claim(gen_oid)
            self._flush()
            return claim

    def stream_status(self, gen_oid: int) -> tuple[bool, bool]:
        """``(next_ready, exhausted)``: whether ``next`` would not block, whether it ends."""
        with self._lock:
            self._settle()
            return self._streams.status(gen_oid)
