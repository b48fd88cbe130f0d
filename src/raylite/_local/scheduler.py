"""Where and when tasks run: a pure state machine over resources, workers and queues.

No threads, sockets, pickling or clocks: each event is a method call that returns the
instructions it implies (:class:`Actions`: which task goes to which worker, how many workers
to start). ``runtime.py`` turns those into messages; the tests drive it directly.

The model (Ray's worker leases, kept small):

- A *lease* binds a worker to one resource request (a ``Request``) while it runs tasks of
  that shape. Opening a lease takes the resources; closing it gives them back.
- A lease may hold several tasks: the first runs, the rest wait in the worker's socket
  (*pipelining*). Depth is adaptive per function: about ``PIPELINE_SECONDS`` of work, judged
  from the function's recent durations, and 1 until the first one finishes. So tiny tasks
  travel in batches while long ones never queue behind each other on one worker.
- Ready tasks wait in one FIFO per shape; on each change the oldest heads go first, and a
  head that does not fit does not block other shapes. Nested tasks go before shallower
  ones (deepest first, then oldest): a parent blocked in ``get`` holds a worker process, so
  finishing the deepest work first keeps the number of blocked parents near the nesting
  depth instead of the tree's width (a nested fib(12) on 2 CPUs needs ~25 processes, not
  hundreds).
- Worker processes are capped (``max_workers``). When every one is blocked in ``get`` and a
  ready task needs one more, :meth:`Scheduler.stalled` reports it; if the blocked workers
  wait only for tasks that need a worker too (not for an actor), nothing can progress and
  the runtime fails those tasks (unbounded recursion must not fork without bound).
- A worker blocked in ``get``/``wait`` lends its CPUs back (nested tasks cannot deadlock the
  pool) and returns its unstarted tasks; it takes the CPUs back when it resumes, even if that
  oversubscribes for a moment, as Ray does.

Quantities are fixed-point ints (``UNIT`` per whole CPU/GPU/resource) so fractions add up
exactly: ten tasks of 0.1 CPU fit in one CPU.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["NOTHING", "UNIT", "Request", "Actions", "Scheduler", "thread_worker", "to_units"]

UNIT = 10_000
PIPELINE_SECONDS = 0.002
MAX_PIPELINE = 256
_EWMA = 0.2


def thread_worker(task_id: int) -> int:
    """The pseudo-worker id a thread task is dispatched to (negative: no process)."""
    return -task_id


def to_units(amount: float) -> int:
    """``amount`` of a resource in fixed-point units (rounded to 1/UNIT)."""
    return int(round(amount * UNIT))


class Request(NamedTuple):
    """What a task or actor reserves while it runs, in units; hashable (it is the *shape*).

    A NamedTuple rather than a dataclass: it is a dict key on every submit, and tuple
    hashing and equality run in C.
    """

    cpu: int = UNIT
    gpu: int = 0
    custom: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, num_cpus: float, num_gpus: float, resources: Mapping[str, float]) -> Request:
        """The request for amounts as users write them (``num_cpus=0.5``, ...)."""
        custom = tuple(sorted((k, to_units(v)) for k, v in resources.items() if v))
        return cls(to_units(num_cpus), to_units(num_gpus), custom)

    def describe(self) -> str:
        parts = [f"num_cpus={self.cpu / UNIT:g}"]
        if self.gpu:
            parts.append(f"num_gpus={self.gpu / UNIT:g}")
        parts += [f"{k}={v / UNIT:g}" for k, v in self.custom]
        return ", ".join(parts)


@dataclass(slots=True)
class Actions:
    """Instructions for the runtime: run ``task`` on ``worker``; start this many workers."""

    dispatch: list[tuple[int, int]] = field(default_factory=list)
    start_workers: int = 0


NOTHING = Actions((), 0)  # type: ignore[arg-type]  # shared and immutable: the common answer


@dataclass(slots=True)
class _Lease:
    worker: int
    request: Request
    gpus: list[tuple[int, int]]  # [(gpu index, units)]
    queue: deque[int] = field(default_factory=deque)  # task ids; the first one runs
    blocked: bool = False
    dedicated: bool = False  # an actor's: nothing is pipelined onto it


class _Task(NamedTuple):
    seq: int
    request: Request
    key: int  # pipelining statistics key (the function id)
    dedicated: bool  # holds its lease alone (an actor's life), never shares it
    threaded: bool  # runs on a driver thread: needs resources, not a worker
    depth: int  # 0 for the driver's tasks, the parent's + 1 for nested ones


class Scheduler:
    """Resource-aware placement of tasks on workers.

    Args:
        num_cpus: CPUs that tasks may reserve (fractional allowed).
        gpus: per-GPU capacity in whole GPUs, e.g. ``[1.0, 1.0]``, or ``[0.2]`` for a
            fractional node total.
        custom: custom resource totals, e.g. ``{"search": 4}``.
        max_workers: cap on worker processes (running + starting), blocked ones included.
    """

    def __init__(
        self,
        num_cpus: float,
        gpus: list[float] | None = None,
        custom: dict[str, float] | None = None,
        max_workers: int = 64,
    ) -> None:
        self.total_cpu = to_units(num_cpus)
        self.free_cpu = self.total_cpu
        self.gpu_total = [to_units(g) for g in gpus or []]
        self.gpu_free = list(self.gpu_total)
        self.custom_total = {k: to_units(v) for k, v in (custom or {}).items()}
        self.custom_free = dict(self.custom_total)
        self.max_workers = max_workers

        self._seq = 0
        self._tasks: dict[int, _Task] = {}  # {task id: task} until done or cancelled
        self._waiting: dict[int, int] = {}  # {task id: unresolved dependency count}
        self._dependents: dict[int, list[int]] = {}  # {object id: [task ids waiting]}
        self._ready: dict[Request, deque[int]] = {}  # {shape: FIFO of ready task ids}
        self._n_ready = 0  # sum of the FIFOs' lengths
        self._leases: dict[int, _Lease] = {}  # {worker id: lease}
        self._idle: list[int] = []  # workers without a lease
        self._workers: set[int] = set()
        self._starting = 0
        self._mean_duration: dict[int, float] = {}  # {key: EWMA seconds}
        self._depth: dict[int, int] = {}  # {key: pipeline depth}, 1 until known

    # ---- queries ------------------------------------------------------------------------

    def infeasible(self, request: Request) -> str | None:
        """Why ``request`` can never run here, or ``None`` if it can."""
        if request.cpu > self.total_cpu:
            return f"num_cpus={request.cpu / UNIT:g} but this runtime has {self.total_cpu / UNIT:g} CPUs"
        if request.gpu:
            if request.gpu > UNIT and request.gpu % UNIT:
                return f"num_gpus={request.gpu / UNIT:g}: above 1 a GPU request must be whole"
            if request.gpu <= UNIT and not any(g >= request.gpu for g in self.gpu_total):
                have = ", ".join(f"{g / UNIT:g}" for g in self.gpu_total) or "none"
                return f"num_gpus={request.gpu / UNIT:g} but the GPUs here have {have}"
            if request.gpu > UNIT and sum(g == UNIT for g in self.gpu_total) < request.gpu // UNIT:
                return f"num_gpus={request.gpu / UNIT:g} but this runtime has {len(self.gpu_total)} GPUs"
        for name, amount in request.custom:
            total = self.custom_total.get(name, 0)
            if amount > total:
                return f"resource {name!r}={amount / UNIT:g} but this runtime has {total / UNIT:g}"
        return None

    def available(self) -> dict[str, float]:
        """Free amounts by resource name, as Ray's ``available_resources()``."""
        out = {"CPU": max(self.free_cpu, 0) / UNIT}
        if self.gpu_total:
            out["GPU"] = sum(self.gpu_free) / UNIT
        out.update({k: v / UNIT for k, v in self.custom_free.items()})
        return {k: v for k, v in out.items() if v > 0}

    def total(self) -> dict[str, float]:
        out = {"CPU": self.total_cpu / UNIT}
        if self.gpu_total:
            out["GPU"] = sum(self.gpu_total) / UNIT
        out.update({k: v / UNIT for k, v in self.custom_total.items()})
        return {k: v for k, v in out.items() if v > 0}

    def gpu_ids(self, worker: int) -> list[int]:
        """GPU indices the worker's current lease holds."""
        lease = self._leases.get(worker)
        return [i for i, _ in lease.gpus] if lease else []

    def queued_on(self, worker: int) -> list[int]:
        """Task ids dispatched to ``worker`` and not done, the running one first."""
        lease = self._leases.get(worker)
        return list(lease.queue) if lease else []

    def in_flight(self, worker: int) -> int:
        """How many tasks are dispatched to ``worker`` and not done."""
        lease = self._leases.get(worker)
        return len(lease.queue) if lease else 0

    def waiting_for_resources(self) -> dict[Request, tuple[int, int]]:
        """Ready tasks no lease could take yet: per shape, the oldest's id and how many."""
        return {request: (queue[0], len(queue)) for request, queue in self._ready.items() if queue}

    def holders(self) -> list[tuple[Request, int]]:
        """What holds resources: each lease's request and the task it runs (first)."""
        return [(lease.request, lease.queue[0]) for lease in self._leases.values() if lease.queue]

    def leases(self) -> list[tuple[int, Request, tuple[int, ...], bool, bool]]:
        """Each lease with work: ``(worker, request, task ids on it (the running one first),
        blocked in get/wait, dedicated to an actor)``."""
        return [
            (wid, lease.request, tuple(lease.queue), lease.blocked, lease.dedicated)
            for wid, lease in self._leases.items() if lease.queue
        ]  # fmt: skip

    def ready_ids(self) -> set[int]:
        """The tasks whose arguments are ready that wait for resources (or a worker)."""
        return {tid for queue in self._ready.values() for tid in queue}

    def pending_count(self) -> int:
        return len(self._waiting) + self._n_ready

    # ---- events -------------------------------------------------------------------------

    def prestart(self, n: int) -> int:
        """Counts ``n`` workers the runtime starts ahead of demand; returns ``n``."""
        n = max(0, min(n, self.max_workers - len(self._workers) - self._starting))
        self._starting += n
        return n

    def worker_started(self, worker: int) -> Actions:
        self._starting = max(0, self._starting - 1)
        self._workers.add(worker)
        self._idle.append(worker)
        return self._schedule()

    def worker_start_failed(self) -> Actions:
        self._starting = max(0, self._starting - 1)
        return NOTHING

    def submit(
        self,
        task_id: int,
        request: Request,
        key: int,
        deps: list[int],
        dedicated: bool = False,
        threaded: bool = False,
        depth: int = 0,
    ) -> Actions:
        """A new task; ``deps`` are the object ids it still waits for (not yet ready).

        A ``dedicated`` task (an actor) gets a lease of its own, which it holds until it is
        done: its worker runs nothing else meanwhile. A ``threaded`` task runs on a driver
        thread: it is dispatched to the pseudo-worker ``thread_worker(task_id)`` (negative)
        once its resources are free, and holds them until done. ``depth`` is the nesting
        depth (0 for the driver's tasks): deeper ready tasks are placed first.
        """
        self._seq += 1
        self._tasks[task_id] = _Task(self._seq, request, key, dedicated, threaded, depth)
        if deps:
            self._waiting[task_id] = len(deps)
            for oid in deps:
                self._dependents.setdefault(oid, []).append(task_id)
            return NOTHING
        queue = self._ready.get(request)
        if not queue:
            # Fast path: nothing of this shape waits, so place it now or queue it.
            lease = self._place(task_id, self._tasks[task_id])
            if lease is not None:
                lease.queue.append(task_id)
                return Actions([(task_id, lease.worker)])
            if queue is None:
                queue = self._ready[request] = deque()
        elif self._tasks[queue[-1]].depth >= depth and (
            self._idle or 0 < request.cpu > self.free_cpu
        ):
            # Fast path: its shape waits already, so its head cannot be placed (every event
            # that frees capacity schedules); it goes last, and asks for no more workers (a
            # worker is idle, or no CPU is free for one): a pass would change nothing.
            queue.append(task_id)
            self._n_ready += 1
            return NOTHING
        self._enqueue(queue, task_id, depth)
        self._n_ready += 1
        return self._schedule()

    def object_ready(self, oid: int) -> Actions:
        waiters = self._dependents.pop(oid, None)
        if not waiters:
            return NOTHING
        for tid in waiters:
            left = self._waiting.get(tid)
            if left is None:  # cancelled meanwhile
                continue
            if left > 1:
                self._waiting[tid] = left - 1
            else:
                del self._waiting[tid]
                task = self._tasks[tid]
                self._enqueue(self._ready.setdefault(task.request, deque()), tid, task.depth)
                self._n_ready += 1
        return self._schedule()

    def task_done(self, worker: int, task_id: int, duration: float | None = None) -> Actions:
        key = self._finished(worker, task_id, duration)
        if key is not None:
            self._set_depth(key)
        return self._schedule()

    def tasks_done(self, done: list[tuple[int, int, float]]) -> Actions:
        """Many ``task_done(worker, task_id, duration)`` at once, placed in one pass (and
        each function's pipeline depth set once, from its mean after the whole batch)."""
        keys: set[int | None] = set()
        for worker, task_id, duration in done:
            keys.add(self._finished(worker, task_id, duration))
        for key in keys:
            if key is not None:
                self._set_depth(key)
        return self._schedule()

    def _set_depth(self, key: int) -> None:
        """Pipeline depth of function ``key``: about PIPELINE_SECONDS of its mean duration."""
        mean = self._mean_duration[key]
        self._depth[key] = max(1, min(MAX_PIPELINE, int(PIPELINE_SECONDS / max(mean, 1e-7))))

    def _finished(self, worker: int, task_id: int, duration: float | None) -> int | None:
        """Forgets a dispatched task; returns its function's key if ``duration`` updated its
        mean (the caller then sets that function's depth)."""
        task = self._tasks.pop(task_id, None)
        key = None
        if task is not None and duration is not None:
            key = task.key
            old = self._mean_duration.get(key)
            self._mean_duration[key] = duration if old is None else old + _EWMA * (duration - old)
        lease = self._leases.get(worker)
        if lease is not None:
            queue = lease.queue
            if queue and queue[0] == task_id:
                queue.popleft()
            elif task_id in queue:
                queue.remove(task_id)
            if not queue:
                # Close it even if tasks of its shape wait: the oldest waiting task of any
                # shape gets first pick of what it frees, and the LIFO idle list hands
                # the same worker straight back when the same shape wins.
                self._close_lease(lease)
        return key

    def add_resources(self, amounts: dict[str, int]) -> Actions:
        """New custom resources (in units), e.g. a placement group's once reserved."""
        for name, units in amounts.items():
            self.custom_total[name] = self.custom_total.get(name, 0) + units
            self.custom_free[name] = self.custom_free.get(name, 0) + units
        return self._schedule()

    def remove_resources(self, names: list[str]) -> None:
        """Custom resources that are gone (a removed placement group's). Leases holding
        some keep them until they close, and give nothing back then."""
        for name in names:
            self.custom_total.pop(name, None)
            self.custom_free.pop(name, None)

    def worker_blocked(self, worker: int) -> Actions:
        lease = self._leases.get(worker)
        if lease is None or lease.blocked:
            return NOTHING
        lease.blocked = True
        self.free_cpu += lease.request.cpu
        return self._schedule()

    def worker_unblocked(self, worker: int) -> Actions:
        lease = self._leases.get(worker)
        if lease is not None and lease.blocked:
            lease.blocked = False
            self.free_cpu -= lease.request.cpu
        return NOTHING

    def tasks_returned(self, worker: int, task_ids: list[int]) -> Actions:
        """The worker hands back queued tasks it has not started; they go first in line."""
        lease = self._leases.get(worker)
        for tid in reversed(task_ids):
            if lease is not None and tid in lease.queue:
                lease.queue.remove(tid)
            task = self._tasks.get(tid)
            if task is not None:
                self._ready.setdefault(task.request, deque()).appendleft(tid)
                self._n_ready += 1
        return self._schedule()

    def worker_died(self, worker: int) -> tuple[Actions, list[int]]:
        """Forgets ``worker``; returns its unfinished task ids (the running one first)."""
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        lease = self._leases.pop(worker, None)
        lost: list[int] = []
        if lease is not None:
            lost = list(lease.queue)
            self._free(lease)
        for tid in lost:
            self._tasks.pop(tid, None)
        return self._schedule(), lost

    def cancel(self, task_id: int) -> bool:
        """Removes a task that has not been dispatched; False if it already was (or is gone)."""
        task = self._tasks.get(task_id)
        if task is None:
            return False
        if self._waiting.pop(task_id, None) is not None:
            del self._tasks[task_id]
            return True
        queue = self._ready.get(task.request)
        if queue is not None and task_id in queue:
            queue.remove(task_id)
            self._n_ready -= 1
            del self._tasks[task_id]
            return True
        return False

    def stalled(self) -> list[int]:
        """The ready tasks that can never start, or ``[]``: they wait for a worker, no
        worker may be started (``max_workers`` reached) and every worker is blocked in
        ``get``/``wait`` (so none frees up unless what it waits for runs)."""
        if (
            not self._n_ready
            or self._idle
            or self._starting
            or len(self._workers) < self.max_workers
            or not all(lease.blocked for lease in self._leases.values())
        ):
            return []
        return [tid for queue in self._ready.values() for tid in queue]

    # ---- placement ----------------------------------------------------------------------

    def _enqueue(self, queue: deque[int], task_id: int, depth: int) -> None:
        """Appends ``task_id`` behind the tasks at least as deep (deepest first, then FIFO)."""
        if not queue or self._tasks[queue[-1]].depth >= depth:
            queue.append(task_id)  # the common case: all the driver's tasks are at depth 0
            return
        tasks = self._tasks
        i = 0
        while tasks[queue[i]].depth >= depth:
            i += 1
        queue.insert(i, task_id)

    def _schedule(self) -> Actions:
        if not self._n_ready:
            return NOTHING
        actions = Actions()
        needed = 0
        shapes = [(q[0], r, q) for r, q in self._ready.items() if q]
        if len(shapes) > 1:
            shapes.sort(key=lambda s: (-self._tasks[s[0]].depth, self._tasks[s[0]].seq))
        for _, request, queue in shapes:
            while queue:
                tid = queue[0]
                lease = self._place(tid, self._tasks[tid])
                if lease is None:
                    break
                queue.popleft()
                self._n_ready -= 1
                lease.queue.append(tid)
                actions.dispatch.append((tid, lease.worker))
            if queue and not self._idle:
                needed += min(len(queue), self._fit_count(request))
        room = self.max_workers - len(self._workers) - self._starting
        start = max(0, min(needed - self._starting, room))
        self._starting += start
        actions.start_workers = start
        return actions

    def _place(self, task_id: int, task: _Task) -> _Lease | None:
        """A lease for one more task: a new one if resources and a worker are free (more
        parallelism), else room in a busy one (pipelining), else ``None``."""
        request = task.request
        if task.threaded:
            if not self._fits(request):
                return None
            lease = self._open_lease(request, thread_worker(task_id))
            lease.dedicated = True  # nothing is pipelined onto a thread task's lease
            return lease
        if self._idle and self._fits(request):
            lease = self._open_lease(request)
            lease.dedicated = task.dedicated
            return lease
        return None if task.dedicated else self._lease_with_room(request, task.key)

    def _lease_with_room(self, request: Request, key: int) -> _Lease | None:
        """The least loaded lease of ``request`` with room under ``key``'s depth (the first
        of equals), or None."""
        room = self._depth.get(key, 1)  # queues shorter than this have room
        best: _Lease | None = None
        for lease in self._leases.values():
            n = len(lease.queue)
            if n < room and lease.request == request and not lease.blocked and not lease.dedicated:
                best, room = lease, n
        return best

    def _fits(self, r: Request) -> bool:
        if r.cpu > self.free_cpu:
            return False
        if r.gpu and self._pick_gpus(r.gpu) is None:
            return False
        return all(self.custom_free.get(k, 0) >= v for k, v in r.custom)

    def _fit_count(self, r: Request) -> int:
        """How many more leases of ``r`` the free resources allow (approximate for GPUs)."""
        counts = [self.free_cpu // r.cpu if r.cpu else math.inf]
        if r.gpu:
            counts.append(sum(g // r.gpu for g in self.gpu_free) if r.gpu <= UNIT else 1)
        counts += [self.custom_free.get(k, 0) // v for k, v in r.custom if v]
        n = min(counts)  # negative while a resumed worker oversubscribes: none fit then
        return int(max(0, min(n, self.max_workers)))

    def _pick_gpus(self, units: int) -> list[tuple[int, int]] | None:
        if units <= UNIT:
            # Best fit: the fullest GPU that still has room, so fractions pack together.
            best = None
            for i, free in enumerate(self.gpu_free):
                if free >= units and (best is None or free < self.gpu_free[best]):
                    best = i
            return None if best is None else [(best, units)]
        whole = [i for i, free in enumerate(self.gpu_free) if free == UNIT == self.gpu_total[i]]
        n = units // UNIT
        return [(i, UNIT) for i in whole[:n]] if len(whole) >= n else None

    def _open_lease(self, r: Request, worker: int | None = None) -> _Lease:
        if worker is None:
            worker = self._idle.pop()
        gpus = (self._pick_gpus(r.gpu) or []) if r.gpu else []
        self.free_cpu -= r.cpu
        for i, units in gpus:
            self.gpu_free[i] -= units
        for k, v in r.custom:
            self.custom_free[k] -= v
        lease = _Lease(worker, r, gpus)
        self._leases[worker] = lease
        return lease

    def _free(self, lease: _Lease) -> None:
        if not lease.blocked:
            self.free_cpu += lease.request.cpu
        for i, units in lease.gpus:
            self.gpu_free[i] += units
        for k, v in lease.request.custom:
            if k in self.custom_free:  # else removed meanwhile (see remove_resources)
                self.custom_free[k] += v

    def _close_lease(self, lease: _Lease) -> None:
        del self._leases[lease.worker]
        self._free(lease)
        if lease.worker > 0:  # not a thread task's pseudo-worker
            self._idle.append(lease.worker)
