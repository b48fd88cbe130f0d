"""Generator tasks and actor methods: ``num_returns="streaming"`` (a generator's default)
and ``"dynamic"``, as Ray 2.60 runs them; each test runs on the local runtime and on Ray."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from _helpers import wait_for_file, wait_until

import raylite
from raylite.exceptions import TaskCancelledError
from raylite.util.state import list_objects


@raylite.remote
def after(go):
    wait_for_file(go)
    return "after"


@raylite.remote
def count(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"boom at {i}")
        yield i


def _values(gen):
    """Each ref's value, or the error's class for a ref that raises."""
    out = []
    for ref in gen:
        try:
            out.append(raylite.get(ref))
        except Exception as exc:  # noqa: BLE001 (the test looks at which error it is)
            out.append(exc)
    return out


def test_streaming_is_the_default_for_generator_functions(rl):
    gen = count.remote(3)
    assert type(gen).__name__ == "ObjectRefGenerator"
    first = next(gen)
    assert isinstance(first, raylite.ObjectRef)
    assert raylite.get(first) == 0
    assert [raylite.get(r) for r in gen] == [1, 2]
    with pytest.raises(StopIteration):
        next(gen)
    assert raylite.get(gen) is gen  # as Ray: get() of a generator hands it back


def test_values_reach_the_driver_as_they_are_yielded(rl, go):

    @raylite.remote
    def two_steps(go):
        yield "first"
        wait_for_file(go)  # the task cannot end before the test says so
        yield "second"

    gen = two_steps.remote(go)
    assert raylite.get(next(gen), timeout=30) == "first"  # while the task still runs
    assert not gen.is_finished()
    Path(go).touch()
    assert raylite.get(next(gen), timeout=30) == "second"
    with pytest.raises(StopIteration):
        next(gen)
    assert gen.is_finished()


def test_an_error_after_k_yields_keeps_the_first_k_values(rl):
    out = _values(count.remote(5, fail_at=2))
    assert out[:2] == [0, 1]
    assert len(out) == 3
    assert isinstance(out[2], ValueError) and "boom at 2" in str(out[2])


def test_dynamic_returns_one_ref_to_a_generator_of_refs(rl):
    ref = count.options(num_returns="dynamic").remote(3)
    assert isinstance(ref, raylite.ObjectRef)
    dyn = raylite.get(ref)
    assert type(dyn).__name__ == "DynamicObjectRefGenerator"
    assert len(dyn) == 3
    assert [raylite.get(r) for r in dyn] == [0, 1, 2]
    failed = raylite.get(count.options(num_returns="dynamic").remote(5, fail_at=2))
    assert len(failed) == 3  # the two values, then the error
    out = _values(failed)
    assert out[:2] == [0, 1] and isinstance(out[2], ValueError)


def test_async_for_over_a_generator(rl):
    async def main():
        return [await ref async for ref in count.remote(4)]

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_generator_actor_methods_sync_and_async(rl):
    @raylite.remote
    class Source:
        def __init__(self):
            self.n = 10

        def numbers(self, k):
            for i in range(k):
                yield self.n + i

        def broken(self):
            yield "ok"
            raise KeyError("gone")

    @raylite.remote
    class AsyncSource:
        async def numbers(self, k):
            for i in range(k):
                await asyncio.sleep(0)
                yield i * i

    s = Source.remote()
    assert [raylite.get(r) for r in s.numbers.remote(3)] == [10, 11, 12]
    out = _values(s.broken.remote())
    assert out[0] == "ok" and isinstance(out[1], KeyError) and len(out) == 2
    dyn = raylite.get(s.numbers.options(num_returns="dynamic").remote(2))
    assert [raylite.get(r) for r in dyn] == [10, 11]
    a = AsyncSource.remote()
    assert [raylite.get(r) for r in a.numbers.remote(4)] == [0, 1, 4, 9]


def test_a_task_iterates_a_generator_it_started(rl):
    @raylite.remote
    def total(n):
        return sum(raylite.get(ref) for ref in count.remote(n))

    assert raylite.get(total.remote(5)) == 10


def test_generators_with_a_fixed_number_of_returns(rl):
    assert raylite.get(count.options(num_returns=2).remote(2)) == [0, 1]


def test_streaming_needs_a_generator_function(rl):
    def plain():
        return 1

    with pytest.raises(ValueError, match="generator functions"):
        raylite.remote(num_returns="streaming")(plain)
    with pytest.raises(ValueError, match="generator functions"):
        raylite.remote(plain).options(num_returns="dynamic")


def test_cancel_a_running_generator(rl, go):
    @raylite.remote
    def endless(go):
        yield 0
        wait_for_file(go, timeout=60)  # the test never makes it: only the cancel ends this
        yield 1

    gen = endless.remote(go)
    assert raylite.get(next(gen), timeout=30) == 0
    raylite.cancel(gen)
    with pytest.raises(TaskCancelledError):
        raylite.get(next(gen), timeout=30)


@pytest.mark.local_only("reads the local object table")
def test_a_dropped_generator_frees_the_values_it_never_handed_out(rl):
    import numpy as np

    @raylite.remote
    def arrays(n):
        for i in range(n):
            yield np.full(1 << 18, i, dtype=np.uint8)  # 256 KiB: in shared memory

    def live() -> int:
        return len(list_objects())

    before = live()
    gen = arrays.remote(4)
    first = next(gen)
    assert raylite.get(first)[0] == 0
    raylite.get(gen.completed(), timeout=30)  # the task is done: every value is stored
    del gen
    assert raylite.get(first)[0] == 0  # a ref handed out stays valid
    del first
    wait_until(lambda: live() == before, 30, "the untaken values to be freed")


@pytest.mark.local_only("init(local_mode=True) is raylite's")
def test_generators_in_local_mode():
    raylite.init(local_mode=True)
    try:
        assert [raylite.get(r) for r in count.remote(3)] == [0, 1, 2]
        out = _values(count.remote(4, fail_at=2))
        assert out[:2] == [0, 1] and isinstance(out[2], ValueError) and len(out) == 3
        dyn = raylite.get(count.options(num_returns="dynamic").remote(2))
        assert [raylite.get(r) for r in dyn] == [0, 1]
    finally:
        raylite.shutdown()


def test_a_generator_rerun_after_its_worker_died_yields_each_value_once(rl, tmp_path):
    first_try = str(tmp_path / "first-try")

    @raylite.remote(max_retries=1)
    def crashes_once(first_try):
        yield 0
        yield 1
        if not os.path.exists(first_try):
            Path(first_try).touch()
            os._exit(1)  # the worker dies mid-stream; the rerun yields 0 and 1 again
        yield 2

    assert [raylite.get(r, timeout=60) for r in crashes_once.remote(first_try)] == [0, 1, 2]


def test_wait_on_generators_and_refs(rl, go):
    @raylite.remote
    def gated(go):
        yield "now"
        wait_for_file(go)
        yield "later"

    gen = gated.remote(go)
    blocked = after.remote(go)
    ready, rest = raylite.wait([gen, blocked], num_returns=1, timeout=30)
    assert ready == [gen] and rest == [blocked]  # its next ref is there
    assert raylite.get(next(gen)) == "now"
    ready, _ = raylite.wait([gen], timeout=0.5)
    assert ready == []  # the next one waits for the file
    Path(go).touch()
    ready, rest = raylite.wait([gen, blocked], num_returns=2, timeout=30)
    assert ready == [gen, blocked] and rest == []
    assert raylite.get(next(gen)) == "later"
    with pytest.raises(StopIteration):
        next(gen)
    assert raylite.wait([gen], timeout=30)[0] == [gen]  # an ended generator is ready
