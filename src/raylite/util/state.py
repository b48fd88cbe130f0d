"""The state API, as Ray's ``ray.util.state``: what runs, what waits, what lives where.

Example::

    from raylite.util.state import list_tasks, summarize_tasks

    running = list_tasks(filters=[("state", "=", "RUNNING")])
    print([t.name for t in running], summarize_tasks()["cluster"]["summary"])

On the embedded runtime the answers come from the driver's own books (no server); finished
tasks are kept up to ``RAYLITE_TASK_HISTORY`` (default 100,000), newest last. With
``init(address=...)`` the calls go to Ray's state API (which needs ``ray[default]``).
Call them in the driver: inside a task they raise ``RuntimeError``. The same views are on
the command line (``raylite list tasks``, ``raylite status``) and in the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from .. import _runtime
from .._compat import module_getattr

__all__ = [
    "ActorState", "ObjectState", "TaskState", "WorkerState",
    "get_actor", "get_task", "list_actors", "list_objects", "list_tasks", "list_workers", "summarize_tasks",
]  # fmt: skip

DEFAULT_LIMIT = 100  # Ray's default
Filters = list[tuple[str, str, Any]]


@dataclass
class TaskState:
    """A task or actor call (Ray's field names; ``state`` is one of Ray's ``TaskStatus``
    names: ``PENDING_ARGS_AVAIL``, ``PENDING_NODE_ASSIGNMENT``, ``SUBMITTED_TO_WORKER``,
    ``PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY``, ``RUNNING``, ``FINISHED``, ``FAILED``)."""

    task_id: str
    attempt_number: int
    name: str
    state: str
    type: str  # NORMAL_TASK or ACTOR_TASK
    func_or_class_name: str
    actor_id: str | None = None
    worker_pid: int | None = None
    required_resources: Any = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None
    error_type: str | None = None
    error_message: str | None = None


@dataclass
class ActorState:
    """An actor (``state``: ``PENDING_CREATION``, ``ALIVE``, ``RESTARTING``, ``DEAD``).
    ``placement`` is raylite's: ``packed`` (a thread in a shared host process),
    ``dedicated`` (a process of its own) or ``thread`` (in the driver)."""

    actor_id: str
    class_name: str
    state: str
    name: str = ""
    ray_namespace: str | None = None
    pid: int | None = None
    num_restarts: int = 0
    is_detached: bool = False
    placement: str | None = None
    calls_queued: int = 0
    calls_running: int = 0
    death_cause: str | None = None


@dataclass
class ObjectState:
    """An object the driver owns (``status``: ``PENDING``, ``READY`` or ``ERROR``)."""

    object_id: str
    object_size: int
    status: str | None = None
    reference_type: str | None = None
    in_shared_memory: bool = False
    ref_count: int | None = None
    task_id: str | None = None
    type: str | None = None
    pid: int | None = None


@dataclass
class WorkerState:
    """A process of this runtime: the driver, a task worker or an actor host, with its CPU
    use (percent of one core since the previous call) and memory in bytes."""

    worker_id: str
    pid: int
    worker_type: str
    is_alive: bool = True
    tasks_in_flight: int = 0
    cpu_percent: float | None = None
    memory_rss: int | None = None
    memory_uss: int | None = None


_S = TypeVar("_S")


def _as(cls: type[_S], records: list[dict[str, Any]]) -> list[_S]:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return [cls(**{k: v for k, v in r.items() if k in names}) for r in records]


def _list(kind: str, filters: Filters | None, limit: int, detail: bool) -> list[dict[str, Any]]:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}.")
    return _runtime.current().list_state(kind, filters, limit, detail)


def list_tasks(
    address: str | None = None, filters: Filters | None = None, limit: int = DEFAULT_LIMIT,
    timeout: int = 30, detail: bool = False, raise_on_missing_output: bool = True,
) -> list[TaskState]:  # fmt: skip
    """Tasks and actor calls: waiting and running ones first, then finished ones.

    Args:
        address: unused (the runtime this process runs; kept for Ray's signature).
        filters: ``[(key, "=" | "!=", value)]``, e.g. ``[("state", "=", "RUNNING")]``.
        limit: at most this many.
        timeout, detail, raise_on_missing_output: accepted for Ray's signature.

    Raises:
        ValueError: a malformed filter, or a key tasks do not have.
    """
    return _as(TaskState, _list("tasks", filters, limit, detail))


def list_actors(
    address: str | None = None, filters: Filters | None = None, limit: int = DEFAULT_LIMIT,
    timeout: int = 30, detail: bool = False, raise_on_missing_output: bool = True,
) -> list[ActorState]:  # fmt: skip
    """Actors that are alive, starting, restarting, or dead with handles left (as
    ``list_tasks``)."""
    return _as(ActorState, _list("actors", filters, limit, detail))


def get_actor(
    id: str, address: str | None = None, timeout: int = 30, _explain: bool = False
) -> ActorState | None:
    """The actor whose id (``handle._actor_id.hex()``) is ``id``, or ``None`` if this runtime
    does not know it (as Ray's ``get_actor``).

    Args:
        id: the actor's id, as hex.
        address, timeout, _explain: accepted for Ray's signature.
    """
    found = _as(ActorState, _list("actors", [("actor_id", "=", id)], 1, True))
    return found[0] if found else None


def get_task(
    id: str, address: str | None = None, timeout: int = 30, _explain: bool = False
) -> TaskState | None:
    """The task or actor call whose id is ``id`` (its latest attempt), or ``None`` (as Ray's
    ``get_task``; Ray returns every attempt of a retried task, raylite the latest)."""
    found = _as(TaskState, _list("tasks", [("task_id", "=", id)], DEFAULT_LIMIT, True))
    return max(found, key=lambda t: t.attempt_number) if found else None


def list_objects(
    address: str | None = None, filters: Filters | None = None, limit: int = DEFAULT_LIMIT,
    timeout: int = 30, detail: bool = False, raise_on_missing_output: bool = True,
) -> list[ObjectState]:  # fmt: skip
    """Objects alive now: put, returned, or pending (as ``list_tasks``)."""
    return _as(ObjectState, _list("objects", filters, limit, detail))


def list_workers(
    address: str | None = None, filters: Filters | None = None, limit: int = DEFAULT_LIMIT,
    timeout: int = 30, detail: bool = False, raise_on_missing_output: bool = True,
) -> list[WorkerState]:  # fmt: skip
    """The driver and the worker processes, with CPU and memory (as ``list_tasks``)."""
    return _as(WorkerState, _list("workers", filters, limit, detail))


def summarize_tasks(
    address: str | None = None, timeout: int = 30, raise_on_missing_output: bool = True
) -> dict[str, Any]:
    """Counts of tasks per function (and actor method) and state, in Ray's shape:
    ``{"cluster": {"summary": {name: {"func_or_class_name", "type", "state_counts"}},
    "total_tasks", "total_actor_tasks", "total_actor_scheduled", "summary_by"}}``."""
    return _runtime.current().summarize_tasks()


__getattr__ = module_getattr(__name__)  # a Ray name raylite lacks: an error that says so
