"""Pre-faulted spare segments for big puts, made ahead of time by one background thread.

::

    driver, runtime lock held (ObjectStore)             thread "raylite-spares"
    ---------------------------------------             -----------------------
    after a big write: request(capacity) ── _todo ──>   make(capacity): a new segment,
      counts it in ``pending`` (against capacity)         posix_fallocate: every page
    ObjectStore.reserve: collect() <──── _done ──────    allocated and zeroed now
      made -> the SegmentPool, where the next put           (or the error it raised)
      of that size finds pages that already exist
      failed -> a RuntimeWarning, no more spares
    store over capacity: cancel(): uncounted at once; ──>  closes what it made for a
      what was made for it goes back to be closed           cancelled request (freeing
                                                            pages takes time too)
    close() (shutdown): stop the thread, join it, close whatever it made

Why: a put into fresh shared memory pays for allocating and zeroing each 4 KiB page while it
copies (100 MB: ~60-70 ms here, 3.5x a numpy copy), where a put into pages that exist already
is one copy (~22 ms, 1.1-1.2x). A shmem file's writes are serialized on its inode lock, so
copying with several threads into one segment does not help (measured: no gain on 2 cores);
allocating the pages beforehand, off the caller's path, does.

Only this module's thread touches the queues' far ends; it never takes the runtime's lock
and never touches the store's books: the driver collects what it made, under its own lock.
"""

from __future__ import annotations

import threading
import warnings
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Segment

__all__ = ["Spares"]


class _Request:
    """One spare asked of the thread; ``cancelled`` is set by the driver, read by both."""

    __slots__ = ("capacity", "cancelled")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.cancelled = False


class Spares:
    """Pre-faulted segments made in the background, handed to the store's pool.

    Not thread-safe on the driver's side: the store calls it with the runtime lock held.
    The thread starts at the first request, so a program that makes no big put has none.

    Args:
        make: ``make(capacity)``: a new segment whose pages exist (``Segment.prefaulted``).
    """

    def __init__(self, make: Callable[[int], Segment]) -> None:
        self._make = make
        self.pending = 0  # bytes requested and not yet collected (or cancelled)
        self._requests: list[_Request] = []  # the ones counted in ``pending``
        # a spare to make, one nobody will use to close, or None: stop
        self._todo: SimpleQueue[_Request | Segment | None] = SimpleQueue()
        # [(request, its segment or the exception that stopped it)], appended by the thread
        self._done: deque[tuple[_Request, Segment | BaseException]] = deque()
        self._thread: threading.Thread | None = None
        self._asked = 0  # requests handed to the thread, ever (read by wait())
        self._answered = 0  # requests the thread is done with, ever (under _changed)
        self._changed = threading.Condition()
        self.failed: BaseException | None = None  # the thread's error: no more spares then

    def covers(self, size: int) -> bool:
        """True if a spare already asked for will fit a put of ``size`` bytes."""
        return any(size <= r.capacity <= 2 * size for r in self._requests)

    def request(self, capacity: int) -> None:
        """Asks the thread for a spare of ``capacity`` bytes; counted in ``pending`` now."""
        if self.failed is not None:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="raylite-spares", daemon=True)
            self._thread.start()
        req = _Request(capacity)
        self._requests.append(req)
        self.pending += capacity
        self._asked += 1
        self._todo.put(req)

    def wait(self, timeout: float) -> bool:
        """Waits until the thread is done with every request made so far (for benchmarks
        and tests: a put never waits for a spare); False if ``timeout`` seconds passed."""
        asked = self._asked
        with self._changed:
            return self._changed.wait_for(lambda: self._answered >= asked, timeout)

    def collect(self) -> list[Segment]:
        """The spares made since the last call; warns (once) if the thread failed."""
        made = []
        while self._done:
            req, outcome = self._done.popleft()
            if not req.cancelled:
                self._requests.remove(req)
                self.pending -= req.capacity
            if isinstance(outcome, BaseException):
                if self.failed is None:
                    self.failed = outcome
                    warnings.warn(
                        "raylite could not pre-fault a spare shared-memory segment of "
                        f"{req.capacity / 1e6:,.1f} MB ({outcome!r}); big puts now write into "
                        "fresh memory, which is slower but works. Free memory, or set "
                        "RAYLITE_SPARE_FRACTION=0 to stop trying.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            elif req.cancelled:
                self._discard(outcome)
            else:
                made.append(outcome)
        return made

    def cancel(self) -> int:
        """Drops every spare not yet collected; returns the bytes no longer counted."""
        dropped = self.pending
        for req in self._requests:
            req.cancelled = True
        self._requests.clear()
        self.pending = 0
        return dropped

    def close(self) -> None:
        """Stops the thread (after the spare it is making) and closes every spare."""
        self.cancel()
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        for segment in self.collect():  # none: all were cancelled, and closed as collected
            segment.close()

    def _discard(self, segment: Segment) -> None:
        """Closes a spare nobody will use, on the thread while it runs: freeing its pages
        takes as long as making them (~0.7 ms per MB), which a put should not wait for."""
        if self._thread is not None:
            self._todo.put(segment)
        else:
            segment.close()

    def _run(self) -> None:
        while (req := self._todo.get()) is not None:
            if not isinstance(req, _Request):
                req.close()
                continue
            if not req.cancelled:
                try:
                    outcome: Segment | BaseException = self._make(req.capacity)
                except BaseException as exc:  # handed to the driver, which warns: never lost
                    outcome = exc
                if req.cancelled and not isinstance(outcome, BaseException):
                    outcome.close()  # cancelled while made: the driver has forgotten it
                else:
                    self._done.append((req, outcome))
            with self._changed:
                self._answered += 1
                self._changed.notify_all()
