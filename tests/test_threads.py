"""The thread executor: I/O-bound tasks and actors in the driver, mixed with process tasks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

import raylite

# executor="thread" is raylite's own: on Ray it is rejected (a test of test_ray_backend.py).
pytestmark = pytest.mark.local_only("the thread executor is raylite's own")


@raylite.remote(executor="thread")
def wait_and_tag(seconds, value):
    time.sleep(seconds)
    return value, os.getpid(), threading.current_thread().name


@raylite.remote
def double(x):
    return 2 * x


def test_thread_tasks_run_concurrently_in_the_driver(rl):
    start = time.monotonic()
    out = raylite.get([wait_and_tag.remote(0.3, i) for i in range(16)], timeout=30)
    assert [v for v, _, _ in out] == list(range(16))
    assert {pid for _, pid, _ in out} == {os.getpid()}
    # 16 waits of 0.3 s on 2 CPUs: only threads that do not hold a CPU overlap this much.
    assert time.monotonic() - start < 16 * 0.3 / 2


def test_thread_and_process_tasks_exchange_refs(rl):
    value, _, _ = raylite.get(wait_and_tag.remote(0, double.remote(21)))  # process -> thread
    assert value == 42
    doubled = raylite.get(double.remote(wait_and_tag.remote(0, "ab")))  # thread -> process
    assert doubled[0] == "ab" and doubled[3] == "ab" and len(doubled) == 6


def test_arguments_are_not_pickled(rl):
    lock = threading.Lock()  # unpicklable: a process task could not take it

    @raylite.remote(executor="thread")
    def use(lock_arg):
        with lock_arg:
            return lock_arg is lock

    assert raylite.get(use.remote(lock)) is True


def test_custom_resources_cap_thread_concurrency():
    raylite.init(num_cpus=2, resources={"db": 2})
    try:
        active, peak = [0], [0]
        guard = threading.Lock()

        @raylite.remote(executor="thread", resources={"db": 1})
        def query(_):
            with guard:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.05)
            with guard:
                active[0] -= 1

        raylite.get([query.remote(i) for i in range(10)], timeout=30)
        assert peak[0] == 2
    finally:
        raylite.shutdown()


def test_thread_task_errors_surface_as_task_errors(rl):
    @raylite.remote(executor="thread")
    def fail():
        raise ConnectionError("service down")

    with pytest.raises(ConnectionError, match="service down"):
        raylite.get(fail.remote())


def test_cancel_a_running_thread_task(rl):
    gate = threading.Event()

    @raylite.remote(executor="thread")
    def blocked():
        gate.wait(10)
        return "late"

    ref = blocked.remote()
    raylite.cancel(ref)
    with pytest.raises(raylite.exceptions.TaskCancelledError):
        raylite.get(ref, timeout=10)
    gate.set()


def test_a_thread_task_cancelled_while_waiting_for_a_thread_never_runs(rl):
    gate = threading.Event()
    ran: list[int] = []

    @raylite.remote(executor="thread")
    def hold(gate):
        gate.wait(30)

    @raylite.remote(executor="thread")
    def record(ran):
        ran.append(1)

    holders = [hold.remote(gate) for _ in range(64)]  # every thread of the pool
    late = record.remote(ran)  # waits for a thread
    raylite.cancel(late)
    gate.set()
    raylite.get(holders, timeout=30)
    assert raylite.get(record.remote(ran), timeout=30) is None  # a thread took it after them
    assert ran == [1]  # that one only: the cancelled one never ran
    with pytest.raises(raylite.exceptions.TaskCancelledError):
        raylite.get(late)


def test_thread_actor(rl):
    lock = threading.Lock()

    @raylite.remote(executor="thread")
    class Session:
        def __init__(self, lock_arg):
            self.lock = lock_arg
            self.calls = 0

        def call(self, x):
            with self.lock:
                self.calls += 1
                return x * 10, self.calls, os.getpid()

    s = Session.remote(lock)
    out = raylite.get([s.call.remote(i) for i in range(5)])
    assert [(v, n) for v, n, _ in out] == [(0, 1), (10, 2), (20, 3), (30, 4), (40, 5)]
    assert {pid for _, _, pid in out} == {os.getpid()}
    assert raylite.get(s.call.remote(double.remote(1)))[0] == 20  # a process task's ref
    raylite.kill(s)
    with pytest.raises(raylite.exceptions.ActorDiedError):
        raylite.get(s.call.remote(1), timeout=10)


def test_thread_tasks_waiting_on_each_other_do_not_deadlock(rl):
    @raylite.remote(executor="thread")
    def leaf(x):
        return x + 1

    @raylite.remote(executor="thread")
    def parent(x):
        return raylite.get(leaf.remote(x)) * 2

    assert raylite.get([parent.remote(i) for i in range(8)], timeout=30) == [
        2 * (i + 1) for i in range(8)
    ]


def test_a_stuck_thread_task_does_not_keep_the_program_alive(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(
        "import threading, raylite\n"
        "raylite.init(num_cpus=1)\n"
        "@raylite.remote(executor='thread')\n"
        "def forever():\n"
        "    threading.Event().wait()\n"
        "ref = forever.remote()\n"
        "print('exiting', flush=True)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "exiting" in done.stdout
