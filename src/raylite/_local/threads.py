"""The thread executor: I/O-bound tasks and actors on threads of the driver itself.

::

    f.options(executor="thread").remote(x)         @remote(executor="thread") class C
      scheduler: resources free -> dispatch           calls -> LocalActor lanes (threads)
      to pseudo-worker -task_id                       same ordering as process actors
      -> pool thread: resolve refs, run fn(x),        -> run method, store results
         store results (big ones in shared memory)

No pickling of arguments and no process hop: the function gets the very objects passed to
``.remote()`` (top-level ObjectRefs resolved, as always), which suits work that waits on
sockets, files or databases (the GIL is released while it waits). Results are still
pickled into the object store, since process tasks may read them. Thread tasks reserve no
CPU unless asked (``num_cpus``); custom resources cap how many run at once. Nested calls
(``get``, ``.remote()``) work as in the driver. A running thread task cannot be
interrupted: ``cancel`` fails its result at once and drops the late one; a queued one never
runs. The pool has ``max_threads`` threads: when each waits in ``get`` for thread tasks
still queued (unbounded recursion), those fail with ``RecursionError`` instead of waiting
forever (:meth:`ThreadRunner.note_wait`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import serialization as ser
from .actor_host import _Lane
from .scheduler import thread_worker
from .worker import split_returns

if TYPE_CHECKING:
    from .actors import _Actor, _Call
    from .runtime import LocalRuntime
    from .store import Shm
    from .tasks import Task

__all__ = ["ThreadRunner"]


class Outcome(NamedTuple):
    """What a local call produced: pickled results (with segments), or an error."""

    payloads: list[bytes]
    contained: list[list[int]]
    shms: list[Shm | None]
    mappings: list[Any]  # the writer's mapping of each segment, kept by the driver
    error: bytes | None
    start: float = 0.0  # when it ran (epoch seconds)
    end: float = 0.0


class ThreadRunner:
    """Runs thread tasks on a pool, and thread actors on lanes of their own.

    Args:
        rt: the runtime (its lock, object table, scheduler and actor manager).
        max_threads: pool threads for tasks (actors have their own threads).
    """

    def __init__(self, rt: LocalRuntime, max_threads: int) -> None:
        self.rt = rt
        self.max_threads = max_threads
        # A pool of daemon threads, started as needed: unlike ThreadPoolExecutor's, a
        # thread task stuck forever cannot keep the interpreter from exiting.
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0  # threads waiting for a task
        self._queued = 0  # tasks no thread has taken yet
        self._count_lock = threading.Lock()
        self._local = threading.local()  # .pool is True on the pool's own threads
        self._running: dict[int, int] = {}  # {pool thread id: task id it runs}
        # {pool thread id: object ids it waits for in get/wait, or None (a timeout wakes it)}
        self._waits: dict[int, list[int] | None] = {}

    def submit(self, task: Task) -> None:
        """Runs a dispatched thread task (lock held: only queues it)."""
        with self._count_lock:
            self._queued += 1
            start = self._queued > self._idle and self._threads < self.max_threads
            if start:
                self._threads += 1
        self._queue.put(task)
        if start:
            threading.Thread(target=self._serve, name="raylite-thread", daemon=True).start()

    def _serve(self) -> None:
        self._local.pool = True
        while True:
            with self._count_lock:
                self._idle += 1
            task = self._queue.get()
            with self._count_lock:
                self._idle -= 1
                if task is not None:
                    self._queued -= 1
            if task is None:  # shutdown
                return
            self._run_task(task)

    def _run_task(self, task: Task) -> None:
        assert task.call is not None
        fn, args, kwargs = task.call
        outcome = None
        if not task.cancelled:  # cancelled while it waited for a thread: never run it
            self._running[threading.get_ident()] = task.task_id
            try:
                outcome = self.call(task.name, fn, args, kwargs, task.dep_positions,
                                    task.dep_ids, len(task.return_ids))  # fmt: skip
            finally:
                del self._running[threading.get_ident()]
            task.start, task.end = outcome.start, outcome.end
            task.lane = threading.get_native_id()
        rt = self.rt
        with rt._lock:
            rt._settle()
            if outcome is not None:
                rt._thread_task_done(task, outcome)
            rt._apply(rt.sched.task_done(thread_worker(task.task_id), task.task_id))
            rt._workers.flush_dirty()

    def note_wait(self, oids: list[int], timeout: float | None) -> None:
        """The calling thread is about to block in get/wait for ``oids`` (lock held).

        On a pool thread: records it and, if now every pool thread waits for thread tasks
        that wait for a pool thread, fails those (unbounded recursion, most likely), as the
        driver does for worker processes: 64 threads, then a hang, would be the alternative.
        """
        if not getattr(self._local, "pool", False):
            return
        self._waits[threading.get_ident()] = None if timeout is not None else oids
        if self._queued and self._threads >= self.max_threads and self._blocked_for_good():
            self._fail_queued()

    def done_waiting(self) -> None:
        if getattr(self._local, "pool", False):
            self._waits.pop(threading.get_ident(), None)

    def _blocked_for_good(self) -> bool:
        """Whether every pool thread waits only for thread tasks already given to the pool
        (queued, or running on a thread that waits too): nothing else could wake one."""
        if len(self._waits) < self._threads:
            return False
        objs, tasks = self.rt._objs, self.rt._states.tasks
        for oids in self._waits.values():
            if oids is None:
                return False
            for oid in oids:
                entry = objs.get(oid)
                task = tasks.get(entry.task_id) if entry is not None else None
                if task is None or task.call is None or task.worker is None:
                    return False
        return True

    def _fail_queued(self) -> None:
        running = set(self._running.values())
        rt = self.rt
        for task in list(rt._states.tasks.values()):
            if task.call is None or task.worker is None or task.task_id in running:
                continue
            task.cancelled = True  # the pool skips it when a thread takes it
            rt._carry_out(rt._states.fail([task.task_id], RecursionError(
                f"Thread task {task.name}() cannot start: all {self.max_threads} threads of "
                "the thread executor are blocked in get() or wait(), waiting for thread tasks "
                "that need a thread. Is there unbounded recursion in nested tasks? Bound it, "
                "or pass ObjectRefs as task arguments instead of calling get() inside tasks."
            )))  # fmt: skip

    def call(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
        positions: Sequence[Any], dep_ids: Sequence[int], num_returns: int,
    ) -> Outcome:  # fmt: skip
        """Runs ``fn`` here on the caller's objects, refs resolved; never raises."""
        rt = self.rt
        done: list[tuple[ser.Serialized, Shm | None, Any]] = []
        start = time.time()
        try:
            call_args, call_kwargs = self.resolve(args, kwargs, positions, dep_ids)
            result = fn(*call_args, **call_kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            for value in split_returns(name, num_returns, result):
                s = ser.serialize_result(name, value)
                what = f"the result of {name}()"
                shm, mapping = rt._writer.write_shm(s, what, True) if s.buffers else (None, None)
                done.append((s, shm, mapping))
        except BaseException as exc:
            with rt._lock:
                for _, shm, _ in done:
                    if shm is not None:
                        rt._objs.drop(shm)
            error = ser.dumps_error(name, exc, os.getpid())
            return Outcome([], [], [], [], error, start, time.time())
        return Outcome(
            [s.payload for s, _, _ in done], [s.contained for s, _, _ in done],
            [shm for _, shm, _ in done], [m for _, _, m in done], None, start, time.time(),
        )  # fmt: skip

    def resolve(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], positions: Sequence[Any],
        dep_ids: Sequence[int],
    ) -> tuple[list[Any], dict[str, Any]]:  # fmt: skip
        """The call's arguments with the values of its top-level refs put in place."""
        rt = self.rt
        with rt._lock:
            readable = [rt._objs.readable(oid) for oid in dep_ids]
        values = [ser.load_value(*r) for r in readable]
        return ser.place_values(args, kwargs, positions, values)

    def start_actor(
        self, actor: _Actor, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> LocalActor:
        return LocalActor(self, actor, cls, args, kwargs)

    def shutdown(self) -> None:
        with self._count_lock:
            threads = self._threads
        for _ in range(threads):  # each thread ends after the task it runs, if any
            self._queue.put(None)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class LocalActor:
    """A thread actor: its instance lives in the driver; lanes of threads run its calls."""

    def __init__(self, runner: ThreadRunner, actor: _Actor, cls: type,
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:  # fmt: skip
        self.runner = runner
        self.actor_id = actor.actor_id
        self.class_name = actor.class_name
        self.instance: Any = None
        self.dead = False
        self._ready = threading.Event()
        limit = actor.opts.max_concurrency or 1
        groups = [(None, limit), *actor.opts.concurrency_groups.items()]
        self._lanes = {
            group: _Lane(
                f"{self.class_name}.{group or 'default'}",
                n,
                self._call,
                self._ready,
                lambda: None,
            )  # fmt: skip
            for group, n in groups
        }
        positions, dep_ids = actor.positions, list(actor.dep_ids)
        self._lanes[None].put(lambda: self._create(cls, args, kwargs, positions, dep_ids))

    def _create(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any],
                positions: list[Any], dep_ids: list[int]) -> None:  # fmt: skip
        error = None
        try:
            call_args, call_kwargs = self.runner.resolve(args, kwargs, positions, dep_ids)
            self.instance = cls(*call_args, **call_kwargs)
        except BaseException as exc:
            error = ser.dumps_error(f"{self.class_name}.__init__", exc, os.getpid())
        rt = self.runner.rt
        with rt._lock:
            rt._settle()
            rt._actors.ready(self.actor_id, error)
        self._ready.set()

    def call(self, call: _Call) -> None:
        (self._lanes.get(call.group) or self._lanes[None]).put(call)

    def _call(self, call: _Call) -> None:
        if self.dead:
            return
        assert call.py_args is not None
        args, kwargs = call.py_args
        method = getattr(self.instance, call.method)
        outcome = self.runner.call(
            call.name, method, args, kwargs, call.positions, call.dep_ids, len(call.return_ids)
        )
        rt = self.runner.rt
        with rt._lock:
            rt._settle()
            if not self.dead:
                rt._actors.done_local(call, outcome)

    def stop(self) -> None:
        self.dead = True
        for lane in self._lanes.values():
            lane.stop()
