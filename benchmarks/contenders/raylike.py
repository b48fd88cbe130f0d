"""raylite and Ray: the same code, written as a Ray user would (``import raylite as ray``).

raylite: ``ray.init(num_cpus=2)``. Ray: ``ray.init(num_cpus=2, include_dashboard=False,
log_to_driver=False)``, with smaller counts because it is about 10x slower per task.

Object-store benchmarks free each object the library's own way between repeats: ``del`` of
the last ref (both free by reference counting; Ray 2.60 has no public ``free`` any more), then
``gc.collect()`` so no cycle keeps one alive. Each repeat puts a fresh object, so no worker
has it mapped already.

Actors (issue 4) are the library's defaults (no ``num_cpus``: Ray reserves 1 CPU to place an
actor and 0 while it runs, so 20 of them start on 2 CPUs; raylite packs them onto at most
min(4, num_cpus) host processes). Ray creates 20 actors instead of 1,000 (each is a process of
~40 MB USS and ~0.4 s to start here; 1,000 would take minutes and ~40 GB), and runs 2,000
async and 500 sync calls instead of 20,000 and 2,000. Worker processes are counted with
psutil among the driver's live (non-zombie) descendants:

- raylite: every descendant except the driver's one child, the zygote (the fork server; its
  command line is the driver's, as the workers' are): task workers and actor hosts.
- Ray: processes whose title starts with ``ray::`` (idle task workers ``ray::IDLE``, actors
  ``ray::Counter``), except its two agents ``ray::DashboardAgent`` and
  ``ray::RuntimeEnvAgent``; gcs_server, raylet, dashboard, monitor and log monitor are not
  workers either (but their memory is in ``actors_memory_mb``).
"""

from __future__ import annotations

import gc
import importlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil
from bench_tasks import AsyncPinger, Counter, Pinger, memory_growth, noop, slice_sum, timed_get
from harness import (
    DRIVER_CPU,
    Contender,
    add_contender,
    bench,
    check_sums,
    float_array,
    round_trip_us,
    slices,
    stash,
    stashed,
    stashed_driver_cpu,
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
    counter: Any
    pinger: Any
    async_pinger: Any

    @property
    def module(self) -> str:
        return str(self.ray.__name__)


def _starter(module: str, **init_kwargs: Any) -> Callable[[], RayApi]:
    def start() -> RayApi:
        ray = importlib.import_module(module)
        # what `@ray.remote` on each `def` does at import
        tasks = [ray.remote(f) for f in (noop, slice_sum, timed_get, memory_growth)]
        actors = [ray.remote(cls) for cls in (Counter, Pinger, AsyncPinger)]
        ray.init(num_cpus=2, **init_kwargs)
        return RayApi(ray, *tasks, *actors)

    return start


def first_result(api: RayApi) -> Any:
    return api.ray.get(api.noop.remote(1))


def stop(api: RayApi) -> None:
    api.ray.shutdown()


ACTOR_ROWS = (
    "actors_1000_create_call_twice_s",
    "actor_create_call_twice_ms_per_actor",
    "actors_1000_worker_processes",
    "actors_memory_mb",
    "actor_memory_mb_per_actor",
)
"""Measured together by :func:`actors_create_call_twice` (one pass, n actors)."""
RAY_ACTORS = 20
"""Ray's actor count for those rows (instead of 1,000)."""

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
        counts={
            "tiny_tasks_per_s": 2_000,
            "sync_round_trip_us": 200,
            **{metric: RAY_ACTORS for metric in ACTOR_ROWS},
            "async_actor_calls_per_s": 2_000,
            "sync_actor_call_us": 500,
        },
        packages=("ray",),
    )
)


@bench("tiny_tasks_per_s", "raylite")
@bench("tiny_tasks_per_s", "ray")
def tiny_tasks(api: RayApi, n: int) -> float:
    return throughput(
        lambda k: api.ray.get([api.noop.remote(i) for i in range(k)]), n, cpu_as=DRIVER_CPU
    )


bench(DRIVER_CPU, "raylite")(stashed_driver_cpu)
bench(DRIVER_CPU, "ray")(stashed_driver_cpu)


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


# ---------------------------------------------------------------------------------------------
# Actors (issue 4)

_RAY_AGENTS = frozenset({"ray::DashboardAgent", "ray::RuntimeEnvAgent"})


def _live_descendants() -> list[psutil.Process]:
    """The driver's descendants that are still running (zombies are dead, not yet reaped)."""
    alive = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def _title(process: psutil.Process) -> str:
    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return ""
    return cmdline[0] if cmdline else ""


