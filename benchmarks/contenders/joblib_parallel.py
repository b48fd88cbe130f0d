"""joblib: one ``Parallel(n_jobs=2)`` kept open (loky backend, batch_size="auto").

The sync round trip is a ``Parallel`` call of one task: what a joblib user pays per call
(~12 ms here, so it runs 400 calls, not 2,000).

The fan-out passes the big array itself to every task: joblib dumps a numpy array over
``max_nbytes`` (1 MB) to a memory-mapped file once and sends workers its name (the dump, in the
warm-up round, is untimed like a ``put``; the timed rounds still hash the array to find it).
"""

from __future__ import annotations

from typing import Any

from bench_tasks import noop, slice_sum
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


def start() -> Any:
    from joblib import Parallel

    parallel = Parallel(n_jobs=2)
    parallel.__enter__()  # keep the workers between calls, as `with Parallel(...) as p:` does
    return parallel


def first_result(parallel: Any) -> Any:
    from joblib import delayed

    return parallel([delayed(noop)(1)])[0]


def stop(parallel: Any) -> None:
    parallel.__exit__(None, None, None)


add_contender(
    Contender(
        "joblib",
        "with Parallel(n_jobs=2) as p: p(delayed(f)(i) for i in range(n))",
        start,
        first_result,
        stop,
        modules=("joblib",),
        counts={"sync_round_trip_us": 400},
        packages=("joblib",),
    )
)


@bench("tiny_tasks_per_s", "joblib")
def tiny_tasks(parallel: Any, n: int) -> float:
    from joblib import delayed

    return throughput(lambda k: parallel(delayed(noop)(i) for i in range(k)), n, cpu_as=DRIVER_CPU)


bench(DRIVER_CPU, "joblib")(stashed_driver_cpu)


@bench("sync_round_trip_us", "joblib")
def sync_round_trip(parallel: Any, n: int) -> float:
    from joblib import delayed

    return round_trip_us(lambda i: parallel([delayed(noop)(i)])[0], n)


@bench("fanout_64_tasks_200mb_ms", "joblib")
def fanout_64_tasks(parallel: Any, n: int) -> float:
    from joblib import delayed

    arr = float_array(200)
    bounds = slices(len(arr), 64)
    median_ms, sums = timed_rounds(
        lambda: parallel(delayed(slice_sum)(arr, lo, hi) for lo, hi in bounds), n
    )
    check_sums(sums, arr, bounds)
    return median_ms
