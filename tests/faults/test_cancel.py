"""``cancel`` of queued, running and finished tasks, gently and with ``force=True``.

Ray's semantics (``ray.cancel``): a queued task never runs; a running one gets a
``KeyboardInterrupt`` (``force=False``) or its worker is killed (``force=True``); either way
``get`` raises ``TaskCancelledError``, and the task is not retried. A finished task is left
alone: ``get`` returns its value.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from _helpers import pid_alive, stamp, wait_until

import raylite
from raylite.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError


@raylite.remote
def ok(x):
    return x


@raylite.remote
def wait_for(go, started=None):
    """Holds a CPU until the file ``go`` exists (30 s at most); touches ``started`` first."""
    if started is not None:
        Path(started).touch()
    deadline = time.monotonic() + 30
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"


@raylite.remote
def leave_a_mark(path):
    Path(path).touch()
    return "ran"


def test_cancelled_queued_task_never_runs(fault, tmp_path):
    go, mark = tmp_path / "go", tmp_path / "ran"
    started = [tmp_path / f"started-{i}" for i in range(2)]
    blockers = [wait_for.remote(str(go), str(s)) for s in started]  # both CPUs
    # Both must run first: a scheduler may otherwise start the queued task before them.
    wait_until(lambda: all(s.exists() for s in started), 30, "both blockers to run")
    queued = leave_a_mark.remote(str(mark))
    cancelled_at = time.monotonic()
    raylite.cancel(queued)
    fault.expect(TaskCancelledError, queued, since=cancelled_at)
    go.touch()
    assert raylite.get(blockers, timeout=30) == ["done", "done"]
    # Had it stayed queued it would have run before these (same CPUs, earlier in line).
    assert raylite.get([ok.remote(i) for i in range(8)], timeout=30) == list(range(8))
    assert not mark.exists(), "the cancelled task ran"


@pytest.mark.local_only("it waits through available_resources(), which Ray updates late")
def test_cancel_interrupts_a_running_task_and_keeps_its_worker(fault, tmp_path):
    @raylite.remote(max_retries=3)  # a cancelled task is not retried, whatever max_retries
    def spin(started, interrupted):
        Path(started).write_text(str(os.getpid()))
        try:
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            Path(interrupted).touch()
            raise

    started, interrupted = tmp_path / "started", tmp_path / "interrupted"
    ref = spin.remote(str(started), str(interrupted))
    wait_until(lambda: started.exists() and started.read_text(), 10, "the task to start")
    cancelled_at = time.monotonic()
    raylite.cancel(ref)
    fault.expect(TaskCancelledError, ref, since=cancelled_at)
    assert interrupted.exists()  # the task saw a KeyboardInterrupt where it was
    assert pid_alive(int(started.read_text()))  # the worker lives on, serving others
    assert raylite.get(ok.remote(1), timeout=30) == 1


@pytest.mark.local_only(
    "Ray 2.60's driver sometimes dies of a RAY_CHECK (`Tried to complete task that was not "
    "pending`, 1 run in 3-6 here): its cancel races with the task's reply, "
    "ray-project/ray#54846"
)
def test_cancel_of_a_finished_task_is_a_no_op(fault):
    ref = ok.remote(1)
    assert raylite.get(ref, timeout=30) == 1
    cancelled_at = time.monotonic()
    raylite.cancel(ref)
    raylite.cancel(ref, force=True)
    assert raylite.get(ref, timeout=30) == 1
    fault.record("get returns the value", since=cancelled_at)
    assert raylite.get(ok.remote(2), timeout=30) == 2  # no worker was killed for it


@pytest.mark.local_only("it checks that the worker's process is gone")
def test_force_cancel_kills_a_task_that_ignores_the_interrupt(fault, tmp_path):
    @raylite.remote
    def stubborn(started):
        Path(started).write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                time.sleep(0.01)
            except KeyboardInterrupt:
                pass  # ignores a gentle cancel

    started = tmp_path / "started"
    ref = stubborn.remote(str(started))
    wait_until(lambda: started.exists() and started.read_text(), 10, "the task to start")
    pid = int(started.read_text())
    raylite.cancel(ref)
    with pytest.raises(GetTimeoutError):  # swallowed: it runs on
        raylite.get(ref, timeout=0.5)
    cancelled_at = time.monotonic()
    raylite.cancel(ref, force=True)
    fault.expect(TaskCancelledError, ref, since=cancelled_at)
    wait_until(lambda: not pid_alive(pid), 10, "the worker to be killed")
    assert raylite.get([ok.remote(i) for i in range(4)], timeout=30) == [0, 1, 2, 3]


def test_force_cancel_of_a_running_task(fault, tmp_path):
    @raylite.remote
    def long_task(path):
        stamp(path)
        time.sleep(60)

    ref = long_task.remote(fault.stamp_path)
    wait_until(lambda: os.path.exists(fault.stamp_path), 30, "the task to start")
    cancelled_at = time.monotonic()
    raylite.cancel(ref, force=True)
    fault.expect(TaskCancelledError, ref, since=cancelled_at)
    assert raylite.get([ok.remote(i) for i in range(4)], timeout=30) == [0, 1, 2, 3]


@raylite.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n

    def hold(self, go):
        """Waits for the file ``go`` (30 s at most), then returns the count."""
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.n


@pytest.mark.parametrize("placement", ["packed", "dedicated"])
@pytest.mark.local_only("on Ray 2.60 the actor's next call did not return within 30 s here")
def test_cancelled_actor_call_waiting_behind_a_running_one_never_runs(fault, tmp_path, placement):
    a = Counter.options(num_cpus=1 if placement == "dedicated" else 0).remote()
    go = tmp_path / "go"
    running = a.hold.remote(str(go))
    queued = a.add.remote()  # sent to the actor, waiting for the running call
    cancelled_at = time.monotonic()
    raylite.cancel(queued)
    fault.expect(TaskCancelledError, queued, since=cancelled_at)  # now, not after `running`
    with pytest.raises(ValueError, match="force=True"):  # it would kill the actor's calls
        raylite.cancel(running, force=True)
    go.touch()
    assert raylite.get(running, timeout=30) == 0  # not interrupted: actors have state
    assert raylite.get(a.add.remote(), timeout=30) == 1  # the cancelled call never ran


@raylite.remote
def hold(go, started):
    """Like ``wait_for``, but holds longer than a ``get`` of the fault suite waits."""
    Path(started).touch()
    deadline = time.monotonic() + 120
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"


@raylite.remote
def get_of_hold(go, child_started):
    return raylite.get(hold.remote(go, child_started))


@pytest.mark.parametrize("recursive", [False, True])
def test_cancel_lands_in_a_task_blocked_in_a_nested_get(fault, tmp_path, recursive):
    go, child_started = tmp_path / "go", tmp_path / "child-started"
    ref = get_of_hold.remote(str(go), str(child_started))
    wait_until(child_started.exists, 30, "the child to run (its parent waits in get)")
    cancelled_at = time.monotonic()
    raylite.cancel(ref, recursive=recursive)
    try:
        fault.expect(TaskCancelledError, ref, since=cancelled_at)
    finally:
        go.touch()  # a child not cancelled finishes (unheard)
    assert raylite.get([ok.remote(i) for i in range(4)], timeout=30) == list(range(4))


@raylite.remote(max_retries=0)
def raise_keyboard_interrupt():
    raise KeyboardInterrupt("raised by the task itself")


def test_a_task_raising_keyboard_interrupt_itself_shows_where(fault):
    # As in Ray: reported as cancelled, but as the task's own error, with its traceback
    # (a real cancel() has no task frame to show).
    since = time.monotonic()
    error = fault.expect(TaskCancelledError, raise_keyboard_interrupt.remote(), since=since)
    assert isinstance(error, RayTaskError)
    assert "in raise_keyboard_interrupt" in str(error)  # the frame it was raised in
