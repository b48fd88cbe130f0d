"""``raylite.util.multiprocessing.Pool`` against the standard library's ``multiprocessing.Pool``.

Every test takes the ``Pool`` fixture and runs twice: once on ``multiprocessing.Pool`` (the
reference) and once on raylite's, so the suite states what the two have in common. It is
shaped on CPython's own ``_TestPool`` (Lib/test/_test_multiprocessing.py), written afresh:
apply/map/starmap/imap and their async forms, chunk sizes, empty and failing iterables,
callbacks, timeouts, tracebacks, initializers, ``maxtasksperchild``, close/terminate/join
and the context manager. What only raylite's pool does (a dead process's task fails instead
of hanging, Ray's extra arguments) is at the end, marked by its name.

Nothing here waits on timing luck: a task that must stay busy waits for a *gate* file the
test creates when it wants the task to end (``wait_for_gate``), with a generous deadline.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import pid_alive, wait_until

import raylite
from raylite.util.multiprocessing import Pool as RayalitePool

GATE_TIMEOUT = 60.0


def sqr(x: int) -> int:
    return x * x


def mul(x: int, y: int) -> int:
    return x * y


def raise_zero(x: int) -> float:
    return x / 0


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x


def pid_of(_: object = None) -> int:
    return os.getpid()


def wait_for_gate(path: str, value: object = None) -> object:
    """Returns ``value`` once the file ``path`` exists (the test opens the gate)."""
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never opened the gate {path}")
        time.sleep(0.005)
    return value


def gated(arg: tuple[str, object]) -> object:
    """``("gate", path)`` waits for the gate, ``("now", v)`` returns ``v`` at once."""
    kind, value = arg
    return wait_for_gate(str(value), "gated") if kind == "gate" else value


_INIT_VALUE: object = None


def set_init_value(value: object) -> None:
    global _INIT_VALUE
    _INIT_VALUE = value


def get_init_value(_: object = None) -> object:
    return _INIT_VALUE


def unpicklable_result(_: object = None) -> object:
    return threading.Lock()


class SayWhenError(ValueError):
    pass


def failing_generator(total: int, when: int) -> Iterator[int]:
    for i in range(total):
        if i == when:
            raise SayWhenError(f"the iterable failed at {i}")
        yield i


class Payload:
    """An argument the test can watch being freed (weakref)."""

    def __init__(self, n: int) -> None:
        self.n = n


def payload_n(p: Payload) -> int:
    return p.n


PoolFactory = Callable[..., Any]


@pytest.fixture(params=["multiprocessing", "raylite"])
def Pool(request: pytest.FixtureRequest) -> Iterator[PoolFactory]:  # noqa: N802 (a class)
    """Makes pools of one kind; every pool made is terminated and joined after the test."""
    made: list[Any] = []
    if request.param == "raylite":
        raylite.init(num_cpus=2)
        cls: Any = RayalitePool
    else:
        cls = multiprocessing.get_context("fork").Pool

    def make(*args: Any, **kwargs: Any) -> Any:
        pool = cls(*args, **kwargs)
        made.append(pool)
        return pool

    make.kind = request.param  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for pool in made:
            pool.terminate()
            pool.join()
        if raylite.is_initialized():
            raylite.shutdown()


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return tmp_path / "gate"


# -- apply --------------------------------------------------------------------------------


def test_apply_positional_and_keyword_arguments(Pool: PoolFactory) -> None:
    pool = Pool(2)
    assert pool.apply(sqr, (5,)) == 25
    assert pool.apply(sqr, (), {"x": 3}) == 9
    assert pool.apply(mul, (6,), {"y": 7}) == 42


def test_apply_async_value_and_callback(Pool: PoolFactory) -> None:
    pool = Pool(2)
    seen: list[object] = []
    result = pool.apply_async(sqr, (7,), callback=seen.append)
    assert result.get(timeout=GATE_TIMEOUT) == 49
    assert seen == [49]  # the callback ran before get() returned
    assert result.ready() and result.successful()


def test_apply_async_error_callback_gets_the_exception(Pool: PoolFactory) -> None:
    pool = Pool(2)
    errors: list[BaseException] = []
    result = pool.apply_async(raise_zero, (1,), error_callback=errors.append)
    with pytest.raises(ZeroDivisionError):
        result.get(timeout=GATE_TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)
    assert result.ready() and not result.successful()


def test_exception_keeps_its_type_and_the_remote_traceback(Pool: PoolFactory) -> None:
    pool = Pool(2)
    with pytest.raises(ZeroDivisionError) as info:
        pool.apply(raise_zero, (1,))
    cause = info.value.__cause__
    assert type(cause).__name__ == "RemoteTraceback"
    assert "raise_zero" in str(cause) and "ZeroDivisionError" in str(cause)


# -- map, starmap -------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [None, 1, 7, 20, 1000])
def test_map_with_chunk_sizes(Pool: PoolFactory, chunksize: int | None) -> None:
    pool = Pool(2)
    assert pool.map(sqr, list(range(100)), chunksize) == [i * i for i in range(100)]


def test_map_takes_any_iterable(Pool: PoolFactory) -> None:
    pool = Pool(2)
    assert pool.map(sqr, range(10)) == [i * i for i in range(10)]
    assert pool.map(sqr, (i for i in range(10))) == [i * i for i in range(10)]
    assert pool.map(sqr, {3: "a", 4: "b"}) == [9, 16]


def test_starmap_and_starmap_async(Pool: PoolFactory) -> None:
    pool = Pool(2)
    pairs = list(zip(range(10), range(10, 20), strict=True))
    expected = [a * b for a, b in pairs]
    assert pool.starmap(mul, pairs) == expected
    assert pool.starmap(mul, iter(pairs), chunksize=3) == expected
    assert pool.starmap_async(mul, pairs).get(timeout=GATE_TIMEOUT) == expected


def test_map_async_callback_gets_the_whole_list(Pool: PoolFactory) -> None:
    pool = Pool(2)
    seen: list[object] = []
    result = pool.map_async(sqr, range(20), chunksize=3, callback=seen.append)
    assert result.get(timeout=GATE_TIMEOUT) == [i * i for i in range(20)]
    assert seen == [[i * i for i in range(20)]]


def test_map_failure_raises_the_first_error_and_calls_error_callback(Pool: PoolFactory) -> None:
    pool = Pool(2)
    errors: list[BaseException] = []
    result = pool.map_async(fail_on_three, range(10), chunksize=1, error_callback=errors.append)
    with pytest.raises(ValueError, match="item 3 is bad"):
        result.get(timeout=GATE_TIMEOUT)
    assert not result.successful()
    assert [str(e) for e in errors] == ["item 3 is bad"]
    with pytest.raises(ValueError, match="item 3 is bad"):
        pool.map(fail_on_three, range(10))
    assert pool.map(sqr, range(5)) == [0, 1, 4, 9, 16]  # the pool goes on


def test_map_of_a_failing_iterable_raises_its_error(Pool: PoolFactory) -> None:
    pool = Pool(2)
    with pytest.raises(SayWhenError):
        pool.map(sqr, failing_generator(10, 5))
    assert pool.map(sqr, range(3)) == [0, 1, 4]


def test_empty_iterables(Pool: PoolFactory) -> None:
    pool = Pool(2)
    assert pool.map(sqr, []) == []
    assert pool.map(sqr, [], chunksize=5) == []
    assert pool.starmap(mul, []) == []
    assert pool.map_async(sqr, []).get(timeout=GATE_TIMEOUT) == []
    assert list(pool.imap(sqr, [])) == []
    assert list(pool.imap_unordered(sqr, iter([]))) == []


def test_unpicklable_result_fails_that_task_only(Pool: PoolFactory) -> None:
    pool = Pool(2)
    with pytest.raises(Exception):  # noqa: B017 (MaybeEncodingError vs raylite's own error)
        pool.apply(unpicklable_result)
    assert pool.apply(sqr, (3,)) == 9


def test_arguments_are_released_after_the_results_are_in(Pool: PoolFactory) -> None:
    pool = Pool(2)
    payloads = [Payload(i) for i in range(20)]
    refs = [weakref.ref(p) for p in payloads]
    assert pool.map(payload_n, payloads, chunksize=3) == list(range(20))
    assert pool.apply_async(payload_n, (payloads[0],)).get(timeout=GATE_TIMEOUT) == 0
    del payloads
    gc.collect()
    wait_until(lambda: all(r() is None for r in refs), 10, "the pool to drop its arguments")


# -- imap, imap_unordered -----------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 3, 100])
def test_imap_in_order(Pool: PoolFactory, chunksize: int) -> None:
    pool = Pool(2)
    it = pool.imap(sqr, range(10), chunksize)
    assert [next(it) for _ in range(10)] == [i * i for i in range(10)]
    with pytest.raises(StopIteration):
        next(it)
    assert list(pool.imap(sqr, iter(range(50)), chunksize)) == [i * i for i in range(50)]


def test_imap_unordered_yields_everything(Pool: PoolFactory) -> None:
    pool = Pool(2)
    assert sorted(pool.imap_unordered(sqr, range(50))) == [i * i for i in range(50)]
    assert sorted(pool.imap_unordered(sqr, iter(range(50)), 7)) == [i * i for i in range(50)]


def test_imap_unordered_yields_quick_results_while_one_task_is_stuck(
    Pool: PoolFactory, gate: Path
) -> None:
    pool = Pool(2)
    items = [("gate", str(gate))] + [("now", i) for i in range(9)]
    it = pool.imap_unordered(gated, items)
    quick = sorted(it.next(timeout=GATE_TIMEOUT) for _ in range(9))
    assert quick == list(range(9))  # none waited behind the stuck one
    gate.touch()
    assert it.next(timeout=GATE_TIMEOUT) == "gated"


def test_imap_of_a_failing_iterable(Pool: PoolFactory) -> None:
    pool = Pool(2)
    it = pool.imap(sqr, failing_generator(10, 3), 1)
    assert [next(it) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(SayWhenError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_imap_next_timeout(Pool: PoolFactory, gate: Path) -> None:
    pool = Pool(2)
    it = pool.imap(wait_for_gate, [str(gate)])
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    gate.touch()
    assert it.next(timeout=GATE_TIMEOUT) is None


def test_imap_task_error_at_its_position(Pool: PoolFactory) -> None:
    pool = Pool(2)
    it = pool.imap(fail_on_three, range(6))
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3 is bad"):
        next(it)
    assert list(it) == [4, 5]


def test_imap_chunksize_below_one_is_refused(Pool: PoolFactory) -> None:
    pool = Pool(2)
    with pytest.raises(ValueError):
        pool.imap(sqr, range(3), 0)


# -- AsyncResult --------------------------------------------------------------------------


def test_async_result_timeout_wait_ready_successful(Pool: PoolFactory, gate: Path) -> None:
    pool = Pool(2)
    result = pool.apply_async(wait_for_gate, (str(gate), "done"))
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.05)
    result.wait(timeout=0.05)
    assert not result.ready()
    with pytest.raises(ValueError):
        result.successful()
    gate.touch()
    result.wait(timeout=GATE_TIMEOUT)
    assert result.ready() and result.successful()
    assert result.get(timeout=0) == "done"


# -- processes: initializer, maxtasksperchild ---------------------------------------------


def test_initializer_runs_in_every_process(Pool: PoolFactory) -> None:
    pool = Pool(2, initializer=set_init_value, initargs=("ready",))
    assert pool.map(get_init_value, range(20), chunksize=1) == ["ready"] * 20


def test_tasks_run_in_other_processes(Pool: PoolFactory) -> None:
    pool = Pool(2)
    pids = set(pool.map(pid_of, range(20), chunksize=1))
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_maxtasksperchild_replaces_processes(Pool: PoolFactory) -> None:
    pool = Pool(2, maxtasksperchild=2)
    results = [pool.apply_async(pid_of) for _ in range(10)]
    pids = [r.get(timeout=GATE_TIMEOUT) for r in results]
    counts = {pid: pids.count(pid) for pid in pids}
    assert max(counts.values()) <= 2, counts  # no process ran more than 2 tasks
    assert len(counts) >= 5


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"processes": 0}, ValueError),
        ({"processes": -1}, ValueError),
        ({"processes": 1, "maxtasksperchild": 0}, ValueError),
        ({"processes": 1, "initializer": 3}, TypeError),
    ],
)
def test_bad_arguments(Pool: PoolFactory, kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        Pool(**kwargs)


# -- close, terminate, join, with ---------------------------------------------------------


def test_close_finishes_submitted_work_then_join(Pool: PoolFactory) -> None:
    pool = Pool(2)
    result = pool.map_async(sqr, range(50), chunksize=2)
    pool.close()
    with pytest.raises(ValueError):
        pool.map(sqr, [1])
    with pytest.raises(ValueError):
        pool.apply_async(sqr, (1,))
    pool.join()
    assert result.get(timeout=0) == [i * i for i in range(50)]


def test_join_before_close_is_refused(Pool: PoolFactory) -> None:
    pool = Pool(2)
    with pytest.raises(ValueError):
        pool.join()


def test_terminate_ends_the_processes(Pool: PoolFactory, gate: Path) -> None:
    pool = Pool(2)
    pids = set(pool.map(pid_of, range(8), chunksize=1))
    pool.map_async(wait_for_gate, [str(gate)] * 4, chunksize=1)
    pool.terminate()
    pool.join()
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "the processes to end")


def test_context_manager_terminates(Pool: PoolFactory) -> None:
    with Pool(2) as pool:
        assert pool.map_async(sqr, range(10)).get(timeout=GATE_TIMEOUT) == [
            i * i for i in range(10)
        ]
    with pytest.raises(ValueError):
        pool.map(sqr, [1])
    with pytest.raises(ValueError):
        with pool:
            pass


def test_map_failure_does_not_block_close_and_join(Pool: PoolFactory) -> None:
    pool = Pool(2)
    with pytest.raises(ValueError):
        pool.map(fail_on_three, range(100), chunksize=1)
    pool.close()
    pool.join()


# -- raylite only -------------------------------------------------------------------------


def die(_: object = None) -> None:
    os._exit(3)


def test_raylite_dead_process_fails_its_task_and_is_replaced() -> None:
    """multiprocessing's map hangs when a worker dies; raylite's fails that task."""
    raylite.init(num_cpus=2)
    try:
        with RayalitePool(2) as pool:
            with pytest.raises(raylite.exceptions.RayError):
                pool.apply(die)
            assert pool.map(sqr, range(10), chunksize=1) == [i * i for i in range(10)]
    finally:
        raylite.shutdown()


def test_raylite_pool_starts_raylite_and_checks_cpus() -> None:
    pool = RayalitePool(2)
    try:
        assert raylite.is_initialized()
        assert raylite.cluster_resources()["CPU"] == 2
        assert pool.apply(sqr, (4,)) == 16
        with pytest.raises(ValueError, match="more processes than raylite's 2 CPUs"):
            RayalitePool(3)
    finally:
        pool.terminate()
        raylite.shutdown()


def test_raylite_pool_holds_a_cpu_per_process_until_it_ends() -> None:
    """Each process is an actor holding a whole CPU (a process of its own); terminate gives
    the CPUs back to raylite's tasks."""
    raylite.init(num_cpus=2)
    try:
        pool = RayalitePool(1)
        assert pool.apply(sqr, (3,)) == 9
        assert raylite.available_resources().get("CPU") == 1
        assert raylite.get(raylite.remote(sqr).remote(4), timeout=GATE_TIMEOUT) == 16
        pool.terminate()
        pool.join()
        wait_until(lambda: raylite.available_resources().get("CPU") == 2, 10, "the CPU back")
    finally:
        raylite.shutdown()


