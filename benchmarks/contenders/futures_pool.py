"""``concurrent.futures.ProcessPoolExecutor(2)``: ``submit`` then ``.result()``."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bench_tasks import noop
from harness import (
    DRIVER_CPU,
    Contender,
    add_contender,
    bench,
    round_trip_us,
    stashed_driver_cpu,
    throughput,
)


def start() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(2)


def first_result(executor: ProcessPoolExecutor) -> Any:
    return executor.submit(noop, 1).result()


def stop(executor: ProcessPoolExecutor) -> None:
    executor.shutdown(wait=True)


add_contender(
    Contender(
        "concurrent",
        "concurrent.futures.ProcessPoolExecutor(2).submit(f, i) ... .result()",
        start,
        first_result,
        stop,
    )
)


@bench("tiny_tasks_per_s", "concurrent")
def tiny_tasks(executor: ProcessPoolExecutor, n: int) -> float:
    def batch(k: int) -> list[Any]:
        futures = [executor.submit(noop, i) for i in range(k)]
        return [future.result() for future in futures]

    return throughput(batch, n, cpu_as=DRIVER_CPU)


bench(DRIVER_CPU, "concurrent")(stashed_driver_cpu)


@bench("sync_round_trip_us", "concurrent")
def sync_round_trip(executor: ProcessPoolExecutor, n: int) -> float:
    return round_trip_us(lambda i: executor.submit(noop, i).result(), n)
