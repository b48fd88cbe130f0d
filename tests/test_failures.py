"""Errors from the user's code: exceptions, retries of them, values that do not pickle, and
nested tasks that must not deadlock; on every runtime (the ``rl`` fixture).

Injected failures (dead workers, killed actors, cancellation, shutdown mid-task, a killed
driver) are the fault suite's, in ``tests/faults/``."""

from __future__ import annotations

import os
import threading

import pytest

import raylite
from raylite.exceptions import RaySystemError, RayTaskError


@raylite.remote
def ok(x):
    return x


def _pool_still_works():
    assert raylite.get([ok.remote(i) for i in range(8)], timeout=30) == list(range(8))


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


class RebuildsOnlyAway:
    """Pickles anywhere; unpickling fails in the process whose pid it was given."""

    def __init__(self, refuse_in: int) -> None:
        self.refuse_in = refuse_in

    def __setstate__(self, state: dict) -> None:
        if state["refuse_in"] == os.getpid():
            raise RuntimeError("cannot rebuild in the driver")
        self.__dict__.update(state)


@raylite.remote
def make_unloadable(driver_pid):
    return RebuildsOnlyAway(driver_pid)


def test_a_result_that_cannot_be_unpickled_names_the_task_and_cause(rl):
    with pytest.raises(RaySystemError, match="cannot rebuild in the driver") as info:
        raylite.get(make_unloadable.remote(os.getpid()), timeout=60)
    if not isinstance(info.value, ray_errors()):
        assert "the result of make_unloadable()" in str(info.value)
    _pool_still_works()


def ray_errors() -> tuple[type, ...]:
    """Ray's own error classes, where Ray is installed (their messages are Ray's)."""
    try:
        import ray.exceptions
    except ImportError:
        return ()
    return (ray.exceptions.RayError,)
