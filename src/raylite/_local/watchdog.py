"""Tasks that cannot start, as the driver watches for them: ``Watchdog``.

::

    user thread: f.remote() ──> caller_site(): the user's file and line, kept on the Task
    I/O thread, once a second while tasks wait ──> _warn_pending: one PendingTaskWarning per
        resource shape that cannot start until the user acts (its resources are held by idle
        actors, or by tasks blocked in get/wait on what waits for those resources) for
        RAYLITE_PENDING_WARNING_S, naming the holders, at the caller's .remote() line
                                              └──> _fail_stalled: ready tasks that can never
        start (every worker blocked in get/wait on tasks that need a worker, none may be
        added) fail with RecursionError, once two checks a second apart agree
    a worker that cannot be started (no fd left) while none runs ──> _no_worker_started:
        the tasks waiting for one fail at once, naming RLIMIT_NOFILE

``Watchdog`` runs with the runtime's lock held (in the I/O thread, or in the user thread
whose spawn failed). It owns only its own books (shapes warned of, stalled tasks); it reads
the scheduler, the task states, the object table, the worker set and the actor manager it is
given, and ends a task only through the task state machine (``TaskStates.unstartable``).
"""

from __future__ import annotations

import errno
import sys
import time
import warnings
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple

from ..exceptions import PendingTaskWarning, RaySystemError
from .protocol import open_files_limit_reached
from .scheduler import Request
from .task_states import PENDING
from .tasks import DRIVER

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .actors import ActorManager
    from .objects import ObjectTable
    from .scheduler import Scheduler
    from .task_states import Instruction, TaskStates
    from .tasks import Task
    from .workers import WorkerSet

__all__ = ["CallSite", "Watchdog", "caller_site"]


class CallSite(NamedTuple):
    """Where user code called ``.remote()``: a warning about the task points there."""

    filename: str
    lineno: int
    module_globals: dict[str, Any]


# {(file, line): its CallSite}: a program has few .remote() lines, and a task keeps its
# site while it lives; one shared CallSite per line is one object less per pending task
# for the cyclic collector to count (it ran every ~65 tiny tasks of a burst). Emptied when
# full, so exec'd code with ever new globals cannot grow it.
_SITES: dict[tuple[str, int], CallSite] = {}
_MAX_SITES = 256


