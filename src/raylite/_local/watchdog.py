# mypy: disable-error-code="misc"
# (the methods annotate self as LocalRuntime, the class they are mixed into)
"""Tasks that wait too long, as the driver watches for them (part of ``LocalRuntime``).

::

    I/O thread, once a second while tasks wait ──> _warn_pending: one PendingTaskWarning per
        resource shape waiting > RAYLITE_PENDING_WARNING_S, naming who holds the resources
                                              └──> _fail_stalled: ready tasks that can never
        start (every worker blocked in get/wait on tasks that need a worker, none may be
        added) fail with RecursionError, once two checks a second apart agree

``Watchdog`` is a mixin of ``LocalRuntime`` (runtime.py), as ``WorkerMessages`` is: its
methods run with the runtime's lock held, in the I/O thread, on the runtime's state.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

from ..exceptions import PendingTaskWarning

if TYPE_CHECKING:
    from .runtime import LocalRuntime
    from .scheduler import Request
    from .tasks import Task

__all__ = ["Watchdog"]


class Watchdog:
    """The driver's checks on waiting tasks (mixed into ``LocalRuntime``)."""

    def _warn_pending(self: LocalRuntime) -> None:
        """Warns once per resource shape about tasks that have waited longer than
        ``RAYLITE_PENDING_WARNING_S`` (5 s) for resources, naming who holds them."""
        now = time.monotonic()
        waiting = self.sched.waiting_for_resources()
        self._warned_shapes &= set(waiting)  # a shape that drained may warn again later
        for request, (oldest, count) in waiting.items():
            first = self._tasks.get(oldest)
            started = first.submitted if first is not None else now
            if request in self._warned_shapes or now - started < self._pending_warning_s:
                continue
            self._warned_shapes.add(request)
            message = self._pending_message(request, oldest, count, now - started)
            warnings.warn(message, PendingTaskWarning, stacklevel=1)

    def _fail_stalled(self: LocalRuntime) -> None:
        """Fails the ready tasks that can never start because every worker process is
        blocked in ``get``/``wait`` and no more may be started (unbounded recursion, most
        likely), once two checks a second apart agree (the first may see a worker whose
        value is on its way)."""
        stalled = self.sched.stalled()
        if stalled and not self._blocked_for_good():
            stalled = []
        previous, self._stalled = self._stalled, set(stalled)
        for tid in stalled:
            task = self._tasks.get(tid)
            if tid in previous and task is not None and self.sched.cancel(tid):
                self._fail(task, RecursionError(self._stalled_message(task)))

    def _blocked_for_good(self: LocalRuntime) -> bool:
        """Whether every wait of every worker is for tasks that need a worker to run (queued,
        or running on a worker that waits too): not for an actor's call, a thread task or
        a timeout, which could wake a worker without a worker to spare."""
        for w in self._workers.values():
            for oids in w.waits.values():
                if oids is None:
                    return False
                for oid in oids:
                    entry = self._objs.get(oid)
                    if entry is None or entry.payload is not None:
                        return False  # ready: its reply is on the way
                    task = self._tasks.get(entry.task_id)
                    if task is None or task.call is not None:
                        return False
        return True

    def _stalled_message(self: LocalRuntime, task: Task) -> str:
        n = self.config.max_workers
        where = f"nested {task.depth} deep" if task.depth else "submitted by the driver"
        return (
            f"Task {task.name}() ({where}) cannot start: all {n} worker "
            "processes raylite may run are blocked in get() or wait(), waiting for tasks "
            "that need a worker. Is there unbounded recursion in nested tasks? Bound it, or "
            "pass ObjectRefs as task arguments instead of calling get() inside tasks; or "
            f"allow more processes: set the environment variable RAYLITE_MAX_WORKERS (now {n}) "
            "before raylite.init()."
        )

    def _pending_message(self: LocalRuntime, request: Request, oldest: int, count: int, waited: float) -> str:
        holders: dict[str, int] = {}
        for held, task_id in self.sched.holders():
            name = self._describe(task_id)
            key = f"{name} ({held.describe()})"
            holders[key] = holders.get(key, 0) + 1
        held_by = ", ".join(f"{n} x {k}" for k, n in holders.items()) or "nothing running"
        free = self.sched.available() or {"CPU": 0.0}
        return (
            f"{count} task(s) such as {self._describe(oldest)} have waited "
            f"{waited:.0f} s for resources: each needs {request.describe()}, and free now "
            f"is {free}. Held by: {held_by}. They start when those finish; kill or free "
            "what you no longer need, or give raylite.init() more resources."
        )

    def _describe(self: LocalRuntime, task_id: int) -> str:
        task = self._tasks.get(task_id)
        if task is not None:
            return f"task {task.name}()"
        actor = self._actors.creating(task_id)
        return f"actor {actor}" if actor else f"task {task_id:x}"
