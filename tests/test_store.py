"""The shared-memory object store: zero-copy reads, lifetimes, capacity, no leaks."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import psutil
import pytest
from _helpers import kill_driver_and_wait_for_workers, wait_until

import raylite
from raylite.exceptions import ObjectStoreFullError

pytestmark = pytest.mark.local_only("the local runtime's shared-memory object store")

MB = 1024 * 1024


def shm_files() -> set[str]:
    return (
        {f for f in os.listdir("/dev/shm") if "raylite" in f}
        if os.path.isdir("/dev/shm")
        else set()
    )


@raylite.remote
def describe(x):
    """What a task sees of its argument: type, writability, base chain, and this pid."""
    base = x
    while True:  # ndarray.base ... -> memoryview.obj -> what really holds the bytes
        nxt = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
        if nxt is None:
            break
        base = nxt
    return {
        "writeable": x.flags.writeable,
        "base": type(base).__name__,
        "checksum": float(x[:: max(1, x.size // 1000)].sum()),
        "pid": os.getpid(),
    }


@raylite.remote
def uss_before_and_after_get(refs):
    before = psutil.Process().memory_full_info().uss
    x = raylite.get(refs[0])
    total = float(x.sum())  # touch every page
    after = psutil.Process().memory_full_info().uss
    return before, after, total


def test_put_then_get_in_a_worker_is_zero_copy_and_read_only(rl):
    a = np.random.rand(20 * MB // 8)
    ref = raylite.put(a)
    seen = raylite.get(describe.remote(ref))
    assert seen["writeable"] is False
    assert seen["base"] == "mmap"  # a view of the shared mapping, not a private copy
    assert seen["checksum"] == pytest.approx(float(a[:: a.size // 1000].sum()))
    before, after, total = raylite.get(uss_before_and_after_get.remote([ref]))
    assert total == pytest.approx(float(a.sum()))
    # Reading all 20 MB must not make 20 MB of private memory in the worker.
    assert after - before < 4 * MB


def test_gets_in_the_driver_share_one_mapping(rl):
    ref = raylite.put(np.arange(10 * MB // 8, dtype=np.int64))
    x, y = raylite.get(ref), raylite.get(ref)
    assert np.shares_memory(x, y)
    assert not x.flags.writeable
    with pytest.raises(ValueError):
        x[0] = 1


def test_big_arguments_and_results_go_through_shared_memory(rl):
    @raylite.remote
    def scale(x, k):
        return x * k

    a = np.ones(5 * MB // 8)
    out = raylite.get(scale.remote(a, 3))  # a big argument passed by value, a big result
    assert out.shape == a.shape and float(out.sum()) == 3 * a.size
    assert not out.flags.writeable
    assert raylite.get(describe.remote(a))["base"] == "mmap"


def test_fan_out_over_one_put(rl):
    @raylite.remote
    def part_sum(x, lo, hi):
        return float(x[lo:hi].sum())

    a = np.random.rand(16 * MB // 8)
    ref = raylite.put(a)
    step = a.size // 32
    parts = raylite.get([part_sum.remote(ref, i * step, (i + 1) * step) for i in range(32)])
    assert sum(parts) == pytest.approx(float(a[: 32 * step].sum()))


@pytest.mark.parametrize(
    "value",
    [
        b"x" * (1 * MB),
        bytearray(b"y" * MB),
        np.arange(MB, dtype=np.uint8)[::2],  # not contiguous: copied in band, still right
        np.zeros((0, 3)),
        np.arange(300_000, dtype=np.float32).reshape(300, 1000).T,  # Fortran order
        np.array([("a", 1.5)] * 10_000, dtype=[("name", "U4"), ("value", "f8")]),
        {"nested": [np.ones(100_000), {"deep": np.arange(200_000)}]},
    ],
    ids=["bytes", "bytearray", "strided", "empty", "fortran", "structured", "nested"],
)
def test_round_trips(rl, value):
    @raylite.remote
    def echo(x):
        return x

    got = raylite.get(echo.remote(raylite.put(value)))
    if isinstance(value, dict):
        assert np.array_equal(got["nested"][0], value["nested"][0])
        assert np.array_equal(got["nested"][1]["deep"], value["nested"][1]["deep"])
    elif isinstance(value, np.ndarray):
        assert got.dtype == value.dtype and np.array_equal(got, value)
    else:
        assert type(got) is type(value) and got == value


def test_memoryview_round_trip_is_zero_copy(rl):
    view = memoryview(np.arange(MB // 8, dtype=np.float64))
    got = raylite.get(raylite.put(view))
    assert isinstance(got, memoryview) and got.readonly
    assert got.format == "d" and got.tolist()[:3] == [0.0, 1.0, 2.0]


def test_refs_inside_stored_objects_keep_them_alive(rl):
    inner = raylite.put(np.ones(2 * MB // 8))
    outer = raylite.put([inner])
    del inner
    (inner_again,) = raylite.get(outer)
    assert float(raylite.get(inner_again).sum()) == 2 * MB // 8


def test_refs_held_only_by_pending_tasks_keep_objects_alive(rl):
    @raylite.remote
    def total_after(gate, x):
        return float(x.sum())

    @raylite.remote
    def slow():
        import time

        time.sleep(0.3)

    ref = raylite.put(np.ones(2 * MB // 8))
    result = total_after.remote(slow.remote(), ref)  # waits for slow(), holds ref meanwhile
    del ref
    assert raylite.get(result) == 2 * MB // 8


NO_SPILLING = {"automatic_object_spilling_enabled": False}  # Ray's switch


def test_capacity_is_enforced_with_a_message_naming_the_holders():
    raylite.init(num_cpus=1, object_store_memory=40 * MB, _system_config=NO_SPILLING)
    try:
        first = raylite.put(np.ones(25 * MB // 8))
        with pytest.raises(ObjectStoreFullError) as info:
            raylite.put(np.ones(25 * MB // 8))
        text = str(info.value)
        assert "object_store_memory" in text and "26.2 MB" in text
        assert f"ObjectRef({first.hex()})" in text and "an object put" in text
        del first  # freed: the same put fits now
        again = raylite.put(np.ones(25 * MB // 8))
        assert float(raylite.get(again).sum()) == 25 * MB // 8
    finally:
        raylite.shutdown()


def test_results_that_do_not_fit_fail_the_task_with_object_store_full():
    raylite.init(num_cpus=1, object_store_memory=10 * MB)
    try:

        @raylite.remote
        def too_big():
            return np.ones(20 * MB // 8)

        with pytest.raises(ObjectStoreFullError, match="the result of too_big"):
            raylite.get(too_big.remote())
    finally:
        raylite.shutdown()


def test_freed_objects_return_their_memory_for_reuse():
    raylite.init(num_cpus=1, object_store_memory=64 * MB, _system_config=NO_SPILLING)
    try:

        @raylite.remote
        def checksum(x):
            return float(x[:10].sum())

        for _ in range(20):  # 20 x 30 MB through a 64 MB store: only works if freed
            ref = raylite.put(np.ones(30 * MB // 8))
            assert raylite.get(checksum.remote(ref)) == 10.0
            del ref
    finally:
        raylite.shutdown()


@pytest.mark.parametrize("when", ["right after a call", "once the driver is idle"])
def test_a_dropped_ref_frees_its_object_with_no_later_call(when):
    """A release is applied by the I/O thread on its own: promptly, not at the next call."""
    raylite.init(num_cpus=1, object_store_memory=64 * MB, _system_config=NO_SPILLING)
    try:
        rt = raylite._runtime.current()
        books = rt._objs.books  # type: ignore[attr-defined]

        @raylite.remote
        def checksum(x):
            return float(x[:10].sum())

        ref = raylite.put(np.ones(30 * MB // 8))
        assert raylite.get(checksum.remote(ref)) == 10.0
        assert books.live >= 30 * MB
        if when == "once the driver is idle":  # the I/O thread asleep with no deadline
            wait_until(lambda: rt._loop.sleeping, 10, "the I/O thread to go to sleep")  # type: ignore[attr-defined]
        del ref  # nothing after this but looking: the object must go by itself
        wait_until(lambda: books.live == 0, 10, "the dropped object to be freed")
    finally:
        raylite.shutdown()


def test_nothing_is_left_in_dev_shm_after_a_sigkilled_driver():
    before = shm_files()
    script = textwrap.dedent(
        """
        import os, time
        import numpy as np
        import raylite
        raylite.init(num_cpus=2)

        @raylite.remote
        def hold(x):
            return os.getpid()

        ref = raylite.put(np.ones(8 * 1024 * 1024))
        pids = raylite.get([hold.remote(ref) for _ in range(4)])
        print(" ".join(map(str, set(pids))), flush=True)
        time.sleep(60)
        """
    )
    kill_driver_and_wait_for_workers(script)
    assert shm_files() == before