def worker_processes(module: str) -> list[psutil.Process]:
    """The library's live worker processes (what is counted: see the module docstring)."""
    alive = _live_descendants()
    if module == "raylite":
        driver = os.getpid()
        children = [p for p in alive if p.ppid() == driver]
        if len(children) != 1:
            raise AssertionError(
                f"expected one child of the driver (the zygote), found {len(children)}: "
                f"{[(p.pid, _title(p)) for p in children]}"
            )
        return [p for p in alive if p.pid != children[0].pid]
    return [p for p in alive if _title(p).startswith("ray::") and _title(p) not in _RAY_AGENTS]


def descendants_pss_mb() -> float:
    """Total PSS of the driver's live descendants, MB: a sum of USS would count no page that
    two of them share (Ray's workers share their libraries, raylite's hosts the zygote's
    pages), and a sum of RSS would count such pages once per process."""
    total = 0
    for process in _live_descendants():
        try:
            total += process.memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


@contextmanager
def _reaping(api: RayApi) -> Iterator[None]:
    """Ray: after the block (which kills its actors), waits up to 30 s for the actor processes
    it started to exit, so the next benchmark does not share the CPUs with them (idle workers,
    ``ray::IDLE``, are Ray's to keep or end). raylite: a killed packed actor's host stays up
    for the next actors (by design); nothing to wait for."""
    before = {p.pid for p in worker_processes(api.module)}
    try:
        yield
    finally:
        if api.module == "ray":
            started = [
                p
                for p in worker_processes(api.module)
                if p.pid not in before and _title(p) != "ray::IDLE"
            ]
            psutil.wait_procs(started, timeout=30)


@bench("actors_1000_create_call_twice_s", "raylite")
@bench("actors_1000_create_call_twice_s", "ray")
def actors_create_call_twice(api: RayApi, n: int) -> float:
    with _reaping(api):
        return _create_call_twice(api, n)


def _create_call_twice(api: RayApi, n: int) -> float:
    ray = api.ray
    before_mb = descendants_pss_mb()
    start = time.perf_counter()
    actors = [api.counter.remote() for _ in range(n)]
    first = ray.get([a.incr.remote() for a in actors])
    second = ray.get([a.incr.remote() for a in actors])
    elapsed = time.perf_counter() - start
    if first != [1] * n or second != [2] * n:
        raise AssertionError(f"wrong counts: {first[:3]!r}..., {second[:3]!r}...")
    workers = len(worker_processes(api.module))
    after_mb = descendants_pss_mb()
    stash("actor_create_call_twice_ms_per_actor", elapsed / n * 1e3)
    stash("actors_1000_worker_processes", workers)
    stash("actors_memory_mb", after_mb)
    stash("actor_memory_mb_per_actor", (after_mb - before_mb) / n)
    for actor in actors:
        ray.kill(actor)
    del actors
    gc.collect()
    return elapsed


@bench("actor_create_call_twice_ms_per_actor", "raylite")
@bench("actor_create_call_twice_ms_per_actor", "ray")
def actor_create_call_twice_per_actor(api: RayApi, n: int) -> float:
    return stashed("actor_create_call_twice_ms_per_actor")


@bench("actors_1000_worker_processes", "raylite")
@bench("actors_1000_worker_processes", "ray")
def actors_worker_processes(api: RayApi, n: int) -> float:
    return stashed("actors_1000_worker_processes")


@bench("actors_memory_mb", "raylite")
@bench("actors_memory_mb", "ray")
def actors_memory(api: RayApi, n: int) -> float:
    return stashed("actors_memory_mb")


@bench("actor_memory_mb_per_actor", "raylite")
@bench("actor_memory_mb_per_actor", "ray")
def actor_memory_per_actor(api: RayApi, n: int) -> float:
    return stashed("actor_memory_mb_per_actor")


@bench("async_actor_calls_per_s", "raylite")
@bench("async_actor_calls_per_s", "ray")
def async_actor_calls(api: RayApi, n: int) -> float:
    with _reaping(api):
        actor = api.async_pinger.remote()
        try:
            return throughput(
                lambda k: api.ray.get([actor.ping.remote() for _ in range(k)]),
                n,
                returns_none=True,
            )
        finally:
            api.ray.kill(actor)


@bench("sync_actor_call_us", "raylite")
@bench("sync_actor_call_us", "ray")
def sync_actor_call(api: RayApi, n: int) -> float:
    with _reaping(api):
        actor = api.pinger.remote()
        try:
            return round_trip_us(lambda i: api.ray.get(actor.ping.remote()), n, returns_none=True)
        finally:
            api.ray.kill(actor)
