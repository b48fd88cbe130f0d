"""Messages from workers, as the driver handles them: ``WorkerMessages``.

::

    I/O thread (lock held): rt._receive(w, chunk) ── Channel.feed ──> WorkerMessages.handle
    worker ── TasksDone (columns) ──> TaskStates.done_ok, then rt._finish_plain: a run of
                                      small results stored, the history told, in one pass
           ── TaskDone ─────────────> TaskStates.done_ok/done_error: results stored (big ones
                                      adopted), or the error: retried or stored
           ── SubmitTask / PutObject ─> nested task / object, borrowed by the worker
           ── GetRequest / WaitRequest > answered now, or when ready (worker lends its CPU)
           ── RefOps ─────────────────> borrows, releases, unmapped segments
           ── actor requests ─────────> ActorManager
           ── CancelRequest ──────────> the runtime's cancel (TaskStates.cancel)

Every handler runs in the I/O thread with the runtime's lock held. ``WorkerMessages`` owns
only the parsed options of nested tasks; it is given the parts it reads and writes (object
table, worker set, streams, actors, scheduler, task states, writer, I/O loop) and the
runtime's few actions (``Core``) at construction. Each message class has one handler in a
table whose entries mypy checks (``_entry``); ``TasksDone`` and ``TaskDone``, the hot ones,
are tested first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from . import serialization as ser
from .objects import Waiter, lost
from .protocol import (
    ActorExited,
    ActorInfo,
    ActorReady,
    CancelRequest,
    CreateActorRequest,
    FunctionDef,
    GeneratorItem,
    GetActorRequest,
    GetReply,
    GetRequest,
    KillActorRequest,
    Message,
    PutObject,
    RefOps,
    StreamNextReply,
    StreamNextRequest,
    SubmitActorCall,
    SubmitTask,
    TaskDone,
    TasksDone,
    TasksReturned,
    Unblocked,
    Value,
    WaitReply,
    WaitRequest,
)
from .task_states import Instruction, Resubmit, TaskStates
from .tasks import PackedArgs, Task

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._options import TaskOptions
    from .actors import ActorManager
    from .io_thread import IoLoop
    from .objects import ObjectTable
    from .scheduler import Actions, Request, Scheduler
    from .store import Shm
    from .streams import StreamTable
    from .workers import Worker, WorkerSet
    from .writes import ObjectWriter

__all__ = ["Core", "WorkerMessages"]

_NESTED_OPTIONS = 256  # parsed options of nested tasks kept, by their pickled bytes

_M = TypeVar("_M")
_Handler = Callable[["Worker", Any], None]


def _entry(cls: type[_M], handler: Callable[[Worker, _M], None]) -> tuple[type, _Handler]:
    """A handler table entry: mypy checks that ``handler`` takes a ``cls`` message."""
    return cls, handler


@dataclass(frozen=True, slots=True, kw_only=True)
class Core:
    """What the message handlers ask of the runtime (all with its lock held)."""

    apply: Callable[[Actions], None]  # carry out the scheduler's instructions
    carry_out: Callable[[Iterable[Instruction]], None]  # and the task state machine's
    submit: Callable[[Task], None]  # hand a task to the state machine and the scheduler
    # store(oid, payload, is_error, contained, shm): a value or error, and who waits wakes
    store: Callable[[int, bytes, bool, list[int], Shm | None], None]
    # finish(task, payloads, is_error, contained, shms): an ended task's results
    finish: Callable[[Task, list[bytes], bool, list[list[int]] | None, list[Shm | None] | None], None]
    # finish_plain(pid, [(task, payload, start, duration)]): ``finish`` for a batch of tasks
    # that each returned one small value holding no refs, run in process ``pid``
    finish_plain: Callable[[int, list[tuple[Task, bytes, float, float]]], None]
    cancel: Callable[[int, bool, bool], None]  # cancel(task_id, force, recursive)
    request_for: Callable[[TaskOptions, str], Request]  # a task's resource request


class WorkerMessages:
    """The driver's handlers of worker messages.

    Args:
        core: the runtime's actions (see ``Core``).
        objs, workers, streams, actors, sched, states, writer, loop: the parts the handlers
            read and change (owned by the runtime).
        functions: ``{fn id: pickled body}``, the runtime's, filled by ``FunctionDef``s.
        namespace: the session's namespace (``get_actor`` without one).
    """

    def __init__(
        self, *, core: Core, objs: ObjectTable, workers: WorkerSet, streams: StreamTable,
        actors: ActorManager, sched: Scheduler, states: TaskStates, writer: ObjectWriter,
        loop: IoLoop, functions: dict[int, bytes], namespace: str,
    ) -> None:  # fmt: skip
        self._apply = core.apply
        self._carry_out = core.carry_out
        self._submit = core.submit
        self._store = core.store
        self._finish = core.finish
        self._finish_plain = core.finish_plain
        self._cancel_task = core.cancel
        self._request_for = core.request_for
        self._objs = objs
        self._workers = workers
        self._streams = streams
        self._actors = actors
        self._sched = sched
        self._states = states
        self._writer = writer
        self._loop = loop
        self._functions = functions
        self._namespace = namespace
        # {pickled options from workers: parsed}, the newest _NESTED_OPTIONS kept
        self._options: dict[bytes, tuple[TaskOptions, Request]] = {}
        self._handlers: dict[type, _Handler] = dict([
            _entry(RefOps, self._on_ref_ops),
            _entry(SubmitTask, self._on_nested_submit),
            _entry(FunctionDef, self._on_function),
            _entry(PutObject, self._on_nested_put),
            _entry(GetRequest, self._on_nested_wait),
            _entry(WaitRequest, self._on_nested_wait),
            _entry(Unblocked, self._on_unblocked),
            _entry(TasksReturned, self._on_tasks_returned),
            _entry(CreateActorRequest, self._on_actor_request),
            _entry(GetActorRequest, self._on_actor_request),
            _entry(SubmitActorCall, self._on_nested_actor_call),
            _entry(KillActorRequest, self._on_kill_actor),
            _entry(ActorExited, self._on_actor_exited),
            _entry(ActorReady, self._on_actor_ready),
            _entry(GeneratorItem, self._on_generator_item),
            _entry(StreamNextRequest, self._on_stream_next),
            _entry(CancelRequest, self._on_cancel),
        ])  # fmt: skip

    def handle(self, w: Worker, msgs: list[Message]) -> None:
        """Handles what ``w`` sent (one read's frames). Its tasks done are scheduled in one
        pass at the end; those of ``TasksDone`` (one small value each) are finished in one
        pass per run of them, before any other message (which may ask for their results)."""
        done: list[tuple[int, int, float]] = []
        plain: list[tuple[Task, bytes, float, float]] = []
        handlers = self._handlers
        done_ok = self._states.done_ok
        wid = w.wid
        for msg in msgs:
            if type(msg) is TasksDone:  # the hot one: replies of one small value, no refs
                for task_id, result, duration, start in zip(
                    msg.task_ids, msg.results, msg.durations, msg.starts, strict=True
                ):
                    task = done_ok(task_id, wid)
                    if task is not None:
                        plain.append((task, result, start, duration))
                        done.append((wid, task_id, duration))
                    else:  # not live on this worker (an earlier run's): the general path
                        reply = TaskDone(task_id, [result], [[]], None, duration, start)
                        self._on_task_done(w, reply, done)
                continue
            if type(msg) is TaskDone:
                self._on_task_done(w, msg, done)
                continue
            if plain:
                self._finish_plain(w.pid, plain)
                plain = []
            handler = handlers.get(type(msg))
            if handler is None:
                self._workers.kill(w, f"it sent a message the driver does not take: {msg!r:.200}")
                return
            handler(w, msg)
        if plain:
            self._finish_plain(w.pid, plain)
        if done:
            self._apply(self._sched.tasks_done(done))

    def _on_ref_ops(self, w: Worker, msg: RefOps) -> None:
        objs = self._objs
        for oid in msg.borrow:
            if oid not in w.borrows and oid in objs:
                w.borrows.add(oid)
                objs[oid].refcount += 1
        for oid in msg.release:
            if oid in w.borrows:
                w.borrows.discard(oid)
                objs.decref(oid)
        for oid in msg.unmapped:
            w.mapped.discard(oid)
            objs.books.unmapped(oid, w.wid)

    def _on_function(self, w: Worker, msg: FunctionDef) -> None:
        self._functions.setdefault(msg.fn_id, msg.payload)
        w.known_fns.add(msg.fn_id)

    def _on_unblocked(self, w: Worker, msg: Unblocked) -> None:
        self._apply(self._sched.worker_unblocked(w.wid))

    def _on_tasks_returned(self, w: Worker, msg: TasksReturned) -> None:
        if w.waits:  # it waits (blocked): it may hold no more tasks. A wait answered at
            # once (read before this) lends no CPU: no needless extra workers.
            self._apply(self._sched.worker_blocked(w.wid))
        self._states.returned(msg.task_ids)
        self._apply(self._sched.tasks_returned(w.wid, msg.task_ids))

    def _on_kill_actor(self, w: Worker, msg: KillActorRequest) -> None:
        self._actors.kill(msg.actor_id, msg.no_restart)

    def _on_actor_exited(self, w: Worker, msg: ActorExited) -> None:
        self._actors.exited(w.wid, msg)

    def _on_actor_ready(self, w: Worker, msg: ActorReady) -> None:
        self._actors.ready(msg.actor_id, msg.error)

    def _on_cancel(self, w: Worker, msg: CancelRequest) -> None:
        entry = self._objs.get(msg.oid)
        if entry is not None and entry.task_id:
            self._cancel_task(entry.task_id, msg.force, msg.recursive)

    def _on_task_done(self, w: Worker, msg: TaskDone, done: list[tuple[int, int, float]]) -> None:
        states = self._states
        results: list[Any] = msg.results  # Values; bytes only once big ones are adopted
        shms: list[Shm | None] | None = None
        if any(type(v) is tuple for v in results):  # big results: adopt their fds, in order
            task = states.tasks.get(msg.task_id)
            what = f"the result of {task.name}()" if task is not None else "a task result"
            keeper = (w.wid, w.mapped)
            taken = [self._objs.take(w.chan.in_fds, v, what, keeper) for v in results]
            results = [t[0] for t in taken]
            shms = [t[1] for t in taken]
            if any(t[2] for t in taken):  # one did not fit: the task fails with that error
                for shm in shms:
                    if shm is not None:
                        self._objs.drop(shm)
                msg = msg._replace(error=next(t[0] for t in taken if t[2]))
                shms = None
        if self._actors.done(msg, results, shms):
            return
        if msg.error is None:
            task = states.done_ok(msg.task_id, w.wid)
            if task is not None:
                task.start, task.end = msg.start, msg.start + msg.duration
                self._finish(task, results, False, msg.contained, shms)
            elif shms:  # nobody wants these results (cancelled meanwhile)
                for shm in shms:
                    if shm is not None:
                        self._objs.drop(shm)
        elif (task := states.is_current(msg.task_id, w.wid)) is not None:
            task.start, task.end = msg.start, msg.start + msg.duration
            decision = states.done_error(task, msg.error)
            if type(decision) is Resubmit:  # a retry: its lease is freed first
                actions = self._sched.task_done(w.wid, msg.task_id, msg.duration)
                self._submit(task)
                self._apply(actions)
                return
            self._carry_out((decision,))
        done.append((w.wid, msg.task_id, msg.duration))

    def _on_generator_item(self, w: Worker, msg: GeneratorItem) -> None:
        """A value a generator task yielded: stored, and handed to its stream."""
        payload, shm, failed = self._objs.take(
            w.chan.in_fds, msg.value, "a value a generator task yielded", (w.wid, w.mapped)
        )
        self._objs.new(msg.oid, 1)  # the stream's reference
        if failed or msg.is_error:
            self._store(msg.oid, payload, True, [], None)
        else:
            self._objs.hold(msg.contained)
            self._store(msg.oid, payload, False, msg.contained, shm)
        if not self._streams.item(msg.task_id, msg.nth, msg.oid):
            self._objs.decref(msg.oid)  # nobody will take it (generator gone, or a rerun's)

    def _on_stream_next(self, w: Worker, msg: StreamNextRequest) -> None:
        """``next()`` on a generator inside a worker: answered when the next ref is there
        (the worker lends its CPU meanwhile, as in ``get``)."""
        claim = self._streams.claim(msg.gen_oid)

        def reply(_: Any = None) -> None:
            ref = claim.result()
            oid = 0
            if ref is not None:  # the ref's count becomes the worker's borrow
                oid = ref._id
                ref._owner = None
                if w.gone or oid in w.borrows:
                    self._objs.releases.append(oid)
                else:
                    w.borrows.add(oid)
            w.waits.pop(msg.req_id, None)
            if not w.gone:
                w.chan.queue(StreamNextReply(msg.req_id, oid))
                self._workers.dirty.add(w)

        if claim.done():
            reply()
            return
        w.waits[msg.req_id] = None
        self._apply(self._sched.worker_blocked(w.wid))
        claim.add_done_callback(reply)

    def _on_nested_submit(self, w: Worker, msg: SubmitTask) -> None:
        parent = self._sched.queued_on(w.wid)
        payload, shm, failed = self._objs.take(
            w.chan.in_fds, msg.args, f"the arguments of {msg.name}()"
        )
        try:
            if failed:
                raise ser.loads(payload)
            opts, request = self._options.get(msg.options) or self._nested_options(msg)
            args: bytes | int = payload
            contained = msg.contained
            if shm is not None:
                args = self._writer.new_object(0, payload, shm, contained)
                contained = [args]
                shm = None
            task = Task(
                msg.task_id, msg.fn_id, msg.name, args, msg.dep_positions, msg.dep_ids,
                contained, msg.return_ids, opts, request, opts.max_retries, owner=w.wid,
            )  # fmt: skip
            for oid in msg.return_ids:
                self._objs.new(oid, 1, msg.task_id)
                w.borrows.add(oid)
            if isinstance(opts.num_returns, str):
                self._streams.open(msg.task_id, msg.return_ids[0], opts.num_returns == "dynamic")
            self._objs.hold(msg.dep_ids + contained)
        except Exception as exc:
            if shm is not None:
                self._objs.drop(shm)
            for oid in msg.return_ids:
                entry = self._objs.get(oid) or self._objs.new(oid, 1, msg.task_id)
                w.borrows.add(oid)
                if entry.payload is None:
                    self._store(oid, ser.dumps(exc)[0], True, [], None)
            return
        # The running task is the first one not done: a TaskDone in the same batch has
        # finished its task already, but leaves the scheduler's queue at the batch's end.
        parent_task = next((self._states.tasks[t] for t in parent if t in self._states.tasks), None)
        task.depth = parent_task.depth + 1 if parent_task is not None else 1
        if parent_task is not None:
            if parent_task.children is None:
                parent_task.children = []
            parent_task.children.append(msg.task_id)
        self._submit(task)

    def _nested_args(self, w: Worker, msg: Any, name: str) -> PackedArgs:
        """A nested call's arguments as ``PackedArgs`` (their segment's fd adopted).

        Raises:
            ObjectStoreFullError: the arguments do not fit the store.
        """
        payload, shm, failed = self._objs.take(
            w.chan.in_fds, msg.args, f"the arguments of {name}()"
        )
        if failed:
            raise ser.loads(payload)
        s = ser.Serialized(payload, [], msg.contained)
        return PackedArgs(s, msg.dep_positions, msg.dep_ids, shm)

    def _on_actor_request(
        self, w: Worker, msg: CreateActorRequest | GetActorRequest
    ) -> None:
        actor_id, meta, error = 0, b"", None
        try:
            if isinstance(msg, GetActorRequest):
                namespace = msg.namespace or self._namespace
                actor_id = self._actors.get_named(msg.name, namespace, w)
            else:
                packed = self._nested_args(w, msg, "an actor's __init__")
                actor_id = self._actors.create(
                    msg.fn_id, ser.loads(msg.meta), ser.loads(msg.options), packed,
                    self._namespace, w,
                )  # fmt: skip
            meta = ser.dumps(self._actors.meta(actor_id))[0]
        except Exception as exc:
            error = ser.dumps(exc)[0]
        w.chan.queue(ActorInfo(msg.req_id, actor_id, meta, error))
        self._workers.dirty.add(w)

    def _on_nested_actor_call(self, w: Worker, msg: SubmitActorCall) -> None:
        try:
            packed = self._nested_args(w, msg, msg.method)
            self._actors.call(
                msg.actor_id, msg.method, packed, ser.loads(msg.options), msg.return_ids, w
            )
        except Exception as exc:  # the caller learns at get()
            for oid in msg.return_ids:
                entry = self._objs.get(oid) or self._objs.new(oid, 1)
                w.borrows.add(oid)
                if entry.payload is None:
                    self._store(oid, ser.dumps(exc)[0], True, [], None)

    def _nested_options(self, msg: SubmitTask) -> tuple[TaskOptions, Request]:
        opts = ser.loads(msg.options)
        pair = (opts, self._request_for(opts, msg.name))
        if len(self._options) >= _NESTED_OPTIONS:  # the oldest goes: tasks may make many
            del self._options[next(iter(self._options))]
        self._options[msg.options] = pair
        return pair

    def _on_nested_put(self, w: Worker, msg: PutObject) -> None:
        payload, shm, failed = self._objs.take(
            w.chan.in_fds, msg.value, "an object put by a task", (w.wid, w.mapped)
        )
        self._objs.new(msg.oid, 1)
        w.borrows.add(msg.oid)
        if failed:
            self._store(msg.oid, payload, True, [], None)
            return
        self._objs.hold(msg.contained)
        self._store(msg.oid, payload, False, msg.contained, shm)

    def _on_nested_wait(self, w: Worker, msg: GetRequest | WaitRequest) -> None:
        oids = list(dict.fromkeys(msg.oids))
        missing = [oid for oid in oids if oid not in self._objs]
        pending = [
            self._objs[o] for o in oids if o not in missing and self._objs[o].payload is None
        ]
        if isinstance(msg, WaitRequest):
            need = msg.num_returns - (len(oids) - len(pending))
        else:
            need = len(pending)

        def reply(timed_out: bool = False) -> None:
            w.waits.pop(msg.req_id, None)
            if w.gone:
                return
            if type(msg) is WaitRequest:
                ready = [o for o in oids if o in self._objs and self._objs[o].payload is not None]
                w.chan.queue(WaitReply(msg.req_id, ready))
            elif timed_out:
                w.chan.queue(GetReply(msg.req_id, None))
            else:
                fds: list[int] = []
                values = [self._value_for(w, o, fds) for o in msg.oids]
                w.chan.queue(GetReply(msg.req_id, values), fds)
            self._workers.dirty.add(w)

        if missing or need <= 0:
            reply()
            return
        waiter = Waiter(need, reply)
        self._objs.add_waiter(pending, waiter)
        w.waits[msg.req_id] = None if msg.timeout is not None else [
            o for o in oids if o not in missing and self._objs[o].payload is None
        ]  # fmt: skip
        self._apply(self._sched.worker_blocked(w.wid))
        if msg.timeout is not None:

            def expire() -> None:
                if not waiter.fired:
                    waiter.fired = True
                    reply(timed_out=True)

            self._loop.at(time.monotonic() + msg.timeout, expire)

    def _value_for(self, w: Worker, oid: int, fds: list[int]) -> tuple[bool, Value]:
        entry = self._objs.get(oid)
        if entry is None or entry.payload is None:
            return True, ser.dumps(lost(oid))[0]
        return entry.is_error, self._objs.wire(w.wid, w.mapped, oid, fds)
