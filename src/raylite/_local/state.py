"""The state API's view of a LocalRuntime: tasks, actors, objects and workers as plain dicts
(JSON-ready, with Ray's field names), plus filters, the task summary and the timeline.

::

    list_tasks() / `raylite list tasks` / dashboard ──> LocalRuntime.list_state(kind, ...)
        lock held: copy live tasks, actor calls, history, objects, workers (cheap copies)
        lock free: build the records, filter, sort, cut to ``limit``

The readers call in from user threads, the control socket's thread and the dashboard's; each
call copies what it needs under the runtime's lock and does the rest without it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import psutil

from . import serialization as ser
from .history import ACTOR_TASK, NORMAL_TASK, Done, trace_events
from .task_states import PENDING

if TYPE_CHECKING:
    from .runtime import LocalRuntime

__all__ = ["KINDS", "StateView", "filter_records", "finished_records", "summarize"]

KINDS = ("tasks", "actors", "objects", "workers")
_PREDICATES = ("=", "!=")


def _hex(value: int) -> str:
    return f"{value:056x}"


def _ms(t: float) -> int | None:
    return int(t * 1000) if t else None


class StateView:
    """Builds state records of one runtime; keeps a psutil handle per worker so CPU use is
    measured between two calls (as ``top`` does)."""

    def __init__(self, rt: LocalRuntime) -> None:
        self._rt = rt
        self._procs: dict[int, psutil.Process] = {}  # {pid: handle}, pruned as workers go
        self._procs_lock = threading.Lock()  # the CLI's and the dashboard's threads both read
        self.started = time.time()

    def describe_object(self, oid: int) -> str:
        """Words for object ``oid`` in an error: the task whose result it is, if known."""
        rt = self._rt
        with rt._lock:
            entry = rt._objs.get(oid)
            task_id = entry.task_id if entry is not None else 0
            task = rt._states.tasks.get(task_id)
            name = task.name if task is not None else rt._history.name_of(task_id)
        return f"the result of {name}()" if name else f"object {oid:056x}"

    # ---- records ------------------------------------------------------------------------

    def tasks(self, finished: bool = True) -> list[dict[str, Any]]:
        """Tasks and actor calls: those waiting or running, then (with ``finished``) the
        finished ones, newest last: up to 100,000 records that cost ~0.4 s to build."""
        rt = self._rt
        with rt._lock:
            live = []
            objs = rt._objs
            for task in rt._states.tasks.values():
                # The task state machine's state, in Ray's words: a PENDING task waits for
                # its arguments (the object table knows) or for resources; of a worker's
                # DISPATCHED tasks, the first in its queue (the scheduler's) runs.
                if task.state == PENDING or task.worker is None:
                    missing = any(objs[o].payload is None for o in task.dep_ids if o in objs)
                    state = "PENDING_ARGS_AVAIL" if missing else "PENDING_NODE_ASSIGNMENT"
                    pid = 0
                else:
                    queued = rt.sched.queued_on(task.worker) if task.worker >= 0 else []
                    running = not queued or queued[0] == task.task_id
                    state = "RUNNING" if running else "SUBMITTED_TO_WORKER"
                    pid = os.getpid() if task.worker < 0 else rt._workers[task.worker].pid
                attempt = task.opts.max_retries - task.retries_left
                live.append((task.task_id, task.name, NORMAL_TASK, state, pid, 0, attempt,
                             task.request.describe()))  # fmt: skip
            for actor in rt._actors.actors.values():
                limit = _concurrency(actor)
                pid = rt._actors.pid_of(actor)
                for i, call in enumerate(actor.inflight.values()):
                    state = "RUNNING" if i < limit else "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY"
                    live.append((call.task_id, call.name, ACTOR_TASK, state, pid, actor.actor_id,
                                 0, ""))  # fmt: skip
                for call in actor.queue:
                    live.append((call.task_id, call.name, ACTOR_TASK,
                                 "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY", 0, actor.actor_id,
                                 0, ""))  # fmt: skip
                for call in actor.parked.values():  # out of order, waiting for arguments
                    live.append((call.task_id, call.name, ACTOR_TASK, "PENDING_ARGS_AVAIL", 0,
                                 actor.actor_id, 0, ""))  # fmt: skip
            done = rt._history.records() if finished else []
        records = [
            {
                "task_id": _hex(task_id), "attempt_number": attempt, "name": name,
                "state": state, "type": kind, "func_or_class_name": name,
                "actor_id": _hex(actor_id) if actor_id else None, "worker_pid": pid or None,
                "required_resources": resources, "start_time_ms": None, "end_time_ms": None,
                "error_type": None, "error_message": None,
            }  # fmt: skip
            for task_id, name, kind, state, pid, actor_id, attempt, resources in live
        ]
        records.extend(finished_records(done))
        return records

    def actors(self) -> list[dict[str, Any]]:
        rt = self._rt
        with rt._lock:
            rows = []
            for a in rt._actors.actors.values():
                restarts = a.opts.max_restarts - a.restarts_left if a.opts.max_restarts >= 0 else 0
                rows.append({
                    "actor_id": _hex(a.actor_id), "class_name": a.class_name,
                    "state": a.state,  # actor_states, in Ray's words
                    "name": a.name_key[1] if a.name_key else "",
                    "ray_namespace": a.name_key[0] if a.name_key else None,
                    "pid": rt._actors.pid_of(a) or None, "num_restarts": restarts,
                    "is_detached": a.opts.lifetime == "detached",
                    "placement": "thread" if a.local_cls is not None
                    else "dedicated" if a.opts.dedicated else "packed",
                    "calls_queued": len(a.queue) + len(a.parked)
                    + max(len(a.inflight) - _concurrency(a), 0),
                    "calls_running": min(len(a.inflight), _concurrency(a)),
                    "death_cause": ser.loads(a.death).args[0] if a.death else None,
                })  # fmt: skip
        return rows

    def objects(self) -> list[dict[str, Any]]:
        rt = self._rt
        with rt._lock:
            rows = [
                (oid, e.payload is not None, e.is_error, len(e.payload or b""),
                 e.shm.layout.size if e.shm is not None else 0,
                 e.shm is not None and e.shm.spilled, e.refcount, e.task_id, e.actor)
                for oid, e in rt._objs.entries.items()
            ]  # fmt: skip
        return [
            {
                "object_id": _hex(oid), "object_size": inline + shared,
                "in_shared_memory": shared > 0 and not spilled,  # else in a spill file
                "status": "ERROR" if error else "READY" if ready else "PENDING",
                "reference_type": "ACTOR_HANDLE" if actor else "LOCAL_REFERENCE",
                "ref_count": refs, "task_id": _hex(task_id) if task_id else None,
                "type": "DRIVER", "pid": os.getpid(),
            }  # fmt: skip
            for oid, ready, error, inline, shared, spilled, refs, task_id, actor in rows
        ]

    def workers(self) -> list[dict[str, Any]]:
        """The driver and every worker process, with CPU (% of one core since the last call)
        and memory (RSS, USS)."""
        rt = self._rt
        with rt._lock:
            hosts = set(rt._actors.hosts)
            dedicated = {a.wid for a in rt._actors.actors.values() if a.opts.dedicated}
            rows = [("DRIVER", 0, os.getpid(), 0)] + [
                ("ACTOR_HOST" if w.wid in hosts else "ACTOR_WORKER" if w.wid in dedicated
                 else "WORKER", w.wid, w.pid, rt.sched.in_flight(w.wid))
                for w in rt._workers.values() if w.pid and not w.gone
            ]  # fmt: skip
        out = []
        with self._procs_lock:  # one reader at a time: cpu_percent() measures since the last
            for kind, wid, pid, in_flight in rows:
                proc = self._procs.get(pid)
                try:
                    if proc is None:
                        proc = self._procs[pid] = psutil.Process(pid)
                        proc.cpu_percent()  # the first call only starts the measurement
                    with proc.oneshot():
                        cpu = proc.cpu_percent()
                        mem = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                out.append({
                    "worker_id": _hex(wid), "pid": pid, "worker_type": kind, "is_alive": True,
                    "tasks_in_flight": in_flight, "cpu_percent": cpu, "memory_rss": mem.rss,
                    "memory_uss": mem.uss,
                })  # fmt: skip
            live = {row["pid"] for row in out}
            for pid in [p for p in self._procs if p not in live]:
                del self._procs[pid]
        return out

    def status(self) -> dict[str, Any]:
        """What `raylite status` prints: resources, processes, actors, tasks, the store."""
        rt = self._rt
        with rt._lock:
            store = rt._objs.books
            used, capacity = store.live, store.capacity
            n_objects = len(rt._objs.entries)
            n_workers = sum(1 for w in rt._workers.values() if w.pid and not w.gone)
        counts = Counter(r["state"] for r in self.tasks(finished=False))
        with rt._lock:
            done = rt._history.records()
        # Counted, not built: the dashboard asks every second, with up to 100,000 of them.
        failed = sum(1 for d in done if d.error is not None)
        counts.update({"FINISHED": len(done) - failed, "FAILED": failed})
        counts = +counts  # drops the zero counts
        return {
            "session": rt.config.session, "session_dir": rt.session_dir,
            "driver_pid": os.getpid(), "uptime_s": round(time.time() - self.started, 1),
            "resources_total": rt.cluster_resources(),
            "resources_available": rt.available_resources(),
            "worker_processes": n_workers,
            "actors": dict(Counter(a["state"] for a in self.actors())),
            "tasks": dict(counts),
            "object_store": {"used_bytes": used, "capacity_bytes": capacity,
                             "objects": n_objects},
            "tasks_recorded": rt._history.recorded,
        }  # fmt: skip

    def records(
        self, kind: str, filters: list[tuple[str, str, Any]] | None, limit: int | None
    ) -> list[dict[str, Any]]:
        """``list_tasks``/``list_actors``/...: the records of ``kind``, filtered.

        Raises:
            ValueError: an unknown kind.
        """
        if kind not in KINDS:
            raise ValueError(f"Unknown kind of state {kind!r}: pick one of {', '.join(KINDS)}.")
        return filter_records(getattr(self, kind)(), filters, limit)

    def answer_control(self, req: dict[str, Any]) -> Any:
        """A request from the ``raylite`` command (on the control socket's thread)."""
        op = req.get("op")
        if op == "status":
            return self.status()
        if op == "list":
            filters = [tuple(f) for f in req.get("filters") or []]
            return self.records(req["kind"], filters, req.get("limit"))  # type: ignore[arg-type]
        if op == "summary":
            return summarize(self.tasks())
        if op == "timeline":
            return self.timeline()
        raise ValueError(f"unknown request {op!r}: status, list, summary or timeline")

    def timeline(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Trace events of the finished tasks that ended at ``since`` (epoch seconds) or later."""
        rt = self._rt
        with rt._lock:
            done = rt._history.records()
            hosts = {rt._workers[wid].pid for wid in rt._actors.hosts if wid in rt._workers}
        names = {pid: "actor host" for pid in hosts}
        names[os.getpid()] = "driver"
        return trace_events([d for d in done if d.end >= since] if since else done, names)


def _concurrency(actor: Any) -> int:
    """How many calls ``actor`` runs at once (Ray's default: 1, or 1000 if async)."""
    return actor.opts.max_concurrency or (1000 if actor.meta.is_async else 1)


def finished_records(done: list[Done]) -> list[dict[str, Any]]:
    """State records of finished tasks."""
    return [_finished(d) for d in done]


def _finished(d: Done) -> dict[str, Any]:
    error_type: str | None = None
    message: str | None = None
    if d.error is not None:
        try:
            exc = ser.loads(d.error)
            cause = getattr(exc, "cause", None) or exc
            lines = str(exc).strip().splitlines()
            error_type, message = type(cause).__name__, lines[-1] if lines else ""
        except Exception as exc:  # an error that cannot be rebuilt here still shows as one
            error_type, message = "Unknown", f"(could not read the error: {exc})"
    return {
        "task_id": _hex(d.task_id), "attempt_number": d.attempt, "name": d.name,
        "state": "FAILED" if d.error is not None else "FINISHED", "type": d.kind,
        "func_or_class_name": d.name, "actor_id": _hex(d.actor_id) if d.actor_id else None,
        "worker_pid": d.pid or None, "required_resources": "",
        "start_time_ms": _ms(d.start), "end_time_ms": _ms(d.end),
        "error_type": error_type, "error_message": message,
    }  # fmt: skip


def filter_records(
    records: list[dict[str, Any]], filters: list[tuple[str, str, Any]] | None, limit: int | None
) -> list[dict[str, Any]]:
    """Ray's state filters: ``[(key, "=" | "!=", value)]``, all must hold; values compare as
    strings (``("state", "=", "RUNNING")``, ``("worker_pid", "=", 1234)``).

    Raises:
        ValueError: a malformed filter or a key the records do not have.
    """
    checks = []
    for f in filters or []:
        if not (isinstance(f, (tuple, list)) and len(f) == 3 and f[1] in _PREDICATES):
            raise ValueError(
                f"Bad filter {f!r}: a filter is a tuple (key, predicate, value) with predicate "
                "'=' or '!=', e.g. ('state', '=', 'RUNNING')."
            )
        key, predicate, value = f
        if records and key not in records[0]:
            raise ValueError(
                f"Cannot filter on {key!r}: the keys are {', '.join(sorted(records[0]))}."
            )
        checks.append((key, predicate == "=", str(value)))
    out = [r for r in records if all((str(r[k]) == v) is eq for k, eq, v in checks)]
    return out if limit is None else out[:limit]


def summarize(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Ray's ``summarize_tasks()`` shape: counts per function (or method) and state."""
    by_name: dict[str, dict[str, Any]] = {}
    for t in tasks:
        entry = by_name.setdefault(t["func_or_class_name"], {
            "func_or_class_name": t["func_or_class_name"], "type": t["type"],
            "state_counts": Counter(),
        })  # fmt: skip
        entry["state_counts"][t["state"]] += 1
    for entry in by_name.values():
        entry["state_counts"] = dict(entry["state_counts"])
    return {
        "cluster": {
            "summary": by_name,
            "total_tasks": sum(1 for t in tasks if t["type"] == NORMAL_TASK),
            "total_actor_tasks": sum(1 for t in tasks if t["type"] == ACTOR_TASK),
            "total_actor_scheduled": 0,
            "summary_by": "func_name",
        }
    }
