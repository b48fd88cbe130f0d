"""What ran where and when: finished tasks and actor calls, kept for the timeline and the
state API.

::

    worker: t0 = time.time(); run; TaskDone(start=t0, duration)  ──> driver I/O thread
    driver: _finish / ActorManager.done ── History.add((...)) ──> deque (newest last)
            _finish_plain (a batch of one frame's replies) ── History.extend([...]) ──┘
    readers: timeline(), list_tasks(), summarize_tasks(), the dashboard ── records(), a copy
             under the lock, as ``Done``s

Recording is one plain tuple (a ``Record``, in ``Done``'s field order) appended to a bounded
deque per task (a batch of them per frame of replies, for tasks that ended well), on the
I/O thread that already handles the result, so it stays on by default (its cost is
measured in benchmarks/); readers, which are rare, make the ``Done``s (building a
NamedTuple costs ~0.5 us more per task than a tuple display on the hot thread). The deque
keeps the newest ``RAYLITE_TASK_HISTORY`` entries (default 100,000, as Ray's GCS keeps
100,000 task events); ``0`` turns recording off.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from .env import task_history

__all__ = ["ACTOR_TASK", "NORMAL_TASK", "Done", "History", "Record", "trace_events"]

NORMAL_TASK, ACTOR_TASK = "NORMAL_TASK", "ACTOR_TASK"  # Ray's TaskType names


class Done(NamedTuple):
    """A finished task or actor call. ``start``/``end`` are epoch seconds, 0 if it never ran
    (failed arguments, cancelled while queued, its worker died)."""

    task_id: int
    name: str
    kind: str  # NORMAL_TASK or ACTOR_TASK
    pid: int  # the process it ran in (the driver's for thread tasks), 0 if it never ran
    lane: int  # the thread or actor it ran on: a row of its own in the timeline
    start: float
    end: float
    error: bytes | None  # the pickled error it failed with, None if it succeeded
    actor_id: int = 0
    attempt: int = 0


# A Done's fields as a plain tuple: (task_id, name, kind, pid, lane, start, end, error,
# actor_id, attempt), what History.add takes on the hot path.
Record = tuple[int, str, str, int, int, float, float, "bytes | None", int, int]


class History:
    """The newest finished tasks, at most ``maxlen`` (0: record nothing)."""

    def __init__(self, maxlen: int | None = None) -> None:
        if maxlen is None:
            maxlen = task_history()
        self.enabled = maxlen > 0
        self._done: deque[Record] = deque(maxlen=max(maxlen, 0))
        self.recorded = 0  # ever, including those the deque has dropped since

    def name_of(self, task_id: int) -> str | None:
        """The name of finished task ``task_id``, if it is still kept (newest first)."""
        if task_id:
            for done in reversed(self._done):
                if done[0] == task_id:
                    return done[1]
        return None

    def add(self, record: Record) -> None:
        """Records a finished task: ``Done``'s fields in order (a ``Done`` will do too)."""
        if self.enabled:
            self._done.append(record)
            self.recorded += 1

    def extend(self, records: list[Record]) -> None:
        """Records finished tasks (a batch of one worker's replies), oldest first."""
        if self.enabled:
            self._done.extend(records)
            self.recorded += len(records)

    def records(self) -> list[Done]:
        """What is kept, oldest first (the caller holds the runtime's lock)."""
        make = Done._make
        return [make(r) for r in self._done]


def trace_events(done: list[Done], names: dict[int, str]) -> list[dict[str, Any]]:
    """Chrome trace events (``chrome://tracing``, Perfetto) of what ran, one complete event
    ("ph": "X") each, a process row per worker and a thread row per lane.

    Args:
        done: finished tasks, as ``History.done`` holds them.
        names: ``{pid: "worker" | "actor host" | "driver"}``, to label the processes.
    """
    events: list[dict[str, Any]] = []
    seen: set[int] = set()
    for d in done:
        if not d.start:
            continue  # it never ran: nothing to draw
        if d.pid not in seen:
            seen.add(d.pid)
            label = f"{names.get(d.pid, 'worker')} pid={d.pid}"
            events.append({"name": "process_name", "ph": "M", "pid": d.pid, "tid": 0,
                           "args": {"name": label}})  # fmt: skip
        events.append({
            "cat": "task" if d.kind == NORMAL_TASK else "actor_task",
            "name": d.name,
            "pid": d.pid,
            "tid": d.lane,
            "ts": d.start * 1e6,
            "dur": max(d.end - d.start, 0.0) * 1e6,
            "ph": "X",
            "cname": "bad" if d.error is not None else "good",
            "args": {"task_id": f"{d.task_id:056x}", "failed": d.error is not None},
        })  # fmt: skip
    return events
