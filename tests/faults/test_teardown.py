"""The end of a session while work runs: ``shutdown()`` mid-task, and a SIGKILLed driver.

Either way no worker process, fd or shared-memory segment may be left, within seconds.
"""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _helpers import kill_driver_and_wait_for_workers, live_children, shm_entries, wait_until

import raylite
from raylite.exceptions import RaySystemError

pytestmark = pytest.mark.local_only("they end local runtimes and count their processes")


@raylite.remote
class Holder:
    def hold(self, started):
        Path(started).touch()
        time.sleep(60)


def test_shutdown_while_tasks_run_returns_promptly_and_leaves_nothing(
    baseline, tmp_path, record_property
):
    raylite.init(num_cpus=2)

    @raylite.remote
    def forever():
        time.sleep(60)

    running = [forever.remote() for _ in range(2)]
    queued = forever.remote()
    actor_started = tmp_path / "actor-started"
    holder = Holder.remote()
    actor_call = holder.hold.remote(str(actor_started))
    wait_until(lambda: raylite.available_resources().get("CPU", 0) == 0, 10, "tasks to start")
    wait_until(actor_started.exists, 10, "the actor's call to start")

    errors: list[BaseException] = []

    def blocked_get(ref):
        try:
            raylite.get(ref)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=blocked_get, args=(running[0],))
    waiter.start()
    wait_until(lambda: _blocked_in_get(waiter), 10, "the thread to block in get()")

    start = time.monotonic()
    raylite.shutdown()
    took = time.monotonic() - start
    assert took < 5, f"shutdown() took {took:.1f} s with tasks running"
    waiter.join(timeout=10)
    assert not waiter.is_alive(), "a get() blocked at shutdown never returned"
    record_property("fault", ("", "shutdown() returned; a blocked get() raised", took, True))
    assert len(errors) == 1 and isinstance(errors[0], RaySystemError), errors
    assert "shut down" in str(errors[0])
    wait_until(lambda: not live_children(), 10, "workers and actor hosts to exit")
    del running, queued, holder, actor_call

    # A new session starts clean and works.
    raylite.init(num_cpus=2)
    try:
        assert raylite.get(raylite.remote(lambda: "again").remote(), timeout=30) == "again"
    finally:
        raylite.shutdown()


def test_workers_and_shared_memory_die_with_a_sigkilled_driver(baseline, record_property):
    script = textwrap.dedent(
        """
        import os, time
        import numpy as np
        import psutil
        import raylite
        raylite.init(num_cpus=2)

        @raylite.remote
        def busy(x):
            time.sleep(60)

        @raylite.remote
        class Packed:
            def pid(self):
                return os.getpid()

        big = raylite.put(np.ones(50 * 1024 * 1024 // 8))  # a segment, passed to tasks
        running = [busy.remote(big) for _ in range(2)]
        actor = Packed.remote()
        raylite.get(actor.pid.remote())
        procs = psutil.Process().children(recursive=True)  # zygote, workers, actor host
        print(" ".join(str(p.pid) for p in procs), flush=True)
        time.sleep(60)
        """
    )
    shm_before = shm_entries()
    pids, seconds = kill_driver_and_wait_for_workers(script)
    assert len(pids) >= 4  # the zygote, two task workers and an actor host at least
    assert not {n for n in shm_entries() - shm_before if "raylite" in n}
    record_property("fault", ("", "every process gone", seconds, True))


def _blocked_in_get(thread: threading.Thread) -> bool:
    """Whether ``thread`` waits inside ``get`` for an object (the runtime's ``_block``)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "_block":
            return True
        frame = frame.f_back
    return False
