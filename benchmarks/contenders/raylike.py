"""raylite and Ray: the same code, written as a Ray user would (``import raylite as ray``).

raylite: ``ray.init(num_cpus=2)``. Ray: ``ray.init(num_cpus=2, include_dashboard=False,
log_to_driver=False)``, with smaller counts because it is about 10x slower per task.

Object-store benchmarks free each object the library's own way between repeats: ``del`` of
the last ref (both free by reference counting; Ray 2.60 has no public ``free`` any more), then
``gc.collect()`` so no cycle keeps one alive. Each repeat puts a fresh object, so no worker
has it mapped already.
"""

from __future__ import annotations

import gc
import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench_tasks import memory_growth, noop, slice_sum, timed_get
from harness import (
    Contender,
    add_contender,
    bench,
    check_sums,
    float_array,
    round_trip_us,
    slices,
    stash,
    stashed,
    throughput,
    timed_rounds,
)


@dataclass(frozen=True)
class RayApi:
    """The handle: the module (``raylite`` or ``ray``) and the tasks as remote functions."""

    ray: Any
    noop: Any
    slice_sum: Any
    timed_get: Any
    memory_growth: Any

    @property
    def module(self) -> str:
        return str(self.ray.__name__)


def _starter(module: str, **init_kwargs: Any) -> Callable[[], RayApi]:
    def start() -> RayApi:
        ray = importlib.import_module(module)
        # what `@ray.remote` on each `def` does at import
        tasks = [ray.remote(f) for f in (noop, slice_sum, timed_get, memory_growth)]
        ray.init(num_cpus=2, **init_kwargs)
        return RayApi(ray, *tasks)

    return start


def first_result(api: RayApi) -> Any:
    return api.ray.get(api.noop.remote(1))


def stop(api: RayApi) -> None:
    api.ray.shutdown()


add_contender(
    Contender(
        "raylite",
        "import raylite as ray; ray.init(num_cpus=2); ray.get([f.remote(i) ...])",
        _starter("raylite"),
        first_result,
        stop,
        modules=("raylite",),
        optional=False,
        packages=("raylite",),
    )
)
add_contender(
    Contender(
        "ray",
        "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False); same calls",
        _starter("ray", include_dashboard=False, log_to_driver=False),
        first_result,
        stop,
        modules=("ray",),
        counts={"tiny_tasks_per_s": 2_000, "sync_round_trip_us": 200},
        packages=("ray",),
    )
)


@bench("tiny_tasks_per_s", "raylite")
@bench("tiny_tasks_per_s", "ray")
def tiny_tasks(api: RayApi, n: int) -> float:
    return throughput(lambda k: api.ray.get([api.noop.remote(i) for i in range(k)]), n)


@bench("sync_round_trip_us", "raylite")
@bench("sync_round_trip_us", "ray")
def sync_round_trip(api: RayApi, n: int) -> float:
    return round_trip_us(lambda i: api.ray.get(api.noop.remote(i)), n)


@bench("put_100mb_ms", "raylite")
@bench("put_100mb_ms", "ray")
def put_100mb(api: RayApi, n: int) -> float:
    arr = float_array(100)
    copies, puts = [], []
    for _ in range(n):
        start = time.perf_counter()
        copy = arr.copy()
        copies.append(time.perf_counter() - start)
        del copy
        start = time.perf_counter()
        ref = api.ray.put(arr)
        puts.append(time.perf_counter() - start)
        del ref  # the last ref: the object is freed
        gc.collect()
    put_ms, copy_ms = statistics.median(puts) * 1e3, statistics.median(copies) * 1e3
    stash("numpy_copy_100mb_ms", copy_ms)
    stash("put_over_numpy_copy", put_ms / copy_ms)
    return put_ms


@bench("numpy_copy_100mb_ms", "raylite")
@bench("numpy_copy_100mb_ms", "ray")
def numpy_copy_100mb(api: RayApi, n: int) -> float:
    return stashed("numpy_copy_100mb_ms")


@bench("put_over_numpy_copy", "raylite")
@bench("put_over_numpy_copy", "ray")
def put_over_numpy_copy(api: RayApi, n: int) -> float:
    return stashed("put_over_numpy_copy")


@bench("get_100mb_in_worker_us", "raylite")
@bench("get_100mb_in_worker_us", "ray")
def get_100mb_in_worker(api: RayApi, n: int) -> float:
    arr = float_array(100)
    times = []
    for _ in range(n):
        ref = api.ray.put(arr)
        elapsed_us, nbytes = api.ray.get(api.timed_get.remote([ref], api.module))
        if nbytes != arr.nbytes:
            raise AssertionError(f"the task got {nbytes} bytes, not {arr.nbytes}")
        times.append(elapsed_us)
        del ref  # the last ref: the object is freed
        gc.collect()
    return statistics.median(times)


@bench("fanout_64_tasks_200mb_ms", "raylite")
@bench("fanout_64_tasks_200mb_ms", "ray")
def fanout_64_tasks(api: RayApi, n: int) -> float:
    arr = float_array(200)
    bounds = slices(len(arr), 64)
    ref = api.ray.put(arr)

    def run_round() -> list[float]:
        # a top-level ref argument: resolved (zero-copy) before the task runs
        return api.ray.get([api.slice_sum.remote(ref, lo, hi) for lo, hi in bounds])

    median_ms, sums = timed_rounds(run_round, n)
    del run_round  # with it the last ref: the object is freed
    gc.collect()
    check_sums(sums, arr, bounds)
    return median_ms


@bench("worker_uss_growth_mb", "raylite")
@bench("worker_uss_growth_mb", "ray")
def worker_uss_growth(api: RayApi, n: int) -> float:
    arr = float_array(100)
    expected = float(arr.sum())
    uss, anon = [], []
    for _ in range(n):
        ref = api.ray.put(arr)
        uss_mb, anon_mb, total = api.ray.get(api.memory_growth.remote([ref], api.module))
        if total != expected:
            raise AssertionError(f"the task summed {total!r}, expected {expected!r}")
        uss.append(uss_mb)
        anon.append(anon_mb)
        del ref  # the last ref: the object is freed
        gc.collect()
    stash("worker_anon_growth_mb", statistics.median(anon))
    return statistics.median(uss)


@bench("worker_anon_growth_mb", "raylite")
@bench("worker_anon_growth_mb", "ray")
def worker_anon_growth(api: RayApi, n: int) -> float:
    return stashed("worker_anon_growth_mb")
