"""Workers that die or run out of memory mid-task: the crash table.

Each case kills (or starves) a worker for real and checks what the user sees at ``get``,
that the pool still works, and (the ``fault`` fixture) that nothing leaked.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from _helpers import memfds, stamp, wait_until

import raylite
from raylite import _runtime
from raylite.exceptions import RaySystemError, RayTaskError, WorkerCrashedError

MB = 1024 * 1024


@raylite.remote(max_retries=0)
def exit_hard(path, code):
    stamp(path)
    os._exit(code)


@raylite.remote(max_retries=0)
def kill_self(path):
    stamp(path)
    os.kill(os.getpid(), signal.SIGKILL)


@raylite.remote(max_retries=0)
def segfault(path):
    stamp(path)
    ctypes.string_at(0)


@raylite.remote
def ok(x):
    return x


def pool_still_works():
    assert raylite.get([ok.remote(i) for i in range(8)], timeout=30) == list(range(8))


@pytest.mark.parametrize(
    "task, words",
    [
        (lambda path: exit_hard.remote(path, 3), "exit code 3"),
        (lambda path: kill_self.remote(path), "killed by signal 9 (SIGKILL)"),
        (lambda path: segfault.remote(path), "killed by signal 11 (SIGSEGV)"),
    ],
    ids=["os._exit", "SIGKILL", "segfault"],
)
@pytest.mark.local_only("Ray's message names no exit code or signal")
def test_worker_death_fails_the_task_with_worker_crashed_error(fault, task, words):
    error = fault.expect(WorkerCrashedError, task(fault.stamp_path), match=re.escape(words))
    assert "max_retries=0" in str(error)
    pool_still_works()


@pytest.mark.local_only("Ray's message names no signal")
def test_worker_killed_by_another_process_mid_task(fault, tmp_path):
    @raylite.remote(max_retries=0)
    def report_pid_and_wait(path):
        Path(path).write_text(str(os.getpid()))
        time.sleep(60)

    pid_file = tmp_path / "pid"
    ref = report_pid_and_wait.remote(str(pid_file))
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, "the task to start")
    killed_at = time.monotonic()
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    error = fault.expect(WorkerCrashedError, ref, since=killed_at, match="signal 9")
    assert "report_pid_and_wait()" in str(error)  # it names the task
    pool_still_works()


def test_crashed_task_is_retried_up_to_max_retries(fault, tmp_path):
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
    fault.expect(WorkerCrashedError, exit_hard.options(max_retries=2).remote(fault.stamp_path, 1))


@pytest.mark.local_only("Ray's message does not count the tries")
def test_crash_error_says_how_often_the_task_was_tried(fault):
    ref = exit_hard.options(max_retries=2).remote(fault.stamp_path, 1)
    fault.expect(WorkerCrashedError, ref, match="tried 3 time")


# ---- memory ---------------------------------------------------------------------------


@raylite.remote(max_retries=0)
def allocate_past_a_limit(path):
    """Limits this worker's address space to what it uses now plus 256 MB (as a container
    or `ulimit -v` would), then asks for 1 GB. The limit stays: the worker lives on with it."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (psutil.Process().memory_info().vms + 256 * MB, hard))
    stamp(path)
    block = bytearray(1024 * MB)
    return len(block)


@pytest.mark.local_only("it sets a limit in a worker process; Ray's may host other tasks")
def test_allocation_past_a_memory_limit_raises_memory_error_in_the_task(fault):
    error = fault.expect(MemoryError, allocate_past_a_limit.remote(fault.stamp_path))
    assert isinstance(error, RayTaskError)  # the task's error, with its traceback
    assert "allocate_past_a_limit" in str(error) and "MemoryError" in str(error)
    pool_still_works()  # the worker kept working (the error was an ordinary exception)


