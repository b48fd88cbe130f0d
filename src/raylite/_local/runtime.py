"""LocalRuntime: the embedded driver. Wires the scheduler, the worker set, the I/O loop and
the object table, and decides what each event means.

::

    user threads                         I/O thread (one, "raylite-io": io_thread.IoLoop)
    ------------                         ------------------------------------------------
    remote(): TaskStates.submitted, ┐    select(worker sockets, zygote, wake pipe)
      scheduler.submit, dispatch -> │     ├ every worker message: inbox.WorkerMessages
      Channel.queue                 │     │   TaskDone -> TaskStates.done_ok: store results,
    cancel(): TaskStates.cancel     │lock │   wake waiters; done_error: retry or store it;
    get()/wait()/future():          ├──── │   TasksDone (a run of one-small-value replies):
      waits.Waits: flush, then      │     │   done_ok each, _finish_plain in one pass;
      block on a Waiter             │     │   scheduler.tasks_done (once a read) -> dispatch
                                    │     │   Submit/Put/Get/Wait/RefOps/Cancel: nested calls
                                    │     ├ zygote: started -> scheduler.worker_started
    put(): writes.ObjectWriter      │     │   exited -> drain its socket, then
    ObjectRef.__del__: release ─────┘     │   TaskStates.worker_died: rerun, retry or fail
      (queued, never locks)               ├ a channel failing (stray bytes, fds dropped,
                                          │   EOF mid-task): that worker is killed
                                          ├ deadlines; flush every channel with queued
                                          │   output (workers.WorkerSet)
                                          ├ watchdog.Watchdog, once a second while tasks
                                          │   wait: warn, or fail what can never start
                                          └ then, unlocked: resolve ref.future()s

    runtime ── spawn / kill / remove ──> workers.WorkerSet ── Zygote ──> worker processes

State: one lock (``_lock``) guards everything below; whoever holds it may queue messages on
any worker's ``Channel``. Sections are ``with self._lock:`` blocks that start by applying
what was queued without the lock (``_settle``); calls made inside a section by a ``__del__``
or a signal handler are queued, not run (``locking.py``, docs/fork-and-signal-safety.md).
Sockets are non-blocking on this side: a flush sends what fits and the I/O thread sends the
rest when the socket is writable, so the driver never blocks on a slow worker (and a worker
blocked on sending to us cannot deadlock us).

Parts, each owning its state and given only what it needs: ``workers.WorkerSet`` (the
processes, their channels, spawn and death books), ``io_thread.IoLoop`` (the selector, the
wake pipe, the deadlines, the thread's turns), ``waits.Waits`` (user threads blocked in
``get``/``wait``, futures, generator streams), ``writes.ObjectWriter`` (``put`` values and
arguments pickled, big buffers copied to segments outside the lock), ``objects.ObjectTable``
(values, lifetimes, waiters, shared-memory books). ``ObjectRef.__del__`` may run anywhere (GC), so ``release``
never blocks: it queues the id, and whoever next takes the lock applies it (the I/O thread
within ``io_thread.NAP_S``; it is woken for it only when asleep for longer).

Dispatch flushing: a task sent to an idle worker goes out at once (latency); one queued
behind tasks in flight waits for the I/O thread's next flush, which comes with the next
result from that worker (throughput: one frame carries many tasks).

Decisions and their owners: ``task_states.TaskStates`` (pure) decides every step of a task's
life (retry, rerun after a worker's death, failed argument, cancel) from the events the
runtime feeds it, and owns the live tasks; the runtime carries out its instructions
(``_carry_out``); ``actor_states.ActorStates`` (pure) decides an actor's life (restart or
die, which lost calls retry), fed and carried out by ``actors.ActorManager``, which places
actors and sends their calls. ``scheduler.Scheduler`` (pure) places tasks.
``inbox.WorkerMessages`` handles what workers send and ``watchdog.Watchdog`` warns about
tasks that wait and fails stalled ones: each an object given the parts it needs, not the
runtime. The state API, the control socket and the dashboard read the runtime through
``state.StateView``.

::

    who                 owns                                  runs on (lock held)
    TaskStates          live tasks and their states           whoever holds the lock
    ActorManager        actors (states: ActorStates), calls   whoever holds the lock
    Scheduler           resources, leases, worker queues      whoever holds the lock
    WorkerSet           processes, channels, borrows          I/O thread (deaths), any
    ObjectTable         values, refcounts, segments, waiters  whoever holds the lock
    WorkerMessages      parsed nested options                 I/O thread
    Watchdog            warned shapes, stalled tasks          I/O thread
    Waits / futures     user threads blocked in get/wait      user threads, then I/O
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import itertools
import os
import selectors
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from .. import _runtime
from .._actor import ActorClass, ActorHandle, exit_outside_actor
from .._object_ref import ObjectRef, ObjectRefGenerator
from .._options import ActorOptions, MethodOptions, TaskOptions, check_local
from .._placement import PlacementGroup
from ..exceptions import (
    RaySystemError,
    RayTaskError,
    TaskCancelledError,
    TaskUnschedulableError,
    WorkerCrashedError,
)
from . import serialization as ser
from .actors import ActorManager, warn_unschedulable
from .dashboard import DashboardServer
from .env import pending_warning_s, task_history
from .history import NORMAL_TASK, History
from .inbox import Core, WorkerMessages
from .io_thread import ZYGOTE, IoLoop, io_main
from .locking import DriverLock
from .objects import ObjectTable
from .placement import Placement, check_bundles
from .pool import CLOSED_CHANNEL, STRAY_BYTES, Zygote, crash_message, describe_exit
from .protocol import (
    CANCEL_AT,
    CancelTask,
    FunctionDef,
    TaskRequest,
    check_inband,
    raise_open_files_limit,
    write_slot,
)
from .scheduler import NOTHING, Actions, Request, Scheduler, thread_worker
from .session import ControlServer, SessionDir
from .spill import SpillConfig, SpillDir
from .state import StateView, summarize
from .store import Shm, memory_resources
from .streams import StreamTable
from .task_states import (
    DISPATCHED,
    Cancelled,
    Crashed,
    Death,
    Fail,
    Instruction,
    Interrupt,
    KillWorker,
    Resubmit,
    TaskStates,
    Unqueue,
)
from .tasks import DRIVER, PackedArgs, Task
from .threads import Outcome, ThreadRunner
from .waits import Waits
from .watchdog import Watchdog, caller_site
from .worker import CANCEL_SIGNAL, n_refs, stream_mode, worker_main
from .workers import Worker, WorkerSet, signal_pid
from .writes import ObjectWriter

if TYPE_CHECKING:
    from .._remote_function import RemoteFunction

__all__ = ["LocalRuntime", "RuntimeConfig"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class RuntimeConfig:
    """What ``init`` decided (validated by the API layer)."""

    num_cpus: float
    gpus: list[float]
    resources: dict[str, float]
    object_store_memory: int | None
    max_workers: int
    session: str
    namespace: str = "default"
    temp_dir: str | None = None  # the root of session folders (init's _temp_dir)
    dashboard_host: str | None = None  # serve the dashboard there; None: no dashboard
    dashboard_port: int | None = None  # None: 8265 or the next free port
    spilling: SpillConfig = SpillConfig()  # where a full store spills objects (spill.py)


_EOF_GRACE_S = 2.0  # a worker that closed its channel has this long to exit on its own


class LocalRuntime:
    """The embedded runtime: worker processes on this machine, driven from this process."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        # Settings first: a bad one is an error before anything exists to clean up.
        warn_after_s = pending_warning_s()
        self._history = History(task_history())  # finished tasks: timeline(), state API
        self.sched = Scheduler(
            config.num_cpus, config.gpus, config.resources, max_workers=config.max_workers
        )
        self.pid = os.getpid()  # a forked child's copy of this runtime is not its runtime
        self._closed = False
        self._guard = DriverLock(self._wake)
        self._lock = self._guard.lock  # sections are `with self._lock:` (see locking.py)
        self._shutdown_requested = False  # by a signal handler inside a section
        self._down = threading.Event()  # set once shutdown() is complete
        self._ids = itertools.count(1)
        # Every decision in a task's life; its .tasks are the live ones ({task_id: Task})
        self._states = TaskStates(sched=self.sched, error_cause=_error_cause)
        self._functions: dict[int, bytes] = {}  # {fn id: pickled body}
        self._memory = memory_resources(config.object_store_memory)  # reported, not reserved
        self._actors = ActorManager(self, max_hosts=max(1, min(4, int(config.num_cpus))))
        self._placement = Placement(self)
        self._threads = ThreadRunner(self, max_threads=64)
        self._state = StateView(self)
        self._control: ControlServer | None = None  # started last, once the rest runs
        self._dashboard: DashboardServer | None = None  # likewise, if init asked for it
        self.dashboard_url: str | None = None
        self._broken: str | None = None  # why the runtime cannot go on, once it cannot
        # Then resources, each undone (in reverse) if a later step fails: nothing is left.
        with contextlib.ExitStack() as undo:
            self._start(undo, warn_after_s)
            undo.pop_all()

    def _start(self, undo: contextlib.ExitStack, warn_after_s: float) -> None:
        """Makes the session folder, zygote, workers, I/O thread, servers; ``undo`` frees."""
        config = self.config
        raise_open_files_limit()  # before the zygote: workers inherit it
        self._session = SessionDir(Path(config.temp_dir) if config.temp_dir else None)
        undo.callback(self._session.remove)
        self.session_dir = str(self._session.path)
        spill = config.spilling  # its folder is made at the first spill, in the session's
        self._objs = ObjectTable(
            int(self._memory["object_store_memory"]),
            lambda wid, oid: self._workers.forget(wid, oid),
            self._object_freed,
            SpillDir.for_session(spill, self._session) if spill.enabled else None,
            self._busy_objects,
        )
        self._streams = StreamTable(self._objs, lambda oid: ObjectRef(oid, self))
        # Fork the zygote first: no thread of ours runs yet (see pool.py).
        zygote = Zygote(worker_main)
        undo.callback(zygote.close)
        self._objs.books.prefault()  # a thread: only once the zygote is forked
        undo.callback(self._objs.books.spares.close)
        self._loop = IoLoop()
        undo.callback(self._loop.close)
        zygote.sock.setblocking(False)
        self._loop.sel.register(zygote.sock, selectors.EVENT_READ, ZYGOTE)
        self._workers = WorkerSet(
            zygote=zygote, sel=self._loop.sel, wake=self._wake,
            on_io_thread=lambda: threading.current_thread() is self._io,
            spawn_config={"session": config.session, "log_dir": str(self._session.logs)},
            gpu_ids=self.sched.gpu_ids if config.gpus else None,
        )  # fmt: skip
        undo.callback(self._workers.close)
        self._writer = ObjectWriter(
            guard=self._guard, settle=self._settle, check_alive=self._check_alive,
            objs=self._objs, new_id=lambda: next(self._ids), store=self._store,
        )  # fmt: skip
        self._waits = Waits(
            guard=self._guard, settle=self._settle, check_alive=self._check_alive,
            objs=self._objs, streams=self._streams, threads=self._threads,
            flush=self._workers.flush_dirty,
            on_io_thread=lambda: threading.current_thread() is self._io,
            describe=self._state.describe_object, release=self.release,
        )  # fmt: skip
        self._inbox = WorkerMessages(
            core=Core(
                apply=self._apply, carry_out=self._carry_out, submit=self._submit,
                store=self._store, finish=self._finish, finish_plain=self._finish_plain,
                cancel=self._cancel_task,
                request_for=self._request_for,
            ),
            objs=self._objs, workers=self._workers, streams=self._streams, actors=self._actors,
            sched=self.sched, states=self._states, writer=self._writer, loop=self._loop,
            functions=self._functions, namespace=config.namespace,
        )  # fmt: skip
        self._watchdog = Watchdog(
            sched=self.sched, states=self._states, objs=self._objs, workers=self._workers,
            actors=self._actors, carry_out=self._carry_out, max_workers=config.max_workers,
            pending_warning_s=warn_after_s,
        )  # fmt: skip
        self._spawn(self.sched.prestart(int(min(max(config.num_cpus, 1), config.max_workers))))
        self._workers.register_new()
        self._io = threading.Thread(
            target=io_main, args=(weakref.ref(self),), name="raylite-io", daemon=True
        )
        undo.callback(self._stop_io)
        self._io.start()
        self._control = ControlServer(
            self._session.control, self._state.answer_control, first=self._session.prune
        )
        undo.callback(self._control.close)
        if config.dashboard_host is not None:
            self._dashboard = DashboardServer(
                self._state, config.dashboard_host, config.dashboard_port
            )
            undo.callback(self._dashboard.close)
            self.dashboard_url = self._dashboard.url

    def _object_freed(self, oid: int) -> None:
        """An object its owner hears of was freed: a generator's ref, or an actor's id."""
        if not self._streams.freed(oid):
            self._actors.freed(oid)

    # ---- locking (see locking.py) -------------------------------------------------------

    def _settle(self) -> None:
        """Applies what was queued without the lock: deferred calls, then releases (which
        may be of their objects). First thing in every section (lock held)."""
        self._guard.settle()
        self._objs.drain()

    def _wake(self) -> None:
        """Makes the I/O thread run a step soon (any thread; never blocks)."""
        if self._closed:  # its pipe may be closed, its fd number reused
            return
        self._loop.wake()

    def _defer_call(self, return_ids: list[int], op: Callable[[], None]) -> None:
        """A call made inside a section (see locking.py): ``op`` runs with the next holder of
        the lock; the caller returns its refs now. If ``op`` fails, so do they, at ``get``."""

        def run() -> None:
            try:
                op()
            except Exception as exc:
                payload = ser.dumps(exc)[0]
                for oid in return_ids:
                    entry = self._objs.get(oid) or self._objs.new(oid, 1)
                    if entry.payload is None:
                        self._store(oid, payload, True, [])

        self._guard.defer(run)

    # ---- the Runtime interface ----------------------------------------------------------

    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], opts: TaskOptions
    ) -> list[ObjectRef]:
        name = fn.function_name
        try:
            request = self._request_for(opts, name)
        except TaskUnschedulableError as exc:  # as Ray: the program goes on, get() fails
            return self._failed_refs(exc, n_refs(opts.num_returns))
        if opts.executor == "thread":
            return self._submit_thread_task(fn, args, kwargs, opts, request)
        packed = self._writer.pack_args(name, args, kwargs)
        body = None
        if fn._fn_id not in self._functions:
            body = ser.dumps_function(fn._function)
        ids = self._ids
        task_id = next(ids)
        n = opts.num_returns
        return_ids = [next(ids)] if n == 1 else [next(ids) for _ in range(n_refs(n))]
        # Made here, not in enqueue: less work under the lock (and two raylite frames fewer
        # for caller_site to walk). Its args and contained are set once held.
        task = Task(
            task_id, fn._fn_id, name, b"", packed.positions, packed.dep_ids, [], return_ids,
            opts, request, opts.max_retries, site=caller_site(),
        )  # fmt: skip

        def enqueue() -> None:  # lock held
            self._check_alive()
            task.args, task.contained = self._writer.hold_args(packed)
            if body is not None:
                self._functions[fn._fn_id] = body
            new = self._objs.new
            for oid in return_ids:
                new(oid, 1, task_id)
            if type(n) is str:
                self._open_stream(task_id, return_ids, n)
            self._submit(task)

        return self._run_call(return_ids, enqueue, opts.num_returns)

    def _run_call(
        self, return_ids: list[int], enqueue: Callable[[], None], num_returns: int | str
    ) -> list[ObjectRef]:
        """Runs ``enqueue`` in a section (or defers it, inside one); returns the call's refs."""
        if self._guard.held_here():
            self._defer_call(return_ids, enqueue)
        else:
            with self._lock:
                self._settle()
                enqueue()
        return self._refs_of(return_ids, num_returns)

    def _open_stream(self, task_id: int, return_ids: list[int], num_returns: int | str) -> None:
        """Starts the stream of a generator task (lock held); nothing for other tasks."""
        if isinstance(num_returns, str):
            self._streams.open(task_id, return_ids[0], num_returns == "dynamic")

    def _refs_of(self, return_ids: list[int], num_returns: int | str) -> list[ObjectRef]:
        """What ``.remote()`` gives: the refs, or an ObjectRefGenerator for a streaming
        generator (typed as a ref: the API layer hands it on as it is)."""
        if num_returns == 1:
            return [ObjectRef(return_ids[0], self)]
        refs = [ObjectRef(oid, self) for oid in return_ids]
        if num_returns == "streaming":
            return [cast(ObjectRef, ObjectRefGenerator(refs[0], self))]
        return refs

    def _failed_refs(self, error: BaseException, n: int) -> list[ObjectRef]:
        """``n`` refs whose value is ``error`` (a task that can never run)."""
        payload = ser.dumps(error)[0]
        with self._lock:
            self._settle()
            self._check_alive()
            oids = [next(self._ids) for _ in range(n)]
            for oid in oids:
                self._objs.new(oid, 1)
                self._store(oid, payload, True, [])
            return [ObjectRef(oid, self) for oid in oids]

    def _submit_thread_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any],
        opts: TaskOptions, request: Request,
    ) -> list[ObjectRef]:  # fmt: skip
        """A task for the thread executor: its arguments are kept as they are."""
        if isinstance(opts.num_returns, str):
            raise ValueError(
                f"{fn.function_name}() is a generator (num_returns={opts.num_returns!r}), which "
                "runs in a worker process only: remove executor='thread', or return a list."
            )
        args, kwargs, positions, dep_ids = ser.split_refs(args, kwargs)
        task_id = next(self._ids)
        return_ids = [next(self._ids) for _ in range(opts.num_returns)]

        def enqueue() -> None:  # lock held
            self._check_alive()
            self._objs.hold(dep_ids)
            task = Task(
                task_id, fn._fn_id, fn.function_name, b"", positions, dep_ids, [], return_ids,
                opts, request, opts.max_retries, call=(fn._function, args, kwargs),
                site=caller_site(),
            )  # fmt: skip
            for oid in return_ids:
                self._objs.new(oid, 1, task_id)
            self._submit(task)

        return self._run_call(return_ids, enqueue, opts.num_returns)

    def _thread_task_done(self, task: Task, outcome: Outcome) -> None:
        """Stores a thread task's outcome, if it is still wanted (lock held)."""
        if outcome.error is not None:
            if self._states.is_current(task.task_id, thread_worker(task.task_id)) is task:
                self._carry_out((self._states.done_error(task, outcome.error),))
            return
        if self._states.done_ok(task.task_id, thread_worker(task.task_id)) is not task:
            for shm in outcome.shms:  # cancelled meanwhile: nobody wants these
                if shm is not None:
                    self._objs.drop(shm)
            return
        self._finish(task, outcome.payloads, False, outcome.contained, outcome.shms)
        for oid, shm, mapping in zip(task.return_ids, outcome.shms, outcome.mappings, strict=True):
            entry = self._objs.get(oid)
            if shm is not None and entry is not None and entry.shm is shm:
                self._objs.books.keep(oid, shm, mapping)

    def create_actor(
        self, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any], opts: ActorOptions
    ) -> ActorHandle:
        check_local(opts)
        self._guard.refuse_here(f"{cls.__name__}.remote()")
        local = None
        if opts.executor == "thread":  # runs in the driver: arguments stay as they are
            args, kwargs, positions, dep_ids = ser.split_refs(args, kwargs)
            packed = PackedArgs(ser.Serialized(b"", [], []), positions, dep_ids, None)
            local = (cls._cls, args, kwargs)
            body = None
        else:
            packed = self._writer.pack_args(cls.__name__, args, kwargs)
            body = None if cls._cls_id in self._functions else ser.dumps_function(cls._cls)
        with self._lock:
            self._settle()
            self._check_alive()
            if body is not None:
                self._functions[cls._cls_id] = body
            actor_id = self._actors.create(
                cls._cls_id, cls._meta, opts, packed, self.config.namespace, local=local
            )
            actor = self._actors.actors[actor_id]
            actor.site = actor.site or caller_site()
            self._workers.flush_dirty()
            return ActorHandle(ObjectRef(actor_id, self), cls._meta)

    def submit_actor_call(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        opts: MethodOptions,
    ) -> list[ObjectRef]:  # fmt: skip
        py_args = None
        actor_id = handle._actor_ref._id
        if self._actors.is_local(actor_id):  # a thread actor: nothing is pickled
            args, kwargs, positions, dep_ids = ser.split_refs(args, kwargs)
            packed = PackedArgs(ser.Serialized(b"", [], []), positions, dep_ids, None)
            py_args = (args, kwargs)
        else:
            packed = self._writer.pack_args(f"{handle._meta.class_name}.{method}", args, kwargs)
        ids = self._ids
        n = opts.num_returns
        return_ids = [next(ids)] if n == 1 else [next(ids) for _ in range(n_refs(n))]

        def enqueue() -> None:  # lock held
            self._check_alive()
            self._actors.call(actor_id, method, packed, opts, return_ids, py_args=py_args)

        return self._run_call(return_ids, enqueue, opts.num_returns)

    def kill_actor(self, handle: ActorHandle, no_restart: bool) -> None:
        def kill() -> None:  # lock held
            self._check_alive()
            self._actors.kill(handle._actor_id, no_restart)
            self._workers.flush_dirty()

        self._run_op(kill)

    def list_named_actors(self, all_namespaces: bool) -> list[tuple[str, str]]:
        with self._lock:
            return [
                key for key in self._actors.names
                if all_namespaces or key[0] == self.config.namespace
            ]  # fmt: skip

    def exit_actor(self) -> NoReturn:
        raise exit_outside_actor()  # the driver (a thread actor cannot end itself so)

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle:
        self._guard.refuse_here("get_actor()")
        with self._lock:
            self._settle()
            self._check_alive()
            actor_id = self._actors.get_named(name, namespace or self.config.namespace)
            return ActorHandle(ObjectRef(actor_id, self), self._actors.meta(actor_id))

    # placement groups: the decisions are placement.Placement's
    def create_placement_group(
        self, bundles: list[dict[str, float]], strategy: str, name: str
    ) -> PlacementGroup:
        checked = check_bundles(bundles, strategy)
        return self._locked(lambda: self._placement.create(checked, strategy, name))

    def placement_group_ready(self, pg: PlacementGroup) -> ObjectRef:
        return ObjectRef(self._locked(lambda: self._placement.ready(pg)), self)

    def remove_placement_group(self, pg: PlacementGroup) -> None:
        self._locked(lambda: self._placement.remove(pg))

    def placement_group_table(self, pg: PlacementGroup | None) -> dict[str, Any]:
        return self._locked(lambda: self._placement.table(pg))

    def _locked(self, step: Callable[[], _T]) -> _T:
        """``step()`` under the lock of a live runtime; then what it queued goes out."""
        self._guard.refuse_here("a placement group call")
        with self._lock:
            self._settle()
            self._check_alive()
            result = step()
            self._workers.flush_dirty()
            return result

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling 'put' on an ObjectRef is not allowed. If you really want to do this, "
                "wrap the ObjectRef in a list and call 'put' on it."
            )
        try:
            s = ser.serialize(value)
        except ser.SerializationError as exc:
            raise ser.put_error(exc) from None
        self._guard.refuse_here("put()")
        check_inband("The value passed to put()", s.payload)
        writer = self._writer
        shm, mapping = writer.write_shm(s, "an object put", keep=True) if s.buffers else (None, None)
        with self._lock:
            self._settle()
            self._check_alive()
            oid = self._writer.new_object(1, s.payload, shm, s.contained)
            if shm is not None and mapping is not None:
                self._objs.books.keep(oid, shm, mapping)
            return ObjectRef(oid, self)

    # objects and streams: the waits on them are waits.Waits'
    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        return self._waits.get(refs, timeout)

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        return self._waits.wait(refs, num_returns, timeout)

    def future(self, oid: int) -> concurrent.futures.Future[Any]:
        return self._waits.future(oid)

    def stream_next(self, gen_oid: int) -> ObjectRef | None:
        return self._waits.stream_next(gen_oid)

    def stream_future(self, gen_oid: int) -> concurrent.futures.Future[ObjectRef | None]:
        return self._waits.stream_future(gen_oid)

    def stream_status(self, gen_oid: int) -> tuple[bool, bool]:
        return self._waits.stream_status(gen_oid)

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        oid = ref._id

        def cancel() -> None:  # lock held
            self._check_alive()
            entry = self._objs.get(oid)
            if entry is not None and entry.task_id:
                self._cancel_task(entry.task_id, force, recursive)
            self._workers.flush_dirty()

        self._run_op(cancel)

    def _run_op(self, op: Callable[[], None]) -> None:
        """Runs ``op`` in a section, or defers it if called inside one (see locking.py)."""
        if self._guard.held_here():
            self._guard.defer(op)
            return
        with self._lock:
            self._settle()
            op()

    def available_resources(self) -> dict[str, float]:
        with self._lock:
            return {**self.sched.available(), **self._memory}

    def cluster_resources(self) -> dict[str, float]:
        with self._lock:
            return {**self.sched.total(), **self._memory}

    def list_state(
        self, kind: str, filters: list[tuple[str, str, Any]] | None, limit: int | None,
        detail: bool,
    ) -> list[dict[str, Any]]:  # fmt: skip
        return self._state.records(kind, filters, limit)

    def summarize_tasks(self) -> dict[str, Any]:
        return summarize(self._state.tasks())

    def timeline(self) -> list[dict[str, Any]]:
        return self._state.timeline()

    def status(self) -> dict[str, Any]:
        """What ``raylite status`` shows (see ``StateView.status``)."""
        return self._state.status()

    def context(self) -> dict[str, Any]:
        return {
            "worker_id": DRIVER,
            "task_id": None,
            "task_name": None,
            "pid": os.getpid(),
            "session": self.config.session,
            "gpu_ids": [],
            "namespace": self.config.namespace,
        }

    # ObjectRef.__del__ and unpickling call these anywhere (the collector, signal handlers,
    # any thread): they never take the lock, they queue for its next holder (locking.py).
    def add_ref(self, oid: int) -> None:
        self._objs.releases.append(-oid)  # a negative id is an increment, applied in order

    def release(self, oid: int) -> None:
        self._objs.releases.append(oid)  # then the flag, never the other way (io_thread.py)
        loop = self._loop
        if loop.sleeping:  # else the loop's next turn, or the next section, applies it
            loop.sleeping = False
            self._wake()

    def forget_after_fork(self) -> None:
        """In a forked child: closes this copy's channels, so that the zygote and workers see
        EOF when the driver closes its own, and marks it unusable. Shuts nothing down: the
        session is the driver's (docs/fork-and-signal-safety.md)."""
        self._closed = True  # also: _wake() writes nothing from now on
        self._broken = (
            f"This raylite session belongs to process {self.pid}, which this process was "
            "forked from: it cannot be used here (this process starts a session of its own "
            "on its first raylite call)."
        )
        self._workers.forget_after_fork()
        self._loop.close()
        if self._control is not None:
            self._control.forget_after_fork()
        if self._dashboard is not None:
            self._dashboard.forget_after_fork()

    def shutdown(self) -> None:
        if os.getpid() != self.pid:  # a forked child's copy: see forget_after_fork
            return
        if self._guard.held_here():
            # A signal handler (or __del__) that interrupted this thread inside a section:
            # the I/O thread shuts down once that section is over, or atexit does.
            self._shutdown_requested = True
            atexit.register(self.shutdown)
            _runtime.closing(self._down)  # the next session waits for this one to be down
            self._wake()
            return
        with self._lock:
            first = not self._closed
            if first:
                self._closed = True
                for w in self._workers.values():
                    w.gone = True
                self._fail_everything("raylite was shut down before the task finished.")
        if not first:  # shut down, or shutting down on another thread: return once it is
            self._down.wait(timeout=30)
            return
        if threading.current_thread() is not self._io:
            self._loop.wake()
            self._io.join(timeout=5)
        try:
            self._close_parts()
        finally:
            self._down.set()

    def _close_parts(self) -> None:
        """Stops the servers and threads and frees every process, socket and segment."""
        if self._control is not None:
            self._control.close()
        if self._dashboard is not None:
            self._dashboard.close()
        self._threads.shutdown()
        self._workers.close()
        with self._lock:
            self._objs.close()
        self._workers.zygote.close()
        self._loop.close()
        self._session.close()
        self._guard.run_after()  # futures failed by the shutdown get their errors

    def _stop_io(self) -> None:
        """Stops the I/O thread (it sees ``_closed`` once woken)."""
        with self._lock:
            self._closed = True
        self._loop.wake()
        try:
            self._io.join(timeout=5)
        except RuntimeError:  # its start was interrupted: woken and closed, it ends alone
            pass

    # ---- submission and dispatch (lock held) --------------------------------------------

    def _check_alive(self) -> None:
        if self._broken is not None:
            raise RaySystemError(self._broken)
        if self._closed:
            raise RaySystemError(
                "This raylite session has been shut down; call raylite.init() to start a new "
                "one (ObjectRefs from the old session cannot be used in it)."
            )

    def _break(self, why: str) -> None:
        """The runtime cannot go on: fail every task and every later call with ``why``."""
        self._broken = f"{why}\nCall raylite.shutdown() and raylite.init() to start afresh."
        sys.stderr.write(self._broken + "\n")
        self._fail_everything(self._broken)

    def _request_for(self, opts: TaskOptions, name: str) -> Request:
        """The scheduler's request for ``opts``; fails at once if it can never fit here (too
        big, or a Ray option only a cluster honours)."""
        if opts.local.placement_group is None:
            request, why = opts.derived(
                "local-request", lambda: _request_of(opts, self._placement, name)
            )
        else:  # a group's state may change: computed at each call
            request, why = _request_of(opts, self._placement, name)
        if why is not None:
            error = TaskUnschedulableError(f"Task {name}() can never run here: {why}.")
            warn_unschedulable(error)
            raise error
        return request

    def _submit(self, task: Task) -> None:
        self._states.submitted(task)
        missing = []
        if task.dep_ids:
            objects = self._objs
            missing = list(dict.fromkeys(o for o in task.dep_ids if objects[o].payload is None))
        actions = self.sched.submit(
            task.task_id, task.request, task.fn_id, missing, threaded=task.call is not None,
            depth=task.depth,
        )
        self._apply(actions)
        if actions.dispatch:
            return
        if not task.submitted:  # it waits: since when, for the pending-task warning
            task.submitted = time.monotonic()
        if not self._watchdog.watching:
            # Have the I/O thread look at waiting tasks each second.
            self._watchdog.watching = True
            if threading.current_thread() is not self._io:
                self._wake()

    def _ship_function(self, w: Worker, fn_id: int) -> None:
        """Queues the body of ``fn_id`` for ``w`` unless it has it already."""
        if fn_id not in w.known_fns:
            w.known_fns.add(fn_id)
            w.chan.queue(FunctionDef(fn_id, self._functions[fn_id]))

    def _busy_objects(self) -> set[int]:
        """Objects that workers may read at any moment (lock held), not to be spilled: the
        arguments (and the refs inside them) of dispatched tasks, actor calls and actors,
        and every object a worker holds a ref to. Their memory stays mapped while in use,
        and a worker must never be told to forget a segment it is about to read."""
        busy: set[int] = set()
        for task in self._states.tasks.values():
            if task.state == DISPATCHED:
                busy.update(task.dep_ids, task.contained)
                if type(task.args) is int:
                    busy.add(task.args)
        actors = self._actors
        for args, dep_ids, contained in itertools.chain(
            ((c.args, c.dep_ids, c.contained) for c in actors.calls.values()),
            ((a.args, a.dep_ids, a.contained) for a in actors.actors.values()),
        ):
            busy.update(dep_ids, contained)
            if type(args) is int:
                busy.add(args)
        for w in self._workers.values():
            busy.update(w.borrows)
        return busy

    def _apply(self, actions: Actions) -> None:
        """Carries out the scheduler's instructions (and those that dispatching implies)."""
        for task_id, wid in actions.dispatch:
            more = self._dispatch(task_id, wid)
            if more is not None:
                self._apply(more)  # rare: a task failed on a failed argument
        if actions.start_workers:
            self._spawn(actions.start_workers)

    def _dispatch(self, task_id: int, wid: int) -> Actions | None:
        task = self._states.tasks.get(task_id)
        if task is None:  # not a task (ids are from one counter), or finished meanwhile
            if task_id in self._actors.creations:  # a dedicated actor's lease
                self._actors.dispatch_creation(task_id, wid)
                return None
            if self._placement.reserved(task_id):  # a placement group's reservation
                return None
            return self.sched.task_done(wid, task_id)  # cancelled meanwhile
        for oid in task.dep_ids:
            entry = self._objs[oid]
            if entry.is_error and entry.payload is not None:  # failed: so does this task
                self._carry_out((self._states.dep_failed(task, entry.payload),))
                return self.sched.task_done(wid, task_id)
        self._states.dispatched(task, wid)
        if wid < 0:  # a thread task: its pseudo-worker is the driver's thread pool
            self._threads.submit(task)
            return None
        w = self._workers[wid]
        args, values, fds = self._objs.wire_call(w.wid, w.mapped, task.args, task.dep_ids)
        chan = w.chan
        opts = task.opts
        # Its own function, or (env_vars set) its body wrapped to set them.
        fn_id = self._placement.function_for(task) if opts.local.env_vars else task.fn_id
        if fn_id not in w.known_fns:
            self._ship_function(w, fn_id)
        n = opts.num_returns
        stream = 0 if type(n) is int else stream_mode(n)
        chan.queue(
            TaskRequest(
                task_id, fn_id, task.name, args, task.dep_positions, values,
                task.return_ids, self._workers.gpu_ids(wid), stream,
            ),
            fds,
        )  # fmt: skip
        if self.sched.in_flight(wid) <= 1:
            self._workers.flush_now(w)  # an idle worker: send now
        else:
            self._workers.dirty.add(w)  # a busy one: goes with the next batch (see the docstring)
        return None

    def _finish(self, task: Task, payloads: list[bytes], is_error: bool,
                contained: list[list[int]] | None = None,
                shms: list[Shm | None] | None = None) -> None:  # fmt: skip
        """Stores the outcome of a task that ended (``TaskStates``) and drops what it held."""
        history = self._history
        if history.enabled:
            history.add((
                task.task_id, task.name, NORMAL_TASK, self._pid_of(task), task.lane, task.start,
                task.end, payloads[0] if is_error else None, 0,
                task.opts.max_retries - task.retries_left,
            ))  # fmt: skip
        if shms is None and (not contained or not contained[0]) and len(task.return_ids) == 1:
            # The common case (one small result, or an error): stored without the loop.
            self._store(task.return_ids[0], payloads[0], is_error, ())
        else:
            self._finish_call(task.return_ids, payloads, is_error, [], contained, shms)
        decref = self._objs.decref
        for oid in task.dep_ids:
            decref(oid)
        for oid in task.contained:
            decref(oid)

    def _finish_plain(self, pid: int, done: list[tuple[Task, bytes, float, float]]) -> None:
        """``_finish`` for a batch of tasks that ended well in process ``pid``, each with one
        small result holding no refs: ``[(task, payload, start, duration)]`` (the history
        gets the batch at once; ~1.5 µs a task less than one ``_finish`` each)."""
        history = self._history
        if history.enabled:
            history.extend([
                (task.task_id, task.name, NORMAL_TASK, pid if start else 0, task.lane, start,
                 start + duration, None, 0, task.opts.max_retries - task.retries_left)
                for task, _, start, duration in done
            ])  # fmt: skip
        store = self._store
        decref = self._objs.decref
        for task, payload, _, _ in done:
            store(task.return_ids[0], payload, False, ())
            for oid in task.dep_ids:
                decref(oid)
            for oid in task.contained:
                decref(oid)

    def _finish_call(self, return_ids: Sequence[int], payloads: list[bytes], is_error: bool,
                     holds: Sequence[int], contained: list[list[int]] | None = None,
                     shms: list[Shm | None] | None = None) -> None:  # fmt: skip
        """Stores a call's outcome (one error for all its results) and releases ``holds``."""
        for i, oid in enumerate(return_ids):
            inner = contained[i] if contained else []
            if inner:
                self._objs.hold(inner)
            shm = shms[i] if shms else None
            self._store(oid, payloads[i] if not is_error else payloads[0], is_error, inner, shm)
        for oid in holds:
            self._objs.decref(oid)

    def _pid_of(self, task: Task) -> int:
        """The process ``task`` ran in: a worker's, the driver's for thread tasks, 0 if none."""
        if not task.start or task.worker is None:
            return 0
        if task.worker < 0:
            return os.getpid()
        w = self._workers.get(task.worker)
        return w.pid if w is not None else 0

    def _carry_out(self, instructions: Iterable[Instruction]) -> None:
        """Does what the task state machine decided (lock held)."""
        for instruction in instructions:
            match instruction:
                case Resubmit(task):
                    self._submit(task)
                case Fail(task, error):
                    payload = error if isinstance(error, bytes) else ser.dumps(error)[0]
                    self._finish(task, [payload], is_error=True)
                case Cancelled(task):
                    error = TaskCancelledError(f"{task.task_id:056x}")
                    self._finish(task, [ser.dumps(error)[0]], is_error=True)
                case Crashed(task, tries, death):
                    why = crash_message(task.name, death.pid, death.cause, death.status, tries,
                                        task.opts.max_retries)  # fmt: skip
                    self._finish(task, [ser.dumps(WorkerCrashedError(why))[0]], is_error=True)
                case KillWorker(wid):
                    if (w := self._workers.get(wid)) is not None:
                        signal_pid(w.pid, signal.SIGKILL)  # its death ends its tasks
                case Interrupt(wid, task_id):
                    if (w := self._workers.get(wid)) is not None:
                        write_slot(w.cancel_slot, CANCEL_AT, task_id)
                        signal_pid(w.pid, CANCEL_SIGNAL)
                case Unqueue(wid, task_id):  # it drops it and reports it cancelled
                    if (w := self._workers.get(wid)) is not None:
                        w.chan.queue(CancelTask(task_id))
                        self._workers.dirty.add(w)

    def _store(
        self, oid: int, payload: bytes, is_error: bool, contained: Sequence[int],
        shm: Shm | None = None,
    ) -> None:
        if self._objs.store(oid, payload, is_error, contained, shm):
            actions = self.sched.object_ready(oid)
            if actions is not NOTHING:  # no task waited for it: the common case
                self._apply(actions)

    def _cancel_task(self, task_id: int, force: bool, recursive: bool) -> None:
        """``cancel()`` of an actor call (the actor manager's) or a task (lock held)."""
        if not self._actors.cancel(task_id, force):
            self._carry_out(self._states.cancel(task_id, force, recursive))

    # ---- workers (lock held) ------------------------------------------------------------

    def _spawn(self, n: int) -> None:
        """Starts ``n`` pool workers (the scheduler hears of each once it runs)."""
        for _ in range(n):
            try:
                self._workers.spawn()
            except OSError as exc:
                self.sched.worker_start_failed()
                self._watchdog.no_worker_started(exc)

    def _on_zygote(self) -> None:
        events = self._workers.zygote.events()
        if events is None:  # the zygote died: so did every worker
            self._loop.sel.unregister(self._workers.zygote.sock)
            for w in list(self._workers.values()):
                self._worker_died(w, None)
            self._break("raylite's worker pool died (its zygote process was killed).")
            return
        for event in events:
            if event[0] == "started":
                _, wid, pid = event
                born = self._workers.started(wid, pid)
                if born is not None and wid not in self._actors.hosts:  # hosts serve actors
                    self._apply(self.sched.worker_started(wid))
            elif event[0] == "exited":
                _, pid, status = event
                dead = self._workers.exited(pid)
                if dead is not None:
                    self._drain(dead)
                    self._worker_died(dead, status)

    def _drain(self, w: Worker) -> None:
        """Reads what a dead worker sent before it died."""
        while not w.gone and w.cause is None:
            try:
                chunk = w.chan.read()
            except (BlockingIOError, InterruptedError, OSError):
                return
            if not chunk:
                return
            self._receive(w, chunk)

    def _receive(self, w: Worker, chunk: bytes) -> None:
        """Handles the messages in ``chunk``; bytes that are not frames kill the worker."""
        try:
            msgs = w.chan.feed(chunk)
        except ConnectionError as exc:
            self._workers.kill(w, STRAY_BYTES.format(exc))
            return
        self._inbox.handle(w, msgs)

    def _channel_closed(self, w: Worker) -> None:
        """EOF from ``w``: it is exiting (its exit report follows, with its status), or it
        closed its end while it goes on running; then it is killed after a grace period."""
        self._workers.unwatch(w)

        def check() -> None:
            if not w.gone:
                self._workers.kill(w, CLOSED_CHANNEL)

        self._loop.at(time.monotonic() + _EOF_GRACE_S, check)

    def _worker_died(self, w: Worker, status: int | None) -> None:
        running = self._workers.remove(w)  # 0: it ran none
        if running is None:  # removed already
            return
        self._objs.worker_gone(w.wid, w.borrows, w.mapped)
        actions, lost = self.sched.worker_died(w.wid)
        if w.cause is not None and lost:  # killed for what its running task (first) did
            running = lost[0]
        self._actors.process_died(w.wid, describe_exit(status))
        self._carry_out(self._states.worker_died(lost, running, Death(w.pid, w.cause, status)))
        self._apply(actions)

    # ---- the I/O thread (io_thread.IoLoop runs its turns) ------------------------------

    def _io_failed(self, details: str) -> None:
        """The I/O thread failed: every task and waiter fails now with RaySystemError."""
        try:
            with self._lock:
                if not self._closed and self._broken is None:
                    self._break(f"raylite's I/O thread failed:\n{details}")
        finally:
            self._guard.run_after()  # futures get their errors too

    def _fail_everything(self, why: str) -> None:
        self._carry_out(self._states.fail_all(RaySystemError(why)))
        self._actors.fail_all(ser.dumps(RaySystemError(why))[0])


def _error_cause(payload: bytes) -> BaseException | None:
    """The user's exception in a task's pickled error (``retry_exceptions`` matches it)."""
    exc = ser.loads(payload)
    return exc.cause if isinstance(exc, RayTaskError) else exc


def _request_of(
    opts: TaskOptions, placement: Placement, name: str
) -> tuple[Request, str | None]:
    """The scheduler's request for ``opts`` under its placement options, and why it can
    never run here (``None`` if it can); ValueError for a Ray option only a cluster honours
    (``check_local``). Only a placement group's reason names the task (``name``), and those
    are not kept on ``opts``."""
    check_local(opts)
    local = opts.local
    base = Request.of(opts.cpus, opts.num_gpus, {**opts.resources, **local.resources})
    return placement.request_for(base, local, f"{name}()")

