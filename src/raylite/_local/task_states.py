"""Every decision in a task's life, in one pure state machine: no I/O, no clock, no pickling.

::

    runtime (lock held) ── event ──> TaskStates ── instructions ──> runtime carries them out
                                       │ reads/cancels
                                       v
                                     Scheduler (pure: placement, leases, worker queues)

    event                              state after                 instructions
    submitted(task)                    PENDING                     -
    dispatched(task, worker)           DISPATCHED                  -
    returned(task_ids)                 PENDING                     -
    done_ok(task_id, worker)           gone (DONE)                 -  (the task: store results)
    done_error(task, error)            PENDING (a retry)           Resubmit
                                       gone (FAILED)               Fail
    dep_failed(task, error)            gone (FAILED)               Fail
    worker_died(lost, running, death)  PENDING (a rerun/retry)     Resubmit
                                       gone (FAILED, CANCELLED)    Crashed | Cancelled
    cancel(task_id, force, recursive)  gone (CANCELLED)            Cancelled
                                       DISPATCHED, cancelled       KillWorker | Interrupt |
                                                                   Unqueue (the worker reports)
    unstartable(task_id, error)        gone (FAILED)               Fail  (if still pending)
    fail(task_ids, error)              gone (FAILED)               Fail  (thread pool, shutdown)

The live tasks are ``tasks`` (``{task_id: Task}``), each with its state in ``Task.state``; a
task that ended is no longer in it (its record is the history's), so every later event about
it is a no-op: a task ends exactly once. PENDING covers both "waiting for arguments" and
"waiting for resources": which one is the object table's and the scheduler's business (the
state API asks them), not a decision about the task. Which of a worker's dispatched tasks
runs is the scheduler's lease order (the first one).

The success path is the hot one: ``submitted``, ``dispatched`` and ``done_ok`` are a field
write and a dict operation each, and return nothing. Instructions are only made when
something goes wrong (errors, deaths, cancel), as small NamedTuples the runtime matches on.

Who feeds what (runtime.py, inbox.py, threads.py, watchdog.py): the I/O thread feeds replies
and deaths; user threads feed submissions and cancels; all with the runtime's lock held.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .scheduler import Scheduler
from .tasks import Task

__all__ = [
    "DISPATCHED", "FREE_RERUNS", "PENDING", "Cancelled", "Crashed", "Death", "Fail", "Instruction",
    "Interrupt", "InvalidTransition", "KillWorker", "Resubmit", "TaskStates", "Unqueue",
]  # fmt: skip

# Live states (``Task.state``). Ended tasks have left ``TaskStates.tasks``.
PENDING = 0  # submitted; in the scheduler, waiting for its arguments or resources
DISPATCHED = 1  # on a worker (or a driver thread): queued there, or running

FREE_RERUNS = 5  # reruns after deaths that were not a task's own; then each is a retry


class Resubmit(NamedTuple):
    """Submit ``task`` again (a retry, or a rerun after its worker died): it is PENDING."""

    task: Task


class Fail(NamedTuple):
    """``task`` ended with ``error`` (pickled, or to be pickled): store it as its results."""

    task: Task
    error: bytes | BaseException


class Cancelled(NamedTuple):
    """``task`` ended cancelled: store a ``TaskCancelledError`` as its results."""

    task: Task


class Death(NamedTuple):
    """How a worker died, as the runtime saw it (carried into ``Crashed``)."""

    pid: int
    cause: str | None  # why the driver killed it, or None (it died on its own)
    status: int | None  # its wait status, None if unknown


class Crashed(NamedTuple):
    """``task`` ended because its worker died (``death``), after ``tries`` runs: store a
    ``WorkerCrashedError`` that says how."""

    task: Task
    tries: int
    death: Death


class KillWorker(NamedTuple):
    """Kill ``worker`` (a forced cancel); its death ends its tasks (``worker_died``)."""

    worker: int


class Interrupt(NamedTuple):
    """Interrupt ``task_id``, running on ``worker`` (a gentle cancel): it reports back."""

    worker: int
    task_id: int


class Unqueue(NamedTuple):
    """Drop ``task_id`` from ``worker``'s queue (not started yet): it reports back."""

    worker: int
    task_id: int


Instruction = Resubmit | Fail | Cancelled | Crashed | KillWorker | Interrupt | Unqueue


class InvalidTransition(RuntimeError):
    """An event that cannot happen to a task in its state: a bug in the runtime's feeding."""


