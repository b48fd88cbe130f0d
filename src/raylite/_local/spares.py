"""Pre-faulted spare segments for big puts, made ahead of time by one background thread,
which also closes the big segments the store drops (freeing pages takes time too).

::

    driver, runtime lock held (ObjectStore)          thread "raylite-spares"
    ---------------------------------------          -----------------------
    after a big write: request(capacity) ─ _todo ─>  make(capacity): a new segment whose
      counted in ``pending`` (against capacity)        pages all exist (posix_fallocate)
    reserve(): take(size) <─── _Request.segment ──   sets the request's segment, or its
      a ready spare of about that size, or None        error (the driver warns, once)
    reserve(): collect(): uncounts the spares        a spare nobody took for IDLE_S:
      released or failed since                         closed (memory back to the system)
    over capacity: cancel(): uncounted now ─ _todo ─> closes what was made for nothing,
    a big segment dropped: retire(segment) ─ _todo ─>  and what the store retired
    close() (shutdown): stop, join, close every spare

Each ``_Request``'s fields are guarded by ``_cond``; ``pending`` and ``_requests`` are the
driver's, under the runtime lock (the thread never takes it, nor touches the store's books).
A spare stays counted until the driver sees it gone; a retired segment is uncounted when
retired, a moment before its pages are freed.

Why: a put into fresh shared memory pays for allocating and zeroing each 4 KiB page while it
copies (100 MB: ~55 ms of CPU here, 3.2x a numpy copy; ``benchmarks/put_fresh.py``); into
pages that exist it is one copy (~22 ms, 1.3x). A shmem file's writes are serialized on its
inode lock, so copying with several threads into one segment gains nothing (measured);
allocating the pages beforehand, off the caller's path, does.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Segment

__all__ = ["IDLE_S", "Spares"]

IDLE_S = 10.0  # a spare no put took for this long is closed: no memory held for nothing


class _Request:
    """One spare asked of the thread, from request to taken, released or failed."""

    __slots__ = ("capacity", "cancelled", "segment", "ready_at", "released", "error")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.cancelled = False  # by the driver: nobody counts it any more
        self.segment: Segment | None = None  # made and not yet taken
        self.ready_at = 0.0  # time.monotonic() when made
        self.released = False  # closed by the thread after IDLE_S untaken
        self.error: BaseException | None = None  # what making it raised


class Spares:
    """Pre-faulted segments made in the background for the store to take.

    The driver's methods need the runtime lock (one caller at a time). The thread starts at
    the first request, so a program that makes no big put has none.

    Args:
        make: ``make(capacity)``: a new segment whose pages exist (``Segment.prefaulted``).
        idle_s: seconds a made spare waits for a put before it is closed.
    """

    def __init__(self, make: Callable[[int], Segment], *, idle_s: float = IDLE_S) -> None:
        self._make = make
        self._idle_s = idle_s
        self.pending = 0  # bytes of the spares counted: asked for, being made, or ready
        self._requests: list[_Request] = []  # the ones counted in ``pending``
        # a request to serve, a segment nobody will use to close, or None: stop
        self._todo: SimpleQueue[_Request | Segment | None] = SimpleQueue()
        self._cond = threading.Condition()  # guards _Request fields and _answered
        self._asked = 0  # requests handed to the thread, ever
        self._answered = 0  # requests the thread is done with, ever
        self._thread: threading.Thread | None = None
        self._closed = False  # by close(): no thread any more, closes happen at once
        self._crashed: BaseException | None = None  # what ended the thread (a bug)
        self.failed: BaseException | None = None  # the thread's error: no more spares then

    @property
    def held(self) -> int:
        """How many made spares wait to be taken (segments this object owns now)."""
        with self._cond:
            return sum(r.segment is not None for r in self._requests)

    def covers(self, size: int) -> bool:
        """True if a spare counted now fits a write of ``size`` bytes (see :meth:`take`)."""
        return any(size <= r.capacity <= 2 * size for r in self._requests)

    def request(self, capacity: int) -> None:
        """Asks the thread for a spare of ``capacity`` bytes; counted in ``pending`` now."""
        if self.failed is not None or self._closed:
            return
        self._start()
        req = _Request(capacity)
        self._requests.append(req)
        self.pending += capacity
        self._asked += 1
        self._todo.put(req)

    def take(self, size: int) -> Segment | None:
        """The smallest ready spare of ``size`` to ``2 * size`` bytes, now the caller's."""
        with self._cond:
            fits = [r for r in self._requests if r.segment is not None and not r.released]
            fits = [r for r in fits if size <= r.capacity <= 2 * size]
            if not fits:
                return None
            req = min(fits, key=lambda r: r.capacity)
            segment, req.segment = req.segment, None
        self._requests.remove(req)
        self.pending -= req.capacity
        return segment

    def collect(self) -> None:
        """Uncounts the spares the thread released or failed to make; warns (once) if it
        failed: no more spares are asked for then."""
        with self._cond:
            gone = [r for r in self._requests if r.released or r.error is not None]
            errors = [r.error for r in gone if r.error is not None]
            if self._crashed is not None:
                errors.append(self._crashed)
        for req in gone:
            self._requests.remove(req)
            self.pending -= req.capacity
        if errors and self.failed is None:
            self.failed = errors[0]
            warnings.warn(
                f"raylite could not pre-fault a spare shared-memory segment ({errors[0]!r}); "
                "big puts now write into fresh memory, which is slower but works. Free "
                "memory, or set RAYLITE_SPARE_FRACTION=0 to stop trying.",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._crashed is not None:
            self.cancel()  # nobody serves them any more

    def cancel(self) -> int:
        """Drops every spare counted (made ones are closed by the thread); returns the
        bytes no longer counted."""
        dropped = self.pending
        with self._cond:
            for req in self._requests:
                req.cancelled = True
                if req.segment is not None:
                    self.retire(req.segment)
                    req.segment = None
        self._requests.clear()
        self.pending = 0
        return dropped

    def wait(self, timeout: float) -> bool:
        """Waits until the thread is done with every request made so far (for benchmarks
        and tests: a put never waits for a spare); False if ``timeout`` seconds passed."""
        asked = self._asked
        with self._cond:
            return self._cond.wait_for(lambda: self._answered >= asked, timeout)

    def retire(self, segment: Segment) -> None:
        """Closes ``segment`` on the thread: freeing its pages takes about as long as making
        them, which the caller should not wait for. At once if the thread is gone."""
        if self._closed or self._crashed is not None:
            segment.close()
            return
        self._start()
        self._todo.put(segment)

    def close(self) -> None:
        """Stops the thread once it has done what it was asked, and closes every spare."""
        self.cancel()
        self._closed = True
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        while not self._todo.empty():  # left by a thread that crashed
            item = self._todo.get_nowait()
            if item is not None and not isinstance(item, _Request):
                item.close()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="raylite-spares", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug: the driver warns (collect), asks for no more
            with self._cond:
                self._crashed = exc
                self._cond.notify_all()

    def _loop(self) -> None:
        made: list[_Request] = []  # ready spares, oldest first, for the idle timer
        while True:
            try:
                item = self._todo.get(timeout=self._idle_due(made))
            except Empty:
                self._release_idle(made)
                continue
            if item is None:
                return
            if not isinstance(item, _Request):
                item.close()
            elif not item.cancelled:
                self._serve(item)
                made.append(item)
            with self._cond:
                self._answered += isinstance(item, _Request)
                self._cond.notify_all()

    def _serve(self, req: _Request) -> None:
        try:
            segment = self._make(req.capacity)
        except BaseException as exc:  # the driver warns (collect): never lost
            with self._cond:
                req.error = exc
            return
        with self._cond:
            if not req.cancelled:
                req.segment, req.ready_at = segment, time.monotonic()
                return
        segment.close()  # cancelled while it was made

    def _idle_due(self, made: list[_Request]) -> float | None:
        """Seconds until the oldest ready spare is idle; None: none is ready."""
        with self._cond:
            made[:] = [r for r in made if r.segment is not None]
            if not made:
                return None
            return max(0.0, made[0].ready_at + self._idle_s - time.monotonic())

    def _release_idle(self, made: list[_Request]) -> None:
        now = time.monotonic()
        idle = []
        with self._cond:
            for req in made:
                if req.segment is not None and now - req.ready_at >= self._idle_s:
                    idle.append(req.segment)
                    req.segment, req.released = None, True
        for segment in idle:
            segment.close()