@raylite.remote(max_retries=0)
def killed_like_by_the_oom_killer(path, marker):
    """Touches 64 MB, then dies by SIGKILL, as the kernel's OOM killer kills; with a
    ``marker`` file from an earlier try it succeeds instead."""
    if marker and os.path.exists(marker):
        return "ran again"
    if marker:
        open(marker, "w").close()
    np.ones(64 * MB // 8)
    stamp(path)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.local_only("Ray's message names no signal, and Ray's own OOM killer may act first")
def test_worker_killed_as_by_the_oom_killer(fault, tmp_path):
    ref = killed_like_by_the_oom_killer.remote(fault.stamp_path, "")
    error = fault.expect(WorkerCrashedError, ref, match=re.escape("signal 9 (SIGKILL)"))
    assert "running out of memory" in str(error)  # the message lists the likely causes
    # With retries, the task runs again in a fresh worker.
    retried = killed_like_by_the_oom_killer.options(max_retries=1).remote(
        fault.stamp_path, str(tmp_path / "tried")
    )
    assert raylite.get(retried, timeout=30) == "ran again"
    fault.record("retried: returns the value", case="with max_retries=1")


# ---- dying with shared memory in hand -------------------------------------------------------


class KillsWhenPickled:
    """A result that SIGKILLs its own process while it is being pickled, after noting when
    and how many object segments the process had written by then."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        Path(self.path + ".segments").write_text(str(len(memfds())))
        stamp(self.path)
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.local_only("it inspects the local object store")
def test_worker_killed_while_writing_a_large_result(fault):
    @raylite.remote(num_returns=2, max_retries=0)
    def big_result_then_death(path):
        # Results are written in order: the 50 MB array goes to shared memory, then
        # pickling the second result kills the process.
        return np.ones(50 * MB // 8), KillsWhenPickled(path)

    big, second = big_result_then_death.remote(fault.stamp_path)
    fault.expect(WorkerCrashedError, big, match="signal 9")
    fault.expect(WorkerCrashedError, second, match="signal 9", case="the second result")
    # The kill came after the big array's segment was written, not before.
    assert int(Path(fault.stamp_path + ".segments").read_text()) > 0
    del big, second
    pool_still_works()


@pytest.mark.local_only("it inspects the local object store")
def test_worker_killed_after_putting_a_large_object(fault):
    @raylite.remote(max_retries=0)
    def put_then_die(path):
        ref = raylite.put(np.ones(50 * MB // 8))  # the driver now owns its segment
        raylite.wait([ref], timeout=10)  # the put has reached the driver
        stamp(path)
        os.kill(os.getpid(), signal.SIGKILL)

    fault.expect(WorkerCrashedError, put_then_die.remote(fault.stamp_path), match="signal 9")
    # The worker's borrow of the object dies with it: the segment is freed (checked by
    # the fixture: the store's books back to 0 bytes).
    pool_still_works()


# ---- deaths around the pool ----------------------------------------------------------------


@pytest.mark.local_only("it waits through available_resources(), which Ray updates late")
def test_worker_killed_while_blocked_in_a_nested_get(fault, tmp_path):
    @raylite.remote
    def child(started, go):
        Path(started).touch()
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        return 1

    @raylite.remote(max_retries=0)
    def parent(started, go, pid_file):
        Path(pid_file).write_text(str(os.getpid()))
        return raylite.get(child.remote(started, go))

    started, go, pid_file = tmp_path / "started", tmp_path / "go", tmp_path / "pid"
    ref = parent.remote(str(started), str(go), str(pid_file))
    # The parent lends its CPU while it waits: one CPU busy (the child's) means it waits.
    wait_until(started.exists, 10, "the child to start")
    wait_until(lambda: raylite.available_resources().get("CPU") == 1, 10, "the parent to wait")
    killed_at = time.monotonic()
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    fault.expect(WorkerCrashedError, ref, since=killed_at, match=re.escape("parent()"))
    go.touch()  # the orphaned child finishes; its CPU and the parent's lent one come back
    pool_still_works()


@pytest.mark.local_only("it kills raylite's zygote process")
def test_zygote_killed_fails_every_task_and_says_to_start_afresh(fault):
    @raylite.remote
    def slow():
        time.sleep(60)

    ref = slow.remote()
    wait_until(lambda: raylite.available_resources().get("CPU") == 1, 10, "the task to start")
    killed_at = time.monotonic()
    os.kill(_runtime.current()._workers.zygote.pid, signal.SIGKILL)  # every worker dies with it
    error = fault.expect(RaySystemError, ref, since=killed_at, match="zygote process was killed")
    assert "raylite.shutdown() and raylite.init()" in str(error)
    with pytest.raises(RaySystemError, match="zygote"):
        slow.remote()


@raylite.remote(max_retries=0)
def die_on(i, victim, path):
    if i == victim:
        with open(path + ".runs", "a") as f:
            f.write("x")
        stamp(path)
        os.kill(os.getpid(), signal.SIGKILL)
    return i


@pytest.mark.local_only("Ray's message names no signal")
def test_tasks_queued_behind_a_dead_one_on_its_worker_still_run(fault):
    # Short tasks are pipelined: a worker holds several queued at once, and batches its
    # replies. When it dies, the task it ran is the one that failed (tried once, as
    # max_retries=0 says); those queued behind it never ran, and those before it may have
    # finished with their replies unsent: they all run again elsewhere, and succeed.
    refs = [die_on.remote(i, 50, fault.stamp_path) for i in range(200)]
    fault.expect(WorkerCrashedError, refs[50], match="signal 9")
    others = refs[:50] + refs[51:]
    assert raylite.get(others, timeout=30) == [i for i in range(200) if i != 50]
    assert Path(fault.stamp_path + ".runs").read_text() == "x"
