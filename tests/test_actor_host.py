"""A host process runs its first actor (one call at a time) on the thread that reads its
calls (``HostedActor.run_inline``); a long such call must delay nothing else the host is
sent: a new actor packed onto it, a kill, a cancel of a queued call (the follower reads).

``init(num_cpus=1)`` leaves one host process: every packed actor of a test shares it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import memfds, wait_until

import raylite
from raylite.exceptions import ActorDiedError, TaskCancelledError

pytestmark = pytest.mark.local_only("about raylite's host processes, found by pid")

MB = 1024 * 1024


@raylite.remote
class Holder:
    def __init__(self):
        self.n = 0

    def pid(self):
        return os.getpid()

    def add(self):
        self.n += 1
        return self.n

    def on_main_thread(self):
        return threading.current_thread() is threading.main_thread()

    def hold(self, started, go, result_mb=0):
        """Says it started, waits (60 s at most) for ``go``; returns the count, or a big
        array (shared memory) with ``result_mb``."""
        Path(started).touch()
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        return np.ones(result_mb * MB // 8) if result_mb else self.n


@pytest.fixture
def one_host():
    raylite.init(num_cpus=1)
    try:
        yield
    finally:
        raylite.shutdown()


def _start_long_call(actor, tmp_path, result_mb=0):
    """Starts ``actor.hold`` (on the host's main thread: ``actor`` is its first)."""
    assert raylite.get(actor.on_main_thread.remote(), timeout=30)
    started, go = tmp_path / "started", tmp_path / "go"
    running = actor.hold.remote(str(started), str(go), result_mb)
    wait_until(started.exists, 30, "the long call to start")
    return running, go


def test_a_new_actor_on_the_host_answers_while_the_only_other_runs_a_long_call(
    one_host, tmp_path
):
    a = Holder.remote()
    host = raylite.get(a.pid.remote(), timeout=30)
    running, go = _start_long_call(a, tmp_path)
    b = Holder.remote()  # packed onto the same host, busy with a's call
    assert raylite.get(b.pid.remote(), timeout=30) == host
    assert raylite.get([b.add.remote() for _ in range(3)], timeout=30) == [1, 2, 3]
    assert raylite.wait([running], timeout=0)[0] == []  # a's call still runs
    go.touch()
    assert raylite.get(running, timeout=30) == 0


def test_a_call_queued_behind_a_long_inline_call_is_cancelled_at_once(one_host, tmp_path):
    a = Holder.remote()
    running, go = _start_long_call(a, tmp_path)
    queued = a.add.remote()
    raylite.cancel(queued)
    with pytest.raises(TaskCancelledError):
        raylite.get(queued, timeout=30)
    assert raylite.wait([running], timeout=0)[0] == []  # cancelled before a's call ended
    go.touch()
    assert raylite.get(running, timeout=30) == 0
    assert raylite.get(a.add.remote(), timeout=30) == 1  # the cancelled call never ran


def test_killing_an_actor_in_a_long_inline_call_frees_the_host(one_host, tmp_path):
    a = Holder.remote()
    host = raylite.get(a.pid.remote(), timeout=30)
    running, go = _start_long_call(a, tmp_path, result_mb=20)
    queued = a.add.remote()
    raylite.kill(a)
    for ref in (running, queued):
        with pytest.raises(ActorDiedError, match="killed by raylite.kill"):
            raylite.get(ref, timeout=30)
    b = Holder.remote()  # the host reads (and serves) it while the killed call runs on
    assert raylite.get(b.pid.remote(), timeout=30) == host
    del b  # the host serves no actor now
    go.touch()

    def next_actor_runs_on_the_main_thread():
        c = Holder.remote()  # packed onto the same host: inline once its main thread idles
        return raylite.get(c.on_main_thread.remote(), timeout=30)

    wait_until(next_actor_runs_on_the_main_thread, 30, "the host to end the killed call")
    # The killed call's 20 MB result was dropped by the host, or, sent before the host read
    # the kill, forgotten on the driver's word: either way nothing stays mapped there.
    wait_until(lambda: memfds(host) == [], 30, "the host to let go of the killed call's result")


def test_the_first_actor_of_a_host_runs_on_its_main_thread_for_life(one_host):
    a = Holder.remote()
    host = raylite.get(a.pid.remote(), timeout=30)
    assert raylite.get([a.on_main_thread.remote() for _ in range(3)]) == [True] * 3
    b = Holder.remote()  # packed onto the same host: on a thread of its own
    assert raylite.get(b.pid.remote(), timeout=30) == host
    assert raylite.get([a.on_main_thread.remote(), b.on_main_thread.remote()]) == [True, False]


def test_an_unwanted_big_result_is_forgotten_by_the_worker_that_wrote_it(one_host):
    """A result nobody holds a ref to any more is dropped by the driver, which tells the
    worker that kept its segment mapped to let go (else each such result leaked there)."""

    @raylite.remote
    def big():
        return np.ones(4 * MB // 8)

    @raylite.remote
    def pid():
        return os.getpid()

    worker = raylite.get(pid.remote(), timeout=30)
    for _ in range(5):
        big.remote()  # the ref dies at once
    assert raylite.get(pid.remote(), timeout=30) == worker  # ran after them: results read
    wait_until(lambda: memfds(worker) == [], 30, "the worker to forget the dropped results")
