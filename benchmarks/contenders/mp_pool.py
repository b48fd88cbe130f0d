"""``multiprocessing.Pool(2)``: ``apply_async`` then ``.get()`` (default start method)."""

from __future__ import annotations

from multiprocessing import Pool
from multiprocessing.pool import Pool as PoolType
from typing import Any

from bench_tasks import noop
from harness import Contender, add_contender, bench, round_trip_us, throughput


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

    return throughput(batch, n)


@bench("sync_round_trip_us", "multiprocessing")
def sync_round_trip(pool: PoolType, n: int) -> float:
    return round_trip_us(lambda i: pool.apply_async(noop, (i,)).get(), n)
