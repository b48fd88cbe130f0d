"""Actors whose process dies, and actors killed with calls waiting.

Packed actors (no CPU or GPU reserved) share host processes: killing a host is every
actor in it dying at once, and each must follow its own restart policy (Ray's semantics:
``max_restarts`` restarts with fresh state, ``max_task_retries`` reruns the calls that were
in flight, else they fail with ``ActorUnavailableError``; an actor out of restarts is dead
and every call raises ``ActorDiedError``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import memfds, pid_alive, wait_until

import raylite
from raylite.exceptions import ActorDiedError, ActorUnavailableError

pytestmark = pytest.mark.local_only("they kill raylite's host processes, found by pid")

MB = 1024 * 1024


@raylite.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n

    def pid(self):
        return os.getpid()

    def hold(self, started, go):
        """Says it started, then waits (30 s at most) for ``go``; returns the count then."""
        Path(started).touch()
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.n

    def hold_then_return_big(self, started, go):
        """``hold``, then a 50 MB result (written to shared memory)."""
        self.hold(started, go)
        return np.ones(50 * MB // 8)


# Restart policies, one actor of each per host (see the test).
POLICIES = {
    "restart+retry": {"max_restarts": 1, "max_task_retries": 1},
    "restart": {"max_restarts": 1, "max_task_retries": 0},
    "no restart": {"max_restarts": 0},
}


def test_killing_a_host_process_applies_each_actors_restart_policy(fault, tmp_path):
    # Two sets of the three policies: actors are spread over the hosts (2 on 2 CPUs), so
    # each host holds one of each; the test checks that rather than assumes it.
    actors = [
        (policy, Counter.options(**opts).remote())
        for _ in range(2)
        for policy, opts in POLICIES.items()
    ]
    pids = raylite.get([a.pid.remote() for _, a in actors], timeout=30)
    for _, a in actors:
        assert raylite.get([a.add.remote(), a.add.remote()], timeout=30) == [1, 2]
    host = pids[0]
    victims = {policy: a for (policy, a), pid in zip(actors, pids, strict=True) if pid == host}
    survivors = [a for (_, a), pid in zip(actors, pids, strict=True) if pid != host]
    assert set(victims) == set(POLICIES), f"the host {host} holds only {sorted(victims)}"
    assert survivors, "every actor landed on one host: nothing shows the others are spared"

    go = str(tmp_path / "go")
    calls = {}
    for policy, a in victims.items():
        started = tmp_path / f"started-{policy}"
        calls[policy] = (a.hold.remote(str(started), go), a.add.remote())  # running, queued
        wait_until(started.exists, 10, f"the {policy} actor's call to start")

    killed_at = time.monotonic()
    os.kill(host, signal.SIGKILL)

    # No restarts left: dead, its calls fail, and so does every later one.
    running, queued = calls["no restart"]
    fault.expect(
        ActorDiedError, running, since=killed_at, case="no restart: running call",
        match=r"its process died \(killed by signal 9 \(SIGKILL\)\)",
    )  # fmt: skip
    fault.expect(ActorDiedError, queued, since=killed_at, case="no restart: queued call")
    with pytest.raises(ActorDiedError):
        raylite.get(victims["no restart"].add.remote(), timeout=30)

    # Restarted without retries: the calls it had fail, the next one runs on fresh state.
    running, queued = calls["restart"]
    fault.expect(ActorUnavailableError, running, since=killed_at, case="restart: running call")
    fault.expect(ActorUnavailableError, queued, since=killed_at, case="restart: queued call")
    assert raylite.get(victims["restart"].add.remote(), timeout=30) == 1

    # Restarted with retries: its calls run again, in order, on the fresh instance.
    Path(go).touch()
    running, queued = calls["restart+retry"]
    assert raylite.get([running, queued], timeout=30) == [0, 1]
    fault.record("calls retried on the new instance", since=killed_at, case="restart+retry")
    assert raylite.get(victims["restart+retry"].pid.remote(), timeout=30) != host

    # The other host's actors never noticed.
    assert raylite.get([a.add.remote() for a in survivors], timeout=30) == [3] * len(survivors)


@pytest.mark.parametrize("placement", ["packed", "dedicated"])
def test_kill_fails_the_running_and_every_queued_call_promptly(fault, tmp_path, placement):
    opts = {"num_cpus": 1} if placement == "dedicated" else {}
    a = Counter.options(**opts).remote()
    pid = raylite.get(a.pid.remote(), timeout=30)
    started, go = tmp_path / "started", tmp_path / "go"
    running = a.hold_then_return_big.remote(str(started), str(go))
    queued = [a.add.remote() for _ in range(5)]
    wait_until(started.exists, 10, "the running call to start")

    killed_at = time.monotonic()
    raylite.kill(a)
    fault.expect(ActorDiedError, running, since=killed_at, match="killed by raylite.kill")
    for i, ref in enumerate(queued):
        fault.expect(ActorDiedError, ref, since=killed_at, case=f"queued call {i + 1}")
    with pytest.raises(ActorDiedError):
        raylite.get(a.add.remote(), timeout=30)
    if placement == "dedicated":  # its process is gone, and with it the running call
        wait_until(lambda: not pid_alive(pid), 10, "the actor's process to end")
        return
    # A packed actor's running method cannot be stopped (it runs in a shared host); once
    # it ends, its 50 MB result must be dropped by the host (or forgotten on the driver's
    # word), not kept. test_actor_host.py waits for the call's end itself.
    go.touch()
    wait_until(lambda: memfds(pid) == [], 30, "the host to drop the killed call's result")


@raylite.remote
class Keeper:
    """Holds a big argument (a zero-copy view of its segment), in a reference cycle."""

    def __init__(self, data):
        self.data = data
        self.me = self  # only the cycle collector can free this instance

    def size(self):
        return self.data.nbytes


@pytest.mark.parametrize("death", ["kill", "handles dropped"])
def test_a_dead_packed_actor_frees_what_its_instance_held(fault, death):
    """Issue 13, item 14: the instance of a dead packed actor sat in a reference cycle in a
    host that never collected, so the 48 MB it held stayed live in the store."""
    data = raylite.put(np.ones(48 * MB // 8))
    keeper = Keeper.remote(data)
    assert raylite.get(keeper.size.remote(), timeout=30) == 48 * MB
    del data
    start = time.monotonic()
    if death == "kill":
        raylite.kill(keeper)
    del keeper
    fault.assert_released()  # the store's books back to 0 bytes, nothing left mapped
    fault.record("freed", since=start)
