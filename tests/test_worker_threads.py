"""Threads of a task's own making that call raylite while the task's main thread is busy.

The main thread of a worker reads the driver's replies only when it is idle or blocked in
``get``; a thread started by the task must be able to wait for its own replies while the
main thread runs (or joins that very thread).
"""

from __future__ import annotations

import threading

import pytest

import raylite
from raylite.exceptions import GetTimeoutError

pytestmark = pytest.mark.local_only("worker processes' threads are the local runtime's")

DEADLINE_S = 30.0


@raylite.remote
def square(x: int) -> int:
    return x * x


@raylite.remote
def gets_from_threads(n: int) -> list[int]:
    """Each of ``n`` threads submits a child and waits for it; the main thread joins them."""
    results = [0] * n

    def work(i: int) -> None:
        results[i] = raylite.get(square.remote(i), timeout=DEADLINE_S)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_get_from_extra_threads_of_a_task_returns_while_the_main_thread_joins_them(rl):
    assert raylite.get(gets_from_threads.remote(4), timeout=DEADLINE_S) == [0, 1, 4, 9]


@raylite.remote
def times_out_in_a_thread() -> str:
    never = raylite.put(None)  # a ready object, and one that never will be:
    blocker = threading.Event()
    outcome: list[str] = []

    def work() -> None:
        try:
            raylite.get(waits_forever.remote(), timeout=0.2)
            outcome.append("returned")
        except GetTimeoutError:
            outcome.append(f"timed out; then {raylite.get(never, timeout=DEADLINE_S)}")
        blocker.set()

    t = threading.Thread(target=work)
    t.start()
    blocker.wait()  # the main thread reads nothing meanwhile
    t.join()
    return outcome[0]


@raylite.remote(num_cpus=0)
def waits_forever() -> None:
    threading.Event().wait()


def test_get_with_timeout_from_an_extra_thread_times_out_instead_of_hanging(rl):
    ref = times_out_in_a_thread.remote()
    assert raylite.get(ref, timeout=DEADLINE_S) == "timed out; then None"


@raylite.remote
def future_from_a_thread() -> int:
    out: list[int] = []

    def work() -> None:
        out.append(square.remote(7).future().result(timeout=DEADLINE_S))

    t = threading.Thread(target=work)
    t.start()
    t.join()  # the main thread is busy: someone else must read the reply
    return out[0]


def test_a_future_waited_on_by_an_extra_thread_of_a_task_resolves(rl):
    assert raylite.get(future_from_a_thread.remote(), timeout=DEADLINE_S) == 49
