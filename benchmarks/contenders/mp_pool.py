"""``multiprocessing.Pool(2)``: ``apply_async`` then ``.get()`` (default start method).

The fan-out over a big array uses the way multiprocessing shares data without copying it: the
array is a module global set before a *fork* pool starts, so the workers inherit its pages
(copy-on-write, and they only read); tasks get ``(lo, hi)``. That pool is its own (the
harness's pool forked before the array existed) and starting it is untimed, like a ``put``.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import Pool
from multiprocessing.pool import Pool as PoolType
from typing import Any

import bench_tasks
from bench_tasks import global_slice_sum, noop
from harness import (
    DRIVER_CPU,
    Contender,
    add_contender,
    bench,
    check_sums,
    float_array,
    round_trip_us,
    slices,
    stashed_driver_cpu,
    throughput,
    timed_rounds,
)


def start() -> PoolType:
    return Pool(2)


def first_result(pool: PoolType) -> Any:
    return pool.apply_async(noop, (1,)).get()


def stop(pool: PoolType) -> None:
    pool.close()
    pool.join()


add_contender(
    Contender(
        "multiprocessing",
        "multiprocessing.Pool(2).apply_async(f, (i,)) ... .get()",
        start,
        first_result,
        stop,
    )
)


@bench("tiny_tasks_per_s", "multiprocessing")
def tiny_tasks(pool: PoolType, n: int) -> float:
    def batch(k: int) -> list[Any]:
        pending = [pool.apply_async(noop, (i,)) for i in range(k)]
        return [result.get() for result in pending]

    return throughput(batch, n, cpu_as=DRIVER_CPU)


bench(DRIVER_CPU, "multiprocessing")(stashed_driver_cpu)


@bench("sync_round_trip_us", "multiprocessing")
def sync_round_trip(pool: PoolType, n: int) -> float:
    return round_trip_us(lambda i: pool.apply_async(noop, (i,)).get(), n)


@bench("fanout_64_tasks_200mb_ms", "multiprocessing")
def fanout_64_tasks(_: PoolType, n: int) -> float:
    arr = float_array(200)
    bounds = slices(len(arr), 64)
    bench_tasks.FANOUT_ARRAY = arr
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            median_ms, sums = timed_rounds(lambda: pool.starmap(global_slice_sum, bounds), n)
    finally:
        bench_tasks.FANOUT_ARRAY = None
    check_sums(sums, arr, bounds)
    return median_ms
