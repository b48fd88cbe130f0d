"""The crash table: each failure is caused for real and must surface as the right error,
promptly, with the pool still working afterwards; on every runtime (the ``rl`` fixture)
except where marked ``local_only``."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import textwrap
import threading
import time

import pytest
from _helpers import kill_driver_and_wait_for_workers, live_children, wait_until

import raylite
from raylite.exceptions import (
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)


@raylite.remote(max_retries=0)
def exit_hard(code):
    os._exit(code)


@raylite.remote(max_retries=0)
def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


@raylite.remote(max_retries=0)
def segfault():
    ctypes.string_at(0)


@raylite.remote
def ok(x):
    return x


def _pool_still_works():
    assert raylite.get([ok.remote(i) for i in range(8)], timeout=30) == list(range(8))


@pytest.mark.parametrize(
    "task, words",
    [
        (lambda: exit_hard.remote(3), "exit code 3"),
        (lambda: kill_self.remote(), "killed by signal 9 (SIGKILL)"),
        (lambda: segfault.remote(), "killed by signal 11 (SIGSEGV)"),
    ],
    ids=["os._exit", "SIGKILL", "segfault"],
)
@pytest.mark.local_only("Ray's message names no exit code or signal")
def test_worker_death_fails_the_task_with_worker_crashed_error(rl, task, words):
    with pytest.raises(WorkerCrashedError, match=re.escape(words)) as info:
        raylite.get(task(), timeout=30)
    assert "max_retries=0" in str(info.value)
    _pool_still_works()
    assert raylite.available_resources()["CPU"] == 2


def test_crashed_task_is_retried_up_to_max_retries(rl, tmp_path):
    marker = tmp_path / "attempts"

    @raylite.remote(max_retries=2)
    def crash_twice(path):
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) < 3:
            os._exit(1)
        return "third time lucky"

    assert raylite.get(crash_twice.remote(str(marker)), timeout=30) == "third time lucky"
    assert marker.read_text() == "xxx"

    with pytest.raises(WorkerCrashedError):
        raylite.get(exit_hard.options(max_retries=2).remote(1), timeout=30)


@pytest.mark.local_only("Ray's message does not count the tries")
def test_crash_error_says_how_often_the_task_was_tried(rl):
    with pytest.raises(WorkerCrashedError, match="tried 3 time"):
        raylite.get(exit_hard.options(max_retries=2).remote(1), timeout=30)


def test_retry_exceptions_retries_application_errors(rl, tmp_path):
    marker = tmp_path / "attempts"

    @raylite.remote(max_retries=3, retry_exceptions=[ConnectionError])
    def flaky(path):
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) < 3:
            raise ConnectionError("try again")
        return "ok"

    assert raylite.get(flaky.remote(str(marker)), timeout=30) == "ok"

    @raylite.remote(max_retries=3, retry_exceptions=[ConnectionError])
    def wrong_kind(path):
        with open(path, "a") as f:
            f.write("y")
        raise ValueError("not retried")

    other = tmp_path / "other"
    with pytest.raises(ValueError):
        raylite.get(wrong_kind.remote(str(other)), timeout=30)
    assert other.read_text() == "y"


def test_exception_in_task(rl):
    @raylite.remote
    def fail():
        return 1 / 0

    with pytest.raises(ZeroDivisionError) as info:
        raylite.get(fail.remote())
    assert isinstance(info.value, RayTaskError)
    assert "ZeroDivisionError" in str(info.value)


def test_unpicklable_argument_fails_at_remote_naming_it(rl):
    with pytest.raises(TypeError, match=r"serialize the argument.*\bok\b"):
        ok.remote(threading.Lock())
    _pool_still_works()


def test_unpicklable_result_fails_at_get_naming_the_function(rl):
    @raylite.remote
    def make_lock():
        return threading.Lock()

    with pytest.raises(TypeError, match=r"make_lock\(\)"):
        raylite.get(make_lock.remote(), timeout=30)
    _pool_still_works()


def test_error_from_a_nested_task_keeps_the_users_class(rl):
    @raylite.remote
    def inner():
        raise KeyError("deep")

    @raylite.remote
    def outer():
        return raylite.get(inner.remote())

    with pytest.raises(KeyError) as info:
        raylite.get(outer.remote(), timeout=30)
    assert isinstance(info.value, RayTaskError)
    assert "outer()" in str(info.value) and "KeyError: 'deep'" in str(info.value)


def test_exception_that_cannot_be_pickled_still_reports_its_text(rl):
    @raylite.remote
    def fail():
        class Local(Exception):
            def __reduce__(self):
                raise TypeError("no pickling")

        raise Local("the original message")

    with pytest.raises(RayTaskError, match="the original message"):
        raylite.get(fail.remote(), timeout=30)


def test_cancel_queued_task(rl):
    @raylite.remote
    def block(seconds):
        time.sleep(seconds)
        return seconds

    blockers = [block.remote(30) for _ in range(2)]
    queued = ok.remote("never")
    raylite.cancel(queued)
    with pytest.raises(TaskCancelledError):
        raylite.get(queued, timeout=10)
    for ref in blockers:
        raylite.cancel(ref, force=True)
    for ref in blockers:
        with pytest.raises(TaskCancelledError):
            raylite.get(ref, timeout=10)
    wait_until(lambda: raylite.available_resources().get("CPU") == 2, 10, "CPUs released")
    _pool_still_works()


@pytest.mark.local_only("it waits through available_resources(), which Ray updates late")
def test_cancel_running_task_interrupts_it(rl):
    @raylite.remote
    def spin():
        while True:
            time.sleep(0.01)

    ref = spin.remote()
    wait_until(lambda: raylite.available_resources().get("CPU", 0) < 2, 10, "task to start")
    raylite.cancel(ref)
    with pytest.raises(TaskCancelledError):
        raylite.get(ref, timeout=10)
    wait_until(lambda: raylite.available_resources().get("CPU") == 2, 10, "CPU released")
    _pool_still_works()


def test_cancel_finished_task_is_a_no_op(rl):
    ref = ok.remote(1)
    assert raylite.get(ref) == 1
    raylite.cancel(ref)
    assert raylite.get(ref) == 1


def test_nested_tasks_that_wait_on_children_do_not_deadlock(rl):
    @raylite.remote
    def child(x):
        return x + 1

    @raylite.remote
    def parent(x):
        return raylite.get(child.remote(x)) * 10

    # 4 parents on 2 CPUs, each blocking on a child: they lend their CPU while waiting.
    assert raylite.get([parent.remote(i) for i in range(4)], timeout=60) == [10, 20, 30, 40]


def test_deep_nesting(rl):
    @raylite.remote
    def countdown(n):
        if n == 0:
            return "done"
        return raylite.get(countdown.remote(n - 1))

    assert raylite.get(countdown.remote(6), timeout=60) == "done"


def test_nested_put_wait_and_refs_returned_from_tasks(rl):
    @raylite.remote
    def producer():
        refs = [raylite.put(i) for i in range(3)]
        ready, _ = raylite.wait(refs, num_returns=3, timeout=10)
        return ready

    refs = raylite.get(producer.remote(), timeout=30)
    assert raylite.get(refs) == [0, 1, 2]


def test_shutdown_with_running_tasks_leaves_nothing(tmp_path):
    raylite.init(num_cpus=2)

    @raylite.remote
    def forever():
        time.sleep(60)

    refs = [forever.remote() for _ in range(2)]
    wait_until(lambda: raylite.available_resources().get("CPU", 0) == 0, 10, "tasks to start")
    start = time.monotonic()
    raylite.shutdown()
    assert time.monotonic() - start < 5
    wait_until(lambda: not live_children(), 10, "workers to exit")
    del refs


def test_workers_die_with_a_sigkilled_driver(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys, time
        import raylite
        raylite.init(num_cpus=2)

        @raylite.remote
        def pid():
            time.sleep(0.2)
            return os.getpid()

        pids = raylite.get([pid.remote() for _ in range(4)])
        print(" ".join(map(str, sorted(set(pids)))), flush=True)
        time.sleep(60)
        """
    )
    kill_driver_and_wait_for_workers(script)
