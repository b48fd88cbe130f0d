"""A worker's channel to the driver, broken by the task it runs: stray bytes written to it,
its fds closed, a reply too large to send; and ids grown past any fixed-width field.

Each case checks that only that worker is lost, that the task's error says why, that a lost
reply counts against ``max_retries`` (never a rerun forever), and (the ``fault`` fixture)
that nothing leaked.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import pytest
from _helpers import stamp

import raylite
from raylite import _runtime
from raylite._local import protocol
from raylite._local.protocol import RUNNING_AT, write_slot
from raylite._local.task_states import FREE_RERUNS as _FREE_RERUNS
from raylite.exceptions import RayTaskError, WorkerCrashedError

pytestmark = pytest.mark.local_only("the embedded runtime's worker channels")


@raylite.remote
def ok(x):
    return x


def pool_still_works():
    assert raylite.get([ok.remote(i) for i in range(8)], timeout=30) == list(range(8))


def runs_of(path: Path) -> int:
    return len(path.read_text()) if path.exists() else 0


@raylite.remote(max_retries=1)
def write_garbage_to_every_fd(stamp_path, runs):
    with open(runs, "a") as f:
        f.write("x")
    stamp(stamp_path)
    for fd in range(3, 64):  # a task writing where it should not: the worker's socket too
        try:
            os.write(fd, b"garbage, not a frame\n")
        except OSError:
            pass
    time.sleep(0.2)  # the driver hears the garbage before the reply
    return "unreachable"


def test_garbage_on_a_channel_kills_only_that_worker(fault, tmp_path):
    runs = tmp_path / "runs"
    error = fault.expect(
        WorkerCrashedError, write_garbage_to_every_fd.remote(fault.stamp_path, str(runs)),
        match="not a frame",
    )  # fmt: skip
    assert "file descriptor it does not own" in str(error)
    assert runs_of(runs) == 2  # max_retries=1: two runs, then the error
    pool_still_works()  # the runtime goes on


@raylite.remote(max_retries=0)
def send_what_only_the_driver_sends(stamp_path):
    stamp(stamp_path)
    _runtime.current()._out(protocol.CancelTask(1))  # goes out before this task's reply
    return "unreachable"


def test_a_message_the_driver_does_not_take_kills_only_that_worker(fault):
    error = fault.expect(
        WorkerCrashedError, send_what_only_the_driver_sends.remote(fault.stamp_path),
        match="a message the driver does not take: CancelTask",
    )  # fmt: skip
    assert "killed" in str(error)
    pool_still_works()


@raylite.remote(max_retries=1)
def close_every_fd(stamp_path, runs):
    with open(runs, "a") as f:
        f.write("x")
    stamp(stamp_path)
    os.closerange(3, 4096)  # the worker's socket with them: its reply is lost
    return "lost"


def test_a_lost_reply_counts_as_a_retry(fault, tmp_path, capfd):
    raylite.shutdown()  # a runtime whose workers write to the captured stderr
    raylite.init(num_cpus=2)
    runs = tmp_path / "runs"
    error = fault.expect(WorkerCrashedError, close_every_fd.remote(fault.stamp_path, str(runs)))
    assert "max_retries=1" in str(error) and "tried 2 time(s)" in str(error)
    assert runs_of(runs) == 2  # not thousands
    pool_still_works()
    # The worker said why it died, on its stderr (its log file was closed with the rest).
    said = capfd.readouterr().err
    assert "failed and exits" in said and "Bad file descriptor" in said


def test_a_result_too_large_to_send_fails_once_with_a_clear_error(fault, tmp_path, monkeypatch):
    # The limit is 2 GiB of pickled in-band data; lowered here (workers inherit it at init)
    # so the case costs 2 MB, not 4 GB.
    raylite.shutdown()
    monkeypatch.setattr(protocol, "MAX_INBAND_BYTES", 1 << 20)
    raylite.init(num_cpus=2)
    runs = tmp_path / "runs"

    @raylite.remote(max_retries=3)
    def big_dict(path):
        with open(path, "a") as f:
            f.write("x")
        return {"blob": b"x" * (2 << 20)}  # nested bytes: pickled in-band

    since = time.monotonic()
    error = fault.expect(ValueError, big_dict.remote(str(runs)), since=since, match="in-band")
    assert isinstance(error, RayTaskError) and "big_dict" in str(error)
    assert "numpy arrays" in str(error)
    assert runs_of(runs) == 1  # a user error: not retried, never rerun
    pool_still_works()


@raylite.remote
def leaf(i):
    return i


@raylite.remote
def middle(i):
    return sum(raylite.get([leaf.remote(i * 10 + j) for j in range(3)]))


@raylite.remote
def top(n):
    return sum(raylite.get([middle.remote(i) for i in range(n)]))


def test_ids_of_a_long_session_fit_the_workers_slots(fault):
    # As after billions of tasks and worker starts: ids and worker ids far past 2**63 once
    # shifted. Nested tasks make new workers (each blocked parent lends its CPU), whose
    # own ids then travel to other workers' slots.
    rt = _runtime.current()
    with rt._lock:
        rt._ids = itertools.count(1 << 40)
        rt._workers._wids = itertools.count(1 << 40)
    since = time.monotonic()
    expected = sum(i * 10 + j for i in range(3) for j in range(3))
    assert raylite.get(top.remote(3), timeout=60) == expected
    fault.record("correct results", since)
    pool_still_works()


@raylite.remote(max_retries=0)
def fork_in_task(how):
    pid = os.fork()
    if pid == 0:  # the child, in the task's function
        if how == "sys.exit(0)":
            sys.exit(0)
        if how == "raise":
            raise ValueError("from the child")
        return "the child's value"  # returns into the worker's loop: it must not serve
    _, status = os.waitpid(pid, 0)
    return "the parent's value", os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("how, code", [("return", 0), ("sys.exit(0)", 0), ("raise", 1)])
def test_a_child_forked_in_a_task_ends_as_a_program_would(fault, how, code):
    since = time.monotonic()
    assert raylite.get(fork_in_task.remote(how), timeout=30) == ("the parent's value", code)
    fault.record(f"child exit code {code}", since)
    pool_still_works()


@raylite.remote(max_retries=0)
def die_unblamed(runs):
    """Dies as if between tasks: its slot names no running task (as when the worker dies
    of something no task did, or a task scribbled over the slot)."""
    with open(runs, "a") as f:
        f.write("x")
    rt = _runtime.current()
    write_slot(rt.cancel_slot, RUNNING_AT, 0)
    os._exit(1)


def test_reruns_after_deaths_no_task_is_blamed_for_are_bounded(fault, tmp_path):
    runs = tmp_path / "runs"
    since = time.monotonic()
    error = fault.expect(WorkerCrashedError, die_unblamed.remote(str(runs)), since=since)
    assert "exit code 1" in str(error)
    assert runs_of(runs) == 1 + _FREE_RERUNS  # then each further death is a retry (none left)
    pool_still_works()
