"""Actors: state, ordering, handles everywhere, names, death and restarts, concurrency,
packing, and the errors people make."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time

import pytest
from _helpers import wait_until

import raylite
from raylite.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

# On Ray 10 of these pass as they are; the rest check the local runtime's own packing into
# host processes, its messages and its restart bookkeeping. test_ray_backend covers actors
# on Ray.
pytestmark = pytest.mark.local_only("the local runtime's actor packing, messages, restarts")


@raylite.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def add(self, k=1):
        self.n += k
        return self.n

    def value(self):
        return self.n

    def pid(self):
        return os.getpid()

    @raylite.method(num_returns=2)
    def pair(self):
        return self.n, -self.n


def test_state_and_submission_order(rl):
    c = Counter.remote(10)
    assert raylite.get([c.add.remote() for _ in range(500)]) == list(range(11, 511))
    assert raylite.get(c.add.remote(raylite.put(100))) == 610


def test_calls_wait_for_their_ref_arguments_in_order(rl):
    @raylite.remote
    def slow(x):
        time.sleep(0.2)
        return x

    c = Counter.remote()
    first = c.add.remote(slow.remote(5))  # its argument is not ready yet
    second = c.add.remote(1)  # must still run after the first
    assert raylite.get([first, second]) == [5, 6]


def test_method_num_returns(rl):
    c = Counter.remote(3)
    a, b = c.pair.remote()
    assert raylite.get([a, b]) == [3, -3]


def test_handles_work_in_tasks_and_other_actors(rl):
    @raylite.remote
    def bump(counter, times):
        return raylite.get([counter.add.remote() for _ in range(times)])[-1]

    @raylite.remote
    class Forwarder:
        def __init__(self, target):
            self.target = target

        def forward(self):
            return raylite.get(self.target.add.remote(100))

    c = Counter.remote()
    assert raylite.get(bump.remote(c, 5)) == 5
    f = Forwarder.remote(c)
    assert raylite.get(f.forward.remote()) == 105
    assert raylite.get(c.value.remote()) == 105


def test_actors_created_and_looked_up_inside_tasks(rl):
    @raylite.remote
    def make_and_use():
        # Detached: named actors end with their last handle (Ray's rule), and the task's
        # handle dies when it returns.
        c = Counter.options(name="made-in-a-task", lifetime="detached").remote(1)
        return raylite.get(c.add.remote())

    assert raylite.get(make_and_use.remote()) == 2
    c = raylite.get_actor("made-in-a-task")
    assert raylite.get(c.add.remote()) == 3

    @raylite.remote
    def look_up():
        return raylite.get(raylite.get_actor("made-in-a-task").add.remote())

    assert raylite.get(look_up.remote()) == 4


def test_named_actors(rl):
    a = Counter.options(name="counter").remote(7)
    assert raylite.get(raylite.get_actor("counter").value.remote()) == 7
    with pytest.raises(ValueError, match="already taken"):
        Counter.options(name="counter").remote()
    same = Counter.options(name="counter", get_if_exists=True).remote()
    assert raylite.get(same.add.remote()) == 8
    with pytest.raises(ValueError, match="no live actor"):
        raylite.get_actor("nobody")
    other = Counter.options(name="counter", namespace="elsewhere").remote(1)
    assert raylite.get(raylite.get_actor("counter", namespace="elsewhere").value.remote()) == 1
    raylite.kill(a)
    with pytest.raises(ValueError, match="no live actor"):
        raylite.get_actor("counter")
    del other


def test_kill_fails_pending_and_later_calls(rl):
    @raylite.remote
    class Sleeper:
        def sleep(self, s):
            time.sleep(s)
            return s

    s = Sleeper.remote()
    running = s.sleep.remote(30)
    queued = s.sleep.remote(0)
    raylite.kill(s)
    for ref in (running, queued, s.sleep.remote(0)):
        with pytest.raises(ActorDiedError, match="killed"):
            raylite.get(ref, timeout=10)


def test_init_error_surfaces_on_the_first_call(rl):
    @raylite.remote
    class Broken:
        def __init__(self):
            raise ValueError("bad config")

        def work(self):
            return 1

    b = Broken.remote()
    with pytest.raises(ActorDiedError) as info:
        raylite.get(b.work.remote(), timeout=10)
    assert "creation task" in str(info.value) and "bad config" in str(info.value)
    assert isinstance(info.value, RayActorError)


def test_dedicated_actor_restarts_and_retries_calls(rl, tmp_path):
    @raylite.remote(num_cpus=1, max_restarts=1, max_task_retries=1)
    class Fragile:
        def __init__(self):
            self.calls = 0

        def crash_once(self, marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            self.calls += 1
            return self.calls

        def pid(self):
            return os.getpid()

    f = Fragile.remote()
    first_pid = raylite.get(f.pid.remote())
    # The call kills the process; the actor restarts (fresh state) and the call is retried.
    assert raylite.get(f.crash_once.remote(str(tmp_path / "m")), timeout=30) == 1
    assert raylite.get(f.pid.remote()) != first_pid
    raylite.kill(f)
    wait_until(lambda: raylite.available_resources().get("CPU") == 2, 10, "the CPU back")


def test_restart_budget_runs_out(rl):
    @raylite.remote(num_cpus=1, max_restarts=0)
    class Mortal:
        def die(self):
            os._exit(3)

    m = Mortal.remote()
    with pytest.raises(ActorDiedError, match="exit code 3"):
        raylite.get(m.die.remote(), timeout=30)
    with pytest.raises(ActorDiedError):
        raylite.get(m.die.remote(), timeout=30)


def test_in_flight_call_without_retries_fails_with_unavailable(rl):
    @raylite.remote(num_cpus=1, max_restarts=1)
    class Once:
        def die(self):
            os._exit(1)

        def ok(self):
            return "ok"

    o = Once.remote()
    with pytest.raises(ActorUnavailableError):
        raylite.get(o.die.remote(), timeout=30)
    assert raylite.get(o.ok.remote(), timeout=30) == "ok"  # restarted


def test_threaded_actor_runs_calls_concurrently(rl):
    @raylite.remote(max_concurrency=2)
    class Pair:
        def __init__(self):
            self.barrier = threading.Barrier(2, timeout=10)

        def meet(self):
            return self.barrier.wait()  # only returns if two calls run at once

    p = Pair.remote()
    assert sorted(raylite.get([p.meet.remote(), p.meet.remote()], timeout=30)) == [0, 1]


def test_async_actor(rl):
    @raylite.remote
    class AsyncBox:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait_for_it(self):
            await self.event.wait()
            return "released"

        async def release(self):
            self.event.set()
            return "set"

        async def double_of(self, refs):
            return 2 * await refs[0]

    box = AsyncBox.remote()
    waiting = box.wait_for_it.remote()  # blocks until the next call runs: needs concurrency
    assert raylite.get(box.release.remote(), timeout=10) == "set"
    assert raylite.get(waiting, timeout=10) == "released"
    assert raylite.get(box.double_of.remote([raylite.put(21)]), timeout=10) == 42


def test_concurrency_groups_do_not_block_each_other(rl):
    @raylite.remote(concurrency_groups={"io": 1, "compute": 1})
    class Grouped:
        def __init__(self):
            self.gate = threading.Event()

        @raylite.method(concurrency_group="io")
        def wait_gate(self):
            return self.gate.wait(timeout=10)

        @raylite.method(concurrency_group="compute")
        def open_gate(self):
            self.gate.set()
            return True

    g = Grouped.remote()
    waiting = g.wait_gate.remote()
    assert raylite.get(g.open_gate.remote(), timeout=10) is True
    assert raylite.get(waiting, timeout=10) is True


def test_undeclared_concurrency_group_is_reported():
    class Wrong:
        @raylite.method(concurrency_group="io")
        def f(self):
            return 1

    with pytest.raises(ValueError, match="concurrency_group='io'"):
        raylite.remote(Wrong)


def test_packed_actors_share_few_processes_but_not_state(rl):
    actors = [Counter.remote(i) for i in range(200)]
    assert raylite.get([a.add.remote() for a in actors]) == [i + 1 for i in range(200)]
    pids = set(raylite.get([a.pid.remote() for a in actors]))
    assert len(pids) <= 4 and os.getpid() not in pids


def test_a_slow_packed_actor_does_not_stall_its_neighbours(rl):
    @raylite.remote
    class Slow:
        def block(self, seconds):
            time.sleep(seconds)
            return os.getpid()

        def pid(self):
            return os.getpid()

    slow = [Slow.remote() for _ in range(8)]  # some share a host with the fast ones
    fast = [Counter.remote() for _ in range(8)]
    busy = [s.block.remote(30) for s in slow]
    assert raylite.get([f.add.remote() for f in fast], timeout=10) == [1] * 8
    for s in slow:
        raylite.kill(s)
    del busy


def test_dedicated_actor_holds_its_resources(rl):
    @raylite.remote(num_cpus=1)
    class Holder:
        def ping(self):
            return "pong"

    h = Holder.remote()
    assert raylite.get(h.ping.remote()) == "pong"
    assert raylite.available_resources().get("CPU") == 1
    del h  # the last handle: the actor ends and gives the CPU back
    wait_until(lambda: raylite.available_resources().get("CPU") == 2, 10, "the CPU back")


def test_the_mistakes_people_make(rl):
    with pytest.raises(TypeError, match=r"use 'Counter.remote\(\)'"):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError, match=r"try 'object.add.remote\(\)'"):
        c.add()
    with pytest.raises(AttributeError, match="has no method 'ad'"):
        c.ad.remote()

    @raylite.remote
    class Test:
        def add():  # the seed's bug: no self
            return 1

    t = Test.remote()
    with pytest.raises(TypeError, match=r"declared without 'self'.*def add\(self, \.\.\.\)"):
        t.add.remote()


def test_local_mode_actors():
    raylite.init(local_mode=True)
    try:
        c = Counter.remote(1)
        assert raylite.get([c.add.remote(), c.add.remote()]) == [2, 3]
        assert raylite.get(c.pid.remote()) == os.getpid()
    finally:
        raylite.shutdown()


def test_ray_only_actor_options_are_kept_for_ray_and_refused_here_at_remote(rl):
    @raylite.remote(placement_group="pg", memory=1000)  # accepted: a Ray cluster honours them
    class OnCluster:
        def f(self):
            return 1

    with pytest.raises(ValueError, match="placement_group='pg' is not supported by raylite"):
        OnCluster.remote()


def test_an_actor_ends_with_its_last_handle_after_its_methods_were_used():
    """``handle.method`` is kept on the handle (no lookup per call): that must not make a
    reference cycle, or the actor would live on until a garbage collection."""
    raylite.init(num_cpus=1)
    gc.disable()
    try:
        c = Counter.options(name="counted").remote()
        method = c.add
        assert c.add is method  # kept, not made anew per access
        assert raylite.get(method.remote(), timeout=30) == 1
        del c
        assert raylite.get(method.remote(), timeout=30) == 2  # a method keeps its actor
        del method
        wait_until(_lookup_fails("counted"), 30, "the actor to end with its last handle")
    finally:
        gc.enable()
        raylite.shutdown()


def _lookup_fails(name):
    def fails():
        try:
            raylite.get_actor(name)
        except ValueError:
            return True
        return False

    return fails
