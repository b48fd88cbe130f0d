"""joblib: one ``Parallel(n_jobs=2)`` kept open (loky backend, batch_size="auto").

The sync round trip is a ``Parallel`` call of one task: what a joblib user pays per call.
"""

from __future__ import annotations

from typing import Any

from bench_tasks import noop
from harness import Contender, add_contender, bench, round_trip_us, throughput


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
        packages=("joblib",),
    )
)


@bench("tiny_tasks_per_s", "joblib")
def tiny_tasks(parallel: Any, n: int) -> float:
    from joblib import delayed

    return throughput(lambda k: parallel(delayed(noop)(i) for i in range(k)), n)


@bench("sync_round_trip_us", "joblib")
def sync_round_trip(parallel: Any, n: int) -> float:
    from joblib import delayed

    return round_trip_us(lambda i: parallel([delayed(noop)(i)])[0], n)
