"""``init(local_mode=True)``: every task runs inline, in the caller's thread, at ``.remote()``.

For stepping through task code in a debugger. Values still go through pickling (so a task
cannot mutate its caller's objects, as in the real runtimes) and errors surface at ``get``
exactly as they would from a worker. Resources are not enforced: tasks run one at a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from .._actor import ActorHandle, ActorMeta, exit_outside_actor
from .._object_ref import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator
from .._options import check_local
from .._placement import PlacementGroup
from ..exceptions import ActorDiedError, TaskUnschedulableError
from . import serialization as ser
from .actors import warn_unschedulable
from .history import ACTOR_TASK, NORMAL_TASK, Done, History, trace_events
from .placement import check_bundles, run_with_env
from .scheduler import Request, Scheduler
from .state import filter_records, finished_records, summarize
from .store import memory_resources
from .worker import n_refs

if TYPE_CHECKING:
    from .._actor import ActorClass
    from .._options import ActorOptions, MethodOptions, TaskOptions
    from .._remote_function import RemoteFunction
    from .runtime import RuntimeConfig

__all__ = ["InlineRuntime"]


class InlineRuntime:
    """A runtime without processes: ``submit_task`` runs the function before returning."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self._capacity = Scheduler(config.num_cpus, config.gpus, config.resources)
        self._memory = memory_resources(config.object_store_memory)  # reported, not reserved
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._objects: dict[int, tuple[bytes, bool]] = {}  # {id: (payload, is_error)}
        self._refs: dict[int, int] = {}  # {id: live ObjectRefs}
        self._current: list[tuple[int, str]] = []  # stack of (task id, name) running inline
        # {actor id: (instance, death error, meta)}
        self._actors: dict[int, tuple[Any, BaseException | None, ActorMeta]] = {}
        self._names: dict[tuple[str, str], int] = {}
        self._loop = asyncio.new_event_loop()  # async actor methods, state kept across calls
        self._history = History()  # what ran, for timeline() and list_tasks()
        # {generator task's ref id: refs of its values}: kept while that ref lives;
        # a streaming generator takes them from the front
        self._held: dict[int, list[ObjectRef]] = {}
        self._sized: set[int] = set()  # ids of functions and classes whose size was checked

    def _check_size(self, key: int, body: Any) -> None:
        """Refuses a function or class whose pickle is over Ray's limit, as the process
        runtime does when it first ships one, though nothing is shipped here: a program
        fails alike in both modes. Checked once per function or class."""
        if key in self._sized:
            return
        try:
            ser.dumps_function(body)
        except ser.SerializationError:
            pass  # what cannot be pickled still runs inline (a debugger's case)
        self._sized.add(key)

    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], opts: TaskOptions
    ) -> list[ObjectRef]:
        check_local(opts)
        request = Request.of(opts.cpus, opts.num_gpus, opts.resources)
        why = self._capacity.infeasible(request)
        if why is not None:  # as Ray: the program goes on, get() fails
            error = TaskUnschedulableError(f"Task {fn.function_name}() can never run here: {why}.")
            warn_unschedulable(error)
            return [self._new((ser.dumps(error)[0], True)) for _ in range(opts.num_returns)]
        self._check_size(fn._fn_id, fn._function)
        function = fn._function
        if opts.local.env_vars:
            function = functools.partial(run_with_env, opts.local.env_vars, function)
        return self._run(fn.function_name, function, args, kwargs, opts.num_returns)

    def _run(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
        num_returns: int | str,
    ) -> list[Any]:  # fmt: skip
        """Runs ``fn`` now, on copies of its arguments; refs to its results (or error), or
        for a generator its ObjectRefGenerator (``"streaming"``) or one ref to its
        DynamicObjectRefGenerator (``"dynamic"``): every value is made at once."""
        if isinstance(num_returns, str):
            items: list[ObjectRef] = []
            (done,) = self._run(name, _drain(fn, items, self, name), args, kwargs, 1)
            self._held[done._id] = items  # the refs not taken yet live with it
            if num_returns == "streaming":
                return [ObjectRefGenerator(done, self)]
            return [done]
        s, positions, dep_ids = ser.dumps_args(args, kwargs)
        # Read-only views of the caller's buffers: a task must not mutate its arguments.
        buffers = [b.toreadonly() for b in s.buffers]
        task_id = next(self._ids)
        outcome: list[tuple[bytes, bool]]
        failed = next((self._objects[d] for d in dep_ids if self._objects[d][1]), None)
        if failed is not None:
            outcome = [failed] * num_returns
        else:
            self._current.append((task_id, name))
            start = time.time()
            try:
                values = [ser.loads(self._objects[d][0]) for d in dep_ids]
                call_args, call_kwargs = ser.loads_args(s.payload, positions, values, buffers)
                result = fn(*call_args, **call_kwargs)
                if inspect.isawaitable(result):  # an async actor's method: one loop for all
                    result = self._loop.run_until_complete(_awaited(result))
                n = num_returns
                results = [result] if n == 1 else [] if n == 0 else list(result)
                if len(results) != n:
                    raise ValueError(
                        f"Task {name}() returned {len(results)} values, but num_returns={n}."
                    )
                outcome = [(ser.dumps(r)[0], False) for r in results]
            except Exception as exc:
                error = ser.dumps_error(name, exc, os.getpid())
                outcome = [(error, True)] * num_returns
            finally:
                self._current.pop()
            failed_with = outcome[0][0] if outcome and outcome[0][1] else None
            kind = ACTOR_TASK if "." in name else NORMAL_TASK
            self._history.add(
                Done(task_id, name, kind, os.getpid(), 0, start, time.time(), failed_with)
            )
        return [self._new(value) for value in outcome]

    def timeline(self) -> list[dict[str, Any]]:
        return trace_events(self._history.records(), {os.getpid(): "driver (local_mode)"})

    def list_state(
        self, kind: str, filters: list[tuple[str, str, Any]] | None, limit: int | None,
        detail: bool,
    ) -> list[dict[str, Any]]:  # fmt: skip
        if kind != "tasks":
            raise ValueError(
                f"local_mode=True keeps no {kind} state (everything runs inline in the "
                "driver): list_tasks() and timeline() work; init without local_mode for more."
            )
        return filter_records(finished_records(self._history.records()), filters, limit)

    def summarize_tasks(self) -> dict[str, Any]:
        return summarize(finished_records(self._history.records()))

    def create_actor(
        self, cls: ActorClass, args: tuple[Any, ...], kwargs: dict[str, Any], opts: ActorOptions
    ) -> ActorHandle:
        check_local(opts)
        key = (opts.namespace or self.config.namespace, opts.name) if opts.name else None
        if key is not None and key in self._names:
            if opts.get_if_exists:
                return self._handle(self._names[key])
            raise ValueError(f"The actor name {opts.name!r} is already taken.")
        self._check_size(cls._cls_id, cls._cls)
        (ref,) = self._run(f"{cls.__name__}.__init__", cls._cls, args, kwargs, 1)
        payload, is_error = self._objects[ref._id]
        if is_error:  # calls fail with the creation error, as in the real runtime
            instance, death = (
                None,
                ActorDiedError(
                    f"The actor {cls.__name__} died because of an error raised in its creation "
                    f"task (__init__):\n{ser.loads(payload)}"
                ),
            )
        else:
            instance, death = ser.loads(payload), None
        actor_id = next(self._ids)
        self._actors[actor_id] = (instance, death, cls._meta)
        if key is not None:
            self._names[key] = actor_id
        return self._handle(actor_id)

    def _handle(self, actor_id: int) -> ActorHandle:
        with self._lock:
            self._objects.setdefault(actor_id, (b"", False))
            self._refs[actor_id] = self._refs.get(actor_id, 0) + 1
        return ActorHandle(ObjectRef(actor_id, self), self._actors[actor_id][2])

    def submit_actor_call(
        self, handle: ActorHandle, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        opts: MethodOptions,
    ) -> list[ObjectRef]:  # fmt: skip
        instance, death, meta = self._actors[handle._actor_id]
        if death is not None:
            error = (ser.dumps(death)[0], True)
            return [self._new(error) for _ in range(n_refs(opts.num_returns))]
        name = f"{meta.class_name}.{method}"
        return self._run(name, getattr(instance, method), args, kwargs, opts.num_returns)

    def kill_actor(self, handle: ActorHandle, no_restart: bool) -> None:
        instance, _, meta = self._actors[handle._actor_id]
        died = ActorDiedError(f"The actor {meta.class_name} is dead: killed by raylite.kill().")
        self._actors[handle._actor_id] = (None, died, meta)

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle:
        actor_id = self._names.get((namespace or self.config.namespace, name))
        if actor_id is None:
            raise ValueError(f"Failed to look up actor with name {name!r}: no live actor has it.")
        return self._handle(actor_id)

    def _new(self, value: tuple[bytes, bool]) -> ObjectRef:
        oid = next(self._ids)
        with self._lock:
            self._objects[oid] = value
            self._refs[oid] = 1
        return ObjectRef(oid, self)

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("Calling 'put' on an ObjectRef is not allowed; wrap it in a list.")
        try:
            return self._new((ser.dumps(value)[0], False))
        except ser.SerializationError as exc:
            raise ser.put_error(exc) from None

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        return [ser.load_value(*self._objects[r._id]) for r in refs]

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        return refs[:num_returns], refs[num_returns:]  # everything is ready at once

    def list_named_actors(self, all_namespaces: bool) -> list[tuple[str, str]]:
        with self._lock:
            names = [key for key, a in self._names.items() if self._actors[a][1] is None]
        return [k for k in names if all_namespaces or k[0] == self.config.namespace]

    def exit_actor(self) -> NoReturn:
        raise exit_outside_actor()  # actors run inline in the driver: there is no process

    # Placement groups: everything runs inline here, so a group reserves nothing and is
    # ready at once.
    def create_placement_group(
        self, bundles: list[dict[str, float]], strategy: str, name: str
    ) -> PlacementGroup:
        return PlacementGroup(os.urandom(9).hex(), check_bundles(bundles, strategy))

    def placement_group_ready(self, pg: PlacementGroup) -> ObjectRef:
        return self.put(pg)

    def remove_placement_group(self, pg: PlacementGroup) -> None:
        pass

    def placement_group_table(self, pg: PlacementGroup | None) -> dict[str, Any]:
        return {}

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        pass  # the task finished before .remote() returned

    def available_resources(self) -> dict[str, float]:
        return {**self._capacity.available(), **self._memory}

    def cluster_resources(self) -> dict[str, float]:
        return {**self._capacity.total(), **self._memory}

    def context(self) -> dict[str, Any]:
        task_id, name = self._current[-1] if self._current else (None, None)
        return {
            "worker_id": 0,
            "task_id": task_id,
            "task_name": name,
            "pid": os.getpid(),
            "session": self.config.session,
            "gpu_ids": [],
        }

    def forget_after_fork(self) -> None:
        """Nothing to let go of: this runtime holds no process, socket or thread."""

    def shutdown(self) -> None:
        self._loop.close()
        with self._lock:
            self._objects.clear()
            self._refs.clear()

    def add_ref(self, oid: int) -> None:
        with self._lock:
            self._refs[oid] = self._refs.get(oid, 0) + 1

    def release(self, oid: int) -> None:
        with self._lock:
            n = self._refs.get(oid, 0) - 1
            if n > 0:
                self._refs[oid] = n
                return
            self._refs.pop(oid, None)
            self._objects.pop(oid, None)
        self._held.pop(oid, None)  # outside the lock: its refs release theirs

    def stream_next(self, gen_oid: int) -> ObjectRef | None:
        items = self._held.get(gen_oid)
        return items.pop(0) if items else None

    def stream_future(self, gen_oid: int) -> concurrent.futures.Future[ObjectRef | None]:
        fut: concurrent.futures.Future[ObjectRef | None] = concurrent.futures.Future()
        fut.set_result(self.stream_next(gen_oid))
        return fut

    def stream_status(self, gen_oid: int) -> tuple[bool, bool]:
        return True, not self._held.get(gen_oid)

    def future(self, oid: int) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            fut.set_result(ser.load_value(*self._objects[oid]))
        except Exception as exc:
            fut.set_exception(exc)
        return fut


async def _awaited(awaitable: Any) -> Any:
    if inspect.isasyncgen(awaitable):
        return [value async for value in awaitable]
    return await awaitable


def _drain(
    fn: Callable[..., Any], items: list[ObjectRef], rt: InlineRuntime, name: str
) -> Callable[..., Any]:
    """``fn`` made to store each value it yields as an object (refs into ``items``) and
    return a DynamicObjectRefGenerator of them: an error after some values is their last
    item, as in Ray's dynamic generators (a streaming one yields that ref last too)."""

    def run(*args: Any, **kwargs: Any) -> DynamicObjectRefGenerator:
        try:
            result = fn(*args, **kwargs)
            if inspect.isasyncgen(result):
                result = rt._loop.run_until_complete(_awaited(result))
            for value in result:
                items.append(rt._new((ser.dumps(value)[0], False)))
        except Exception as exc:
            items.append(rt._new((ser.dumps_error(name, exc, os.getpid()), True)))
        return DynamicObjectRefGenerator(items)

    return run