def test_raylite_apply_takes_rays_kwargs_name() -> None:
    raylite.init(num_cpus=2)
    try:
        with RayalitePool(1) as pool:
            assert pool.apply(mul, (2,), kwargs={"y": 5}) == 10
            assert pool.apply_async(mul, (3,), kwargs={"y": 5}).get(timeout=GATE_TIMEOUT) == 15
    finally:
        raylite.shutdown()


def test_pool_on_every_runtime(rl: Any) -> None:
    """The same Pool on the local runtime and, through init(address=...), on real Ray."""
    with RayalitePool(2) as pool:
        assert pool.map(sqr, range(20), chunksize=3) == [i * i for i in range(20)]
        assert sorted(pool.imap_unordered(sqr, range(5))) == [0, 1, 4, 9, 16]
        with pytest.raises(ZeroDivisionError):
            pool.apply(raise_zero, (1,))
        assert os.getpid() not in set(pool.map(pid_of, range(4), chunksize=1))


def test_raylite_terminate_returns_once_the_pool_is_over() -> None:
    """As the standard library's: when terminate() returns the pool's thread has ended, so a
    shutdown() right after cannot race it (it used to start a new session behind it)."""
    raylite.init(num_cpus=2)
    try:
        pool = RayalitePool(2)
        assert pool.map(sqr, range(50)) == [i * i for i in range(50)]
        pool.terminate()
        assert not pool._manager.thread.is_alive()
    finally:
        raylite.shutdown()
    assert not raylite.is_initialized()
