"""The driver's lock and its queues (``_local/locking.py``), without a runtime."""

from __future__ import annotations

import threading

import pytest

from raylite._local.locking import DriverLock


def test_code_that_interrupts_a_section_sees_it_and_queues_its_work() -> None:
    wakes: list[int] = []
    guard = DriverLock(lambda: wakes.append(1))
    done: list[str] = []
    assert not guard.held_here()
    with guard.lock:
        assert guard.held_here()  # as a __del__ or signal handler run here would see
        guard.defer(lambda: done.append("deferred"))
        assert done == [] and wakes == [1]  # queued, and the I/O thread woken for it
    elsewhere: list[bool] = []
    t = threading.Thread(target=lambda: elsewhere.append(guard.held_here()))
    t.start()
    t.join()
    assert elsewhere == [False]  # held by this thread only
    with guard.lock:
        guard.settle()  # the next holder runs it
    assert done == ["deferred"]


def test_refuse_here_names_the_call_and_what_may_run_there() -> None:
    guard = DriverLock(lambda: None)
    guard.refuse_here("get()")  # outside a section: nothing to refuse
    with guard.lock, pytest.raises(RuntimeError, match=r"get\(\) was called .* __del__"):
        guard.refuse_here("get()")


def test_a_failing_deferred_op_is_reported_and_the_others_run(capsys) -> None:
    guard = DriverLock(lambda: None)
    done: list[int] = []
    guard.defer(lambda: done.append(1))
    guard.defer(lambda: 1 / 0)
    guard.defer(lambda: done.append(3))
    with guard.lock:
        guard.settle()
    assert done == [1, 3]
    assert "ZeroDivisionError" in capsys.readouterr().err


def test_run_after_runs_every_callback_then_raises_the_first_error() -> None:
    guard = DriverLock(lambda: None)
    done: list[int] = []
    with guard.lock:
        guard.after_unlock(lambda: 1 / 0)
        guard.after_unlock(lambda: done.append(2))
    with pytest.raises(ZeroDivisionError):
        guard.run_after()
    assert done == [2]