class TaskStates:
    """The live tasks and every transition of their lives.

    Args:
        sched: the scheduler, asked which of a worker's tasks runs and told of cancels.
        error_cause: the user's exception in a task's pickled error (unwrapped from its
            ``RayTaskError``), to match against ``retry_exceptions`` (injected: this
            module unpickles nothing itself).
        free_reruns: reruns a task gets when its worker died of another task's fault (or
            before it started), before each counts as a retry.
    """

    def __init__(
        self,
        *,
        sched: Scheduler,
        error_cause: Callable[[bytes], BaseException | None],
        free_reruns: int = FREE_RERUNS,
    ) -> None:
        self.tasks: dict[int, Task] = {}  # {task_id: Task}, live ones only
        self._sched = sched
        self._error_cause = error_cause
        self._free_reruns = free_reruns

    # ---- the success path (hot: no instructions) ----------------------------------------

    def submitted(self, task: Task) -> None:
        """A new task, or one resubmitted: PENDING (the runtime hands it to the scheduler)."""
        task.state = PENDING  # as _pend(task), inline: once per task on the submit path
        task.worker = None
        self.tasks[task.task_id] = task

    def dispatched(self, task: Task, worker: int) -> None:
        """The scheduler placed ``task`` on ``worker`` (negative: a driver thread).

        Raises:
            InvalidTransition: it was dispatched already.
        """
        if task.state != PENDING:
            raise InvalidTransition(f"task {task.task_id:x} dispatched twice")
        task.state = DISPATCHED
        task.worker = worker

    def returned(self, task_ids: list[int]) -> None:
        """A worker handed back queued tasks it had not started: PENDING again."""
        tasks = self.tasks
        for tid in task_ids:
            task = tasks.get(tid)
            if task is not None and task.state == DISPATCHED:
                _pend(task)

    def done_ok(self, task_id: int, worker: int) -> Task | None:
        """``worker`` reports ``task_id`` done with results: the task, now ended, if that
        counts (``None``: it ended already, or this is a stale reply of an earlier run)."""
        task = self.tasks.get(task_id)
        if task is None or task.worker != worker:
            return None
        del self.tasks[task_id]
        return task

    def is_current(self, task_id: int, worker: int) -> Task | None:
        """The live task ``task_id`` if ``worker`` runs it now (its reply counts), else None."""
        task = self.tasks.get(task_id)
        return task if task is not None and task.worker == worker else None

    # ---- failures (instructions) --------------------------------------------------------

    def done_error(self, task: Task, error: bytes) -> Resubmit | Fail:
        """``task`` (current: see ``is_current``) raised ``error``: retried if its options
        say so (``max_retries``, ``retry_exceptions``) and it was not cancelled, else ended."""
        if not task.cancelled and self._should_retry(task, error):
            task.retries_left -= 1
            _pend(task)
            return Resubmit(task)
        self._end(task)
        return Fail(task, error)

    def dep_failed(self, task: Task, error: bytes) -> Fail:
        """An argument of ``task`` failed (seen as it was dispatched): so does the task,
        without running."""
        self._end(task)
        return Fail(task, error)

    def worker_died(self, lost: list[int], running: int, death: Death) -> list[Instruction]:
        """A worker died (``death``) with ``lost`` dispatched to it (the scheduler's order);
        ``running`` is the one it was running (its own fault, if any: it counts as a try), 0
        if none.

        A task that never started, or ended with its reply unsent, reruns for free (a
        bounded number of times, so a task that kills every worker it shares still ends);
        the running one is retried per ``max_retries``, else fails.
        """
        out: list[Instruction] = []
        for tid in lost:
            task = self.tasks.get(tid)
            if task is None:
                continue
            if task.cancelled:
                self._end(task)
                out.append(Cancelled(task))
            elif tid != running and task.reruns < self._free_reruns:
                task.reruns += 1
                _pend(task)
                out.append(Resubmit(task))
            elif task.retries_left != 0:
                task.retries_left -= 1
                _pend(task)
                out.append(Resubmit(task))
            else:
                self._end(task)
                out.append(Crashed(task, task.opts.max_retries - task.retries_left + 1, death))
        return out

    def cancel(self, task_id: int, force: bool, recursive: bool) -> list[Instruction]:
        """``cancel(ref, force, recursive)`` of task ``task_id`` (and, if ``recursive``, the
        tasks it submitted). A pending task ends now; a dispatched one is stopped on its
        worker, which reports it (or dies of ``force``). ``force`` may follow a gentle try."""
        task = self.tasks.get(task_id)
        if task is None or (task.cancelled and not force):
            return []
        task.cancelled = True
        out: list[Instruction] = []
        if recursive and task.children:
            for child in task.children:
                out += self.cancel(child, force, recursive)
        if self._sched.cancel(task_id) or task.call is not None:
            # Pending, or a thread task (a running thread cannot be interrupted: dropped).
            self._end(task)
            out.append(Cancelled(task))
        elif task.worker is not None:
            worker = task.worker
            if force:
                out.append(KillWorker(worker))
            else:
                queued = self._sched.queued_on(worker)
                if queued and queued[0] == task_id:  # running (or about to)
                    out.append(Interrupt(worker, task_id))
                else:
                    out.append(Unqueue(worker, task_id))
        return out

    def unstartable(self, task_id: int, error: BaseException) -> list[Fail]:
        """Pending task ``task_id`` can never start (the watchdog found it): it leaves the
        scheduler and ends with ``error``; ``[]`` if it is not pending any more."""
        task = self.tasks.get(task_id)
        if task is None or not self._sched.cancel(task_id):
            return []
        self._end(task)
        return [Fail(task, error)]

    def fail(self, task_ids: list[int], error: BaseException) -> list[Fail]:
        """The tasks ``task_ids`` end with ``error`` (stalled, unstartable, or the runtime
        shutting down); those that ended already are skipped. The caller has taken them out
        of the scheduler (or the scheduler is going away)."""
        out = []
        for tid in task_ids:
            task = self.tasks.get(tid)
            if task is not None:
                self._end(task)
                out.append(Fail(task, error))
        return out

    def fail_all(self, error: BaseException) -> list[Fail]:
        """Every live task ends with ``error`` (the runtime cannot go on)."""
        return self.fail(list(self.tasks), error)

    # ---- helpers ------------------------------------------------------------------------

    def _end(self, task: Task) -> None:
        del self.tasks[task.task_id]

    def _should_retry(self, task: Task, error: bytes) -> bool:
        retry = task.opts.retry_exceptions
        if not retry or task.retries_left == 0:
            return False
        if isinstance(retry, bool):
            return retry
        return isinstance(self._error_cause(error), retry)


def _pend(task: Task) -> None:
    """Makes ``task`` PENDING: on no worker, to be (re)submitted to the scheduler."""
    task.state = PENDING
    task.worker = None
