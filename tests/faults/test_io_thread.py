"""The driver's I/O thread: no user action may end it, and if it ever fails every waiter
hears so at once (``RaySystemError`` naming why), never a hang."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from _helpers import wait_until

import raylite
from raylite import _runtime
from raylite.exceptions import RaySystemError

pytestmark = pytest.mark.local_only("they inspect the local runtime's I/O thread")

DEADLINE_S = 30.0


@raylite.remote
def when_file_exists(path: str, value: str) -> str:
    while not Path(path).exists():  # the test decides when the task ends
        time.sleep(0.01)
    return value


def _io_thread_alive() -> bool:
    return _runtime.current()._io.is_alive()  # type: ignore[attr-defined]


def test_await_that_times_out_leaves_the_runtime_working(fault, tmp_path):
    release = tmp_path / "release"
    ref = when_file_exists.remote(str(release), "late")

    async def impatient() -> None:
        await asyncio.wait_for(ref, timeout=0.05)  # cancels the ref's future

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(impatient())
    start = time.monotonic()
    release.touch()  # the task ends now: its value resolves a cancelled future
    assert raylite.get(ref, timeout=DEADLINE_S) == "late"
    assert raylite.get(when_file_exists.remote(str(release), "next"), timeout=DEADLINE_S) == "next"
    assert _io_thread_alive()
    fault.record("later gets answered", since=start)


def test_a_cancelled_future_leaves_the_runtime_working(fault, tmp_path):
    release = tmp_path / "release"
    ref = when_file_exists.remote(str(release), "late")
    future = ref.future()
    assert future.cancel()
    start = time.monotonic()
    release.touch()
    assert raylite.get(ref, timeout=DEADLINE_S) == "late"
    assert raylite.get(when_file_exists.remote(str(release), "next"), timeout=DEADLINE_S) == "next"
    assert _io_thread_alive()
    fault.record("later gets answered", since=start)


def test_a_failing_io_thread_fails_every_waiter_at_once(baseline, tmp_path, record_property):
    raylite.init(num_cpus=2)
    try:
        rt = _runtime.current()
        release = tmp_path / "release"
        blocked = when_file_exists.remote(str(release), "a")
        awaited = when_file_exists.remote(str(release), "b")
        future = awaited.future()
        errors: list[BaseException] = []

        def wait_in_get() -> None:
            try:
                raylite.get(blocked, timeout=DEADLINE_S)
            except BaseException as exc:
                errors.append(exc)

        waiter = threading.Thread(target=wait_in_get)
        waiter.start()

        def broken_step(rt: object, events: object) -> float | None:
            raise RuntimeError("injected fault in the I/O thread")

        rt._loop._step = broken_step  # type: ignore[method-assign]  # as a bug of ours would
        start = time.monotonic()
        release.touch()  # the tasks end: the I/O thread wakes, and fails
        waiter.join(timeout=DEADLINE_S)
        assert not waiter.is_alive(), "a get() waited on after the I/O thread failed"
        assert len(errors) == 1 and isinstance(errors[0], RaySystemError), errors
        assert "I/O thread failed" in str(errors[0])
        assert "injected fault in the I/O thread" in str(errors[0])  # the traceback: why
        with pytest.raises(RaySystemError, match="I/O thread failed"):
            future.result(timeout=DEADLINE_S)
        with pytest.raises(RaySystemError, match="I/O thread failed"):
            when_file_exists.remote(str(release), "c")  # later calls say so too
        record_property("fault", ("", "RaySystemError at get() and future", time.monotonic() - start, True))
    finally:
        raylite.shutdown()
    wait_until(lambda: not rt._io.is_alive(), 10, "the I/O thread to end")
