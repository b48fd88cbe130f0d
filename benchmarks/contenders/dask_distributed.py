"""dask.distributed: ``Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True))``.

Tasks are ``client.submit(f, i, pure=False)``; results ``client.gather`` (sync: ``.result()``).
The dashboard is off (``dashboard_address=None``), as Ray's is. On 2 cores dask manages only
~400 tasks/s and ~11 ms per sync call, so it runs 4,000 tasks and 400 calls (noted in the table).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class DaskPool:
    """The handle: the cluster and its client."""

    cluster: Any
    client: Any


def start() -> DaskPool:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return DaskPool(cluster, Client(cluster))


def first_result(pool: DaskPool) -> Any:
    return pool.client.submit(noop, 1, pure=False).result()


def stop(pool: DaskPool) -> None:
    pool.client.close()
    pool.cluster.close()


add_contender(
    Contender(
        "dask",
        "distributed.Client(LocalCluster(2 workers x 1 thread)).submit(f, i, pure=False)",
        start,
        first_result,
        stop,
        modules=("distributed",),
        counts={"tiny_tasks_per_s": 4_000, "sync_round_trip_us": 400},
        packages=("dask", "distributed"),
    )
)


@bench("tiny_tasks_per_s", "dask")
def tiny_tasks(pool: DaskPool, n: int) -> float:
    client = pool.client
    return throughput(
        lambda k: client.gather([client.submit(noop, i, pure=False) for i in range(k)]),
        n,
        cpu_as=DRIVER_CPU,
    )


bench(DRIVER_CPU, "dask")(stashed_driver_cpu)


@bench("sync_round_trip_us", "dask")
def sync_round_trip(pool: DaskPool, n: int) -> float:
    return round_trip_us(lambda i: pool.client.submit(noop, i, pure=False).result(), n)
