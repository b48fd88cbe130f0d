"""The driver's actors: where each lives, its calls in order, restarts, names, death.

::

    create_actor ─> record (PENDING_CREATION) ─ args ready ─> placed: CreateActor ─> ALIVE
                                                     ├ packed: a shared host process
                                                     └ dedicated: a lease of its own
    call ─> record.queue ─ args ready ─> ActorCall ─> TaskDone ─> results
      └──── nothing queued ahead, args ready ──┘ (most calls: _send at once)
    process died / kill / exit / __init__ raised / handles freed / call ended
         ── event ──> ActorStates ── Stop | RetryCalls | FailCalls | Restart | Die | FreeName
                                     ──> _carry_out: processes, hosts, leases, names, results

Every lifecycle decision (restart or die, which lost calls retry, calls failing with the
actor's death) is ``actor_states.ActorStates``'s, a pure state machine; the manager keeps
placement, hosts and I/O and carries its instructions out (``_carry_out``).

Actors that reserve no whole CPU and no GPU are *packed*: up to ``max_hosts`` host
processes serve all of them, one thread (or event loop) per actor, so a thousand actors
cost a few processes. Ray's default actor (no resource named) reserves nothing and is
placed at once; one that names resources (``num_cpus=0.1``, custom ones; 1 CPU if
``num_cpus`` is unset, as Ray) holds them for its life through a scheduler task on a
pseudo-worker (a "threaded" lease), placed once they are free. An actor that reserves
whole CPUs or GPUs gets a worker process of its own, holding them for its life (a
scheduler task that never finishes, with a lease nothing else is pipelined onto); it is
killed with its actor, so a restart starts from a clean process. Such processes may not
take the slots tasks need (``_check_process_cap``).

Calls of one actor are sent in submission order: a call whose arguments are not ready
holds back the ones behind it (Ray's ordering), unless the actor runs calls out of order
(async, ``max_concurrency > 1`` or ``allow_out_of_order_execution=True``): then each call
goes once its own arguments are ready. The manager is part of the runtime: it runs with
the runtime's lock held and uses its object table, workers and scheduler.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._actor import ActorMeta
from .._options import ActorOptions, MethodOptions
from ..exceptions import (
    ActorDiedError,
    ActorUnschedulableError,
    PendingCallsLimitExceeded,
    PendingTaskWarning,
    RayTaskError,
    TaskCancelledError,
)
from . import serialization as ser
from .actor_states import (
    ALIVE,
    DEAD,
    PENDING_CREATION,
    ActorStates,
    Die,
    FailCalls,
    FreeName,
    Instruction,
    Restart,
    RetryCalls,
    Stop,
)
from .history import ACTOR_TASK
from .objects import Waiter
from .protocol import ActorCall, ActorExited, CancelTask, CreateActor, KillActor, TaskDone
from .scheduler import UNIT, Request, thread_worker
from .tasks import DRIVER
from .worker import stream_mode

if TYPE_CHECKING:
    from .runtime import LocalRuntime
    from .tasks import PackedArgs
    from .watchdog import CallSite
    from .workers import Worker

__all__ = ["ActorManager", "warn_unschedulable"]

FLUSH_DELAY_S = 0.002  # calls queued for a busy out-of-order actor go out within this


def warn_unschedulable(error: Exception) -> None:
    """Says at once that a task or actor can never run here; its refs fail at ``get``, so a
    Ray program that never reads them goes on (Ray's autoscaler prints such an error)."""
    warnings.warn(f"{error} Its results fail with {type(error).__name__}.", PendingTaskWarning, 5)


@dataclass(slots=True)
class _Call:
    """One actor method call, from submission until its results are stored. Its ids are
    tuples, which the collector stops tracking after one pass: it walks lists at every full
    collection (six per waiting call cost ~7 of ~27 us of driver CPU per call in a burst)."""

    task_id: int
    actor_id: int
    name: str  # "Class.method", for errors
    method: str
    args: bytes | int
    positions: tuple[Any, ...]
    dep_ids: tuple[int, ...]
    contained: tuple[int, ...]
    return_ids: tuple[int, ...]
    group: str | None
    retries_left: int
    py_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # a thread actor's call
    stream: int = 0  # protocol.STREAMING/DYNAMIC for a generator method
    caller: int = DRIVER  # the worker whose handle made it (max_pending_calls counts per caller)


@dataclass(slots=True)
class _Actor:
    actor_id: int
    fn_id: int
    class_name: str
    meta: ActorMeta
    opts: ActorOptions
    args: bytes | int  # creation arguments, held until the actor is dead for good
    positions: list[Any]
    dep_ids: list[int]
    contained: list[int]
    config: bytes
    restarts_left: int
    state: str = PENDING_CREATION  # an actor_states state (only ActorStates changes it)
    wid: int | None = None  # the process it lives in, once placed
    # The scheduler task of its placement: a dedicated actor's lease of a process, or a
    # packed one's reservation (held for life when it names resources, see _place).
    creation_task: int = 0
    holds_lease: bool = False  # a packed actor's reservation is held until it stops
    out_of_order: bool = False  # calls go as their arguments get ready, not in order
    queue: deque[_Call] = field(default_factory=deque)  # not yet sent
    # Out of order only: calls waiting for their arguments, each with a waiter that moves
    # it back to the queue ({task id: call}).
    parked: dict[int, _Call] = field(default_factory=dict)
    inflight: dict[int, _Call] = field(default_factory=dict)  # sent, not done
    death: bytes | None = None  # the pickled error calls fail with once DEAD
    name_key: tuple[str, str] | None = None
    request: Request = Request(0)  # what the actor holds for its life (placement)
    handles_gone: bool = False
    waiting: bool = False  # a waiter on the queue head's arguments is registered
    # A thread actor (executor="thread"): its class and arguments as given, and, once
    # placed, the LocalActor that runs it in the driver.
    local_cls: type | None = None
    py_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None
    local: Any = None
    site: CallSite | None = None  # where the driver's code created it, for warnings
    call_names: dict[str, str] = field(default_factory=dict)  # {method: "Class.method"}


class ActorManager:
    """Actors of one LocalRuntime. Every method runs with the runtime's lock held."""

    def __init__(self, rt: LocalRuntime, max_hosts: int) -> None:
        self.rt = rt
        self.max_hosts = max_hosts
        self.actors: dict[int, _Actor] = {}
        self.calls: dict[int, _Call] = {}  # {task id: call in flight or queued}
        self.creations: dict[int, int] = {}  # {scheduler task id: actor id} (placements)
        self.hosts: dict[int, set[int]] = {}  # {host worker id: actor ids on it}
        self.names: dict[tuple[str, str], int] = {}  # {(namespace, name): actor id}
        self._flush_due: set[int] = set()  # workers with a flush deadline pending
        self.states = ActorStates(died=self._died)

    # ---- creation -----------------------------------------------------------------------

    def create(
        self, cls_id: int, meta: ActorMeta, opts: ActorOptions, packed: PackedArgs,
        namespace: str, borrower: Worker | None = None,
        local: tuple[type, tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> int:  # fmt: skip
        """Creates an actor (or finds the named one, with ``get_if_exists``); returns its id,
        counting one reference to it for the caller (``borrower``, or an ObjectRef here).

        Raises:
            ValueError: the name is taken.
            ActorUnschedulableError: one more actor with a process of its own would leave
                tasks too few worker processes.

        An actor that asks for more than this runtime has is created dead: a warning names
        the resource at once and its calls fail with ``ActorUnschedulableError`` (a Ray
        program that never calls it keeps running).
        """
        rt = self.rt
        key = (opts.namespace or namespace, opts.name) if opts.name else None
        if key is not None and key in self.names:
            existing = self.actors[self.names[key]]
            if opts.get_if_exists:
                self.add_holder(existing.actor_id, borrower)
                return existing.actor_id
            raise ValueError(
                f"The actor name {opts.name!r} is already taken in namespace {key[0]!r}. "
                "Pick another name, use get_if_exists=True, or get it with "
                "raylite.get_actor(name)."
            )
        out_of_order = _out_of_order(meta, opts)
        unschedulable = None
        request = _placement(opts)
        if local is None:
            request, why = rt._placement.request_for(request, opts.local, meta.class_name)
            if why is not None:
                unschedulable = ActorUnschedulableError(
                    f"Actor {meta.class_name} can never be placed here: {why}."
                )
                warn_unschedulable(unschedulable)
            elif opts.dedicated:
                self._check_process_cap(meta.class_name)
        args, contained = rt._writer.hold_args(packed)
        actor_id = next(rt._ids)
        detached = opts.lifetime == "detached"
        # A detached actor holds its own id object, so it outlives every handle.
        entry = rt._objs.new(actor_id, 2 if detached else 1)
        entry.actor = True
        if borrower is not None:
            borrower.borrows.add(actor_id)
        config = ser.dumps(
            {
                "is_async": meta.is_async,
                "max_concurrency": opts.max_concurrency,
                "groups": dict(opts.concurrency_groups),
                "env_vars": dict(opts.local.env_vars),
            }
        )[0]
        restarts = opts.max_restarts
        actor = _Actor(
            actor_id, cls_id, meta.class_name, meta, opts, args, packed.positions,
            packed.dep_ids, contained, config, restarts, name_key=key, request=request,
        )  # fmt: skip
        actor.out_of_order = out_of_order
        if local is not None:
            actor.local_cls, actor.py_args = local[0], (local[1], local[2])
        self.actors[actor_id] = actor
        if key is not None:
            self.names[key] = actor_id
        if unschedulable is not None:
            self._carry_out(self.states.unplaceable(actor, ser.dumps(unschedulable)[0]))
        else:
            self._place_when_ready(actor)
        return actor_id

    def is_local(self, actor_id: int) -> bool:
        """Whether the actor runs on driver threads (its calls are not pickled)."""
        actor = self.actors.get(actor_id)
        return actor is not None and actor.local_cls is not None

    def add_holder(self, actor_id: int, borrower: Worker | None) -> None:
        """One more reference to the actor: an ObjectRef here, or ``borrower``'s borrow."""
        if borrower is None:
            self.rt._objs.hold([actor_id])
        elif actor_id not in borrower.borrows:
            borrower.borrows.add(actor_id)
            self.rt._objs.hold([actor_id])

    def meta(self, actor_id: int) -> ActorMeta:
        return self.actors[actor_id].meta

    def get_named(self, name: str, namespace: str, borrower: Worker | None = None) -> int:
        """The id of the live actor called ``name`` (one reference counted for the caller).

        Raises:
            ValueError: no live actor has that name.
        """
        actor_id = self.names.get((namespace, name))
        if actor_id is None:
            known = sorted(n for ns, n in self.names if ns == namespace)
            raise ValueError(
                f"Failed to look up actor with name {name!r} in namespace {namespace!r}: "
                f"no live actor has it (named actors here: {known or 'none'})."
            )
        self.add_holder(actor_id, borrower)
        return actor_id

    def _place_when_ready(self, actor: _Actor) -> None:
        objs = self.rt._objs
        pending = [objs[o] for o in dict.fromkeys(actor.dep_ids) if objs[o].payload is None]
        if pending:
            objs.add_waiter(pending, Waiter(len(pending), lambda: self._place(actor)))
        else:
            self._place(actor)

    def _place(self, actor: _Actor) -> None:
        if actor.state == DEAD:  # killed while its arguments were being made
            return
        failed = next((self.rt._objs[o] for o in actor.dep_ids if self.rt._objs[o].is_error), None)
        if failed is not None:  # an argument of __init__ failed: so does the actor
            why = self._died(actor, "an argument of its constructor failed", failed.payload)
            self._carry_out(self.states.unplaceable(actor, why))
            return
        if actor.local_cls is not None:
            assert actor.py_args is not None
            actor.local = self.rt._threads.start_actor(actor, actor.local_cls, *actor.py_args)
            self.states.placed(actor)
            self._pump(actor)
        elif not actor.opts.specified:  # Ray's default: placed at once, holding nothing
            self._start(actor, self._pick_host())
        else:  # through the scheduler: it waits for the resources it holds for its life
            if self.creations.pop(actor.creation_task, None) is not None:
                self.rt.sched.cancel(actor.creation_task)  # an earlier try, still queued
            actor.creation_task = next(self.rt._ids)
            self.creations[actor.creation_task] = actor.actor_id
            packed = not actor.opts.dedicated  # holds resources, not a process: "threaded"
            self.rt._apply(
                self.rt.sched.submit(actor.creation_task, actor.request, 0, [], True, threaded=packed)
            )

    def _check_process_cap(self, class_name: str) -> None:
        """Raises if one more actor with a process of its own would leave tasks too few
        worker processes (the cap is ``max_workers``; tasks keep one per CPU)."""
        sched = self.rt.sched
        keep = max(1, math.ceil(sched.total_cpu / UNIT))
        room = sched.max_workers - keep
        dedicated = sum(1 for a in self.actors.values() if a.opts.dedicated and a.state != DEAD)
        if dedicated >= room:
            raise ActorUnschedulableError(
                f"Actor {class_name} would need a worker process of its own (it reserves "
                f"whole CPUs or GPUs), but {dedicated} actors hold processes already and "
                f"raylite keeps {keep} of its {sched.max_workers} worker processes for tasks. "
                "Give such actors num_cpus < 1 and no GPU so they share host processes, end "
                "some (raylite.kill), or raise RAYLITE_MAX_WORKERS."
            )

    def _pick_host(self) -> Worker:
        if len(self.hosts) < self.max_hosts:
            w = self.rt._workers.spawn()
            self.hosts[w.wid] = set()
            return w
        wid = min(self.hosts, key=lambda h: len(self.hosts[h]))
        return self.rt._workers[wid]

    def creating(self, task_id: int) -> str | None:
        """The class name of the actor whose placement ``task_id`` is, if any."""
        actor = self.actors.get(self.creations.get(task_id, 0))
        return actor.class_name if actor is not None else None

    def idle(self, task_id: int) -> bool:
        """Whether the dedicated actor whose lease ``task_id`` is runs, with no call to run."""
        actor = self.actors.get(self.creations.get(task_id, 0))
        if actor is None or actor.state != ALIVE:
            return False
        return not actor.queue and not actor.parked and not actor.inflight

    def site_of(self, task_id: int) -> CallSite | None:
        """Where the driver created the dedicated actor whose lease ``task_id`` is, if known."""
        actor = self.actors.get(self.creations.get(task_id, 0))
        return actor.site if actor is not None else None

    def dispatch_creation(self, task_id: int, wid: int) -> None:
        """The scheduler placed actor creation ``task_id``: a dedicated actor's lease on
        worker ``wid``, or (``wid < 0``) a packed actor's reservation."""
        actor = self.actors.get(self.creations.get(task_id, 0))
        if actor is None or actor.state == DEAD or actor.creation_task != task_id:
            self.creations.pop(task_id, None)
            self.rt._apply(self.rt.sched.task_done(wid, task_id))
            return
        if actor.opts.dedicated:
            self._start(actor, self.rt._workers[wid])
        else:  # packed, holding what it named (its reservation) for its life
            actor.holds_lease = True
            self._start(actor, self._pick_host())

    def _release_lease(self, actor: _Actor) -> None:
        """Gives back a packed actor's reservation (it stopped, or died)."""
        if actor.holds_lease:
            actor.holds_lease = False
            self.creations.pop(actor.creation_task, None)
            task_id = actor.creation_task
            self.rt._apply(self.rt.sched.task_done(thread_worker(task_id), task_id))

    def _start(self, actor: _Actor, w: Worker) -> None:
        rt = self.rt
        actor.wid = w.wid
        self.states.placed(actor)  # calls may follow CreateActor at once: the host queues them
        if not actor.opts.dedicated:
            self.hosts[w.wid].add(actor.actor_id)
        rt._ship_function(w, actor.fn_id)
        args, values, fds = rt._objs.wire_call(w.wid, w.mapped, actor.args, actor.dep_ids)
        config = actor.config
        gpu_ids = rt._workers.gpu_ids(w.wid) if actor.opts.dedicated else None
        if gpu_ids is not None:
            config = ser.dumps({**ser.loads(config), "gpu_ids": gpu_ids})[0]
        msg = CreateActor(
            actor.actor_id, actor.fn_id, actor.class_name, args, actor.positions, values, config,
        )  # fmt: skip
        w.chan.queue(msg, fds)
        rt._workers.dirty.add(w)
        self._pump(actor)

    def ready(self, actor_id: int, error: bytes | None) -> None:
        """``ActorReady``: ``__init__`` ran; an error kills the actor for good."""
        actor = self.actors.get(actor_id)
        if actor is None or error is None:
            return
        cause = ser.loads(error)
        text = str(cause) if isinstance(cause, RayTaskError) else repr(cause)
        died = ActorDiedError(
            f"The actor {actor.class_name} died because of an error raised in its creation "
            f"task (__init__), so no call to it can run:\n{text}"
        )
        self._carry_out(self.states.init_failed(actor, ser.dumps(died)[0]))

    # ---- calls --------------------------------------------------------------------------

    def call(
        self, actor_id: int, method: str, packed: PackedArgs, mopts: MethodOptions,
        return_ids: list[int], borrower: Worker | None = None,
        py_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        """Queues a call whose results go to ``return_ids`` (entries made here, held by an
        ObjectRef here or by ``borrower``).

        Raises:
            ActorDiedError: no such actor (ended, or from an earlier session).
            PendingCallsLimitExceeded: ``max_pending_calls`` calls wait already.
        """
        rt = self.rt
        actor = self.actors.get(actor_id)
        if actor is None:
            raise ActorDiedError(
                f"Actor {actor_id:056x} is not a live actor of this session (it ended, or the "
                "handle comes from an earlier raylite session): create the actor again with "
                "ActorClass.remote(...) and call the new handle."
            )
        caller = DRIVER if borrower is None else borrower.wid
        limit = actor.opts.max_pending_calls
        if limit > 0 and self._pending_from(actor, caller) >= limit:
            raise PendingCallsLimitExceeded(
                f"The call {actor.class_name}.{method}() could not be submitted: {limit} "
                f"calls from this handle are pending on the actor (max_pending_calls={limit}, "
                "counted per caller). Wait for some results (raylite.get/wait) before "
                "calling it again, or raise max_pending_calls."
            )
        args, contained = rt._writer.hold_args(packed)
        task_id = next(rt._ids)
        new = rt._objs.new
        for oid in return_ids:
            new(oid, 1, task_id)
            if borrower is not None:
                borrower.borrows.add(oid)
        name = actor.call_names.get(method)
        if name is None:  # one string per method, not one per call
            name = actor.call_names[method] = f"{actor.class_name}.{method}"
        n = mopts.num_returns
        call = _Call(
            task_id, actor.actor_id, name, method, args, tuple(packed.positions),
            tuple(packed.dep_ids), tuple(contained), tuple(return_ids), mopts.concurrency_group,
            actor.opts.max_task_retries, py_args, 0 if type(n) is int else stream_mode(n), caller,
        )  # fmt: skip
        self.calls[task_id] = call
        if type(n) is str:
            rt._open_stream(task_id, return_ids, n)
        if actor.state == DEAD:
            self._fail_call(call, actor.death or b"")
            return
        w = rt._workers.get(actor.wid) if actor.wid is not None else None
        if call.dep_ids or actor.queue or actor.waiting or actor.state != ALIVE or w is None:
            actor.queue.append(call)
            self._pump(actor)
        else:  # nothing ahead of it, nothing to wait for (most calls): it goes now
            idle = not actor.inflight
            actor.inflight[task_id] = call
            self._send(actor, w, (call,), idle)

    def _pending_from(self, actor: _Actor, caller: int) -> int:
        """Calls of ``caller`` to ``actor`` not finished yet."""
        calls = itertools.chain(actor.queue, actor.parked.values(), actor.inflight.values())
        return sum(1 for call in calls if call.caller == caller)

    def _pump(self, actor: _Actor) -> None:
        """Sends queued calls, in order, while the head's arguments are ready (or, out of
        order, every call whose arguments are ready)."""
        if actor.state != ALIVE or actor.waiting:
            return
        rt = self.rt
        if actor.local is not None:
            self._pump_local(actor)
            return
        w = rt._workers.get(actor.wid) if actor.wid is not None else None
        if w is None:
            return
        idle = not actor.inflight
        self._send(actor, w, self._ready_calls(actor), idle)

    def _send(self, actor: _Actor, w: Worker, ready: Sequence[_Call], idle: bool) -> None:
        """Queues ``ready`` calls (in flight already) on ``w``'s channel: sent now if the
        actor was ``idle`` (latency), else with the next flush."""
        rt = self.rt
        wire_call = rt._objs.wire_call
        queue = w.chan.queue
        for call in ready:
            args, values, fds = wire_call(w.wid, w.mapped, call.args, call.dep_ids)
            queue(
                ActorCall(
                    call.task_id, actor.actor_id, call.method, args, call.positions, values,
                    call.return_ids, call.group, call.stream,
                ),
                fds,
            )  # fmt: skip
        sent = bool(ready)
        if idle and sent:
            rt._workers.flush_now(w)
            return
        rt._workers.dirty.add(w)
        if sent and actor.out_of_order and w.wid not in self._flush_due:
            # It runs calls side by side, and the one it runs may take long, so no reply
            # may come to flush these with: the I/O thread sends them within FLUSH_DELAY_S,
            # a burst of calls as one frame.
            self._flush_due.add(w.wid)
            rt._loop.at(time.monotonic() + FLUSH_DELAY_S, lambda: self._flush_due_now(w))
            if threading.current_thread() is not rt._io:
                rt._loop.wake()  # it recomputes its timeout

    def _flush_due_now(self, w: Worker) -> None:
        self._flush_due.discard(w.wid)
        if not w.gone:
            self.rt._workers.flush_now(w)

    def _pump_local(self, actor: _Actor) -> None:
        """``_pump`` for a thread actor: calls go to its lanes, arguments unpickled."""
        for call in self._ready_calls(actor):
            actor.local.call(call)

    def _ready_calls(self, actor: _Actor) -> list[_Call]:
        """Takes queued calls in order while the head's arguments are ready (failing a
        call whose arguments failed), marking each in flight; stops at the first that
        waits, with a waiter that resumes the pump. A list, not a generator: most pumps
        take one call, and a generator's frames cost more than the call's bookkeeping."""
        if actor.out_of_order:
            return self._ready_calls_any_order(actor)
        queue = actor.queue
        ready: list[_Call] = []
        while queue:
            call = queue[0]
            if call.dep_ids:
                pending = self._pending_args(call)
                if pending:
                    actor.waiting = True
                    resume = functools.partial(self._resume, actor)
                    self.rt._objs.add_waiter(pending, Waiter(len(pending), resume))
                    break
            queue.popleft()
            if call.dep_ids and self._failed_args(call):
                continue
            actor.inflight[call.task_id] = call
            ready.append(call)
        return ready

    def _ready_calls_any_order(self, actor: _Actor) -> list[_Call]:
        """``_ready_calls`` for an out-of-order actor (async, threaded, or
        ``allow_out_of_order_execution=True``): every call whose arguments are ready goes,
        in submission order among them; a call still waiting is parked and holds back no
        other (so each pump looks at new and resumed calls only)."""
        queue = actor.queue
        ready: list[_Call] = []
        while queue:
            call = queue.popleft()
            if call.dep_ids:
                pending = self._pending_args(call)
                if pending:
                    actor.parked[call.task_id] = call
                    resume = functools.partial(self._resume_call, actor, call)
                    self.rt._objs.add_waiter(pending, Waiter(len(pending), resume))
                    continue
                if self._failed_args(call):
                    continue
            actor.inflight[call.task_id] = call
            ready.append(call)
        return ready

    def _pending_args(self, call: _Call) -> list[Any]:
        """The entries of ``call``'s arguments that are not ready yet."""
        objs = self.rt._objs
        return [objs[o] for o in dict.fromkeys(call.dep_ids) if objs[o].payload is None]

    def _failed_args(self, call: _Call) -> bool:
        """Fails ``call`` if one of its (ready) arguments failed; True if it did."""
        objs = self.rt._objs
        failed = next((objs[o] for o in call.dep_ids if objs[o].is_error), None)
        if failed is None:
            return False
        self._fail_call(call, failed.payload)  # type: ignore[arg-type]
        return True

    def _resume_call(self, actor: _Actor, call: _Call) -> None:
        if actor.parked.pop(call.task_id, None) is not None:  # not cancelled meanwhile
            actor.queue.append(call)
            self._pump(actor)

    def done_local(self, call: _Call, outcome: Any) -> None:
        """A thread actor's call finished (lock held)."""
        if self.calls.pop(call.task_id, None) is None:
            for shm in outcome.shms:
                if shm is not None:
                    self.rt._objs.drop(shm)
            return
        actor = self.actors.get(call.actor_id)
        if actor is not None:
            actor.inflight.pop(call.task_id, None)
        self._record(call, actor, outcome.start, outcome.end, outcome.error)
        holds = call.dep_ids + call.contained
        if outcome.error is not None:
            self.rt._finish_call(call.return_ids, [outcome.error], True, holds)
        else:
            self.rt._finish_call(
                call.return_ids, outcome.payloads, False, holds, outcome.contained, outcome.shms
            )
        if actor is not None:
            self._maybe_end(actor)

    def _resume(self, actor: _Actor) -> None:
        actor.waiting = False
        self._pump(actor)

    def done(self, msg: TaskDone, results: list[bytes], shms: list[Any] | None) -> bool:
        """A ``TaskDone`` for an actor call; False if ``msg`` is not one."""
        call = self.calls.pop(msg.task_id, None)
        if call is None:
            return False
        actor = self.actors.get(call.actor_id)
        if actor is not None:
            actor.inflight.pop(call.task_id, None)
        self._record(call, actor, msg.start, msg.start + msg.duration, msg.error)
        rt = self.rt
        holds = call.dep_ids + call.contained
        if msg.error is not None:
            rt._finish_call(call.return_ids, [msg.error], True, holds)
        elif shms is None and len(results) == 1 and not msg.contained[0]:
            rt._store(call.return_ids[0], results[0], False, ())  # one small result (most)
            decref = rt._objs.decref
            for oid in holds:
                decref(oid)
        else:
            rt._finish_call(call.return_ids, results, False, holds, msg.contained, shms)
        if actor is not None:
            self._maybe_end(actor)
        return True

    def _record(
        self, call: _Call, actor: _Actor | None, start: float, end: float, error: bytes | None
    ) -> None:
        """Adds a finished call to the runtime's history (its lane: the actor's row)."""
        history = self.rt._history
        if history.enabled:  # a plain tuple in Done's field order (see history.py)
            pid = self.pid_of(actor) if start and actor is not None else 0
            history.add(
                (call.task_id, call.name, ACTOR_TASK, pid, call.actor_id, start, end, error,
                 call.actor_id, 0)
            )  # fmt: skip

    def pid_of(self, actor: _Actor) -> int:
        """The process ``actor`` lives in (the driver's for a thread actor), 0 if none yet."""
        if actor.local is not None:
            return os.getpid()
        w = self.rt._workers.get(actor.wid) if actor.wid is not None else None
        return w.pid if w is not None else 0

    def _fail_call(self, call: _Call, error: bytes) -> None:
        self.calls.pop(call.task_id, None)
        self._record(call, None, 0.0, 0.0, error)
        self.rt._finish_call(call.return_ids, [error], True, call.dep_ids + call.contained)

    def cancel(self, task_id: int, force: bool) -> bool:
        """Cancels a call that has not started; False if ``task_id`` is no actor call."""
        call = self.calls.get(task_id)
        if call is None:
            return False
        if force:
            raise ValueError(
                "force=True is not supported for actor calls (it would kill every call the "
                "actor runs). Use force=False, or raylite.kill(actor)."
            )
        actor = self.actors.get(call.actor_id)
        cancelled = ser.dumps(TaskCancelledError(f"{task_id:056x}"))[0]
        if actor is not None and actor.parked.pop(task_id, None) is not None:
            self._fail_call(call, cancelled)  # never sent: waited for its arguments
        elif actor is not None and call in actor.queue:
            actor.queue.remove(call)
            self._fail_call(call, cancelled)
        elif actor is not None and task_id in actor.inflight and actor.wid is not None:
            w = self.rt._workers.get(actor.wid)
            if w is not None:  # sent: its process drops it unless it has started
                w.chan.queue(CancelTask(task_id))
                self.rt._workers.dirty.add(w)
        return True

    # ---- death --------------------------------------------------------------------------

    def kill(self, actor_id: int, no_restart: bool) -> None:
        if (actor := self.actors.get(actor_id)) is not None:
            why = self._died(actor, "it was killed by raylite.kill()")
            self._carry_out(self.states.killed(actor, why, no_restart))

    def exited(self, wid: int, msg: ActorExited) -> None:
        """The actor ended itself (``exit_actor()``, ``sys.exit()``) in process ``wid``."""
        actor = self.actors.get(msg.actor_id)
        if actor is None or actor.wid != wid:
            return  # a stale notice: restarted elsewhere since
        self._carry_out(self.states.exited(actor, self._died(actor, msg.reason), msg.restart))

    def freed(self, actor_id: int) -> None:
        """The last handle is gone: end the actor once its calls are done."""
        if (actor := self.actors.get(actor_id)) is not None:
            self._carry_out(self.states.handles_freed(actor))

    def _maybe_end(self, actor: _Actor) -> None:
        """A call ended: the actor ends too if that was its last after its handles went."""
        if out := self.states.call_ended(actor):
            self._carry_out(out)

    def process_died(self, wid: int, status_text: str) -> None:
        """Worker ``wid`` died: every actor in it (a host) or of it (dedicated) is lost."""
        if wid in self.hosts:
            lost = [self.actors[a] for a in self.hosts.pop(wid) if a in self.actors]
        else:
            lost = [a for a in self.actors.values() if a.wid == wid and a.opts.dedicated]
        for actor in lost:
            self.creations.pop(actor.creation_task, None)  # its lease died with it
            why = self._died(actor, f"its process died ({status_text})")
            self._carry_out(self.states.process_died(actor, why))

    def _carry_out(self, instructions: Sequence[Instruction]) -> None:
        """Does what the actor state machine decided (lock held)."""
        for instruction in instructions:
            match instruction:
                case Stop(actor):
                    self._stop(actor)
                case RetryCalls(actor, calls):  # first, in their order
                    actor.queue.extendleft(reversed(calls))
                case FailCalls(calls, error):
                    payload = error if isinstance(error, bytes) else ser.dumps(error)[0]
                    for call in calls:
                        self._fail_call(call, payload)
                case Restart(actor):
                    self._release_lease(actor)
                    actor.wid = None
                    self._place(actor)
                case Die(actor):
                    self._free(actor)
                case FreeName(key):
                    self.names.pop(key, None)

    def _stop(self, actor: _Actor) -> None:
        """Ends the actor's instance: stops its thread, kills its process (dedicated) or
        drops it from its host (packed)."""
        rt = self.rt
        if actor.local is not None:
            actor.local.stop()
            actor.local = None
        w = rt._workers.get(actor.wid) if actor.wid is not None else None
        if w is not None:
            if actor.opts.dedicated:
                self.creations.pop(actor.creation_task, None)
                rt._workers.kill(w)
            else:
                w.chan.queue(KillActor(actor.actor_id))
                rt._workers.dirty.add(w)
                self.hosts.get(w.wid, set()).discard(actor.actor_id)

    def _free(self, actor: _Actor) -> None:
        """Frees what a DEAD actor held: process, reservation, arguments, (detached) own id."""
        if actor.wid is not None and actor.opts.dedicated:
            w = self.rt._workers.get(actor.wid)
            if w is not None:
                self.creations.pop(actor.creation_task, None)
                self.rt._workers.kill(w)
        self._release_lease(actor)
        held = actor.dep_ids + actor.contained
        if actor.opts.lifetime == "detached":
            held.append(actor.actor_id)
        for oid in held:
            self.rt._objs.decref(oid)
        actor.dep_ids, actor.contained = [], []

    def _died(self, actor: _Actor, reason: str, cause: bytes | None = None) -> bytes:
        text = f"The actor {actor.class_name} is dead: {reason}."
        if cause is not None:
            text += f"\n{ser.loads(cause)}"
        return ser.dumps(ActorDiedError(text))[0]

    def fail_all(self, why: bytes) -> None:
        """Every actor is dead, every call fails with ``why`` (shutdown, broken runtime)."""
        for actor in self.actors.values():
            self._carry_out(self.states.shutdown(actor, why))


def _placement(opts: ActorOptions) -> Request:
    """What an actor with ``opts`` needs to be placed (Ray's rule). One that names no
    resource needs a machine with 1 CPU, not a free CPU: it holds none once placed, so it
    is placed at once. One that names any holds for its life ``num_cpus`` (1 if unset),
    ``num_gpus`` and its custom resources, and waits until they are free."""
    if not opts.specified:
        return Request.of(1, 0, {})
    return Request.of(opts.held_cpus, opts.num_gpus, {**opts.resources, **opts.local.resources})


def _out_of_order(meta: ActorMeta, opts: ActorOptions) -> bool:
    """Whether the actor's calls may run out of submission order (Ray's
    ``allow_out_of_order_execution``: by default for async and threaded actors).

    Raises:
        ValueError: ``False`` for an async or threaded actor, as in Ray.
    """
    threaded = (opts.max_concurrency or 1) > 1
    allowed = opts.allow_out_of_order_execution
    if allowed is None:
        return meta.is_async or threaded
    if not allowed and meta.is_async:
        raise ValueError(
            f"Actor {meta.class_name} is an async actor, whose calls cannot run in order: "
            "set allow_out_of_order_execution=True (or leave it unset)."
        )
    if not allowed and threaded:
        raise ValueError(
            f"Actor {meta.class_name} has max_concurrency={opts.max_concurrency}, so its calls "
            "cannot run in order: set allow_out_of_order_execution=True (or leave it unset), "
            "or use max_concurrency=1."
        )
    return allowed
