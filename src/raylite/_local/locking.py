"""The driver's lock, and the work queued for whoever holds it next.

::

    any thread, never blocking                     the next holder of the lock
    --------------------------                     ---------------------------
    ObjectRef.__del__ ── release ──> ObjectTable.releases ─┐
    a call made on a thread that holds the lock already    ├─> settle(), first thing in
      (a __del__ run by the collector, a signal handler)   │   every section (the I/O
      .remote(), cancel(), kill() ──> defer(op) ─> _deferred┘   thread's turns included:
                                    it is woken for a deferred op, and for a release only
                                    when it sleeps longer than io_thread.NAP_S)
    shutdown() there ──> the I/O thread or atexit finishes it

    lock holders                                   the I/O thread, the lock released
    ------------                                   ---------------------------------
    a future's object is ready ──> after_unlock(fn) ─> _after ─> run_after()

Rules, each against a hang seen in the field:

- Sections are ``with lock:`` blocks. The lock is a C lock whose ``__enter__``/``__exit__``
  run no Python code, so an interrupt (Ctrl-C, a signal handler's exception) can land
  before the lock is taken or inside the block, never between: ``acquire()`` followed by
  ``try:`` leaves it held in about half of the interrupts that land there.
- Code that runs on a thread at an arbitrary instant (``__del__``, signal handlers) may
  find its own thread inside a section: an ``RLock`` lets it see that (``held_here``)
  instead of deadlocking on itself, and it then queues its work instead of changing the
  state under the interrupted section's feet. ``get``, ``wait`` and ``put`` cannot be
  queued (they need an answer): there they raise, saying why.
- Nothing that runs user code (a future's callbacks, unpickling a value) runs under the
  lock: ``after_unlock`` hands it to the I/O thread, which runs it between its sections.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable

__all__ = ["DriverLock"]


class DriverLock:
    """The runtime's lock and its two queues (see the module docstring).

    Args:
        wake: makes the I/O thread run a step soon; called from any thread, never blocks.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self.lock = threading.RLock()  # re-entered never: an RLock only to see who holds it
        self._wake = wake
        self._deferred: deque[Callable[[], None]] = deque()  # ops for the next holder
        self._after: deque[Callable[[], None]] = deque()  # for the I/O thread, unlocked

    def held_here(self) -> bool:
        """Whether the calling thread is inside a section (so it was interrupted there)."""
        return self.lock._is_owned()  # type: ignore[attr-defined]  # C RLock's, as Condition

    def refuse_here(self, what: str) -> None:
        """Raises if the calling thread is inside a section: ``what`` cannot run there.

        Raises:
            RuntimeError: names ``what`` and where it may be called instead.
        """
        if self.held_here():
            raise RuntimeError(
                f"{what} was called from code that interrupted raylite on this thread (a "
                "__del__ method run by the garbage collector, or a signal handler), while "
                "raylite was changing its state: it cannot be answered there. Call it "
                "elsewhere; .remote(), cancel(), kill() and shutdown() may be called there "
                "(they are queued and run as soon as raylite is done)."
            )

    def defer(self, op: Callable[[], None]) -> None:
        """Queues ``op`` for the next holder of the lock (``settle``); any thread."""
        self._deferred.append(op)
        self._wake()

    def settle(self) -> None:
        """Runs the queued ops, in order (lock held). An op that raises is reported on
        stderr (the caller is long gone) and the others still run."""
        deferred = self._deferred
        while deferred:
            op = deferred.popleft()
            try:
                op()
            except Exception:  # as Python does for an exception in __del__: say it, go on
                sys.stderr.write("raylite: a call queued from a __del__ or signal handler failed:\n")
                traceback.print_exc()

    def after_unlock(self, fn: Callable[[], None]) -> None:
        """Has the I/O thread run ``fn`` outside the lock (lock held)."""
        self._after.append(fn)
        self._wake()

    def run_after(self) -> None:
        """Runs what ``after_unlock`` queued (lock not held). Each runs even if an earlier
        one raised; the first error is raised at the end."""
        error: BaseException | None = None
        after = self._after
        while after:
            try:
                after.popleft()()
            except BaseException as exc:  # noqa: PERF203 (one per callback, rarely)
                error = error or exc
        if error is not None:
            raise error
