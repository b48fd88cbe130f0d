"""The driver's I/O thread ("raylite-io"): its loop, and what only it reads (``IoLoop``).

::

    select(worker sockets, zygote, wake pipe) ──> IoLoop.turn(rt, events)  (under the lock)
          ^                                        ├ wake pipe: emptied; new workers' sockets
          │                                        │   registered (WorkerSet.register_new)
          │                                        ├ zygote ──> rt._on_zygote(): births, deaths
          │                                        ├ a worker's bytes ──> rt._receive(w, chunk)
          │                                        │   EOF ──> rt._channel_closed(w)
          │                                        ├ deadlines due ──> their callbacks
          │                                        ├ WorkerSet: flush queued output, watch
          │                                        │   full sockets (watch_writable)
          │                                        ├ rt._watchdog.watch_pending()
          │                                        └ then, unlocked: rt's after-unlock queue
          └─ timeout: the next deadline; NAP_S  <──┘   (futures resolved)
             after a turn with events
    any thread ── IoLoop.wake(): a byte on the wake pipe ──> a turn soon
    ObjectRef.__del__ ── LocalRuntime.release: queued; wakes the loop only if ``sleeping``
    rt._shutdown_requested (by a signal handler) ──> rt.shutdown() from here
    any exception ──> rt._io_failed(traceback): every waiter gets RaySystemError; the loop ends

The thread holds the runtime weakly, so a runtime nobody references can be collected (the
loop then ends at its next wake-up). The runtime owns the ``IoLoop`` and decides what each
message, birth and death means; the loop owns the selector, the wake pipe and the deadlines.

Releases without a wake-up: while the driver is busy (the last turn had events) the loop
naps at most ``NAP_S`` and settles queued releases in its next turn, if no section did
first; a release writes the wake pipe only while the loop may sleep longer than that
(``sleeping``). The handshake needs no lock (the GIL orders it): the loop sets ``sleeping``,
*then* looks at the queue; ``release`` appends, *then* reads ``sleeping``. So either the
loop sees the release, or the release sees the flag and wakes it: a dropped ref's object
is freed within ``NAP_S`` of the program going idle, never at its next call.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import time
import traceback
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from .protocol import FdsDropped

if TYPE_CHECKING:
    from .runtime import LocalRuntime

__all__ = ["ZYGOTE", "IoLoop", "io_main"]

WAKE = "wake"  # the selector's tag for the wake pipe
ZYGOTE = "zygote"  # and for the zygote's socket; a worker's socket is tagged with its Worker
# The longest select after a turn with events: queued releases wait at most this long for
# the loop when no section applies them first. It spares the wake-pipe write that each
# ``del ref`` of a sync loop cost (~24 us of the caller's CPU, and a wake-up of this thread
# that then held the lock the next ``.remote()`` wanted); an idle driver pays one extra
# turn, NAP_S after its last event.
NAP_S = 0.005


class IoLoop:
    """The selector, the wake pipe and the deadlines of the I/O thread, and its turns."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        try:
            self._wake_r, self._wake_w = os.pipe()
        except BaseException:
            self.sel.close()
            raise
        try:
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self.sel.register(self._wake_r, selectors.EVENT_READ, WAKE)
        except BaseException:
            self.close()
            raise
        self._deadlines: list[tuple[float, int, Callable[[], None]]] = []  # a heap
        self._order = itertools.count()  # ties between equal deadlines: first set, first run
        # True while select may sleep longer than NAP_S: a release must wake it (see the
        # module docstring). Written by the loop, and cleared by the release that wakes it.
        self.sleeping = False

    def wake(self) -> None:
        """Makes the I/O thread run a turn soon (any thread; never blocks). The caller makes
        sure the pipe is still open (see ``LocalRuntime._wake``)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # full (it wakes anyway), or closed by a concurrent shutdown
            pass

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Runs ``fn`` in the I/O thread's first turn at or after ``when`` (time.monotonic;
        lock held). Off the I/O thread, the caller wakes it, to recompute its timeout."""
        heapq.heappush(self._deadlines, (when, next(self._order), fn))

    def close(self) -> None:
        """Closes the selector and the wake pipe (the thread has ended, or is not ours)."""
        self.sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def turn(
        self, rt: LocalRuntime, events: list[tuple[selectors.SelectorKey, int]]
    ) -> float | None:
        """A step under the lock, then the futures to resolve; returns select's timeout."""
        with rt._lock:
            if rt._closed:
                return None
            rt._settle()
            timeout = self._step(rt, events)
        rt._guard.run_after()
        if timeout is not None and timeout <= NAP_S:
            return timeout
        if events:  # busy: nap, and settle what the next ones release in the next turn
            return NAP_S
        self.sleeping = True  # from now on a release wakes this thread...
        if rt._objs.releases:  # ...and one queued before is seen here (or during the step)
            self.sleeping = False
            return NAP_S
        return timeout

    def _step(
        self, rt: LocalRuntime, events: list[tuple[selectors.SelectorKey, int]]
    ) -> float | None:
        """Reads what the events say is there, runs due deadlines, flushes (lock held)."""
        workers = rt._workers
        for key, _mask in events:
            data = key.data
            if data is WAKE:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                workers.register_new()
            elif data is ZYGOTE:
                rt._on_zygote()
            elif not data.gone:
                try:
                    chunk = data.chan.read()
                except (BlockingIOError, InterruptedError):
                    continue
                except FdsDropped as exc:  # at the open-files limit
                    workers.kill(data, str(exc))
                    continue
                except OSError:  # reset: the worker is dying
                    chunk = b""
                if chunk:
                    rt._receive(data, chunk)
                else:
                    rt._channel_closed(data)
        workers.register_new()
        timeout = self._run_deadlines()  # before the flush: an expiry queues a reply
        workers.flush_dirty()
        workers.watch_writable()  # a full socket: hear when it drains
        return rt._watchdog.watch_pending(timeout)

    def _run_deadlines(self) -> float | None:
        """Runs expired deadlines; returns seconds until the next one."""
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            heapq.heappop(self._deadlines)[2]()
        return max(0.0, self._deadlines[0][0] - now) if self._deadlines else None


def io_main(ref: weakref.ref[LocalRuntime]) -> None:
    """The I/O thread's loop: holds only a weak reference, so the runtime can be collected.

    Nothing may end it but shutdown: whatever else fails here (a bug of ours) breaks the
    runtime at once, so every waiter gets a ``RaySystemError`` that says why, never a hang.
    """
    timeout: float | None = None
    while True:
        rt = ref()
        if rt is None or rt._closed:
            return
        loop = rt._loop
        del rt
        try:
            events = loop.sel.select(timeout)
        except (OSError, ValueError):  # closed under us at shutdown, or broken
            events = None
        loop.sleeping = False  # awake: releases need not write the pipe
        rt = ref()
        if rt is None:
            return
        try:
            if events is None:
                if rt._closed:
                    return
                raise RuntimeError("the I/O thread's selector failed")
            timeout = loop.turn(rt, events)
            if rt._shutdown_requested:  # by a signal handler: see shutdown()
                rt.shutdown()
                return
        except BaseException:  # noqa: BLE001 (no exception may end this thread unnoticed)
            rt._io_failed(traceback.format_exc())
            return
        del rt
