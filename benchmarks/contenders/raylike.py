"""raylite and Ray: the same code, written as a Ray user would (``import raylite as ray``).

raylite: ``ray.init(num_cpus=2)``. Ray: ``ray.init(num_cpus=2, include_dashboard=False,
log_to_driver=False)``, with smaller counts because it is about 10x slower per task.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench_tasks import noop
from harness import Contender, add_contender, bench, round_trip_us, throughput


@dataclass(frozen=True)
class RayApi:
    """The handle: the module (``raylite`` or ``ray``) and ``noop`` as a remote function."""

    ray: Any
    noop: Any


def _starter(module: str, **init_kwargs: Any) -> Callable[[], RayApi]:
    def start() -> RayApi:
        ray = importlib.import_module(module)
        remote_noop = ray.remote(noop)  # what `@ray.remote` on `def noop` does at import
        ray.init(num_cpus=2, **init_kwargs)
        return RayApi(ray, remote_noop)

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
