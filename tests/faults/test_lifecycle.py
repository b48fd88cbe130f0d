"""``shutdown()`` while other threads use the API: no session may start while one is torn
down (its fork server would inherit the old one's socket, which then never sees EOF and
``shutdown()`` waits forever); the other threads get ``RaySystemError`` meanwhile, and a
call after ``shutdown()`` returns starts a new session, as any first call does."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from _helpers import live_children, wait_until

import raylite
from raylite.exceptions import RaySystemError

pytestmark = pytest.mark.local_only("they count the local runtime's processes")

DEADLINE_S = 60.0


def test_a_call_made_while_shutdown_tears_down_starts_no_session(baseline, record_property):
    script = textwrap.dedent(
        """
        import threading
        import raylite
        from raylite._local import pool

        raylite.init(num_cpus=1)

        @raylite.remote
        def one():
            return 1

        raylite.get(one.remote())
        outcome = []

        def call():
            try:
                outcome.append(raylite.get(one.remote(), timeout=30))
            except Exception as exc:
                outcome.append(type(exc).__name__)

        close = pool.Zygote.close

        def close_with_a_call_meanwhile(self):
            t = threading.Thread(target=call)  # another thread calls mid-teardown
            t.start()
            t.join(timeout=30)
            close(self)

        pool.Zygote.close = close_with_a_call_meanwhile
        raylite.shutdown()
        pool.Zygote.close = close
        print(outcome, raylite.is_initialized())
        """
    )
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE_S
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("shutdown() hung after a call made while it tore down") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['RaySystemError'] False"
    record_property("fault", ("", "RaySystemError; no new session (whole run)",
                              time.monotonic() - start, True))  # fmt: skip


@raylite.remote
def echo(x: int) -> int:
    return x


def test_shutdown_while_threads_call_the_api_returns_and_leaves_nothing(
    baseline, record_property
):
    for _ in range(4):  # it hung in 2 runs of 4
        raylite.init(num_cpus=2)
        stop = threading.Event()
        errors: list[BaseException] = []

        def caller(stop: threading.Event = stop, errors: list[BaseException] = errors) -> None:
            while not stop.is_set():
                try:
                    raylite.get(echo.remote(1), timeout=30)
                except RaySystemError:
                    pass  # shut down meanwhile: expected
                except BaseException as exc:
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=caller) for _ in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: raylite.get(echo.remote(2), timeout=30) == 2, 10, "calls to run")
        start = time.monotonic()
        closer = threading.Thread(target=raylite.shutdown)  # a hang fails, not stalls, the test
        closer.start()
        closer.join(timeout=DEADLINE_S)
        took = time.monotonic() - start
        assert not closer.is_alive(), f"shutdown() hung (still running after {DEADLINE_S} s)"
        stop.set()
        for t in threads:
            t.join(timeout=DEADLINE_S)
        assert not any(t.is_alive() for t in threads), "a calling thread hung"
        raylite.shutdown()  # a session the callers started after the first shutdown
        assert not errors, errors
        assert took < 10, f"shutdown() took {took:.1f} s"
        wait_until(lambda: not live_children(), 10, "every process to exit")
    record_property("fault", ("", "shutdown() returned; nothing left", took, True))
