"""The task state machine as a pure object: events in, instructions out; no processes.

A small harness plays the runtime's part (it hands submissions to a real, pure ``Scheduler``
and carries out ``Resubmit``), so the states are checked against the scheduler's books. The
table covers every (state, event) pair; a hypothesis state machine drives random event
sequences and checks the invariants after each step.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raylite._local.scheduler import Request, Scheduler
from raylite._local.task_states import (
    DISPATCHED,
    FREE_RERUNS,
    PENDING,
    Cancelled,
    Crashed,
    Death,
    Fail,
    Instruction,
    Interrupt,
    InvalidTransition,
    KillWorker,
    Resubmit,
    TaskStates,
    Unqueue,
)
from raylite._local.tasks import Task
from raylite._options import TaskOptions

W1, W2 = 101, 102
CPU1 = Request.of(1, 0, {})
DEATH = Death(pid=4242, cause=None, status=9)
BOOM = pickle.dumps(ValueError("boom"))


def make_task(tid: int, max_retries: int = 3, retry_exceptions: object = False, **kw: object) -> Task:
    opts = TaskOptions(num_returns=1, max_retries=max_retries, retry_exceptions=retry_exceptions)
    return Task(tid, 1, f"f{tid}", b"", [], [], [], [tid * 1000], opts, CPU1, max_retries, **kw)


@dataclass
class Harness:
    """The runtime's part: submissions go to the scheduler, dispatches come back as events."""

    cpus: int = 1
    workers: tuple[int, ...] = (W1,)
    sched: Scheduler = field(init=False)
    states: TaskStates = field(init=False)

    def __post_init__(self) -> None:
        self.sched = Scheduler(self.cpus, max_workers=len(self.workers))
        self.states = TaskStates(sched=self.sched, error_cause=pickle.loads)
        for w in self.workers:
            self.sched.worker_started(w)

    def submit(self, task: Task, deps: list[int] | None = None) -> Task:
        self.states.submitted(task)
        self.apply_dispatch(self.sched.submit(task.task_id, task.request, 1, deps or []).dispatch)
        return task

    def apply_dispatch(self, pairs: object) -> None:
        for tid, wid in pairs:
            self.states.dispatched(self.states.tasks[tid], wid)

    def carry_out(self, instructions: list[Instruction]) -> None:
        for instruction in instructions:
            if isinstance(instruction, Resubmit):
                self.submit(instruction.task)


def state(h: Harness, tid: int) -> str:
    task = h.states.tasks.get(tid)
    if task is None:
        return "gone"
    return {PENDING: "pending", DISPATCHED: "dispatched"}[task.state]


# ---- the table: (state, event) -> (state, instructions) ---------------------------------------


def pending(**kw: object) -> tuple[Harness, Task]:
    """Task 2, PENDING behind task 1, which runs on the only worker."""
    h = Harness()
    h.submit(make_task(1))
    return h, h.submit(make_task(2, **kw))


def running(**kw: object) -> tuple[Harness, Task]:
    """Task 1, DISPATCHED to W1 and first in its queue (it runs)."""
    h = Harness()
    return h, h.submit(make_task(1, **kw))


def queued(**kw: object) -> tuple[Harness, Task]:
    """Task 2, DISPATCHED to W1 behind task 1 (pipelined: not started)."""
    h = Harness()
    h.submit(make_task(99))
    h.sched.task_done(W1, 99, duration=1e-6)  # a short function: the scheduler pipelines it
    h.states.done_ok(99, W1)
    h.submit(make_task(1))
    task = h.submit(make_task(2, **kw))
    assert h.sched.queued_on(W1) == [1, 2]
    return h, task


def ended(**kw: object) -> tuple[Harness, Task]:
    h, task = running(**kw)
    assert h.states.done_ok(task.task_id, W1) is task
    return h, task


SETUPS = {"pending": pending, "running": running, "queued": queued, "ended": ended}

