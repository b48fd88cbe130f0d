"""``init(local_mode=True)``: every task runs inline, in the caller's thread, at ``.remote()``.

For stepping through task code in a debugger. Values still go through pickling (so a task
cannot mutate its caller's objects, as in the real runtimes) and errors surface at ``get``
exactly as they would from a worker. Resources are not enforced: tasks run one at a time.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
from typing import TYPE_CHECKING, Any

from .._object_ref import ObjectRef
from ..exceptions import TaskUnschedulableError
from . import serialization as ser
from .scheduler import Request, Scheduler

if TYPE_CHECKING:
    from .._options import TaskOptions
    from .._remote_function import RemoteFunction
    from .runtime import RuntimeConfig

__all__ = ["InlineRuntime"]


class InlineRuntime:
    """A runtime without processes: ``submit_task`` runs the function before returning."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self._capacity = Scheduler(config.num_cpus, config.gpus, config.resources)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._objects: dict[int, tuple[bytes, bool]] = {}  # {id: (payload, is_error)}
        self._refs: dict[int, int] = {}  # {id: live ObjectRefs}
        self._current: list[tuple[int, str]] = []  # stack of (task id, name) running inline

    def submit_task(
        self, fn: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], opts: TaskOptions
    ) -> list[ObjectRef]:
        request = Request.of(opts.num_cpus, opts.num_gpus, opts.resources)
        why = self._capacity.infeasible(request)
        if why is not None:
            raise TaskUnschedulableError(f"Task {fn.function_name}() can never run here: {why}.")
        s, positions, dep_ids = ser.dumps_args(args, kwargs)
        # Read-only views of the caller's buffers: a task must not mutate its arguments.
        buffers = [b.toreadonly() for b in s.buffers]
        task_id = next(self._ids)
        outcome: list[tuple[bytes, bool]]
        failed = next((self._objects[d] for d in dep_ids if self._objects[d][1]), None)
        if failed is not None:
            outcome = [failed] * opts.num_returns
        else:
            self._current.append((task_id, fn.function_name))
            try:
                values = [ser.loads(self._objects[d][0]) for d in dep_ids]
                call_args, call_kwargs = ser.loads_args(s.payload, positions, values, buffers)
                result = fn._function(*call_args, **call_kwargs)
                n = opts.num_returns
                results = [result] if n == 1 else [] if n == 0 else list(result)
                if len(results) != n:
                    raise ValueError(
                        f"Task {fn.function_name}() returned {len(results)} values, but "
                        f"num_returns={n}."
                    )
                outcome = [(ser.dumps(r)[0], False) for r in results]
            except Exception as exc:
                error = ser.dumps_error(fn.function_name, exc, os.getpid())
                outcome = [(error, True)] * opts.num_returns
            finally:
                self._current.pop()
        return [self._new(value) for value in outcome]

    def _new(self, value: tuple[bytes, bool]) -> ObjectRef:
        oid = next(self._ids)
        with self._lock:
            self._objects[oid] = value
            self._refs[oid] = 1
        return ObjectRef(oid, self)

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("Calling 'put' on an ObjectRef is not allowed; wrap it in a list.")
        return self._new((ser.dumps(value)[0], False))

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        return [ser.load_value(*self._objects[r._id]) for r in refs]

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        return refs[:num_returns], refs[num_returns:]  # everything is ready at once

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        pass  # the task finished before .remote() returned

    def available_resources(self) -> dict[str, float]:
        return self._capacity.available()

    def cluster_resources(self) -> dict[str, float]:
        return self._capacity.total()

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

    def shutdown(self) -> None:
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
            else:
                self._refs.pop(oid, None)
                self._objects.pop(oid, None)

    def future(self, oid: int) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            fut.set_result(ser.load_value(*self._objects[oid]))
        except Exception as exc:
            fut.set_exception(exc)
        return fut
