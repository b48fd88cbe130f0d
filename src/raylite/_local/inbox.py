# mypy: disable-error-code="misc"
# (the handlers annotate self as LocalRuntime, the class they are mixed into)
"""Messages from workers, as the driver handles them (part of ``LocalRuntime``).

::

    worker ── TaskDone ─────────────> results stored (big ones adopted), task finished
           ── SubmitTask / PutObject ─> nested task / object, borrowed by the worker
           ── GetRequest / WaitRequest > answered now, or when ready (worker lends its CPU)
           ── RefOps ─────────────────> borrows, releases, unmapped segments
           ── actor requests ─────────> ActorManager

``WorkerMessages`` is a mixin of ``LocalRuntime`` (runtime.py) so the runtime stays a size
one can read: every method runs with the runtime's lock held, in the I/O thread, and uses
the runtime's state.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..exceptions import RayTaskError
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
    TasksReturned,
    Unblocked,
    Value,
    WaitReply,
    WaitRequest,
)
from .tasks import PackedArgs, Task

if TYPE_CHECKING:
    from .._options import TaskOptions
    from .runtime import LocalRuntime
    from .scheduler import Request
    from .store import Shm
    from .workers import Worker

__all__ = ["WorkerMessages"]

_NESTED_OPTIONS = 256  # parsed options of nested tasks kept, by their pickled bytes


class WorkerMessages:
    """The driver's handlers of worker messages (mixed into ``LocalRuntime``)."""

    def _handle(self: LocalRuntime, w: Worker, msgs: list[Message]) -> None:
        done: list[tuple[int, int, float]] = []  # scheduled in one pass at the end
        for msg in msgs:
            kind = type(msg)
            if kind is TaskDone:
                self._on_task_done(w, msg, done)  # type: ignore[arg-type]
            elif kind is RefOps:
                for oid in msg.borrow:  # type: ignore[attr-defined]
                    if oid not in w.borrows and oid in self._objs:
                        w.borrows.add(oid)
                        self._objs[oid].refcount += 1
                for oid in msg.release:  # type: ignore[attr-defined]
                    if oid in w.borrows:
                        w.borrows.discard(oid)
                        self._objs.decref(oid)
                for oid in msg.unmapped:  # type: ignore[attr-defined]
                    w.mapped.discard(oid)
                    self._objs.books.unmapped(oid, w.wid)
            elif kind is SubmitTask:
                self._on_nested_submit(w, msg)  # type: ignore[arg-type]
            elif kind is FunctionDef:
                self._functions.setdefault(msg.fn_id, msg.payload)  # type: ignore[attr-defined]
                w.known_fns.add(msg.fn_id)  # type: ignore[attr-defined]
            elif kind is PutObject:
                self._on_nested_put(w, msg)  # type: ignore[arg-type]
            elif kind is GetRequest or kind is WaitRequest:
                self._on_nested_wait(w, msg)  # type: ignore[arg-type]
            elif kind is Unblocked:
                self._apply(self.sched.worker_unblocked(w.wid))
            elif kind is TasksReturned:
                if w.waits:  # it waits (blocked): it may hold no more tasks. A wait answered
                    # at once (read before this) lends no CPU: no needless extra workers.
                    self._apply(self.sched.worker_blocked(w.wid))
                self._apply(self.sched.tasks_returned(w.wid, msg.task_ids))  # type: ignore[attr-defined]
            elif kind is CreateActorRequest or kind is GetActorRequest:
                self._on_actor_request(w, msg)  # type: ignore[arg-type]
            elif kind is SubmitActorCall:
                self._on_nested_actor_call(w, msg)  # type: ignore[arg-type]
            elif kind is KillActorRequest:
                self._actors.kill(msg.actor_id, msg.no_restart)  # type: ignore[attr-defined]
            elif kind is ActorExited:
                self._actors.exited(w.wid, msg)  # type: ignore[arg-type]
            elif kind is ActorReady:
                self._actors.ready(msg.actor_id, msg.error)  # type: ignore[attr-defined]
            elif kind is GeneratorItem:
                self._on_generator_item(w, msg)  # type: ignore[arg-type]
            elif kind is StreamNextRequest:
                self._on_stream_next(w, msg)  # type: ignore[arg-type]
            elif kind is CancelRequest:
                entry = self._objs.get(msg.oid)  # type: ignore[attr-defined]
                if entry is not None and entry.task_id:
                    self._cancel_task(entry.task_id, msg.force, msg.recursive)  # type: ignore[attr-defined]
        if done:
            self._apply(self.sched.tasks_done(done))

    def _on_task_done(
        self: LocalRuntime, w: Worker, msg: TaskDone, done: list[tuple[int, int, float]]
    ) -> None:
        task = self._tasks.get(msg.task_id)
        results = msg.results
        shms: list[Shm | None] | None = None
        if any(type(v) is tuple for v in results):  # big results: adopt their fds, in order
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
        if self._actors.done(msg, results, shms):  # type: ignore[arg-type]
            return
        if task is not None and task.worker == w.wid:
            task.start, task.end = msg.start, msg.start + msg.duration
            if msg.error is None:
                self._finish(task, results, False, msg.contained, shms)  # type: ignore[arg-type]
            elif not task.cancelled and self._should_retry(task, msg.error):
                task.retries_left -= 1
                task.worker = None
                actions = self.sched.task_done(w.wid, msg.task_id, msg.duration)
                self._submit(task)
                self._apply(actions)
                return
            else:
                self._finish(task, [msg.error], is_error=True)
        elif shms:  # nobody wants these results (cancelled meanwhile)
            for shm in shms:
                if shm is not None:
                    self._objs.drop(shm)
        done.append((w.wid, msg.task_id, msg.duration))

    def _on_generator_item(self: LocalRuntime, w: Worker, msg: GeneratorItem) -> None:
        """A value a generator task yielded: stored, and handed to its stream."""
        payload, shm, failed = self._objs.take(
            w.chan.in_fds, msg.value, "a value a generator task yielded", (w.wid, w.mapped)
        )
        self._objs.new(msg.oid, 1)  # the stream's reference
        if failed or msg.is_error:
            self._store(msg.oid, payload, True, [])
        else:
            self._objs.hold(msg.contained)
            self._store(msg.oid, payload, False, msg.contained, shm)
        if not self._streams.item(msg.task_id, msg.nth, msg.oid):
            self._objs.decref(msg.oid)  # nobody will take it (generator gone, or a rerun's)

    def _on_stream_next(self: LocalRuntime, w: Worker, msg: StreamNextRequest) -> None:
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
        self._apply(self.sched.worker_blocked(w.wid))
        claim.add_done_callback(reply)

    def _should_retry(self: LocalRuntime, task: Task, error: bytes) -> bool:
        retry = task.opts.retry_exceptions
        if not retry or task.retries_left == 0:
            return False
        if isinstance(retry, bool):
            return retry
        exc = ser.loads(error)
        cause = exc.cause if isinstance(exc, RayTaskError) else exc
        return isinstance(cause, retry)

    def _on_nested_submit(self: LocalRuntime, w: Worker, msg: SubmitTask) -> None:
        parent = self.sched.queued_on(w.wid)
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
                    self._store(oid, ser.dumps(exc)[0], True, [])
            return
        # The running task is the first one not done: a TaskDone in the same batch has
        # finished its task already, but leaves the scheduler's queue at the batch's end.
        parent_task = next((self._tasks[t] for t in parent if t in self._tasks), None)
        task.depth = parent_task.depth + 1 if parent_task is not None else 1
        if parent_task is not None:
            if parent_task.children is None:
                parent_task.children = []
            parent_task.children.append(msg.task_id)
        self._submit(task)

    def _nested_args(self: LocalRuntime, w: Worker, msg: Any, name: str) -> PackedArgs:
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
        self: LocalRuntime, w: Worker, msg: CreateActorRequest | GetActorRequest
    ) -> None:
        actor_id, meta, error = 0, b"", None
        try:
            if isinstance(msg, GetActorRequest):
                namespace = msg.namespace or self.config.namespace
                actor_id = self._actors.get_named(msg.name, namespace, w)
            else:
                packed = self._nested_args(w, msg, "an actor's __init__")
                actor_id = self._actors.create(
                    msg.fn_id, ser.loads(msg.meta), ser.loads(msg.options), packed,
                    self.config.namespace, w,
                )  # fmt: skip
            meta = ser.dumps(self._actors.meta(actor_id))[0]
        except Exception as exc:
            error = ser.dumps(exc)[0]
        w.chan.queue(ActorInfo(msg.req_id, actor_id, meta, error))
        self._workers.dirty.add(w)

    def _on_nested_actor_call(self: LocalRuntime, w: Worker, msg: SubmitActorCall) -> None:
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
                    self._store(oid, ser.dumps(exc)[0], True, [])

    def _nested_options(self: LocalRuntime, msg: SubmitTask) -> tuple[TaskOptions, Request]:
        opts = ser.loads(msg.options)
        pair = (opts, self._request_for(opts, msg.name))
        if len(self._options) >= _NESTED_OPTIONS:  # the oldest goes: tasks may make many
            del self._options[next(iter(self._options))]
        self._options[msg.options] = pair
        return pair

    def _on_nested_put(self: LocalRuntime, w: Worker, msg: PutObject) -> None:
        payload, shm, failed = self._objs.take(
            w.chan.in_fds, msg.value, "an object put by a task", (w.wid, w.mapped)
        )
        self._objs.new(msg.oid, 1)
        w.borrows.add(msg.oid)
        if failed:
            self._store(msg.oid, payload, True, [])
            return
        self._objs.hold(msg.contained)
        self._store(msg.oid, payload, False, msg.contained, shm)

    def _on_nested_wait(self: LocalRuntime, w: Worker, msg: GetRequest | WaitRequest) -> None:
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
        self._apply(self.sched.worker_blocked(w.wid))
        if msg.timeout is not None:

            def expire() -> None:
                if not waiter.fired:
                    waiter.fired = True
                    reply(timed_out=True)

            self._loop.at(time.monotonic() + msg.timeout, expire)

    def _value_for(self: LocalRuntime, w: Worker, oid: int, fds: list[int]) -> tuple[bool, Value]:
        entry = self._objs.get(oid)
        if entry is None or entry.payload is None:
            return True, ser.dumps(lost(oid))[0]
        return entry.is_error, self._objs.wire(w.wid, w.mapped, oid, fds)