# (name, setup, options, event(h, task) -> instructions, state after, instruction types)
TABLE = [
    ("dispatch a pending task", "pending", {}, lambda h, t: h.states.dispatched(t, W2),
     "dispatched", []),
    ("return a queued task", "queued", {}, lambda h, t: h.states.returned([t.task_id]),
     "pending", []),
    ("return a pending task: no-op", "pending", {}, lambda h, t: h.states.returned([t.task_id]),
     "pending", []),
    ("done ok", "running", {}, lambda h, t: h.states.done_ok(t.task_id, W1), "gone", []),
    ("done ok from another worker: stale", "running", {},
     lambda h, t: h.states.done_ok(t.task_id, W2), "dispatched", []),
    ("done ok of an ended task", "ended", {}, lambda h, t: h.states.done_ok(t.task_id, W1),
     "gone", []),
    ("error, no retry_exceptions", "running", {}, lambda h, t: [h.states.done_error(t, BOOM)],
     "gone", [Fail]),
    ("error, retry_exceptions=True", "running", {"retry_exceptions": True},
     lambda h, t: [h.states.done_error(t, BOOM)], "pending", [Resubmit]),
    ("error matching retry_exceptions", "running", {"retry_exceptions": (ValueError,)},
     lambda h, t: [h.states.done_error(t, BOOM)], "pending", [Resubmit]),
    ("error not matching retry_exceptions", "running", {"retry_exceptions": (KeyError,)},
     lambda h, t: [h.states.done_error(t, BOOM)], "gone", [Fail]),
    ("error, retries used up", "running", {"retry_exceptions": True, "max_retries": 0},
     lambda h, t: [h.states.done_error(t, BOOM)], "gone", [Fail]),
    ("error of a cancelled task", "running", {"retry_exceptions": True, "cancelled": True},
     lambda h, t: [h.states.done_error(t, BOOM)], "gone", [Fail]),
    ("failed argument", "running", {}, lambda h, t: [h.states.dep_failed(t, BOOM)], "gone",
     [Fail]),
    ("worker died, running, retries left", "running", {},
     lambda h, t: h.states.worker_died([t.task_id], t.task_id, DEATH), "pending", [Resubmit]),
    ("worker died, running, no retries", "running", {"max_retries": 0},
     lambda h, t: h.states.worker_died([t.task_id], t.task_id, DEATH), "gone", [Crashed]),
    ("worker died, queued: free rerun", "queued", {"max_retries": 0},
     lambda h, t: h.states.worker_died([1, t.task_id], 1, DEATH), "pending", [Resubmit, Resubmit]),
    ("worker died, reruns used up", "queued", {"max_retries": 0, "reruns": FREE_RERUNS},
     lambda h, t: h.states.worker_died([t.task_id], 0, DEATH), "gone", [Crashed]),
    ("worker died, cancelled", "running", {"cancelled": True},
     lambda h, t: h.states.worker_died([t.task_id], t.task_id, DEATH), "gone", [Cancelled]),
    ("worker died, ended task: skipped", "ended", {},
     lambda h, t: h.states.worker_died([t.task_id], t.task_id, DEATH), "gone", []),
    ("cancel pending", "pending", {}, lambda h, t: h.states.cancel(t.task_id, False, False),
     "gone", [Cancelled]),
    ("cancel running", "running", {}, lambda h, t: h.states.cancel(t.task_id, False, False),
     "dispatched", [Interrupt]),
    ("cancel queued on a worker", "queued", {},
     lambda h, t: h.states.cancel(t.task_id, False, False), "dispatched", [Unqueue]),
    ("force-cancel running", "running", {}, lambda h, t: h.states.cancel(t.task_id, True, False),
     "dispatched", [KillWorker]),
    ("cancel again, gently: no-op", "running", {"cancelled": True},
     lambda h, t: h.states.cancel(t.task_id, False, False), "dispatched", []),
    ("force after a gentle cancel", "running", {"cancelled": True},
     lambda h, t: h.states.cancel(t.task_id, True, False), "dispatched", [KillWorker]),
    ("cancel a running thread task: dropped", "running", {"call": (print, (), {})},
     lambda h, t: h.states.cancel(t.task_id, False, False), "gone", [Cancelled]),
    ("cancel an ended task", "ended", {}, lambda h, t: h.states.cancel(t.task_id, True, True),
     "gone", []),
    ("unstartable, pending", "pending", {},
     lambda h, t: h.states.unstartable(t.task_id, RecursionError("x")), "gone", [Fail]),
    ("unstartable, dispatched meanwhile", "running", {},
     lambda h, t: h.states.unstartable(t.task_id, RecursionError("x")), "dispatched", []),
    ("fail", "queued", {}, lambda h, t: h.states.fail([t.task_id], RuntimeError("x")), "gone",
     [Fail]),
    ("fail all", "running", {}, lambda h, t: h.states.fail_all(RuntimeError("x")), "gone",
     [Fail]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "options", "event", "after", "kinds"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_transition(setup, options, event, after, kinds) -> None:
    h, task = SETUPS[setup](**options)
    out = event(h, task)
    instructions = out if isinstance(out, list) else []
    assert [type(i) for i in instructions] == kinds
    assert state(h, task.task_id) == after


def test_retry_counts_down_and_resubmit_carries_the_task() -> None:
    h, task = running(retry_exceptions=True, max_retries=2)
    [decision] = [h.states.done_error(task, BOOM)]
    assert decision == Resubmit(task) and task.retries_left == 1 and task.worker is None


def test_crash_names_the_tries_and_the_death() -> None:
    h, task = running(max_retries=1)
    h.states.worker_died([1], 1, DEATH)
    h.submit(task)
    [crashed] = h.states.worker_died([1], 1, DEATH)
    assert crashed == Crashed(task, 2, DEATH)


def test_a_rerun_is_free_but_bounded() -> None:
    h, task = queued(max_retries=0)
    for n in range(1, FREE_RERUNS + 1):
        assert h.states.worker_died([task.task_id], 0, DEATH) == [Resubmit(task)]
        assert task.reruns == n and task.retries_left == 0
        h.states.dispatched(task, W1)
    assert h.states.worker_died([task.task_id], 0, DEATH) == [Crashed(task, 1, DEATH)]


def test_recursive_cancel_reaches_the_children_first() -> None:
    h = Harness(cpus=2, workers=(W1, W2))
    parent = h.submit(make_task(1))
    child = h.submit(make_task(2))
    grandchild = h.submit(make_task(3))  # pending: both workers are busy
    parent.children, child.children = [2], [3]
    out = h.states.cancel(1, force=False, recursive=True)
    assert [type(i) for i in out] == [Cancelled, Interrupt, Interrupt]
    assert out[0] == Cancelled(grandchild)
    assert child.cancelled and parent.cancelled and 3 not in h.states.tasks


def test_a_task_cannot_be_dispatched_twice() -> None:
    h, task = running()
    with pytest.raises(InvalidTransition, match="dispatched twice"):
        h.states.dispatched(task, W2)


def test_a_pending_cancelled_task_leaves_the_scheduler() -> None:
    h, task = pending()
    h.states.cancel(task.task_id, False, False)
    assert h.sched.pending_count() == 0
    h.states.done_ok(1, W1)
    assert pairs_after_done(h, 1) == []  # nothing of task 2 is dispatched later


def pairs_after_done(h: Harness, tid: int) -> list[tuple[int, int]]:
    return list(h.sched.task_done(W1, tid).dispatch)


# ---- random event sequences -----------------------------------------------------------------


class TaskLives(RuleBasedStateMachine):
    """Random submissions, dispatches, replies, deaths and cancels, as the runtime feeds
    them; after each step the invariants of issue 14 hold."""

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(cpus=2, workers=(W1, W2))
        self.next_id = 1
        self.next_worker = 103
        self.ended: dict[int, int] = {}  # {task_id: times it ended}
        self.max_retries: dict[int, int] = {}
        self.resubmitted_cancelled = False

    # the runtime's carrying out, with the books the invariants read
    def _end(self, task_id: int) -> None:
        self.ended[task_id] = self.ended.get(task_id, 0) + 1

    def _carry_out(self, instructions: list[Instruction]) -> None:
        for instruction in instructions:
            if isinstance(instruction, Resubmit):
                if instruction.task.cancelled:
                    self.resubmitted_cancelled = True
                self.h.submit(instruction.task)
            elif isinstance(instruction, (Fail, Cancelled, Crashed)):
                self._end(instruction.task.task_id)
            elif isinstance(instruction, KillWorker):
                self._die(instruction.worker, running_first=True)

    def _running(self) -> list[Task]:
        tasks = self.h.states.tasks
        return [
            tasks[q[0]] for w in (W1, W2, *range(103, self.next_worker))
            if (q := self.h.sched.queued_on(w)) and q[0] in tasks
        ]  # fmt: skip

    def _finished_on_worker(self, task: Task) -> None:
        self.h.apply_dispatch(self.h.sched.task_done(task.worker, task.task_id).dispatch)

    def _die(self, worker: int, running_first: bool) -> None:
        actions, lost = self.h.sched.worker_died(worker)
        running = lost[0] if lost and running_first else 0
        self._carry_out(self.h.states.worker_died(lost, running, DEATH))
        self.h.apply_dispatch(actions.dispatch)

    @rule(max_retries=st.integers(0, 3), retry=st.booleans(), parent=st.integers(0, 30))
    def submit(self, max_retries: int, retry: bool, parent: int) -> None:
        tid = self.next_id
        self.next_id += 1
        task = make_task(tid, max_retries=max_retries, retry_exceptions=retry)
        self.max_retries[tid] = max_retries
        owner = self.h.states.tasks.get(parent)
        if owner is not None:
            owner.children = [*(owner.children or []), tid]
        self.h.submit(task)

    @precondition(lambda self: self._running())
    @rule(data=st.data())
    def done_ok(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self._running()))
        assert self.h.states.done_ok(task.task_id, task.worker) is task
        self._end(task.task_id)
        self._finished_on_worker(task)

    @precondition(lambda self: self._running())
    @rule(data=st.data())
    def done_error(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self._running()))
        worker = task.worker
        decision = self.h.states.done_error(task, BOOM)
        self.h.apply_dispatch(self.h.sched.task_done(worker, task.task_id).dispatch)
        self._carry_out([decision])

    @precondition(lambda self: self._running())
    @rule(data=st.data())
    def dep_failed(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self._running()))
        worker = task.worker
        self._carry_out([self.h.states.dep_failed(task, BOOM)])
        self.h.apply_dispatch(self.h.sched.task_done(worker, task.task_id).dispatch)

    @rule(which=st.sampled_from([W1, W2]), own_fault=st.booleans())
    def worker_dies(self, which: int, own_fault: bool) -> None:
        live = [w for w in (W1, W2, *range(103, self.next_worker)) if w in self.h.sched._workers]
        if not live:
            return
        self._die(live[0] if which == W1 or len(live) < 2 else live[1], own_fault)
        new = self.next_worker  # the pool replaces it
        self.next_worker += 1
        self.h.apply_dispatch(self.h.sched.worker_started(new).dispatch)

    @precondition(lambda self: self.next_id > 1)
    @rule(data=st.data(), force=st.booleans(), recursive=st.booleans())
    def cancel(self, data: st.DataObject, force: bool, recursive: bool) -> None:
        tid = data.draw(st.integers(1, self.next_id - 1))
        self._carry_out(self.h.states.cancel(tid, force, recursive))

    @invariant()
    def each_task_ends_exactly_once(self) -> None:
        assert all(n == 1 for n in self.ended.values()), self.ended
        assert not set(self.ended) & set(self.h.states.tasks)

    @invariant()
    def retries_never_exceed_max_retries(self) -> None:
        for tid, task in self.h.states.tasks.items():
            assert 0 <= task.retries_left <= self.max_retries[tid]

    @invariant()
    def a_cancelled_task_is_never_resubmitted(self) -> None:
        assert not self.resubmitted_cancelled

    @invariant()
    def reruns_after_a_death_are_bounded(self) -> None:
        assert all(t.reruns <= FREE_RERUNS for t in self.h.states.tasks.values())

    @invariant()
    def states_agree_with_the_scheduler(self) -> None:
        on_workers = {
            tid: w for w in (W1, W2, *range(103, self.next_worker))
            for tid in self.h.sched.queued_on(w)
        }  # fmt: skip
        for tid, task in self.h.states.tasks.items():
            if task.state == DISPATCHED:
                assert on_workers.get(tid) == task.worker
            else:
                assert task.worker is None and tid not in on_workers


# No "explain" phase: on a failure it re-runs with tracing, slow here (and not needed).
TaskLives.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)  # fmt: skip
test_task_lives = TaskLives.TestCase