def caller_site() -> CallSite | None:
    """The innermost frame of the calling thread outside raylite (a few frame hops: ~1 µs),
    from the caller's caller on (the caller is raylite's)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        module_globals = frame.f_globals
        name = module_globals.get("__name__", "")
        if name != "raylite" and not name.startswith("raylite."):
            key = (frame.f_code.co_filename, frame.f_lineno)
            site = _SITES.get(key)
            if site is None or site.module_globals is not module_globals:
                if len(_SITES) >= _MAX_SITES:
                    _SITES.clear()
                site = _SITES[key] = CallSite(key[0], key[1], module_globals)
            return site
        frame = frame.f_back
    return None


class Watchdog:
    """The driver's checks on waiting tasks.

    Args:
        sched, states, objs, workers, actors: the parts it reads (the runtime's).
        carry_out: carries out the task state machine's instructions (the runtime's).
        max_workers: the cap on worker processes (named in the stalled tasks' error).
        pending_warning_s: how long a shape waits, stuck, before it is warned of.
    """

    def __init__(
        self, *, sched: Scheduler, states: TaskStates, objs: ObjectTable, workers: WorkerSet,
        actors: ActorManager, carry_out: Callable[[Iterable[Instruction]], None],
        max_workers: int, pending_warning_s: float,
    ) -> None:  # fmt: skip
        self._sched = sched
        self._states = states
        self._objs = objs
        self._workers = workers
        self._actors = actors
        self._carry_out = carry_out
        self._max_workers = max_workers
        self._pending_warning_s = pending_warning_s
        self._warned_shapes: set[Request] = set()
        self._stuck_since: dict[Request, float] = {}  # {shape: when it was first seen stuck}
        self.watching = False  # tasks wait: the I/O thread looks each second (set by submit)
        self._checked: float = 0.0  # when the I/O thread last looked (watch_pending)
        self._stalled: set[int] = set()  # ready tasks no worker can take (see _fail_stalled)

    def watch_pending(self, timeout: float | None) -> float | None:
        """The I/O thread's look at waiting tasks, at most once a second while any wait:
        warns (``_warn_pending``) and fails the stalled (``_fail_stalled``). Returns select's
        ``timeout``, shortened so the next look comes within a second (lock held)."""
        self.watching = self._sched.pending_count() > 0
        if self.watching:  # look again within a second: see _warn_pending
            now = time.monotonic()
            if now - self._checked >= 1.0:  # not on every step of a busy burst
                self._checked = now
                self._warn_pending()
                self._fail_stalled()
            timeout = 1.0 if timeout is None else min(timeout, 1.0)
        return timeout

    def _warn_pending(self) -> None:
        """Warns once per resource shape about tasks that cannot start until the program
        changes course, once that has lasted ``RAYLITE_PENDING_WARNING_S`` (5 s): what they
        need is held by idle actors, or by tasks blocked in ``get``/``wait`` on results that
        cannot come either. Tasks that merely queue behind running work never warn."""
        now = time.monotonic()
        waiting = self._sched.waiting_for_resources()
        self._warned_shapes &= set(waiting)  # a shape that drained may warn again later
        held = self._held_for_good() if waiting else None
        stuck_since, self._stuck_since = self._stuck_since, {}
        for request, (oldest, count) in waiting.items():
            if held is None or self._fits_without(request, held):
                continue
            since = self._stuck_since[request] = stuck_since.get(request, now)
            if request in self._warned_shapes or now - since < self._pending_warning_s:
                continue
            self._warned_shapes.add(request)
            first = self._states.tasks.get(oldest)
            waited = now - (first.submitted if first is not None and first.submitted else since)
            message = self._pending_message(request, oldest, count, waited)
            site = self._site_of(first) if first is not None else self._actors.site_of(oldest)
            if site is None:  # submitted inside a task: no frame of the driver to point at
                warnings.warn(message, PendingTaskWarning, stacklevel=1)
                continue
            module = site.module_globals.get("__name__", "__main__")
            registry = site.module_globals.setdefault("__warningregistry__", {})
            warnings.warn_explicit(
                message, PendingTaskWarning, site.filename, site.lineno, module, registry,
                module_globals=site.module_globals,
            )  # fmt: skip

    def _site_of(self, task: Task) -> CallSite | None:
        """The driver's ``.remote()`` line that led to ``task``: its own, or, for a task
        submitted inside a task, its outermost parent's (running on the submitter)."""
        seen = 0
        while task.site is None and task.owner != DRIVER and seen < 1000:  # a chain, no loop
            parents = self._sched.queued_on(task.owner)
            parent = self._states.tasks.get(parents[0]) if parents else None
            if parent is None:
                return None
            task, seen = parent, seen + 1
        return task.site

    def _held_for_good(self) -> Request | None:
        """What the holders that cannot make progress on their own hold, summed (or None if
        every holder can): actors that hold resources and have no call to run, and tasks
        blocked in get/wait on results that cannot come (their tasks cannot start while such
        holders hold what they need, or run on such a holder; a wait with a timeout can
        always end). A blocked task has lent its CPUs back, so only its other resources
        count."""
        leases = self._sched.leases()  # [(worker, request, task ids, blocked, dedicated)]
        idle_actors = {
            wid for wid, _, tids, blocked, dedicated in leases
            if dedicated and not blocked and self._actors.idle(tids[0])
        }  # fmt: skip
        stuck = idle_actors | {wid for wid, _, _, blocked, _ in leases if blocked}
        if not stuck:  # the common case, ordinary queueing: no need to look at every task
            return None
        ready = self._sched.ready_ids()
        on_lease = {tid: wid for wid, _, tids, _, _ in leases for tid in tids}

        def held_by(holders: set[int]) -> Request:
            cpu, gpu = 0, 0
            custom: dict[str, int] = {}
            for wid, request, _, blocked, _ in leases:
                if wid in holders:
                    cpu += 0 if blocked else request.cpu
                    gpu += request.gpu
                    for name, amount in request.custom:
                        custom[name] = custom.get(name, 0) + amount
            return Request(cpu, gpu, tuple(custom.items()))

        def can_arrive(oid: int, held: Request) -> bool:
            entry = self._objs.get(oid)
            if entry is None or entry.payload is not None:
                return True  # there, or gone: the wait ends
            if entry.task_id in ready:  # it starts unless what it needs is held for good
                task = self._states.tasks.get(entry.task_id)
                return task is None or self._fits_without(task.request, held)
            wid = on_lease.get(entry.task_id)
            return wid is None or wid not in stuck  # unknown producers count as progress

        changed = True
        while changed:  # free every blocked holder with a wait that can end, until none is left
            changed = False
            held = held_by(stuck)
            for wid in stuck - idle_actors:
                waits = self._workers[wid].waits.values() if wid in self._workers else [None]
                if any(oids is None or any(can_arrive(o, held) for o in oids) for oids in waits):
                    stuck.discard(wid)
                    changed = True
        return held_by(stuck) if stuck else None

    def _fits_without(self, request: Request, held: Request) -> bool:
        """Whether ``request`` could start once every holder but those of ``held`` finished."""
        sched = self._sched
        if request.cpu > sched.total_cpu - held.cpu:
            return False
        if request.gpu > sum(sched.gpu_total) - held.gpu:
            return False
        held_custom = dict(held.custom)
        return all(
            amount <= sched.custom_total.get(name, 0) - held_custom.get(name, 0)
            for name, amount in request.custom
        )

    def _fail_stalled(self) -> None:
        """Fails the ready tasks that can never start because every worker process is
        blocked in ``get``/``wait`` and no more may be started (unbounded recursion, most
        likely), once two checks a second apart agree (the first may see a worker whose
        value is on its way)."""
        stalled = self._sched.stalled()
        if stalled and not self._blocked_for_good():
            stalled = []
        previous, self._stalled = self._stalled, set(stalled)
        for tid in stalled:
            task = self._states.tasks.get(tid)
            if tid in previous and task is not None:
                error = RecursionError(self._stalled_message(task))
                self._carry_out(self._states.unstartable(tid, error))

    def no_worker_started(self, exc: OSError) -> None:
        """No worker could be started for want of fds, and none runs: the tasks waiting for
        one would wait forever, so they fail, naming the limit. (A dead zygote, the other
        cause, breaks the runtime: see ``_on_zygote``.)"""
        if exc.errno != errno.EMFILE or any(w not in self._actors.hosts for w in self._workers):
            return  # the running ones will take them
        error = RaySystemError(f"raylite could not start a worker: {open_files_limit_reached()}")
        waiting = [t.task_id for t in self._states.tasks.values() if t.state == PENDING and t.call is None]
        for task_id in waiting:
            self._carry_out(self._states.unstartable(task_id, error))

    def _blocked_for_good(self) -> bool:
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
                    task = self._states.tasks.get(entry.task_id)
                    if task is None or task.call is not None:
                        return False
        return True

    def _stalled_message(self, task: Task) -> str:
        n = self._max_workers
        where = f"nested {task.depth} deep" if task.depth else "submitted by the driver"
        return (
            f"Task {task.name}() ({where}) cannot start: all {n} worker "
            "processes raylite may run are blocked in get() or wait(), waiting for tasks "
            "that need a worker. Is there unbounded recursion in nested tasks? Bound it, or "
            "pass ObjectRefs as task arguments instead of calling get() inside tasks; or "
            f"allow more processes: set the environment variable RAYLITE_MAX_WORKERS (now {n}) "
            "before raylite.init()."
        )

    def _pending_message(self, request: Request, oldest: int, count: int, waited: float) -> str:
        holders: dict[str, int] = {}
        for held, task_id in self._sched.holders():
            name = self._describe(task_id)
            key = f"{name} ({held.describe()})"
            holders[key] = holders.get(key, 0) + 1
        held_by = ", ".join(f"{n} x {k}" for k, n in holders.items()) or "nothing running"
        free = self._sched.available() or {"CPU": 0.0}
        return (
            f"{count} task(s) such as {self._describe(oldest)} have waited "
            f"{waited:.0f} s for resources and cannot start: each needs {request.describe()}, "
            f"free now is {free}, and the rest is held by {held_by}, which are idle actors "
            "or tasks waiting in get()/wait() for results that need those resources too. "
            "Kill the actors you no longer need (raylite.kill), pass ObjectRefs as task "
            "arguments instead of calling get() in tasks that hold resources, or give "
            "raylite.init() more resources."
        )

    def _describe(self, task_id: int) -> str:
        task = self._states.tasks.get(task_id)
        if task is not None:
            return f"task {task.name}()"
        actor = self._actors.creating(task_id)
        return f"actor {actor}" if actor else f"task {task_id:x}"
